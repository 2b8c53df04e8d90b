// Internal to the AVX-512 GEMM files (compiled with the AVX-512 flags): load helpers and the 16-row
// byte transposes the kernels and packers share. Internal linkage: only files built with these
// flags include it.
#pragma once
#if defined(__GNUC__) && !defined(__clang__)  // GCC 12's avx512fintrin.h trips these on its own helpers
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "quant/gemm_impl.h"

namespace llmserve::quant {
namespace {

inline __m512i bcast32(const uint8_t* p) { return _mm512_set1_epi32(ld32(p)); }
// Keeps v in a register at this point: GCC's reassociation otherwise turns a kernel's in-order
// chain of integer adds (sumi += ia * sc per sub-block) into a tree over all the sub-blocks' products
// and spills them (the Q6_K GEMM stored ~500 zmm to the stack). Integer sums are exact: same bits.
inline void keep(__m512i& v) {
#if defined(__GNUC__) || defined(__clang__)
  __asm__("" : "+v"(v));
#else
  (void)v;
#endif
}
// acc += w (16 x 4 unsigned bytes) . the 4 signed bytes at p, broadcast by the instruction's own
// {1to16} memory operand: GCC 12 otherwise emits a separate vpbroadcastd per use, and the extra
// broadcast uops and register copies cost the Q4_0 GEMM ~30% at 512 tokens on one Zen 5 core
// (llmserve_bench_kernels: 335 -> 435 GFLOP/s).
inline __m512i dpbusd_bcast(__m512i acc, __m512i w, const uint8_t* p) {
#if defined(__GNUC__) || defined(__clang__)
  __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*reinterpret_cast<const int32_t*>(p)));
  return acc;
#else
  return _mm512_dpbusd_epi32(acc, w, bcast32(p));
#endif
}
inline __m512 bcastf(const uint8_t* p) { return _mm512_set1_ps(ldf(p)); }
inline __m512i load512(const uint8_t* p) { return _mm512_loadu_si512(p); }
inline __m512 load_f16x16(const uint8_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
// 16 bytes -> 16 int32 (zero / sign extended)
inline __m512i load_u8x16(const uint8_t* p) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// The min term of a Q4_K / Q5_K block i (both records keep u8 m[8][16] at byte 192), the 16 rows
// of a packed group: summ[t] = sum_j m_j * s32_j, s32 the token's 32-element sums of the prepared
// Q8_K row (gemm_impl.h). A row's mins of sub-blocks 2k and 2k+1 form an int16 pair against the
// pair s32_2k, s32_2k+1: one vpdpwssd per two mins (|m| <= 63, |s32| <= 4096: exact).
template <int T>
inline void mins_q4_K(const uint8_t* g, int64_t i, int64_t nb, const uint8_t* const* x, __m512i* summ) {
  const size_t xs = kQ8KBlock * static_cast<size_t>(nb) + 16 * static_cast<size_t>(i);
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) summ[t] = _mm512_setzero_si512();
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    const __m512i m =
        _mm512_or_si512(load_u8x16(g + 192 + 32 * k), _mm512_slli_epi32(load_u8x16(g + 208 + 32 * k), 16));
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      summ[t] = _mm512_dpwssd_epi32(summ[t], m, bcast32(x[t] + xs + 4 * k));
      keep(summ[t]);
    }
  }
}

// 16 rows x 16 bytes (row r at p + r * rb) -> out[64 * g + 4 * r + k] = row r byte 4g + k, g < 4.
// Each 128-bit lane L of v[j] holds row 4L + j; a 4x4 dword transpose per lane does the rest.
inline void transpose_16x16(const uint8_t* p, size_t rb, uint8_t* out, __m512i flip) {
  __m512i v[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    __m512i x = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + j * rb)));
    x = _mm512_inserti32x4(x, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + (4 + j) * rb)), 1);
    x = _mm512_inserti32x4(x, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + (8 + j) * rb)), 2);
    x = _mm512_inserti32x4(x, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + (12 + j) * rb)), 3);
    v[j] = x;
  }
  const __m512i t0 = _mm512_unpacklo_epi32(v[0], v[1]), t1 = _mm512_unpackhi_epi32(v[0], v[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(v[2], v[3]), t3 = _mm512_unpackhi_epi32(v[2], v[3]);
  _mm512_storeu_si512(out, _mm512_xor_si512(_mm512_unpacklo_epi64(t0, t2), flip));
  _mm512_storeu_si512(out + 64, _mm512_xor_si512(_mm512_unpackhi_epi64(t0, t2), flip));
  _mm512_storeu_si512(out + 128, _mm512_xor_si512(_mm512_unpacklo_epi64(t1, t3), flip));
  _mm512_storeu_si512(out + 192, _mm512_xor_si512(_mm512_unpackhi_epi64(t1, t3), flip));
}

// The 32-bit words at p + r * rb for the 16 rows.
inline __m512i gather_rows32(const uint8_t* p, size_t rb) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(static_cast<int>(rb)));
  return _mm512_i32gather_epi32(idx, p, 1);
}

}  // namespace
}  // namespace llmserve::quant
