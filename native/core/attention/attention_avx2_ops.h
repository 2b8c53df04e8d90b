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

// One SIMD width for accumulate_run: Vec8 here (ymm); attention_avx512.cpp adds a 16-lane one.
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

// CH vectors of acc (W::kLanes * CH elements from d) through tile rows jj in [0, jn):
// acc = R(acc * ms[jj]) (if RESCALE), acc = R(fma(V[jj][d], vs[jj], acc)); R rounds to f16 when
// F16. CH independent dependency chains hide the fma + conversion latency. Per element the same
// operations whatever the width W.
template <class W, bool F16, bool RESCALE, int CH>
inline void accumulate_run(float* acc, const float* const* vrow, const float* ms, const float* vs, int64_t jn,
                           int64_t d) {
  constexpr int L = W::kLanes;
  typename W::V a[CH];
#pragma GCC unroll 8
  for (int c = 0; c < CH; ++c) a[c] = W::load(acc + d + L * c);
  for (int64_t jj = 0; jj < jn; ++jj) {
    if constexpr (RESCALE) {
      const typename W::V m = W::set1(ms[jj]);
#pragma GCC unroll 8
      for (int c = 0; c < CH; ++c) {
        a[c] = W::mul(a[c], m);
        if constexpr (F16) a[c] = W::round16(a[c]);
      }
    }
    const typename W::V w = W::set1(vs[jj]);
    const float* v = vrow[jj] + d;
#pragma GCC unroll 8
    for (int c = 0; c < CH; ++c) {
      a[c] = W::fmadd(W::load(v + L * c), w, a[c]);
      if constexpr (F16) a[c] = W::round16(a[c]);
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < CH; ++c) W::store(acc + d + L * c, a[c]);
}

template <bool F16, bool RESCALE>
void accumulate(float* acc, const float* const* vrow, const float* ms, const float* vs, int64_t jn, int64_t hd) {
  int64_t d = 0;
  for (; d + 64 <= hd; d += 64) accumulate_run<Vec8, F16, RESCALE, 8>(acc, vrow, ms, vs, jn, d);
  for (; d + 32 <= hd; d += 32) accumulate_run<Vec8, F16, RESCALE, 4>(acc, vrow, ms, vs, jn, d);
  for (; d + 8 <= hd; d += 8) accumulate_run<Vec8, F16, RESCALE, 1>(acc, vrow, ms, vs, jn, d);
  for (; d < hd; ++d) {
    float a0 = acc[d];
    for (int64_t jj = 0; jj < jn; ++jj) {
      if constexpr (RESCALE) {
        a0 = a0 * ms[jj];
        if constexpr (F16) a0 = round16(a0);
      }
      a0 = __builtin_fmaf(vrow[jj][d], vs[jj], a0);
      if constexpr (F16) a0 = round16(a0);
    }
    acc[d] = a0;
  }
}

// The AVX2 pieces of the tiled driver (attention_tiled.h).
struct Avx2Ops {
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
  static void accumulate(float* acc, const float* const* vrow, const float* ms, const float* vs, int64_t n,
                         int64_t hd) {
    llmserve::accumulate<F16, RESCALE>(acc, vrow, ms, vs, n, hd);
  }
};

}  // namespace

}  // namespace llmserve
