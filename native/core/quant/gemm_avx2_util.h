// Internal to the AVX2 GEMM files (compiled with -mavx2 -mfma -mf16c): load helpers and the 16-row
// byte transposes the kernels and packers share. Internal linkage: only files built with these
// flags include it.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "quant/gemm_impl.h"

namespace llmserve::quant {
namespace {

inline __m256i bcast32(const uint8_t* p) { return _mm256_set1_epi32(ld32(p)); }
inline __m256 bcastf(const uint8_t* p) { return _mm256_set1_ps(ldf(p)); }
inline __m256i load256(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline void store256(uint8_t* p, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
inline __m256 load_f16x8(const uint8_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
// 8 bytes -> 8 int32
inline __m256i load_u8x8(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
// Keeps v's value in a register at this point of the sequence. GCC's reassociation otherwise turns
// a kernel's chain of integer adds (acc += maddubs(...), in block order) into a tree that computes
// every product of a block first: with 4 tokens that is 32 live ymm products, spilled to the stack
// (the AVX2 Q4_0 GEMM issued ~1 spill per maddubs). Integer sums are exact, so only speed changes.
inline void keep(__m256i& v) {
#if defined(__GNUC__) || defined(__clang__)
  __asm__("" : "+x"(v));
#else
  (void)v;
#endif
}
// acc + per-lane sum of 4 products u8 x s8 (|pair sums| < 2^15 by the callers' ranges)
inline __m256i dot4(__m256i acc, __m256i u, __m256i s) {
  __m256i r = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
  keep(r);
  return r;
}

// The min term of a Q4_K / Q5_K block i (both records keep u8 m[8][16] at byte 192), rows
// 8h..8h+7 of a packed group: summ[t] = sum_j m_j * s32_j, s32 the token's 32-element sums of the
// prepared Q8_K row (gemm_impl.h). A row's mins of sub-blocks 2k and 2k+1 form an int16 pair
// against the pair s32_2k, s32_2k+1: one madd per two mins (|m| <= 63, |s32| <= 4096: exact).
template <int T>
inline void mins_q4_K(const uint8_t* g, int64_t i, int64_t nb, const uint8_t* const* x, int h, __m256i* summ) {
  const size_t xs = kQ8KBlock * static_cast<size_t>(nb) + 16 * static_cast<size_t>(i);
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t) summ[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    const __m256i m = _mm256_or_si256(load_u8x8(g + 192 + 32 * k + 8 * h),
                                      _mm256_slli_epi32(load_u8x8(g + 208 + 32 * k + 8 * h), 16));
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      summ[t] = _mm256_add_epi32(summ[t], _mm256_madd_epi16(m, bcast32(x[t] + xs + 4 * k)));
      keep(summ[t]);
    }
  }
}

// 16 rows x 16 bytes (row r at p + r * rb) -> out[64 * g + 4 * r + k] = row r byte 4g + k.
inline void transpose_16x16(const uint8_t* p, size_t rb, uint8_t* out, __m256i flip) {
  for (int half = 0; half < 2; ++half) {
    const uint8_t* q = p + 8 * half * rb;
    __m256i v[4];
#pragma GCC unroll 8
    for (int j = 0; j < 4; ++j) {
      const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + j * rb));
      const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + (4 + j) * rb));
      v[j] = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
    }
    const __m256i t0 = _mm256_unpacklo_epi32(v[0], v[1]), t1 = _mm256_unpackhi_epi32(v[0], v[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(v[2], v[3]), t3 = _mm256_unpackhi_epi32(v[2], v[3]);
    uint8_t* o = out + 32 * half;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), _mm256_xor_si256(_mm256_unpacklo_epi64(t0, t2), flip));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 64), _mm256_xor_si256(_mm256_unpackhi_epi64(t0, t2), flip));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 128), _mm256_xor_si256(_mm256_unpacklo_epi64(t1, t3), flip));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 192), _mm256_xor_si256(_mm256_unpackhi_epi64(t1, t3), flip));
  }
}

}  // namespace
}  // namespace llmserve::quant
