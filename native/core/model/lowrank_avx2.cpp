// AVX2 + FMA + F16C versions of lowrank.cpp's two passes (compiled with -mavx2 -mfma -mf16c;
// called only after lowrank.cpp checked the CPU). Bit-identical to the scalar references: the
// same fused multiply-adds per element in the same order, and dot8's fixed reduction tree.
#include <immintrin.h>

#include <cmath>

#include "../quant/quant.h"
#include "../quant/quant_impl.h"
#include "lowrank.h"

namespace llmserve {
namespace {

// Elements [i, i+8) as f32; Q8_0: i % 8 == 0, so the eight share one block, and d·q is exact.
inline __m256 load8(const void* p, LowRankType type, int64_t i) {
  if (type == LowRankType::F16)
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i)));
  if (type == LowRankType::Q8_0) {
    const quant::BlockQ8_0& b = static_cast<const quant::BlockQ8_0*>(p)[i / quant::kQK8_0];
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b.qs + i % quant::kQK8_0));
    return _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(b.d)), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)));
  }
  return _mm256_loadu_ps(static_cast<const float*>(p) + i);
}

// dot8's fixed tree: s4[i] = l[i] + l[i+4]; s2[i] = s4[i] + s4[i+2]; sum = s2[0] + s2[1].
inline float reduce8(__m256 acc) {
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 0x55)));
}

// reduce8 after the last n_in % 8 elements (n8 = n_in rounded down to 8), lane i % 8 each, in
// scalar fmas: rows whose length is not a multiple of 8 (factored matrices of any shape).
inline float reduce8_tail(__m256 acc, const LowRankFactors& f, int64_t base, const float* x, int64_t n8, int64_t n_in) {
  if (n8 == n_in) return reduce8(acc);
  alignas(32) float l[8];
  _mm256_store_ps(l, acc);
  for (int64_t i = n8; i < n_in; ++i) l[i - n8] = std::fma(lowrank_elem(f.a, f.type, base + i), x[i], l[i - n8]);
  return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

// One row at a time over [j0, j1): 32, then 8 columns per step, then scalar fma.
void lowrank_b_rows(const LowRankFactors& f, const float* const* ts, float* const* ys, int64_t n_y, int64_t n_out,
                    int64_t j0, int64_t j1, __m256 sc) {
  for (int64_t i = 0; i < n_y; ++i) {
    const float* t = ts[i];
    float* y = ys[i];
    int64_t j = j0;
    for (; j + 32 <= j1; j += 32) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t k = 0; k < f.r; ++k) {
        const __m256 tk = _mm256_set1_ps(t[k]);
        const int64_t o = k * n_out + j;
        a0 = _mm256_fmadd_ps(tk, load8(f.bt, f.type, o), a0);
        a1 = _mm256_fmadd_ps(tk, load8(f.bt, f.type, o + 8), a1);
        a2 = _mm256_fmadd_ps(tk, load8(f.bt, f.type, o + 16), a2);
        a3 = _mm256_fmadd_ps(tk, load8(f.bt, f.type, o + 24), a3);
      }
      _mm256_storeu_ps(y + j, _mm256_fmadd_ps(a0, sc, _mm256_loadu_ps(y + j)));
      _mm256_storeu_ps(y + j + 8, _mm256_fmadd_ps(a1, sc, _mm256_loadu_ps(y + j + 8)));
      _mm256_storeu_ps(y + j + 16, _mm256_fmadd_ps(a2, sc, _mm256_loadu_ps(y + j + 16)));
      _mm256_storeu_ps(y + j + 24, _mm256_fmadd_ps(a3, sc, _mm256_loadu_ps(y + j + 24)));
    }
    for (; j + 8 <= j1; j += 8) {
      __m256 a = _mm256_setzero_ps();
      for (int64_t k = 0; k < f.r; ++k)
        a = _mm256_fmadd_ps(_mm256_set1_ps(t[k]), load8(f.bt, f.type, k * n_out + j), a);
      _mm256_storeu_ps(y + j, _mm256_fmadd_ps(a, sc, _mm256_loadu_ps(y + j)));
    }
    for (; j < j1; ++j) {
      float acc = 0.0f;
      for (int64_t k = 0; k < f.r; ++k) acc = std::fma(t[k], lowrank_elem(f.bt, f.type, k * n_out + j), acc);
      y[j] = std::fma(acc, f.scale, y[j]);
    }
  }
}

}  // namespace

namespace {
// R rows x P ranks from k at once (P * R independent 8-lane accumulators, so one row is not bound
// by the fma latency); each output is the reference's dot8.
template <int P, int R>
inline void a_block(const LowRankFactors& f, const float* const* xs, int64_t n_in, int64_t n8, int64_t k,
                    float* const* ts) {
  __m256 acc[P][R];
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int q = 0; q < R; ++q) acc[p][q] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n8; i += 8) {
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) {
      const __m256 a = load8(f.a, f.type, (k + p) * n_in + i);
#pragma GCC unroll 4
      for (int q = 0; q < R; ++q) acc[p][q] = _mm256_fmadd_ps(a, _mm256_loadu_ps(xs[q] + i), acc[p][q]);
    }
  }
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int q = 0; q < R; ++q) ts[q][k + p] = reduce8_tail(acc[p][q], f, (k + p) * n_in, xs[q], n8, n_in);
}
}  // namespace

// Rows in blocks of four with two ranks (8 chains), the remaining rows with four ranks, then one.
void lowrank_a_avx2(const LowRankFactors& f, const float* const* xs, int64_t n_x, int64_t n_in, int64_t k0, int64_t k1,
                    float* const* ts) {
  const int64_t n8 = n_in / 8 * 8;
  int64_t r = 0;
  for (; r + 4 <= n_x; r += 4) {
    int64_t k = k0;
    for (; k + 2 <= k1; k += 2) a_block<2, 4>(f, xs + r, n_in, n8, k, ts + r);
    for (; k < k1; ++k) a_block<1, 4>(f, xs + r, n_in, n8, k, ts + r);
  }
  for (; r < n_x; ++r) {
    int64_t k = k0;
    for (; k + 4 <= k1; k += 4) a_block<4, 1>(f, xs + r, n_in, n8, k, ts + r);
    for (; k < k1; ++k) a_block<1, 1>(f, xs + r, n_in, n8, k, ts + r);
  }
}

// Rows in blocks of four sharing each load of Bt (16 columns at a time: 8 accumulators), then the
// remaining rows 32 columns at a time; scalar fma for the last j1 - j0 mod 8 columns.
void lowrank_b_avx2(const LowRankFactors& f, const float* const* ts, float* const* ys, int64_t n_y, int64_t n_out,
                    int64_t j0, int64_t j1) {
  const __m256 sc = _mm256_set1_ps(f.scale);
  const int64_t r = f.r;
  int64_t i = 0;
  for (; i + 4 <= n_y; i += 4) {
    const float *t0 = ts[i], *t1 = ts[i + 1], *t2 = ts[i + 2], *t3 = ts[i + 3];
    int64_t j = j0;
    for (; j + 16 <= j1; j += 16) {
      __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
      for (int64_t k = 0; k < r; ++k) {
        const __m256 b0 = load8(f.bt, f.type, k * n_out + j), b1 = load8(f.bt, f.type, k * n_out + j + 8);
        __m256 tk = _mm256_set1_ps(t0[k]);
        c00 = _mm256_fmadd_ps(tk, b0, c00), c01 = _mm256_fmadd_ps(tk, b1, c01);
        tk = _mm256_set1_ps(t1[k]);
        c10 = _mm256_fmadd_ps(tk, b0, c10), c11 = _mm256_fmadd_ps(tk, b1, c11);
        tk = _mm256_set1_ps(t2[k]);
        c20 = _mm256_fmadd_ps(tk, b0, c20), c21 = _mm256_fmadd_ps(tk, b1, c21);
        tk = _mm256_set1_ps(t3[k]);
        c30 = _mm256_fmadd_ps(tk, b0, c30), c31 = _mm256_fmadd_ps(tk, b1, c31);
      }
      const __m256 c[4][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
      for (int q = 0; q < 4; ++q) {
        float* y = ys[i + q];
        _mm256_storeu_ps(y + j, _mm256_fmadd_ps(c[q][0], sc, _mm256_loadu_ps(y + j)));
        _mm256_storeu_ps(y + j + 8, _mm256_fmadd_ps(c[q][1], sc, _mm256_loadu_ps(y + j + 8)));
      }
    }
    if (j < j1) lowrank_b_rows(f, ts + i, ys + i, 4, n_out, j, j1, sc);
  }
  if (i < n_y) lowrank_b_rows(f, ts + i, ys + i, n_y - i, n_out, j0, j1, sc);
}

// y, u: [n]; per lane y + (u * scale), the multiply and the add each rounded (lowrank.h).
void lowrank_add_scaled_avx2(float* y, const float* u, int64_t n, float scale) {
  const __m256 s = _mm256_set1_ps(scale);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm256_storeu_ps(y + j, _mm256_add_ps(_mm256_loadu_ps(y + j), _mm256_mul_ps(_mm256_loadu_ps(u + j), s)));
  for (; j < n; ++j) y[j] = y[j] + u[j] * scale;
}

}  // namespace llmserve
