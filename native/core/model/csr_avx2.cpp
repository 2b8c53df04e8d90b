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

// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) in registers: the reference's tree.
inline float reduce8(__m256 a) {
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));  // l0+l4, l1+l5, ..
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));  // (l0+l4)+(l2+l6), (l1+l5)+(l3+l7)
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

}  // namespace

// x: [n_in] -> y[r] for r in [r0, r1). Per row: 8 entries per step, their x values loaded one
// by one by column (8 scalar loads and inserts: on AMD Zen 4 3.7x faster than vgatherdps, which is
// microcoded there, and no slower elsewhere at these sizes); the partial last step is masked (the
// masked lanes keep their accumulator unchanged).
void csr_gemv_avx2(const CsrMatrix& w, const float* x, int64_t r0, int64_t r1, const float* bias, bool accumulate,
                   float* y) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t i = r0; i < r1; ++i) {
    const int64_t p0 = w.ptr[i], p1 = w.ptr[i + 1];
    __m256 acc = _mm256_setzero_ps();
    int64_t e = p0;
    for (; e + 8 <= p1; e += 8) {
      const int32_t* c = w.col + e;
      const __m256 xs = _mm256_setr_ps(x[c[0]], x[c[1]], x[c[2]], x[c[3]], x[c[4]], x[c[5]], x[c[6]], x[c[7]]);
      acc = _mm256_fmadd_ps(load8(w, e), xs, acc);
    }
    if (e < p1) {
      const int rem = static_cast<int>(p1 - e);
      alignas(32) float xx[8] = {}, vv[8] = {};
      for (int j = 0; j < rem; ++j) xx[j] = x[w.col[e + j]], vv[j] = csr_value(w, e + j);
      const __m256 m = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(rem), lane));
      acc = _mm256_blendv_ps(acc, _mm256_fmadd_ps(_mm256_load_ps(vv), _mm256_load_ps(xx), acc), m);
    }
    const float s = reduce8(acc);
    y[i] = accumulate ? y[i] + s : s;
    if (bias) y[i] += bias[i];
  }
}

// xt: [n_in, 8] (8 tokens per column) -> y[j * ldy + r]. Per entry: its value broadcast, the 8
// tokens' x values at its column in one load, one fma into the accumulator of its lane.
void csr_tile8_avx2(const CsrMatrix& w, const float* xt, int64_t nt, int64_t r0, int64_t r1, const float* bias,
                    bool accumulate, float* y, int64_t ldy) {
  alignas(32) float out[kCsrTileRows * 8];
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
    _mm256_store_ps(out + ((i - r0) % kCsrTileRows) * 8, s);
    // Every kCsrTileRows rows (and at the end) the buffered sums go out, each token's rows contiguous.
    const int64_t done = i - r0 + 1;
    if (done % kCsrTileRows == 0 || i + 1 == r1) {
      const int64_t rows = (done - 1) % kCsrTileRows + 1;
      csr_store_tile(out, rows, 8, nt, i + 1 - rows, bias, accumulate, y, ldy);
    }
  }
}

}  // namespace llmserve
