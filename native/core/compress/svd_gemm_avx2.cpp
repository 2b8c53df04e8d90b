// AVX2 tile kernel of svd_gemm.h (compiled with -mavx2 -mfma -mf16c and -ffp-contract=off, so the
// separate multiply and add stay separate: the reference's bits).
#include <immintrin.h>

#include "svd_gemm.h"

namespace llmserve {

// o[i·ldo + c] += s[i]·brow[c]: four output rows share each load of brow.
void svd_axpy_rows_avx2(const double* s, int64_t rows, const double* brow, int64_t cols, double* o, int64_t ldo) {
  int64_t i = 0;
  for (; i + 4 <= rows; i += 4) {
    const __m256d s0 = _mm256_set1_pd(s[i]), s1 = _mm256_set1_pd(s[i + 1]);
    const __m256d s2 = _mm256_set1_pd(s[i + 2]), s3 = _mm256_set1_pd(s[i + 3]);
    double* o0 = o + i * ldo;
    double* o1 = o0 + ldo;
    double* o2 = o1 + ldo;
    double* o3 = o2 + ldo;
    int64_t c = 0;
    for (; c + 4 <= cols; c += 4) {
      const __m256d bv = _mm256_loadu_pd(brow + c);
      _mm256_storeu_pd(o0 + c, _mm256_add_pd(_mm256_loadu_pd(o0 + c), _mm256_mul_pd(s0, bv)));
      _mm256_storeu_pd(o1 + c, _mm256_add_pd(_mm256_loadu_pd(o1 + c), _mm256_mul_pd(s1, bv)));
      _mm256_storeu_pd(o2 + c, _mm256_add_pd(_mm256_loadu_pd(o2 + c), _mm256_mul_pd(s2, bv)));
      _mm256_storeu_pd(o3 + c, _mm256_add_pd(_mm256_loadu_pd(o3 + c), _mm256_mul_pd(s3, bv)));
    }
    for (; c < cols; ++c) {
      o0[c] += s[i] * brow[c];
      o1[c] += s[i + 1] * brow[c];
      o2[c] += s[i + 2] * brow[c];
      o3[c] += s[i + 3] * brow[c];
    }
  }
  for (; i < rows; ++i) {
    const __m256d si = _mm256_set1_pd(s[i]);
    double* oi = o + i * ldo;
    int64_t c = 0;
    for (; c + 4 <= cols; c += 4)
      _mm256_storeu_pd(oi + c, _mm256_add_pd(_mm256_loadu_pd(oi + c), _mm256_mul_pd(si, _mm256_loadu_pd(brow + c))));
    for (; c < cols; ++c) oi[c] += s[i] * brow[c];
  }
}

}  // namespace llmserve
