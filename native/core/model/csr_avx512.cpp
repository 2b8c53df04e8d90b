// AVX-512 CSR kernels (csr.h; compiled with the AVX-512 flags, called only when the CPU has
// them), bit-identical to csr_gemm_ref (its 8 lanes, fma order and reduction tree): the tiles of 16
// or 32 tokens (1 or 2 zmm per lane, 8 accumulators), and the one-token kernel (its partial last
// step with AVX-512VL masked loads and a masked fma).
#include <immintrin.h>

#include "../quant/quant.h"
#include "csr.h"

namespace llmserve {
namespace {

// V zmm per lane: a tile of T = 16 * V tokens. Each entry's column index and value are read once
// for the whole tile, so the wider tile halves that overhead per multiply-add.
template <int V>
void tile_avx512(const CsrMatrix& w, const float* xt, int64_t nt, int64_t r0, int64_t r1, const float* bias,
                 bool accumulate, float* y, int64_t ldy) {
  constexpr int64_t T = 16 * V;
  alignas(64) float out[kCsrTileRows * T];
  for (int64_t i = r0; i < r1; ++i) {
    const int64_t p0 = w.ptr[i], p1 = w.ptr[i + 1];
    __m512 a[8][V];
    for (auto& l : a)
      for (auto& u : l) u = _mm512_setzero_ps();
    int64_t e = p0;
    alignas(32) float v[8];
    for (; e + 8 <= p1; e += 8) {
      if (w.f32) _mm256_store_ps(v, _mm256_loadu_ps(static_cast<const float*>(w.val) + e));
      else
        _mm256_store_ps(v, _mm256_cvtph_ps(_mm_loadu_si128(
                               reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w.val) + e))));
      const int32_t* c = w.col + e;
      for (int j = 0; j < 8; ++j) {
        const __m512 b = _mm512_set1_ps(v[j]);
        const float* xc = xt + c[j] * T;
        for (int u = 0; u < V; ++u) a[j][u] = _mm512_fmadd_ps(b, _mm512_loadu_ps(xc + 16 * u), a[j][u]);
      }
    }
    for (int j = 0; e < p1; ++e, ++j) {
      const __m512 b = _mm512_set1_ps(csr_value(w, e));
      const float* xc = xt + w.col[e] * T;
      for (int u = 0; u < V; ++u) a[j][u] = _mm512_fmadd_ps(b, _mm512_loadu_ps(xc + 16 * u), a[j][u]);
    }
    float* o = out + ((i - r0) % kCsrTileRows) * T;
    for (int u = 0; u < V; ++u) {
      const __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a[0][u], a[4][u]), _mm512_add_ps(a[2][u], a[6][u])),
                                     _mm512_add_ps(_mm512_add_ps(a[1][u], a[5][u]), _mm512_add_ps(a[3][u], a[7][u])));
      _mm512_store_ps(o + 16 * u, s);
    }
    // Every kCsrTileRows rows (and at the end) the buffered sums go out, each token's rows contiguous.
    const int64_t done = i - r0 + 1;
    if (done % kCsrTileRows == 0 || i + 1 == r1) {
      const int64_t rows = (done - 1) % kCsrTileRows + 1;
      csr_store_tile(out, rows, T, nt, i + 1 - rows, bias, accumulate, y, ldy);
    }
  }
}

}  // namespace

// x: [n_in] -> y[r] for r in [r0, r1): 8 entries per step, their x values loaded one by one by
// column (as csr_gemv_avx2: faster than a gather on Zen 4); the partial last step with masked
// loads (nothing read past the row) and a masked fma (the other lanes keep their accumulator).
void csr_gemv_avx512(const CsrMatrix& w, const float* x, int64_t r0, int64_t r1, const float* bias, bool accumulate,
                     float* y) {
  const auto* v16 = static_cast<const uint16_t*>(w.val);
  const auto* v32 = static_cast<const float*>(w.val);
  for (int64_t i = r0; i < r1; ++i) {
    const int64_t p0 = w.ptr[i], p1 = w.ptr[i + 1];
    __m256 acc = _mm256_setzero_ps();
    int64_t e = p0;
    for (; e + 8 <= p1; e += 8) {
      const int32_t* c = w.col + e;
      const __m256 xs = _mm256_setr_ps(x[c[0]], x[c[1]], x[c[2]], x[c[3]], x[c[4]], x[c[5]], x[c[6]], x[c[7]]);
      const __m256 v = w.f32 ? _mm256_loadu_ps(v32 + e)
                             : _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v16 + e)));
      acc = _mm256_fmadd_ps(v, xs, acc);
    }
    if (e < p1) {
      const __mmask8 m = static_cast<__mmask8>((1u << (p1 - e)) - 1);
      alignas(32) float xx[8] = {};
      for (int64_t j = 0; e + j < p1; ++j) xx[j] = x[w.col[e + j]];
      const __m256 v = w.f32 ? _mm256_maskz_loadu_ps(m, v32 + e) : _mm256_cvtph_ps(_mm_maskz_loadu_epi16(m, v16 + e));
      acc = _mm256_mask3_fmadd_ps(v, _mm256_load_ps(xx), acc, m);
    }
    // ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), as the reference.
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    const float s = _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
    y[i] = accumulate ? y[i] + s : s;
    if (bias) y[i] += bias[i];
  }
}

// xt: [n_in, 16] (16 tokens per column) -> y[j * ldy + r] for j < nt, r in [r0, r1).
void csr_tile16_avx512(const CsrMatrix& w, const float* xt, int64_t nt, int64_t r0, int64_t r1, const float* bias,
                       bool accumulate, float* y, int64_t ldy) {
  tile_avx512<1>(w, xt, nt, r0, r1, bias, accumulate, y, ldy);
}

// xt: [n_in, 32] (32 tokens per column) -> y[j * ldy + r] for j < nt, r in [r0, r1).
void csr_tile32_avx512(const CsrMatrix& w, const float* xt, int64_t nt, int64_t r0, int64_t r1, const float* bias,
                       bool accumulate, float* y, int64_t ldy) {
  tile_avx512<2>(w, xt, nt, r0, r1, bias, accumulate, y, ldy);
}

}  // namespace llmserve
