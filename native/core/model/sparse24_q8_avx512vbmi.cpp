// AVX-512 VBMI variant of sparse24_q8_avx512.cpp (compiled with VBMI too; called only when the CPU
// has it, cpu_has_avx512vbmi): the same steps of 64 kept values and the same arithmetic, with the
// two byte-level moves done by VBMI instructions:
//   positions: vpmultishiftqb pulls each kept value's 2-bit field into its own byte (qword j of
//     the result, kept values 8j .. 8j+7, reads index qword j / 4 at bit offsets 16 (j % 4) + 2b);
//     plus 4 * (k / 2), its group's first column within the step's 128;
//   x: one vpermt2b picks the 64 kept columns out of the step's 128 int8 activations.
// Bit-identical to sparse24_q8_gemm_ref.
#if defined(__GNUC__) && !defined(__clang__)  // clang has no -Wmaybe-uninitialized (and no such trip)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstring>

#include "sparse24.h"

namespace llmserve {
namespace {

constexpr int64_t kPrefetchValues = 8192;  // bytes of values fetched ahead (1/4 of it for positions)

struct Consts {
  __m512i qword_src;  // qword j <- index qword j / 4
  __m512i shifts;     // byte b of qword j: bit offset 16 (j % 4) + 2b
  __m512i base;       // byte k: 4 * (k / 2)
  __m512i three;
  __m512i dx_rep;  // lane l <- x block l / 4 of the step
  __m512i dw_rep;  // lane l <- q8_0 block l / 8 of the step
};

Consts make_consts() {
  Consts c;
  alignas(64) uint8_t shifts[64], base[64];
  for (int k = 0; k < 64; ++k) {
    shifts[k] = static_cast<uint8_t>(16 * ((k / 8) % 4) + 2 * (k % 8));
    base[k] = static_cast<uint8_t>(4 * (k / 2));
  }
  c.qword_src = _mm512_setr_epi64(0, 0, 0, 0, 1, 1, 1, 1);
  c.shifts = _mm512_load_si512(shifts);
  c.base = _mm512_load_si512(base);
  c.three = _mm512_set1_epi8(3);
  c.dx_rep = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  c.dw_rep = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  return c;
}

// Row r against T tokens (act: the prepared activations; bias: this row's, or null).
template <int T>
void row_tokens(const Consts& c, const uint8_t* v, const uint8_t* id, int64_t m, const uint8_t* act, size_t stride,
                int64_t n_in, int64_t t0, const float* bias, float* y, int64_t ldy, int64_t r) {
  __m512 a[T];
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t) a[t] = _mm512_setzero_ps();
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t k = 0; k < m; k += 64) {
    const bool half = k + 64 > m;           // the last 32 values (lanes 0..7 only)
    const uint8_t* b0 = v + (k / 32) * 34;  // block_q8_0: f16 d, 32 int8
    // The rows of a tile are contiguous: fetch ahead across the row's end into the next row's.
    _mm_prefetch(reinterpret_cast<const char*>(b0 + kPrefetchValues), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(id + k / 4 + kPrefetchValues / 4), _MM_HINT_T0);
    uint16_t d0, d1 = 0;
    std::memcpy(&d0, b0, 2);
    __m256i hi = _mm256_setzero_si256();
    if (!half) {
      std::memcpy(&d1, b0 + 34, 2);
      hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + 36));
    }
    const __m512i w =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + 2))), hi, 1);
    const __m512i wabs = _mm512_abs_epi8(w);
    const __mmask64 neg = _mm512_movepi8_mask(w);
    const __m128i dh = _mm_cvtsi32_si128(static_cast<int>(d0 | static_cast<uint32_t>(d1) << 16));
    const __m512 dw = _mm512_permutexvar_ps(c.dw_rep, _mm512_castps128_ps512(_mm_cvtph_ps(dh)));
    // Positions: 16 index bytes (8 for a half step: the row may end there).
    const __m128i ib = half ? _mm_loadl_epi64(reinterpret_cast<const __m128i*>(id + k / 4))
                            : _mm_loadu_si128(reinterpret_cast<const __m128i*>(id + k / 4));
    const __m512i fields =
        _mm512_multishift_epi64_epi8(c.shifts, _mm512_permutexvar_epi64(c.qword_src, _mm512_castsi128_si512(ib)));
    const __m512i idx = _mm512_add_epi8(_mm512_and_si512(fields, c.three), c.base);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const uint8_t* xt = act + static_cast<size_t>(t0 + t) * stride;
      const uint8_t* xq = xt + 2 * k;
      const __m512i x0 = _mm512_loadu_si512(xq);
      const __m512i x1 = half ? zero : _mm512_loadu_si512(xq + 64);
      const __m512i g = _mm512_permutex2var_epi8(x0, idx, x1);
      const __m512i sx = _mm512_mask_sub_epi8(g, neg, zero, g);
      const __m512 isum = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, wabs, sx));
      const float* xd = reinterpret_cast<const float*>(xt + n_in) + k / 16;
      const __m512 dx =
          _mm512_permutexvar_ps(c.dx_rep, _mm512_castps128_ps512(_mm_maskz_loadu_ps(half ? 0x3 : 0xF, xd)));
      a[t] = _mm512_mask3_fmadd_ps(isum, _mm512_mul_ps(dw, dx), a[t], half ? 0x00FF : 0xFFFF);
    }
  }
  for (int t = 0; t < T; ++t) {
    // sparse24_reduce_lanes in registers: s[l] + s[l + 8], then (s0+s4)+(s2+s6) and (s1+s5)+(s3+s7).
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(a[t]),
                                   _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a[t]), 1)));
    const __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    const __m128 p = _mm_add_ps(q, _mm_movehl_ps(q, q));
    float acc = _mm_cvtss_f32(_mm_add_ss(p, _mm_shuffle_ps(p, p, 1)));
    if (bias) acc += *bias;
    y[(t0 + t) * ldy + r] = acc;
  }
}

}  // namespace

void sparse24_q8_gemm_avx512vbmi(const Sparse24Matrix& w, const uint8_t* act, size_t act_stride, int64_t n, int64_t r0,
                                 int64_t r1, const float* bias, float* y, int64_t ldy) {
  static const Consts c = make_consts();
  const int64_t m = sparse24_values_per_row(w.n_in), ib = sparse24_index_bytes_per_row(w.n_in);
  const size_t vb = sparse24_values_row_bytes(GgmlType::Q8_0, w.n_in);
  for (int64_t t = 0; t < n;) {
    const int64_t tn = n - t >= 4 ? 4 : 1;
    for (int64_t r = r0; r < r1; ++r) {
      const float* b = bias ? bias + r : nullptr;
      const uint8_t* v = w.vals + static_cast<size_t>(r) * vb;
      if (tn == 4) row_tokens<4>(c, v, w.idx + r * ib, m, act, act_stride, w.n_in, t, b, y, ldy, r);
      else row_tokens<1>(c, v, w.idx + r * ib, m, act, act_stride, w.n_in, t, b, y, ldy, r);
    }
    t += tn;
  }
}

}  // namespace llmserve
