// Float-weight GEMM (F32, F16, BF16 weights x f32 activations) for one SIMD width, shared by
// gemm_avx2.cpp and gemm_avx512.cpp; include only from those (internal linkage: each file gets its
// own copy compiled for its ISA).
//
// V (the ISA): using reg; kLanes; kTokens (tokens per tile, <= 4); zero(); loadx(p) / loadx_tail(p,
// count) (f32 activations; the tail reads count < kLanes elements, the rest zero); fma(w, x, acc) =
// w * x + acc fused; hsum(reg) (a fixed reduction tree).
// W (the weight type, for that ISA): load(p, k) / tail(p, k, count): kLanes weights from element k
// of the row at p, as f32.
// Per (row, token): one kLanes-wide accumulator over k in steps of kLanes, then hsum (+ bias): the
// order is fixed per output, whatever tile the pair falls into (batch invariance).
#pragma once
#include <algorithm>
#include <cstdint>

#include "quant/gemm.h"

namespace llmserve::quant {
namespace {

// R rows (row r at w + r * rb) x T tokens (f32 rows x[t]) over K -> y[t * ldy + r].
template <class V, class W, int R, int T>
void float_tile(const uint8_t* w, size_t rb, const float* const* x, int64_t K, float* y, int64_t ldy,
                const float* bias) {
  using reg = typename V::reg;
  constexpr int L = V::kLanes;
  reg acc[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) acc[r][t] = V::zero();
  int64_t k = 0;
  for (; k + L <= K; k += L) {
    reg wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) wv[r] = W::load(w + r * rb, k);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const reg xv = V::loadx(x[t] + k);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][t] = V::fma(wv[r], xv, acc[r][t]);
    }
  }
  if (k < K) {
    const int count = static_cast<int>(K - k);
    reg wv[R];
    for (int r = 0; r < R; ++r) wv[r] = W::tail(w + r * rb, k, count);
    for (int t = 0; t < T; ++t) {
      const reg xv = V::loadx_tail(x[t] + k, count);
      for (int r = 0; r < R; ++r) acc[r][t] = V::fma(wv[r], xv, acc[r][t]);
    }
  }
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) {
      float v = V::hsum(acc[r][t]);
      if (bias) v += bias[r];
      y[t * ldy + r] = v;
    }
}

template <class V, class W, int R>
void float_rows(const GemmArgs& a, int64_t r) {
  constexpr int kT = V::kTokens;
  static_assert(kT >= 1 && kT <= 4, "tiles of 1..4 tokens");
  const uint8_t* w = a.w + r * a.row_bytes;
  const float* bias = a.bias ? a.bias + r : nullptr;
  for (int64_t t0 = 0; t0 < a.n; t0 += kT) {
    const int T = static_cast<int>(std::min<int64_t>(kT, a.n - t0));
    const float* x[kT];
    for (int t = 0; t < T; ++t) x[t] = reinterpret_cast<const float*>(a.act + (t0 + t) * a.act_stride);
    float* y = a.y + t0 * a.ldy + r;
    switch (T) {
      case 1: float_tile<V, W, R, 1>(w, a.row_bytes, x, a.n_in, y, a.ldy, bias); break;
      case 2: float_tile<V, W, R, (kT >= 2 ? 2 : 1)>(w, a.row_bytes, x, a.n_in, y, a.ldy, bias); break;
      case 3: float_tile<V, W, R, (kT >= 3 ? 3 : 1)>(w, a.row_bytes, x, a.n_in, y, a.ldy, bias); break;
      default: float_tile<V, W, R, kT>(w, a.row_bytes, x, a.n_in, y, a.ldy, bias); break;
    }
  }
}

template <class V, class W>
void gemm_float(const GemmArgs& a) {
  int64_t r = a.r0;
  // One token is memory-bound: one row at a time keeps each thread's reads a single sequential
  // stream (several interleaved row streams defeat the hardware prefetchers: ~15 vs ~24 GB/s).
  if (a.n > 1)
    for (; r + 4 <= a.r1; r += 4) float_rows<V, W, 4>(a, r);
  for (; r < a.r1; ++r) float_rows<V, W, 1>(a, r);
}

}  // namespace
}  // namespace llmserve::quant
