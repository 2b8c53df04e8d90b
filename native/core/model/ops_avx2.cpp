// AVX2 + FMA versions of small elementwise ops from ops.cpp (compiled with -mavx2 -mfma -mf16c;
// called only after ops.cpp checked the CPU). Bit-identical to their scalar references.
#include <immintrin.h>

#include <cmath>

#include "../math/fast_exp_avx2.h"
#include "ops.h"

namespace llmserve {

// g, u: [count]; g <- (g / (1 + exp(-g))) * u, 8 lanes at a time (IEEE division, as the reference).
void swiglu_f32_avx2(float* g, const float* u, int64_t count) {
  const __m256 one = _mm256_set1_ps(1.0f), neg = _mm256_set1_ps(-0.0f);
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m256 x = _mm256_loadu_ps(g + i);
    const __m256 s = _mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_xor_ps(x, neg))));
    _mm256_storeu_ps(g + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
  }
  if (i < count) swiglu_f32_ref(g + i, u + i, count - i);
}

// 4 rows of x at x + r * d (r < 4), their elements [i, i + 4) squared in float, returned as
// column c -> double lanes (lane r = row r's square of element i + c).
namespace {
inline void squares4x4(const float* x, int64_t d, int64_t i, __m256d out[4]) {
  __m128 r0 = _mm_loadu_ps(x + i), r1 = _mm_loadu_ps(x + d + i);
  __m128 r2 = _mm_loadu_ps(x + 2 * d + i), r3 = _mm_loadu_ps(x + 3 * d + i);
  _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
  out[0] = _mm256_cvtps_pd(_mm_mul_ps(r0, r0));
  out[1] = _mm256_cvtps_pd(_mm_mul_ps(r1, r1));
  out[2] = _mm256_cvtps_pd(_mm_mul_ps(r2, r2));
  out[3] = _mm256_cvtps_pd(_mm_mul_ps(r3, r3));
}

// y[r] = (x[r] * scale[r]) * w for one row, 8 lanes at a time (elementwise: the reference's bits).
inline void scale_row(const float* x, const float* w, float* y, int64_t d, float scale) {
  const __m256 s = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 8 <= d; i += 8)
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), s), _mm256_loadu_ps(w + i)));
  for (; i < d; ++i) y[i] = (x[i] * scale) * w[i];
}
}  // namespace

// x: [n, d] -> y: [n, d], ggml's rms_norm + mul. A row's sum of squares is a serial chain of double
// additions (ggml_float), one add latency per element: with d = 128 (Qwen3's per-head norms) or
// 2048 the scalar loop was latency-bound. Here 8 rows run side by side, one double lane per row
// (two 4-lane chains), each lane adding its row's squares in the reference's order, so every sum,
// mean and scale is the reference's bit for bit. Rows left over (< 4) and d % 4 go the scalar way.
void rms_norm_f32_avx2(const float* x, const float* w, float* y, int64_t n, int64_t d, float eps) {
  int64_t t = 0;
  const int64_t d4 = d / 4 * 4;
  for (; t + 4 <= n; t += 4) {
    const bool eight = t + 8 <= n;
    const float* xa = x + t * d;
    const float* xb = xa + 4 * d;
    __m256d sa = _mm256_setzero_pd(), sb = _mm256_setzero_pd();
    for (int64_t i = 0; i < d4; i += 4) {
      __m256d qa[4], qb[4];
      squares4x4(xa, d, i, qa);
      if (eight) squares4x4(xb, d, i, qb);
      for (int c = 0; c < 4; ++c) {
        sa = _mm256_add_pd(sa, qa[c]);
        if (eight) sb = _mm256_add_pd(sb, qb[c]);
      }
    }
    alignas(32) double sums[8];
    _mm256_store_pd(sums, sa);
    _mm256_store_pd(sums + 4, sb);
    const int rows = eight ? 8 : 4;
    for (int r = 0; r < rows; ++r) {
      const float* xr = xa + r * d;
      double sum = sums[r];
      for (int64_t i = d4; i < d; ++i) sum += static_cast<double>(xr[i] * xr[i]);
      const float mean = static_cast<float>(sum / static_cast<double>(d));
      scale_row(xr, w, y + (t + r) * d, d, 1.0f / sqrtf(mean + eps));
    }
    if (eight) t += 4;
  }
  if (t < n) rms_norm_f32_ref(x + t * d, w, y + t * d, n - t, d, eps);
}

}  // namespace llmserve
