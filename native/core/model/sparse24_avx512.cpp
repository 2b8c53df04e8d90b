// AVX-512 2:4 sparse GEMM (sparse24.h; compiled with the AVX-512 flags, called only when the CPU
// has them). Per step 16 kept values = 32 input columns in two zmm loads, each kept value's column
// picked with one two-source permute (vpermt2ps); the reference's 16 lanes are the zmm's lanes, so
// the result is bit-identical to sparse24_gemm_ref. (Q8_0 values: sparse24_q8_avx512.cpp.)
#include <immintrin.h>

#include <cstring>

#include "sparse24.h"

namespace llmserve {

namespace {

constexpr int64_t kPrefetchValues = 8192;  // bytes of values fetched ahead (1/8 of it for positions)

// Kept values [k, k + 16) of a row (k % 16 == 0) as f32.
inline __m512 values16(const uint8_t* v, int64_t k) {
  return _mm512_maskz_cvtph_ps(0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + 2 * k)));
}

// Row r against T tokens x[t0 ..] (bias: this row's, or null): each step's positions and values are decoded once and used by
// the T tokens' independent accumulators (a token's own operations are unchanged).
template <int T>
void row_tokens(const uint8_t* v, const uint8_t* id, int64_t m, const float* x, int64_t n_in, int64_t t0,
                const float* bias, float* y, int64_t ldy, int64_t r) {
  const int64_t m16 = m / 16 * 16;
  const __m512i shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
  const __m512i three = _mm512_set1_epi32(3);
  __m512 a[T];
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t) a[t] = _mm512_setzero_ps();
  for (int64_t k = 0; k < m16; k += 16) {
    // The rows of a tile are contiguous: fetch ahead across the row's end into the next row's.
    _mm_prefetch(reinterpret_cast<const char*>(v + 2 * k + kPrefetchValues), _MM_HINT_T0);
    if (k % 64 == 0) _mm_prefetch(reinterpret_cast<const char*>(id + k / 4 + kPrefetchValues / 8), _MM_HINT_T0);
    uint32_t bits;
    std::memcpy(&bits, id + k / 4, 4);
    // maskz with a full mask: the plain srlv / cvtph intrinsics trip GCC 12's -Wmaybe-uninitialized.
    const __m512i bits16 = _mm512_set1_epi32(static_cast<int>(bits));
    const __m512i in_group = _mm512_and_si512(_mm512_maskz_srlv_epi32(0xFFFF, bits16, shifts), three);
    const __m512i pos = _mm512_add_epi32(in_group, base);
    const __m512 vs = values16(v, k);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const float* xc = x + (t0 + t) * n_in + 2 * k;
      const __m512 xs = _mm512_permutex2var_ps(_mm512_loadu_ps(xc), pos, _mm512_loadu_ps(xc + 16));
      a[t] = _mm512_fmadd_ps(vs, xs, a[t]);
    }
  }
  for (int t = 0; t < T; ++t) {
    alignas(64) float s[16];
    _mm512_store_ps(s, a[t]);
    float acc = sparse24_finish_lanes(s, GgmlType::F16, v, id, m16, m, x + (t0 + t) * n_in);
    if (bias) acc += *bias;
    y[(t0 + t) * ldy + r] = acc;
  }
}

}  // namespace

void sparse24_gemm_avx512(const Sparse24Matrix& w, const float* x, int64_t n, int64_t r0, int64_t r1, const float* bias,
                          float* y, int64_t ldy) {
  const int64_t m = sparse24_values_per_row(w.n_in), ib = sparse24_index_bytes_per_row(w.n_in);
  // Tokens outer, rows inner: 4 tokens' activations stay in L1 while the rows [r0, r1) (sparse24_matmul's
  // tile, in L1/L2) pass over them; rows outer would stream every token's activations once per row.
  for (int64_t t = 0; t < n;) {
    const int64_t tn = n - t >= 4 ? 4 : 1;
    for (int64_t r = r0; r < r1; ++r) {
      const float* b = bias ? bias + r : nullptr;
      const uint8_t* v = w.vals + static_cast<size_t>(r) * static_cast<size_t>(2 * m);  // f16 values
      if (tn == 4) row_tokens<4>(v, w.idx + r * ib, m, x, w.n_in, t, b, y, ldy, r);
      else row_tokens<1>(v, w.idx + r * ib, m, x, w.n_in, t, b, y, ldy, r);
    }
    t += tn;
  }
}

}  // namespace llmserve
