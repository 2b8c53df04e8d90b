// AVX2 + FMA + F16C 2:4 sparse GEMM (sparse24.h; compiled with -mavx2 -mfma -mf16c, called only
// when the CPU has them). Per step 16 kept values = 32 input columns: the x columns are loaded
// densely and each kept value's column picked with a lane permute (no gathers); the 16 lanes of
// the reference are two 8-lane accumulators, so the result is bit-identical to sparse24_gemm_ref.
// (Q8_0 values: sparse24_q8_avx2.cpp.)
#include <immintrin.h>

#include <cstring>

#include "sparse24.h"

namespace llmserve {
namespace {

// Lane j of 8 kept values (4 groups, 16 columns) in an 8-column half: group base {0,0,4,4} + pos.
inline __m256i positions8(uint16_t bits) {
  const __m256i v = _mm256_set1_epi32(bits);
  const __m256i sh = _mm256_srlv_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14));
  return _mm256_add_epi32(_mm256_and_si256(sh, _mm256_set1_epi32(3)), _mm256_setr_epi32(0, 0, 4, 4, 0, 0, 4, 4));
}

// The x values of 8 kept values covering columns [c, c + 16).
inline __m256 pick8(const float* x, __m256i pos) {
  const __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(x), pos);
  const __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(x + 8), pos);
  return _mm256_blend_ps(lo, hi, 0xF0);
}

constexpr int64_t kPrefetchValues = 8192;  // bytes of values fetched ahead (1/8 of it for positions)

// Kept values [k, k + 8) of a row (k % 8 == 0) as f32.
inline __m256 values8(const uint8_t* v, int64_t k) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + 2 * k)));
}

// Row r against T tokens x[t0 ..] (bias: this row's, or null): each step's positions and values
// are decoded once and used by the T tokens' independent accumulators (a token's own operations
// are unchanged).
template <int T>
void row_tokens(const uint8_t* v, const uint8_t* id, int64_t m, const float* x, int64_t n_in, int64_t t0,
                const float* bias, float* y, int64_t ldy, int64_t r) {
  const int64_t m16 = m / 16 * 16;
  __m256 a0[T], a1[T];
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t) a0[t] = a1[t] = _mm256_setzero_ps();
  for (int64_t k = 0; k < m16; k += 16) {
    // The rows of a tile are contiguous: fetch ahead across the row's end into the next row's.
    _mm_prefetch(reinterpret_cast<const char*>(v + 2 * k + kPrefetchValues), _MM_HINT_T0);
    if (k % 64 == 0) _mm_prefetch(reinterpret_cast<const char*>(id + k / 4 + kPrefetchValues / 8), _MM_HINT_T0);
    uint16_t b0, b1;
    std::memcpy(&b0, id + k / 4, 2);
    std::memcpy(&b1, id + k / 4 + 2, 2);
    const __m256i p0 = positions8(b0), p1 = positions8(b1);
    const __m256 v0 = values8(v, k), v1 = values8(v, k + 8);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const float* xc = x + (t0 + t) * n_in + 2 * k;  // 16 values cover 32 columns
      a0[t] = _mm256_fmadd_ps(v0, pick8(xc, p0), a0[t]);
      a1[t] = _mm256_fmadd_ps(v1, pick8(xc + 16, p1), a1[t]);
    }
  }
  for (int t = 0; t < T; ++t) {
    alignas(32) float s[16];
    _mm256_store_ps(s, a0[t]);
    _mm256_store_ps(s + 8, a1[t]);
    float acc = sparse24_finish_lanes(s, GgmlType::F16, v, id, m16, m, x + (t0 + t) * n_in);
    if (bias) acc += *bias;
    y[(t0 + t) * ldy + r] = acc;
  }
}

}  // namespace

void sparse24_gemm_avx2(const Sparse24Matrix& w, const float* x, int64_t n, int64_t r0, int64_t r1, const float* bias,
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
