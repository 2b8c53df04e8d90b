// AVX-512 CSR tile kernel (csr.h; compiled with the AVX-512 flags, called only when the CPU has
// them): 16 tokens per zmm, 8 accumulators (csr_gemm_ref's 8 lanes), so the result is
// bit-identical to the reference. One token at a time (decode) uses csr_gemv_avx2 on this tier too.
#include <immintrin.h>

#include "../quant/quant.h"
#include "csr.h"

namespace llmserve {

// xt: [n_in, 16] (16 tokens per column) -> y[j * ldy + r] for j < nt, r in [r0, r1).
void csr_tile16_avx512(const CsrMatrix& w, const float* xt, int64_t nt, int64_t r0, int64_t r1, const float* bias,
                       bool accumulate, float* y, int64_t ldy) {
  for (int64_t i = r0; i < r1; ++i) {
    const int64_t p0 = w.ptr[i], p1 = w.ptr[i + 1];
    __m512 a[8];
    for (auto& v : a) v = _mm512_setzero_ps();
    int64_t e = p0;
    alignas(32) float v[8];
    for (; e + 8 <= p1; e += 8) {
      if (w.f32) _mm256_store_ps(v, _mm256_loadu_ps(static_cast<const float*>(w.val) + e));
      else
        _mm256_store_ps(v, _mm256_cvtph_ps(_mm_loadu_si128(
                               reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w.val) + e))));
      const int32_t* c = w.col + e;
      for (int j = 0; j < 8; ++j) a[j] = _mm512_fmadd_ps(_mm512_set1_ps(v[j]), _mm512_loadu_ps(xt + c[j] * 16), a[j]);
    }
    for (int j = 0; e < p1; ++e, ++j)
      a[j] = _mm512_fmadd_ps(_mm512_set1_ps(csr_value(w, e)), _mm512_loadu_ps(xt + w.col[e] * 16), a[j]);
    const __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[4]), _mm512_add_ps(a[2], a[6])),
                                   _mm512_add_ps(_mm512_add_ps(a[1], a[5]), _mm512_add_ps(a[3], a[7])));
    alignas(64) float out[16];
    _mm512_store_ps(out, s);
    for (int64_t j = 0; j < nt; ++j) {
      float& o = y[j * ldy + i];
      o = accumulate ? o + out[j] : out[j];
      if (bias) o += bias[i];
    }
  }
}

}  // namespace llmserve
