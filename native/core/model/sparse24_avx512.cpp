// AVX-512 2:4 sparse GEMM (sparse24.h; compiled with the AVX-512 flags, called only when the CPU
// has them). Per step 16 kept values = 32 input columns in two zmm loads, each kept value's column
// picked with one two-source permute (vpermt2ps); the reference's 16 lanes are the zmm's lanes, so
// the result is bit-identical to sparse24_gemm_ref.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "../quant/quant.h"
#include "sparse24.h"

namespace llmserve {

void sparse24_gemm_avx512(const Sparse24Matrix& w, const float* x, int64_t n, int64_t r0, int64_t r1, const float* bias,
                          float* y, int64_t ldy) {
  const int64_t m = sparse24_values_per_row(w.n_in), ib = sparse24_index_bytes_per_row(w.n_in);
  const int64_t m16 = m / 16 * 16;
  const __m512i shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
  const __m512i three = _mm512_set1_epi32(3);
  // maskz with a full mask: the plain srlv / cvtph intrinsics trip GCC 12's -Wmaybe-uninitialized.
  for (int64_t r = r0; r < r1; ++r) {
    const uint16_t* v = w.vals + r * m;
    const uint8_t* id = w.idx + r * ib;
    for (int64_t t = 0; t < n; ++t) {
      const float* xt = x + t * w.n_in;
      __m512 a = _mm512_setzero_ps();
      for (int64_t k = 0; k < m16; k += 16) {
        uint32_t bits;
        std::memcpy(&bits, id + k / 4, 4);
        const __m512i bits16 = _mm512_set1_epi32(static_cast<int>(bits));
        const __m512i in_group = _mm512_and_si512(_mm512_maskz_srlv_epi32(0xFFFF, bits16, shifts), three);
        const __m512i pos = _mm512_add_epi32(in_group, base);
        const float* xc = xt + 2 * k;
        const __m512 xs = _mm512_permutex2var_ps(_mm512_loadu_ps(xc), pos, _mm512_loadu_ps(xc + 16));
        const __m512 vs = _mm512_maskz_cvtph_ps(0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + k)));
        a = _mm512_fmadd_ps(vs, xs, a);
      }
      alignas(64) float s[16];
      _mm512_store_ps(s, a);
      for (int64_t k = m16; k < m; ++k) {
        const int64_t col = 4 * (k / 2) + ((id[k / 4] >> (2 * (k % 4))) & 3);
        s[k % 16] = std::fma(fp16_to_fp32(v[k]), xt[col], s[k % 16]);
      }
      for (int l = 0; l < 8; ++l) s[l] += s[l + 8];
      float acc = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
      if (bias) acc += bias[r];
      y[t * ldy + r] = acc;
    }
  }
}

}  // namespace llmserve
