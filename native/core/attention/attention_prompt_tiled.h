// The SIMD attention_prompt driver shared by the AVX2 and AVX-512 kernels (include only from
// attention_avx2.cpp and attention_avx512.cpp, after attention_avx2_ops.h). Bit-identical to
// attention_prompt_ref: per row and element the same operations in the same order, scheduled for
// the rows of a call (a prefill chunk's tokens x the query heads of one KV head) together:
//   - a tile's K and V rows are converted to f32 once and serve every row of the call;
//   - scores: lanes are rows (q transposed to [hd][rows]), each lane the reference's fmaf chain
//     over d; U positions x RB row vectors per block keep U * RB chains in registers, the K
//     element broadcast and the q vector loaded once per d for all of them (no horizontal sums);
//   - the softmax runs 8 rows per vector, one lane per row, masked to each row's part of the
//     tile: the tile maximum, the rescale factor and the weights p (0 outside the row's part,
//     which leaves S exactly as it is: S is never -0);
//   - the accumulators walk the tile in registers (Ops::accumulate with no f16 rounding), rows
//     that attend the same part of the tile side by side.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../math/fast_exp_avx2.h"
#include "attention.h"

namespace llmserve {
namespace {

// Scores of positions j0 .. j0 + U - 1 (K rows krow[0, U)) for row vectors [v0, v0 + RB) of qT
// ([hd][rp], W::kLanes rows per vector): sc[u * rp + row] = (fma chain over d) * scale.
template <class W, int U, int RB>
inline void prompt_score_block(const float* const* krow, const float* qT, int64_t rp, int64_t hd, int64_t v0,
                               float scale, float* sc) {
  constexpr int L = W::kLanes;
  typename W::V acc[U][RB];
#pragma GCC unroll 8
  for (int u = 0; u < U; ++u)
#pragma GCC unroll 4
    for (int b = 0; b < RB; ++b) acc[u][b] = W::set1(0.0f);
  for (int64_t d = 0; d < hd; ++d) {
    typename W::V q[RB];
#pragma GCC unroll 4
    for (int b = 0; b < RB; ++b) q[b] = W::load(qT + d * rp + (v0 + b) * L);
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) {
      const typename W::V k = W::set1(krow[u][d]);
#pragma GCC unroll 4
      for (int b = 0; b < RB; ++b) acc[u][b] = W::fmadd(k, q[b], acc[u][b]);
    }
  }
  const typename W::V s = W::set1(scale);
#pragma GCC unroll 8
  for (int u = 0; u < U; ++u)
#pragma GCC unroll 4
    for (int b = 0; b < RB; ++b) W::store(sc + u * rp + (v0 + b) * L, W::mul(acc[u][b], s));
}

// Positions [j, n) of the tile for row vectors [v0, v0 + rb), U positions at a time, then the
// rest in halving steps (a block of one position is one latency-bound chain per vector: rare).
template <class W, int U, int RB>
inline void prompt_scores_from(const float* const* krow, int64_t j, int64_t n, const float* qT, int64_t rp, int64_t v0,
                               int64_t rb, int64_t hd, float scale, float* sc) {
  for (; j + U <= n; j += U) {
    if (rb == RB) prompt_score_block<W, U, RB>(krow + j, qT, rp, hd, v0, scale, sc + j * rp);
    else
      for (int64_t v = v0; v < v0 + rb; ++v) prompt_score_block<W, U, 1>(krow + j, qT, rp, hd, v, scale, sc + j * rp);
  }
  if constexpr (U > 1)
    if (j < n) prompt_scores_from<W, U / 2, RB>(krow, j, n, qT, rp, v0, rb, hd, scale, sc);
}

// All row vectors [0, nv) against positions [0, n) of the tile (krow).
template <class W, int U, int RB>
inline void prompt_scores(const float* const* krow, int64_t n, const float* qT, int64_t rp, int64_t nv, int64_t hd,
                          float scale, float* sc) {
  for (int64_t v0 = 0; v0 < nv; v0 += RB)
    prompt_scores_from<W, U, RB>(krow, 0, n, qT, rp, v0, std::min<int64_t>(RB, nv - v0), hd, scale, sc);
}

// The softmax of 8 rows (lanes) over tile positions [0, n): lane l's scores at sc[j * rp + l], its
// part of the tile [lo[l], hi[l]); M, S updated; ms the rescale factor (1: none); the weights to
// vs[j * 8 + l] (0 outside the row's part).
inline void prompt_softmax8(const float* sc, int64_t rp, int64_t n, const int32_t* lo, const int32_t* hi, float* M,
                            float* S, float* ms, float* vs) {
  const __m256i lov = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo));
  const __m256i hiv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi));
  const __m256 ninf = _mm256_set1_ps(-INFINITY), zero = _mm256_setzero_ps();
  __m256 Mv = _mm256_loadu_ps(M), Sv = _mm256_loadu_ps(S), m = Mv;
  auto inside = [&](int64_t j) {
    const __m256i jv = _mm256_set1_epi32(static_cast<int32_t>(j));
    return _mm256_castsi256_ps(
        _mm256_andnot_si256(_mm256_cmpgt_epi32(lov, jv), _mm256_cmpgt_epi32(hiv, jv)));  // lo <= j < hi
  };
  for (int64_t j = 0; j < n; ++j) m = _mm256_max_ps(m, _mm256_blendv_ps(ninf, _mm256_loadu_ps(sc + j * rp), inside(j)));
  const __m256 fresh = _mm256_cmp_ps(m, Mv, _CMP_GT_OQ);
  const __m256 f = _mm256_blendv_ps(_mm256_set1_ps(1.0f), exp8(_mm256_sub_ps(Mv, m)), fresh);
  Sv = _mm256_blendv_ps(Sv, _mm256_mul_ps(Sv, f), fresh);
  _mm256_storeu_ps(ms, f);
  for (int64_t j = 0; j < n; ++j) {
    const __m256 p = _mm256_blendv_ps(zero, exp8(_mm256_sub_ps(_mm256_loadu_ps(sc + j * rp), m)), inside(j));
    _mm256_storeu_ps(vs + j * 8, p);
    Sv = _mm256_add_ps(Sv, p);
  }
  _mm256_storeu_ps(M, m);
  _mm256_storeu_ps(S, Sv);
}

// Ops: f16_to_f32 and accumulate<false, false> as in attention_tiled.h; W: the score width; U, RB
// its block.
template <class Ops, class W, int U, int RB>
void attention_prompt_tiled(const AttnGroup& a) {
  constexpr int64_t T = kAttnTile;
  constexpr int L = W::kLanes;
  const int64_t nq = a.n_q, hd = a.hd, hdp = (hd + 15) / 16 * 16, rows = a.n_tok * nq;
  const int64_t rp = (rows + 15) / 16 * 16, nv = (rows + L - 1) / L;
  float* sc = a.work;            // [T][rp] scores
  float* vsv = sc + T * rp;      // [rp / 8][T][8] weights, 8 rows interleaved
  float* msr = vsv + T * rp;     // [rp] this tile's rescale factor per row
  float* acc = msr + rp;         // [rows][hdp]
  float* vt = acc + rows * hdp;  // [T][hdp] V rows as f32 (f16)
  float* kt = vt + T * hdp;      // [T][hdp] K rows as f32 (f16)
  float* qT = kt + T * hdp;      // [hd][rp] queries, transposed
  const bool f16 = a.kv_type == GgmlType::F16;
  const size_t head_bytes = static_cast<size_t>(hd) * (f16 ? 2 : 4);  // one K (V) row of this head
  for (int64_t r = 0; r < rp; ++r) {
    const float* q = r < rows ? reinterpret_cast<const float*>(a.q + r * a.q_stride) : nullptr;
    for (int64_t d = 0; d < hd; ++d) qT[d * rp + r] = q ? q[d] : 0.0f;
  }
  alignas(32) float M[kMaxAttnGroup + 16], S[kMaxAttnGroup + 16];
  alignas(32) int32_t lo[kMaxAttnGroup + 16], hi[kMaxAttnGroup + 16];
  for (int64_t r = 0; r < rp; ++r) M[r] = -INFINITY, S[r] = 0.0f, lo[r] = hi[r] = 0;
  for (int64_t r = 0; r < rows; ++r) std::memset(acc + r * hdp, 0, static_cast<size_t>(hd) * 4);
  const float* vrow[T];
  const float* krow[T];
  // Positions any row attends, in absolute tiles.
  const int64_t first = a.row_begin(0), last = a.len + a.n_tok - 1;
  for (int64_t t0 = first / T * T; t0 < last; t0 += T) {
    const int64_t j0 = std::max(t0, first), jn = std::min(t0 + T, last) - j0;  // [j0, j0 + jn)
    for (int64_t jj = 0; jj < jn; ++jj) {
      const size_t off = attn_row_offset(a, j0 + jj);
      if (f16) {
        Ops::f16_to_f32(a.k + off, kt + jj * hdp, hd);
        Ops::f16_to_f32(a.v + off, vt + jj * hdp, hd);
        krow[jj] = kt + jj * hdp;
        vrow[jj] = vt + jj * hdp;
      } else {
        krow[jj] = reinterpret_cast<const float*>(a.k + off);
        vrow[jj] = reinterpret_cast<const float*>(a.v + off);
      }
    }
    // The next tile's K and V rows start coming in while this one computes.
    for (int64_t jj = j0 + jn; jj < std::min(j0 + jn + T, last); ++jj) {
      const size_t off = attn_row_offset(a, jj);
      for (size_t b = 0; b < head_bytes; b += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(a.k + off + b), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(a.v + off + b), _MM_HINT_T0);
      }
    }
    prompt_scores<W, U, RB>(krow, jn, qT, rp, nv, hd, a.scale, sc);
    if (a.softcap != 0.0f)
      for (int64_t jj = 0; jj < jn; ++jj)
        for (int64_t r = 0; r < rows; ++r) sc[jj * rp + r] = a.softcap * tanhf(sc[jj * rp + r]);
    // Each row's part of [j0, j0 + jn), relative to j0.
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = r / nq;
      const int64_t l = std::max(j0, a.row_begin(i)) - j0, h = std::min(j0 + jn, a.len + i) - j0;
      lo[r] = static_cast<int32_t>(l);
      hi[r] = static_cast<int32_t>(std::max(l, h));
    }
    for (int64_t o = 0; o < rows; o += 8)
      prompt_softmax8(sc + o, rp, jn, lo + o, hi + o, M + o, S + o, msr + o, vsv + o * T);
    // Rescale, then accumulate the rows that attend the same part of the tile together.
    for (int64_t r = 0; r < rows; ++r) {
      if (msr[r] == 1.0f) continue;
      float* ar = acc + r * hdp;
      for (int64_t d = 0; d < hd; ++d) ar[d] = ar[d] * msr[r];
    }
    float* ar[kMaxAttnGroup];
    const float* vr[kMaxAttnGroup];
    for (int64_t g0 = 0; g0 < rows;) {
      int64_t g1 = g0 + 1;
      while (g1 < rows && lo[g1] == lo[g0] && hi[g1] == hi[g0]) ++g1;
      const int64_t l = lo[g0], n = hi[g0] - l;
      if (n > 0) {
        for (int64_t r = g0; r < g1; ++r) {
          ar[r - g0] = acc + r * hdp;
          vr[r - g0] = vsv + (r / 8) * T * 8 + l * 8 + r % 8;
        }
        Ops::template accumulate<false, false>(ar, static_cast<int>(g1 - g0), vrow + l, vr, vr, n, hd);
      }
      g0 = g1;
    }
  }
  attn_store_rows(a, acc, hdp, S, rows);
}

}  // namespace
}  // namespace llmserve
