// The tiled attention_group driver shared by the AVX2 and AVX-512 kernels (include only from
// attention_avx2.cpp and attention_avx512.cpp, which pass their vector pieces as Ops). Bit-identical
// to attention_group_ref: per row (token, query head) and element the same operations in the same
// order, only scheduled differently:
//   - positions go in tiles of kAttnTile; a tile's K and V rows are read (converted to f32 once
//     for f16, V dequantized once for q8_0) and then used by every row of the call: all query
//     heads of the KV head, for each of the call's tokens (a prefill chunk's consecutive tokens);
//   - a row's softmax factors for its part of the tile come from one 8-lane fast_exp per 8
//     scores (the running max is a scalar scan first, so every argument is the one the
//     sequential loop would use);
//   - each row's accumulator walks the tile in registers (Ops::accumulate), rounding to f16 after
//     each step with an f16 cache, as ggml's f16 VKQ accumulator.
// Multiplying by ms = 1 (no new maximum) and rounding an f16 value to f16 are exact identities, so
// a tile without a new maximum skips the rescale without changing any bit.
//
// Ops provides (vector code of its instruction set):
//   scores(qh, krow, n, scale, hd, out): out[jj] = avx2::dot_order(K row krow[jj], qh) * scale for
//     jj in [0, n), written 8 at a time (out has room for n rounded up to 8);
//   accumulate<F16, RESCALE>(acc, vrow, ms, vs, n, hd): for jj in [0, n) and every element d,
//     acc[d] = R(acc[d] * ms[jj]) (if RESCALE), acc[d] = R(fma(vrow[jj][d], vs[jj], acc[d])),
//     R rounding to f16 when F16.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../math/fast_exp_avx2.h"
#include "../quant/quant.h"
#include "attention.h"

namespace llmserve {
namespace {

template <class Ops>
void attention_group_tiled(const AttnGroup& a) {
  constexpr int64_t T = kAttnTile;
  static_assert(T % 8 == 0, "tile must be whole vectors");
  const int64_t nq = a.n_q, hd = a.hd, hdp = (hd + 15) / 16 * 16, rows = a.n_tok * nq;
  const GgmlType type = a.kv_type;
  float* sc = a.work;            // [T + 16] scores of one row
  float* msv = sc + T + 16;      // [T]
  float* vsv = msv + T;          // [T]
  float* acc = vsv + T;          // [rows][hdp]
  float* vt = acc + rows * hdp;  // [T][hdp] V rows as f32 (f16, q8_0)
  float* kt = vt + T * hdp;      // [T][hdp] K rows as f32 (f16)
  float* qf = kt + T * hdp;      // [rows][hdp] queries as f32 (f16)
  // An F16 dot is avx2::dot_order over the converted values, so converting K and q once and
  // running the F32 dot gives vec_dot(F16)'s bits. (vec_dot_ref's order differs; the dispatcher
  // never pairs these kernels with the scalar dots.)
  const bool k_f16 = type == GgmlType::F16, k_f32 = type == GgmlType::F32;
  if (k_f16)
    for (int64_t r = 0; r < rows; ++r) dequantize_row(GgmlType::F16, a.q + r * a.q_stride, qf + r * hdp, hd);
  float M[kMaxAttnGroup], S[kMaxAttnGroup];
  for (int64_t r = 0; r < rows; ++r) {
    M[r] = -INFINITY, S[r] = 0.0f;
    std::memset(acc + r * hdp, 0, static_cast<size_t>(hd) * 4);
  }
  const float* vrow[T];
  const float* krow[T];
  const uint8_t* kraw[T];
  alignas(32) float arg[T];
  alignas(32) uint8_t fresh[T];
  // Positions any row attends: from the first token's first to the last token's own.
  const int64_t first = a.row_begin(0), last = a.len + a.n_tok - 1;
  for (int64_t j0 = first; j0 < last; j0 += T) {
    const int64_t jn = std::min(T, last - j0);
    for (int64_t jj = 0; jj < jn; ++jj) {
      const size_t off = attn_row_offset(a, j0 + jj);
      kraw[jj] = a.k + off;
      if (k_f16) {
        dequantize_row(GgmlType::F16, kraw[jj], kt + jj * hdp, hd);
        krow[jj] = kt + jj * hdp;
      } else if (k_f32) {
        krow[jj] = reinterpret_cast<const float*>(kraw[jj]);
      }
      if (k_f32) {
        vrow[jj] = reinterpret_cast<const float*>(a.v + off);
      } else {
        dequantize_row(type, a.v + off, vt + jj * hdp, hd);
        vrow[jj] = vt + jj * hdp;
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = r / nq;
      // This row's positions within the tile: [lo, hi).
      const int64_t lo = std::max(j0, a.row_begin(i)) - j0, hi = std::min(j0 + jn, a.len + i) - j0;
      if (lo >= hi) continue;
      const int64_t n = hi - lo;
      if (k_f16 || k_f32) {
        const float* qh = k_f16 ? qf + r * hdp : reinterpret_cast<const float*>(a.q + r * a.q_stride);
        Ops::scores(qh, krow + lo, n, a.scale, hd, sc);
      } else {
        for (int64_t jj = 0; jj < n; ++jj) sc[jj] = vec_dot(type, hd, kraw[lo + jj], a.q + r * a.q_stride) * a.scale;
      }
      if (a.softcap != 0.0f)  // ggml: s = softcap * tanhf(s * scale / softcap), per score
        for (int64_t jj = 0; jj < n; ++jj) sc[jj] = a.softcap * tanhf(sc[jj]);
      // Running max over the row's part of the tile: the exp argument of each step, and whether
      // it rescales.
      float Mr = M[r];
      bool any = false;
      for (int64_t jj = 0; jj < n; ++jj) {  // branch-free: Mold - s is exactly -(s - Mold)
        const float sj = sc[jj], dlt = sj - Mr;
        const bool f = sj > Mr;
        arg[jj] = f ? -dlt : dlt;
        fresh[jj] = f;
        any |= f;
        Mr = f ? sj : Mr;
      }
      for (int64_t jj = n; jj < T; ++jj) arg[jj] = 0.0f;
      M[r] = Mr;
      for (int64_t jj = 0; jj < n; jj += 8) _mm256_storeu_ps(vsv + jj, exp8(_mm256_load_ps(arg + jj)));
      float Sr = S[r];
      for (int64_t jj = 0; jj < n; ++jj) {
        const float e = vsv[jj];
        msv[jj] = fresh[jj] ? e : 1.0f;
        vsv[jj] = fresh[jj] ? 1.0f : e;
        Sr = __builtin_fmaf(Sr, msv[jj], vsv[jj]);
      }
      S[r] = Sr;
      float* ar = acc + r * hdp;
      const float* const* vr = vrow + lo;
      if (k_f16) {
        if (any) Ops::template accumulate<true, true>(ar, vr, msv, vsv, n, hd);
        else Ops::template accumulate<true, false>(ar, vr, msv, vsv, n, hd);
      } else {
        if (any) Ops::template accumulate<false, true>(ar, vr, msv, vsv, n, hd);
        else Ops::template accumulate<false, false>(ar, vr, msv, vsv, n, hd);
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float S_inv = S[r] == 0.0f ? 0.0f : 1.0f / S[r];
    const float* ar = acc + r * hdp;
    float* out = a.out + (r / nq) * a.out_tok_stride + (r % nq) * a.out_stride;
    for (int64_t d = 0; d < hd; ++d) out[d] = ar[d] * S_inv;
  }
}

}  // namespace
}  // namespace llmserve
