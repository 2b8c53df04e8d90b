// The tile kernels of train_gemm.h as templates over a vector type, included by
// train_gemm_avx2.cpp and train_gemm_avx512.cpp only (each compiled for its instruction set).
// Multiply, then add (never a fused multiply-add: the build has -ffp-contract=off and the kernels
// use separate mul / add intrinsics), so each element gets the scalar references' roundings.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "train_gemm.h"

namespace llmserve {
namespace train_simd {

// 8 f32 lanes (AVX2; AVX-512 builds use it with 32 registers).
struct Y8 {
  using R = __m256;
  static constexpr int W = 8;
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R set1(float v) { return _mm256_set1_ps(v); }
  static __m256i mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  // The first n elements (0 < n <= W); the others read as 0 and are never written.
  static R loadm(const float* p, int n) { return _mm256_maskload_ps(p, mask(n)); }
  static void storem(float* p, R v, int n) { _mm256_maskstore_ps(p, mask(n), v); }
};

// dot8 lanes of a TT×OO tile (x rows of stride k, w rows of stride k, acc rows of stride no·8):
// one 8-lane accumulator per (t, o), i.e. dot8's lanes exactly, columns [c0, c1) (multiples of 8).
template <int TT, int OO>
inline void nt_micro(const float* x, const float* w, int64_t k, int64_t c0, int64_t c1, float* acc, int64_t no) {
  __m256 a[TT][OO];
  for (int t = 0; t < TT; ++t)
    for (int o = 0; o < OO; ++o) a[t][o] = _mm256_loadu_ps(acc + (t * no + o) * 8);
  for (int64_t i = c0; i < c1; i += 8) {
    __m256 wv[OO];
    for (int o = 0; o < OO; ++o) wv[o] = _mm256_loadu_ps(w + o * k + i);
    for (int t = 0; t < TT; ++t) {
      const __m256 xv = _mm256_loadu_ps(x + t * k + i);
      for (int o = 0; o < OO; ++o) a[t][o] = _mm256_add_ps(a[t][o], _mm256_mul_ps(xv, wv[o]));
    }
  }
  for (int t = 0; t < TT; ++t)
    for (int o = 0; o < OO; ++o) _mm256_storeu_ps(acc + (t * no + o) * 8, a[t][o]);
}

// train_nt_lanes_*: output groups of OO outer (their w rows stay in L1 while the tile's tokens
// pass), token groups of TT inner; edges with 1-wide micro-kernels.
template <int TT, int OO>
inline void nt_lanes(const float* x, const float* w, int64_t k, int64_t nt, int64_t no, int64_t c0, int64_t c1,
                     float* acc) {
  int64_t o = 0;
  for (; o + OO <= no; o += OO) {
    int64_t t = 0;
    for (; t + TT <= nt; t += TT) nt_micro<TT, OO>(x + t * k, w + o * k, k, c0, c1, acc + (t * no + o) * 8, no);
    for (; t < nt; ++t) nt_micro<1, OO>(x + t * k, w + o * k, k, c0, c1, acc + (t * no + o) * 8, no);
  }
  for (; o < no; ++o) {
    int64_t t = 0;
    for (; t + TT <= nt; t += TT) nt_micro<TT, 1>(x + t * k, w + o * k, k, c0, c1, acc + (t * no + o) * 8, no);
    for (; t < nt; ++t) nt_micro<1, 1>(x + t * k, w + o * k, k, c0, c1, acc + (t * no + o) * 8, no);
  }
}

// NA rows of C × NV vectors of columns from i (the last of them holding only `last` elements when
// MASK), over b in [b0, b1) ascending.
template <class V, int NA, int NV, bool MASK>
inline void axpy_micro(const AxpyArgs& p, int64_t a0, int64_t b0, int64_t b1, int64_t i, int last) {
  using R = typename V::R;
  R acc[NA][NV];
  for (int a = 0; a < NA; ++a)
    for (int v = 0; v < NV; ++v) {
      const float* c = p.C + (a0 + a) * p.ldc + i + v * V::W;
      acc[a][v] = (MASK && v == NV - 1) ? V::loadm(c, last) : V::load(c);
    }
  for (int64_t b = b0; b < b1; ++b) {
    R s[NV];
    const float* sb = p.S + b * p.lds + i;
    for (int v = 0; v < NV; ++v) s[v] = (MASK && v == NV - 1) ? V::loadm(sb + v * V::W, last) : V::load(sb + v * V::W);
    for (int a = 0; a < NA; ++a) {
      const float cf = p.coef[(a0 + a) * p.ca + b * p.cb];
      if (cf == 0.0f) continue;  // the references skip zero coefficients
      const R cv = V::set1(cf);
      for (int v = 0; v < NV; ++v) acc[a][v] = V::add(acc[a][v], V::mul(cv, s[v]));
    }
  }
  for (int a = 0; a < NA; ++a)
    for (int v = 0; v < NV; ++v) {
      float* c = p.C + (a0 + a) * p.ldc + i + v * V::W;
      if (MASK && v == NV - 1) V::storem(c, acc[a][v], last);
      else V::store(c, acc[a][v]);
    }
}

template <class V, int NV, bool MASK, int NA>
inline void axpy_rows(const AxpyArgs& p, int64_t a0, int64_t nA, int64_t b0, int64_t b1, int64_t i, int last) {
  if constexpr (NA > 1) {
    if (nA < NA) return axpy_rows<V, NV, MASK, NA - 1>(p, a0, nA, b0, b1, i, last);
  }
  axpy_micro<V, NA, NV, MASK>(p, a0, b0, b1, i, last);
}

// train_axpy_*: row groups of NA, column chunks of NV vectors, then single (masked) vectors.
template <class V, int NA, int NV>
inline void axpy(const AxpyArgs& p, int64_t na, int64_t b0, int64_t b1, int64_t i0, int64_t i1) {
  for (int64_t a0 = 0; a0 < na; a0 += NA) {
    const int64_t nA = std::min<int64_t>(NA, na - a0);
    int64_t i = i0;
    for (; i + NV * V::W <= i1; i += NV * V::W) axpy_rows<V, NV, false, NA>(p, a0, nA, b0, b1, i, V::W);
    for (; i < i1; i += V::W) {
      const int64_t rem = i1 - i;
      if (rem >= V::W) axpy_rows<V, 1, false, NA>(p, a0, nA, b0, b1, i, V::W);
      else axpy_rows<V, 1, true, NA>(p, a0, nA, b0, b1, i, static_cast<int>(rem));
    }
  }
}

}  // namespace train_simd
}  // namespace llmserve
