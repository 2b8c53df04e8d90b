// The 8-lane (AVX2 + FMA + F16C) pieces of the tiled attention driver (attention_tiled.h), as
// Avx2Ops. Included by attention_avx2.cpp, and by attention_avx512.cpp for the lengths its 16-lane
// pieces do not cover; include only from files compiled with -mavx2 -mfma -mf16c.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "../quant/dot_avx2.h"

namespace llmserve {

namespace {

inline __m256 round16(__m256 x) { return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT)); }
inline float round16(float x) { return _cvtsh_ss(static_cast<uint16_t>(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT))); }

// Scores of one head against tile rows [0, jn) (f32 K rows), q held in registers: per row the
// sums of avx2::dot_order_vec (4 accumulators over 32-element steps), 8 rows sharing one transposed
// horizontal sum, times scale. HD: a multiple of 32.
template <int HD>
void scores_head(const float* qh, const float* const* krow, int64_t jn, float scale, float* out) {
  static_assert(HD % 32 == 0, "whole 32-element steps");
  __m256 q[HD / 8];
#pragma GCC unroll 16
  for (int c = 0; c < HD / 8; ++c) q[c] = _mm256_loadu_ps(qh + 8 * c);
  const __m256 sc8 = _mm256_set1_ps(scale), zero = _mm256_setzero_ps();
  for (int64_t jb = 0; jb < jn; jb += 8) {
    __m256 part[8];
    for (int u = 0; u < 8; ++u) {
      if (jb + u >= jn) {
        part[u] = zero;
        continue;
      }
      const float* k = krow[jb + u];
      __m256 s[4] = {zero, zero, zero, zero};
#pragma GCC unroll 16
      for (int c = 0; c < HD / 8; ++c) s[c % 4] = _mm256_fmadd_ps(_mm256_loadu_ps(k + 8 * c), q[c], s[c % 4]);
      part[u] = _mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3]));
    }
    _mm256_storeu_ps(out + jb, _mm256_mul_ps(avx2::hsum8_ps(part), sc8));
  }
}

// One SIMD width for accumulate_block: Vec8 here (ymm); attention_avx512.cpp adds a 16-lane one.
struct Vec8 {
  using V = __m256;
  static constexpr int kLanes = 8;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V round16(V x) { return llmserve::round16(x); }
};

// A row's softmax factors for tile position jj are at ms[jj * kFactorStride] (vs the same): the
// driver computes them for 8 rows at once and stores them interleaved.
constexpr int64_t kFactorStride = 8;

// CH vectors (W::kLanes * CH elements from d) of R rows' accumulators through tile rows jj in
// [0, jn): acc_r = R(acc_r * ms[r][jj]) (if RESCALE), acc_r = R(fma(V[jj][d], vs[r][jj], acc_r));
// R rounds to f16 when F16. The R * CH independent dependency chains hide the fma + conversion
// latency (about 4 + 2 x 7 cycles per step with F16); each V vector is loaded once for all R rows.
// Per element the same operations whatever the width W or R.
template <class W, bool F16, bool RESCALE, int CH, int R>
inline void accumulate_block(float* const* acc, const float* const* vrow, const float* const* ms,
                             const float* const* vs, int64_t jn, int64_t d) {
  constexpr int L = W::kLanes;
  typename W::V a[R][CH];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < CH; ++c) a[r][c] = W::load(acc[r] + d + L * c);
  for (int64_t jj = 0; jj < jn; ++jj) {
    if constexpr (RESCALE) {
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const typename W::V m = W::set1(ms[r][jj * kFactorStride]);
#pragma GCC unroll 8
        for (int c = 0; c < CH; ++c) {
          a[r][c] = W::mul(a[r][c], m);
          if constexpr (F16) a[r][c] = W::round16(a[r][c]);
        }
      }
    }
    typename W::V w[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) w[r] = W::set1(vs[r][jj * kFactorStride]);
    const float* v = vrow[jj] + d;
#pragma GCC unroll 8
    for (int c = 0; c < CH; ++c) {
      const typename W::V x = W::load(v + L * c);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        a[r][c] = W::fmadd(x, w[r], a[r][c]);
        if constexpr (F16) a[r][c] = W::round16(a[r][c]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < CH; ++c) W::store(acc[r] + d + L * c, a[r][c]);
}

// accumulate_block over nr rows: MAXR rows at a time (4, 3 or 2), then fewer.
template <class W, bool F16, bool RESCALE, int CH, int MAXR>
inline void accumulate_rows(float* const* acc, int nr, const float* const* vrow, const float* const* ms,
                            const float* const* vs, int64_t jn, int64_t d) {
  int r = 0;
  if constexpr (MAXR >= 4)
    for (; r + 4 <= nr; r += 4) accumulate_block<W, F16, RESCALE, CH, 4>(acc + r, vrow, ms + r, vs + r, jn, d);
  if constexpr (MAXR == 3)  // four rows left go as 2 + 2, not 3 + 1
    for (; r + 3 <= nr && nr - r != 4; r += 3)
      accumulate_block<W, F16, RESCALE, CH, 3>(acc + r, vrow, ms + r, vs + r, jn, d);
  if constexpr (MAXR >= 2)
    for (; r + 2 <= nr; r += 2) accumulate_block<W, F16, RESCALE, CH, 2>(acc + r, vrow, ms + r, vs + r, jn, d);
  for (; r < nr; ++r) accumulate_block<W, F16, RESCALE, CH, 1>(acc + r, vrow, ms + r, vs + r, jn, d);
}

// Elements [d, hd) of each row one at a time (the tail shorter than a vector).
template <bool F16, bool RESCALE>
void accumulate_scalar(float* const* acc, int nr, const float* const* vrow, const float* const* ms,
                       const float* const* vs, int64_t jn, int64_t d, int64_t hd) {
  for (int r = 0; r < nr; ++r)
    for (int64_t e = d; e < hd; ++e) {
      float a0 = acc[r][e];
      for (int64_t jj = 0; jj < jn; ++jj) {
        if constexpr (RESCALE) {
          a0 = a0 * ms[r][jj * kFactorStride];
          if constexpr (F16) a0 = round16(a0);
        }
        a0 = __builtin_fmaf(vrow[jj][e], vs[r][jj * kFactorStride], a0);
        if constexpr (F16) a0 = round16(a0);
      }
      acc[r][e] = a0;
    }
}

// 8-lane accumulation of nr rows from element d: 16 ymm registers hold 3 rows x 4 vectors (12
// chains) with the V vector and the 3 weights.
template <bool F16, bool RESCALE>
void accumulate8(float* const* acc, int nr, const float* const* vrow, const float* const* ms, const float* const* vs,
                 int64_t jn, int64_t d, int64_t hd) {
  for (; d + 32 <= hd; d += 32) accumulate_rows<Vec8, F16, RESCALE, 4, 3>(acc, nr, vrow, ms, vs, jn, d);
  for (; d + 8 <= hd; d += 8) accumulate_rows<Vec8, F16, RESCALE, 1, 4>(acc, nr, vrow, ms, vs, jn, d);
  if (d < hd) accumulate_scalar<F16, RESCALE>(acc, nr, vrow, ms, vs, jn, d, hd);
}

// n f16 values to f32 (exact), inline: the tile conversion runs once per cached row and tile, too
// often for dequantize_row's dispatch.
inline void f16_to_f32_8(const uint8_t* src, float* dst, int64_t n) {
  const auto* h = reinterpret_cast<const uint16_t*>(src);
  int64_t e = 0;
  for (; e + 8 <= n; e += 8)
    _mm256_storeu_ps(dst + e, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + e))));
  for (; e < n; ++e) dst[e] = _cvtsh_ss(h[e]);
}

// The AVX2 pieces of the tiled driver (attention_tiled.h).
struct Avx2Ops {
  static void f16_to_f32(const uint8_t* src, float* dst, int64_t n) { f16_to_f32_8(src, dst, n); }
  static void scores(const float* qh, const float* const* krow, int64_t n, float scale, int64_t hd, float* out) {
    if (hd == 64) {
      scores_head<64>(qh, krow, n, scale, out);
    } else if (hd == 128) {
      scores_head<128>(qh, krow, n, scale, out);
    } else if (hd % 8 == 0) {  // 8 positions' dots share one transposed horizontal sum
      const __m256 sc8 = _mm256_set1_ps(scale);
      for (int64_t jb = 0; jb < n; jb += 8) {
        __m256 part[8];
        for (int u = 0; u < 8; ++u)
          part[u] = jb + u < n ? avx2::dot_f32_vec(hd, krow[jb + u], qh) : _mm256_setzero_ps();
        _mm256_storeu_ps(out + jb, _mm256_mul_ps(avx2::hsum8_ps(part), sc8));
      }
    } else {
      for (int64_t jj = 0; jj < n; ++jj) out[jj] = avx2::dot_f32(hd, krow[jj], qh) * scale;
    }
  }
  template <bool F16, bool RESCALE>
  static void accumulate(float* const* acc, int nr, const float* const* vrow, const float* const* ms,
                         const float* const* vs, int64_t n, int64_t hd) {
    accumulate8<F16, RESCALE>(acc, nr, vrow, ms, vs, n, 0, hd);
  }
};

}  // namespace

}  // namespace llmserve
