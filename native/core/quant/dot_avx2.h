// Inline AVX2 pieces shared by the AVX2 kernels (quant/kernels_avx2.cpp) and the attention kernel
// (model/attention_avx2.cpp), so both compute float dots in one order. Include only from files
// compiled with -mavx2 -mfma -mf16c.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace llmserve::avx2 {

inline float hsum_ps(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// sum a[i] * b[i] over [0, n) in the order of ggml's F32/F16 dots on AVX2: four 8-lane
// accumulators over 32-element steps, then 8-element steps into the first, the hsum_ps tree of
// (s0 + s1) + (s2 + s3), then the scalar tail. a8/b8(i): elements i..i+7 as f32; a1/b1(i): one.
// The F16 dot is this over the converted values, so F16 and F32 rows agree after conversion.
// dot_order_vec is the part before the horizontal sum (elements [0, n & ~7)).
template <typename L8A, typename L8B>
inline __m256 dot_order_vec(int64_t n, L8A a8, L8B b8) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(a8(i), b8(i), s0);
    s1 = _mm256_fmadd_ps(a8(i + 8), b8(i + 8), s1);
    s2 = _mm256_fmadd_ps(a8(i + 16), b8(i + 16), s2);
    s3 = _mm256_fmadd_ps(a8(i + 24), b8(i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(a8(i), b8(i), s0);
  return _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
}

template <typename L8A, typename L8B, typename L1A, typename L1B>
inline float dot_order(int64_t n, L8A a8, L8B b8, L1A a1, L1B b1) {
  float s = hsum_ps(dot_order_vec(n, a8, b8));
  for (int64_t i = n & ~int64_t(7); i < n; ++i) s = __builtin_fmaf(a1(i), b1(i), s);
  return s;
}

// Lane i = hsum_ps(v[i]) for 8 vectors at once, with the same additions: hsum_ps(x) is
// ((x0 + x4) + (x2 + x6)) + ((x1 + x5) + (x3 + x7)).
inline __m256 hsum8_ps(const __m256* v) {
  __m256 h[4], q[2];
  for (int i = 0; i < 4; ++i)  // [a0+a4 .. a3+a7 | b0+b4 .. b3+b7] for a = v[2i], b = v[2i+1]
    h[i] = _mm256_add_ps(_mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x20),
                         _mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x31));
  for (int i = 0; i < 2; ++i)  // [(a0+a4)+(a2+a6), (a1+a5)+(a3+a7), c.., c.. | b.., b.., d.., d..]
    q[i] =
        _mm256_add_ps(_mm256_shuffle_ps(h[2 * i], h[2 * i + 1], 0x44), _mm256_shuffle_ps(h[2 * i], h[2 * i + 1], 0xEE));
  // [a, c, e, g | b, d, f, h] totals; then put them in order.
  const __m256 r = _mm256_add_ps(_mm256_shuffle_ps(q[0], q[1], 0x88), _mm256_shuffle_ps(q[0], q[1], 0xDD));
  return _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

inline __m256 dot_f32_vec(int64_t n, const float* a, const float* b) {
  return dot_order_vec(
      n, [a](int64_t i) { return _mm256_loadu_ps(a + i); }, [b](int64_t i) { return _mm256_loadu_ps(b + i); });
}

inline float dot_f32(int64_t n, const float* a, const float* b) {
  return dot_order(
      n, [a](int64_t i) { return _mm256_loadu_ps(a + i); }, [b](int64_t i) { return _mm256_loadu_ps(b + i); },
      [a](int64_t i) { return a[i]; }, [b](int64_t i) { return b[i]; });
}

}  // namespace llmserve::avx2
