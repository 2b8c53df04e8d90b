// AVX2 CSR kernels (csr.h; compiled with the AVX2 flags, called only when the CPU has them). Both
// keep csr_gemm_ref's 8 lanes (entry j of a row in lane j % 8, fma in order, the same reduction
// tree), so they are bit-identical to it.
#include <immintrin.h>

#include "../quant/quant.h"
#include "csr.h"

namespace llmserve {
namespace {

// Entries [e, e + 8) of w as 8 f32 (f16 -> f32 is exact).
inline __m256 load8(const CsrMatrix& w, int64_t e) {
  if (w.f32) return _mm256_loadu_ps(static_cast<const float*>(w.val) + e);
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w.val) + e)));
}

inline float reduce8(const float* l) { return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])); }

}  // namespace

// x: [n_in] -> y[r] for r in [r0, r1). Per row: 8 entries per step, their x values gathered by
// column; the partial last step is masked (the masked lanes keep their accumulator unchanged).
void csr_gemv_avx2(const CsrMatrix& w, const float* x, int64_t r0, int64_t r1, const float* bias, bool accumulate,
                   float* y) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t i = r0; i < r1; ++i) {
    const int64_t p0 = w.ptr[i], p1 = w.ptr[i + 1];
    __m256 acc = _mm256_setzero_ps();
    int64_t e = p0;
    for (; e + 8 <= p1; e += 8) {
      const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.col + e));
      acc = _mm256_fmadd_ps(load8(w, e), _mm256_i32gather_ps(x, c, 4), acc);
    }
    if (e < p1) {
      const int rem = static_cast<int>(p1 - e);
      alignas(32) int32_t c[8] = {};
      alignas(32) float v[8] = {};
      for (int j = 0; j < rem; ++j) c[j] = w.col[e + j], v[j] = csr_value(w, e + j);
      const __m256 m = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(rem), lane));
      const __m256 xs = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), x,
                                                 _mm256_load_si256(reinterpret_cast<const __m256i*>(c)), m, 4);
      acc = _mm256_blendv_ps(acc, _mm256_fmadd_ps(_mm256_load_ps(v), xs, acc), m);
    }
    alignas(32) float l[8];
    _mm256_store_ps(l, acc);
    const float s = reduce8(l);
    y[i] = accumulate ? y[i] + s : s;
    if (bias) y[i] += bias[i];
  }
}

// xt: [n_in, 8] (8 tokens per column) -> y[j * ldy + r]. Per entry: its value broadcast, the 8
// tokens' x values at its column in one load, one fma into the accumulator of its lane.
void csr_tile8_avx2(const CsrMatrix& w, const float* xt, int64_t nt, int64_t r0, int64_t r1, const float* bias,
                    bool accumulate, float* y, int64_t ldy) {
  for (int64_t i = r0; i < r1; ++i) {
    const int64_t p0 = w.ptr[i], p1 = w.ptr[i + 1];
    __m256 a[8];
    for (auto& v : a) v = _mm256_setzero_ps();
    int64_t e = p0;
    alignas(32) float v[8];
    for (; e + 8 <= p1; e += 8) {
      _mm256_store_ps(v, load8(w, e));
      const int32_t* c = w.col + e;
      for (int j = 0; j < 8; ++j) a[j] = _mm256_fmadd_ps(_mm256_set1_ps(v[j]), _mm256_loadu_ps(xt + c[j] * 8), a[j]);
    }
    for (int j = 0; e < p1; ++e, ++j)
      a[j] = _mm256_fmadd_ps(_mm256_set1_ps(csr_value(w, e)), _mm256_loadu_ps(xt + w.col[e] * 8), a[j]);
    const __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a[0], a[4]), _mm256_add_ps(a[2], a[6])),
                                   _mm256_add_ps(_mm256_add_ps(a[1], a[5]), _mm256_add_ps(a[3], a[7])));
    alignas(32) float out[8];
    _mm256_store_ps(out, s);
    for (int64_t j = 0; j < nt; ++j) {
      float& o = y[j * ldy + i];
      o = accumulate ? o + out[j] : out[j];
      if (bias) o += bias[i];
    }
  }
}

}  // namespace llmserve
