// The tiled attention_group driver shared by the AVX2 and AVX-512 kernels (include only from
// attention_avx2.cpp and attention_avx512.cpp, which pass their vector pieces as Ops). Bit-identical
// to attention_group_ref: per row (token, query head) and element the same operations in the same
// order, only scheduled differently:
//   - positions go in tiles of kAttnTile; a tile's K and V rows are read (converted to f32 once
//     for f16, V dequantized once for q8_0) and then used by every row of the call: all query
//     heads of the KV head, for each of the call's tokens (a prefill chunk's consecutive tokens);
//   - the rows that attend the same part of a tile (a token's query heads; tokens whose ends lie
//     past the tile) go together: their online-softmax steps run 8 rows per vector, one lane per
//     row, each lane the sequential loop's steps in order (softmax_steps8), so every exp argument,
//     maximum and sum is the reference's;
//   - their accumulators walk the tile in registers side by side (Ops::accumulate: 2-4 rows, so
//     12-16 independent chains), rounding to f16 after each step with an f16 cache, as ggml's f16
//     VKQ accumulator; the rows that saw a new maximum in the tile rescale, the others do not.
// Multiplying by ms = 1 (no new maximum) and rounding an f16 value to f16 are exact identities, so
// a tile without a new maximum skips the rescale without changing any bit.
//
// Ops provides (vector code of its instruction set):
//   f16_to_f32(src, dst, n): n f16 values to f32;
//   scores(qh, krow, n, scale, hd, out): out[jj] = avx2::dot_order(K row krow[jj], qh) * scale for
//     jj in [0, n), written 8 at a time (out has room for n rounded up to 8);
//   accumulate<F16, RESCALE>(acc, nr, vrow, ms, vs, n, hd): for each of nr rows r, jj in [0, n)
//     and every element d, acc[r][d] = R(acc[r][d] * ms[r][jj]) (if RESCALE),
//     acc[r][d] = R(fma(vrow[jj][d], vs[r][jj], acc[r][d])), R rounding to f16 when F16. The rows
//     share the V rows, so several rows' chains run side by side.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../math/fast_exp_avx2.h"
#include "../quant/quant.h"
#include "attention.h"

namespace llmserve {
namespace {

// 8x8 transpose: t[u] lane l <- t[l] lane u.
inline void transpose8(__m256* t) {
  __m256 a[8], b[8];
  for (int i = 0; i < 4; ++i) {
    a[2 * i] = _mm256_unpacklo_ps(t[2 * i], t[2 * i + 1]);
    a[2 * i + 1] = _mm256_unpackhi_ps(t[2 * i], t[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    b[4 * i + 0] = _mm256_shuffle_ps(a[4 * i], a[4 * i + 2], 0x44);
    b[4 * i + 1] = _mm256_shuffle_ps(a[4 * i], a[4 * i + 2], 0xEE);
    b[4 * i + 2] = _mm256_shuffle_ps(a[4 * i + 1], a[4 * i + 3], 0x44);
    b[4 * i + 3] = _mm256_shuffle_ps(a[4 * i + 1], a[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm256_permute2f128_ps(b[i], b[i + 4], 0x20);
    t[i + 4] = _mm256_permute2f128_ps(b[i], b[i + 4], 0x31);
  }
}

// The online-softmax steps of up to 8 rows (lanes) over the n positions of their shared part of a
// tile: lane l is row r0 + l, with its n scores at sc + l * T. Each lane runs the reference's
// scalar steps in order (s > M: ms = exp(Mold - s), M = s, vs = 1; else ms = 1, vs = exp(s - M);
// S = fma(S, ms, vs)), computed for 8 rows at once; the factors go to msT / vsT [n][8], M and S
// back for the k real lanes, and the lanes that saw a new maximum set their bits in the result.
inline unsigned softmax_steps8(const float* sc, int k, int64_t n, float* M, float* S, float* msT, float* vsT) {
  constexpr int64_t T = kAttnTile;
  const float* srow[8];
  for (int l = 0; l < 8; ++l) srow[l] = sc + std::min(l, k - 1) * T;  // padding lanes repeat a row
  const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256 Mv = _mm256_maskload_ps(M, keep), Sv = _mm256_maskload_ps(S, keep), anyv = _mm256_setzero_ps();
  const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
  for (int64_t jb = 0; jb < n; jb += 8) {
    __m256 t[8];
    for (int l = 0; l < 8; ++l) t[l] = _mm256_loadu_ps(srow[l] + jb);
    transpose8(t);
    const int64_t m = std::min<int64_t>(8, n - jb);
    for (int64_t u = 0; u < m; ++u) {
      const __m256 sv = t[u], dlt = _mm256_sub_ps(sv, Mv);
      const __m256 f = _mm256_cmp_ps(sv, Mv, _CMP_GT_OQ);
      // Mold - s is exactly -(s - Mold).
      const __m256 e = exp8(_mm256_blendv_ps(dlt, _mm256_xor_ps(dlt, sign), f));
      Mv = _mm256_blendv_ps(Mv, sv, f);
      const __m256 ms = _mm256_blendv_ps(one, e, f), vs = _mm256_blendv_ps(e, one, f);
      Sv = _mm256_fmadd_ps(Sv, ms, vs);
      _mm256_storeu_ps(msT + (jb + u) * 8, ms);
      _mm256_storeu_ps(vsT + (jb + u) * 8, vs);
      anyv = _mm256_or_ps(anyv, f);
    }
  }
  _mm256_maskstore_ps(M, keep, Mv);
  _mm256_maskstore_ps(S, keep, Sv);
  return static_cast<unsigned>(_mm256_movemask_ps(anyv)) & ((1u << k) - 1);
}

template <class Ops>
void attention_group_tiled(const AttnGroup& a) {
  constexpr int64_t T = kAttnTile;
  static_assert(T % 8 == 0, "tile must be whole vectors");
  const int64_t nq = a.n_q, hd = a.hd, hdp = (hd + 15) / 16 * 16, rows = a.n_tok * nq, rows8 = (rows + 7) / 8 * 8;
  const GgmlType type = a.kv_type;
  float* sc = a.work;            // [rows][T] scores
  float* msv = sc + rows * T;    // [rows8 / 8][T][8] rescale factors, 8 rows interleaved
  float* vsv = msv + rows8 * T;  // [rows8 / 8][T][8] V weights, the same
  float* acc = vsv + rows8 * T;  // [rows][hdp]
  float* vt = acc + rows * hdp;  // [T][hdp] V rows as f32 (f16, q8_0)
  float* kt = vt + T * hdp;      // [T][hdp] K rows as f32 (f16)
  float* qf = kt + T * hdp;      // [rows][hdp] queries as f32 (f16)
  // An F16 dot is avx2::dot_order over the converted values, so converting K and q once and
  // running the F32 dot gives vec_dot(F16)'s bits. (vec_dot_ref's order differs; the dispatcher
  // never pairs these kernels with the scalar dots.)
  const bool k_f16 = type == GgmlType::F16, k_f32 = type == GgmlType::F32;
  if (k_f16)
    for (int64_t r = 0; r < rows; ++r) Ops::f16_to_f32(a.q + r * a.q_stride, qf + r * hdp, hd);
  float M[kMaxAttnGroup], S[kMaxAttnGroup];
  for (int64_t r = 0; r < rows; ++r) {
    M[r] = -INFINITY, S[r] = 0.0f;
    std::memset(acc + r * hdp, 0, static_cast<size_t>(hd) * 4);
  }
  const float* vrow[T];
  const float* krow[T];
  const uint8_t* kraw[T];
  // Positions any row attends: from the first token's first to the last token's own.
  const int64_t first = a.row_begin(0), last = a.len + a.n_tok - 1;
  for (int64_t j0 = first; j0 < last; j0 += T) {
    const int64_t jn = std::min(T, last - j0);
    for (int64_t jj = 0; jj < jn; ++jj) {
      const size_t off = attn_row_offset(a, j0 + jj);
      kraw[jj] = a.k + off;
      if (k_f16) {
        Ops::f16_to_f32(kraw[jj], kt + jj * hdp, hd);
        krow[jj] = kt + jj * hdp;
      } else if (k_f32) {
        krow[jj] = reinterpret_cast<const float*>(kraw[jj]);
      }
      if (k_f32) {
        vrow[jj] = reinterpret_cast<const float*>(a.v + off);
      } else if (k_f16) {
        Ops::f16_to_f32(a.v + off, vt + jj * hdp, hd);
        vrow[jj] = vt + jj * hdp;
      } else {
        dequantize_row(type, a.v + off, vt + jj * hdp, hd);
        vrow[jj] = vt + jj * hdp;
      }
    }
    // Groups of consecutive rows that attend the same part [lo, hi) of the tile: all query heads
    // of a token, and tokens whose ends lie past the tile.
    for (int64_t g0 = 0; g0 < rows;) {
      const int64_t i0 = g0 / nq;
      const int64_t lo = std::max(j0, a.row_begin(i0)) - j0, hi = std::min(j0 + jn, a.len + i0) - j0;
      int64_t g1 = g0 + nq;
      for (; g1 < rows; g1 += nq) {
        const int64_t i = g1 / nq;
        if (std::max(j0, a.row_begin(i)) - j0 != lo || std::min(j0 + jn, a.len + i) - j0 != hi) break;
      }
      const int64_t n = hi - lo;
      if (n <= 0) {
        g0 = g1;
        continue;
      }
      for (int64_t r = g0; r < g1; ++r) {
        float* sr = sc + r * T;
        if (k_f16 || k_f32) {
          const float* qh = k_f16 ? qf + r * hdp : reinterpret_cast<const float*>(a.q + r * a.q_stride);
          Ops::scores(qh, krow + lo, n, a.scale, hd, sr);
        } else {
          for (int64_t jj = 0; jj < n; ++jj) sr[jj] = vec_dot(type, hd, kraw[lo + jj], a.q + r * a.q_stride) * a.scale;
        }
        if (a.softcap != 0.0f)  // ggml: s = softcap * tanhf(s * scale / softcap), per score
          for (int64_t jj = 0; jj < n; ++jj) sr[jj] = a.softcap * tanhf(sr[jj]);
      }
      // The softmax steps, 8 rows at a time; then the accumulators, the rows with a new maximum
      // in the tile (which rescale) apart from the others. Rows share the V rows, so their
      // independent chains overlap.
      float* ar[2][kMaxAttnGroup];
      const float* mr[2][kMaxAttnGroup];
      const float* vr[2][kMaxAttnGroup];
      int nr[2] = {0, 0};
      for (int64_t c0 = g0; c0 < g1; c0 += 8) {
        const int k = static_cast<int>(std::min<int64_t>(8, g1 - c0));
        float* msT = msv + (c0 - g0) * T;
        float* vsT = vsv + (c0 - g0) * T;
        const unsigned fresh = softmax_steps8(sc + c0 * T, k, n, M + c0, S + c0, msT, vsT);
        for (int l = 0; l < k; ++l) {
          const int g = (fresh >> l) & 1;
          ar[g][nr[g]] = acc + (c0 + l) * hdp;
          mr[g][nr[g]] = msT + l;
          vr[g][nr[g]++] = vsT + l;
        }
      }
      const float* const* vrows = vrow + lo;
      if (k_f16) {
        if (nr[0]) Ops::template accumulate<true, false>(ar[0], nr[0], vrows, mr[0], vr[0], n, hd);
        if (nr[1]) Ops::template accumulate<true, true>(ar[1], nr[1], vrows, mr[1], vr[1], n, hd);
      } else {
        if (nr[0]) Ops::template accumulate<false, false>(ar[0], nr[0], vrows, mr[0], vr[0], n, hd);
        if (nr[1]) Ops::template accumulate<false, true>(ar[1], nr[1], vrows, mr[1], vr[1], n, hd);
      }
      g0 = g1;
    }
  }
  attn_store_rows(a, acc, hdp, S, rows);
}

}  // namespace
}  // namespace llmserve
