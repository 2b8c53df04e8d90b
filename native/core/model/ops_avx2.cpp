// AVX2 + FMA versions of small elementwise ops from ops.cpp (compiled with -mavx2 -mfma -mf16c;
// called only after ops.cpp checked the CPU). Bit-identical to their scalar references.
#include <immintrin.h>

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

}  // namespace llmserve
