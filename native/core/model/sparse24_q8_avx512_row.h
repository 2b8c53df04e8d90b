// Internal to the AVX-512 q8_0 2:4 kernels (sparse24_q8_avx512.cpp, sparse24_q8_avx512vbmi.cpp,
// compiled with the AVX-512 flags): one row against T tokens, in steps of 64 kept values (two q8_0
// blocks, 128 input columns), with sparse24_q8_gemm_ref's arithmetic. Pick supplies the two byte
// moves each file does its own way:
//   __m512i positions(const uint8_t* ib, bool half)  byte k: the column (0..127) of kept value k
//                                                     within the step (ib: its 16 index bytes, 8
//                                                     readable on a half step)
//   __m512i gather(__m512i x0, __m512i x1, __m512i p) the 64 kept columns' int8 activations
// vpdpbusd(|w|, x with w's sign) sums each 4 consecutive products exactly into an int32 lane: the
// reference's isum; then fma(float(isum), dw * dx, acc) in the reference's 16 lanes.
#pragma once
#if defined(__GNUC__) && !defined(__clang__)  // GCC 12's avx512fintrin.h trips these on its own helpers
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstring>

#include "sparse24_q8_driver.h"

namespace llmserve {
namespace {

constexpr int64_t kQ8PrefetchValues = 8192;  // bytes of values fetched ahead (1/4 of it for positions)

template <int T, class Pick>
void q8_row_tokens(const Pick& pick, const uint8_t* v, const uint8_t* id, int64_t m, const uint8_t* act, size_t stride,
                   int64_t n_in, int64_t t0, const float* bias, float* y, int64_t ldy, int64_t r) {
  const __m512i dx_rep = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);  // lane l: x block l/4
  const __m512i dw_rep = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);  // lane l: block l/8
  __m512 a[T];
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t) a[t] = _mm512_setzero_ps();
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t k = 0; k < m; k += 64) {
    const bool half = k + 64 > m;           // the last 32 values (lanes 0..7 only)
    const uint8_t* b0 = v + (k / 32) * 34;  // block_q8_0: f16 d, 32 int8
    // The rows of a tile are contiguous: fetch ahead across the row's end into the next row's.
    _mm_prefetch(reinterpret_cast<const char*>(b0 + kQ8PrefetchValues), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(id + k / 4 + kQ8PrefetchValues / 4), _MM_HINT_T0);
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
    // Both scales in one conversion: lanes 0..7 take block k / 32's, lanes 8..15 the next one's.
    const __m128i dh = _mm_cvtsi32_si128(static_cast<int>(d0 | static_cast<uint32_t>(d1) << 16));
    const __m512 dw = _mm512_permutexvar_ps(dw_rep, _mm512_castps128_ps512(_mm_cvtph_ps(dh)));
    const __m512i pos = pick.positions(id + k / 4, half);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const uint8_t* xt = act + static_cast<size_t>(t0 + t) * stride;
      const uint8_t* xq = xt + 2 * k;
      const __m512i x0 = _mm512_loadu_si512(xq);
      const __m512i x1 = half ? zero : _mm512_loadu_si512(xq + 64);
      const __m512i g = pick.gather(x0, x1, pos);
      const __m512i sx = _mm512_mask_sub_epi8(g, neg, zero, g);
      const __m512 isum = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, wabs, sx));
      const float* xd = reinterpret_cast<const float*>(xt + n_in) + k / 16;
      const __m512 dx = _mm512_permutexvar_ps(dx_rep, _mm512_castps128_ps512(_mm_maskz_loadu_ps(half ? 0x3 : 0xF, xd)));
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

// The whole kernel over rows [r0, r1) and all tokens.
template <class Pick>
void q8_gemm_avx512(const Pick& pick, const Sparse24Matrix& w, const uint8_t* act, size_t stride, int64_t n, int64_t r0,
                    int64_t r1, const float* bias, float* y, int64_t ldy) {
  const int64_t m = sparse24_values_per_row(w.n_in);
  sparse24_q8_drive(w, n, r0, r1, bias,
                    [&](auto tn, const uint8_t* v, const uint8_t* id, int64_t t, const float* b, int64_t r) {
                      q8_row_tokens<decltype(tn)::value>(pick, v, id, m, act, stride, w.n_in, t, b, y, ldy, r);
                    });
}

}  // namespace
}  // namespace llmserve
