// AVX-512 versions of lowrank.cpp's two passes (compiled with the AVX-512 flags; called only after
// lowrank.cpp checked the CPU). Bit-identical to the scalar references, as the AVX2 ones: pass 1
// runs two ranks at once, one per 256-bit half, each half being exactly the reference's 8 lanes;
// pass 2 is the same fused multiply-adds per element, 16 columns per register.
#include <immintrin.h>

#include "../quant/quant_impl.h"
#include "lowrank.h"

// GCC 12's _mm512_cvtph_ps starts from _mm512_undefined_ps(), which -Wmaybe-uninitialized reports
// at every inlined use; the value is fully overwritten.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace llmserve {
namespace {

// Eight int8 of a q8_0 factor at element i (i % 8 == 0: one block) times its scale, exact.
inline __m256 q8_load8(const void* p, int64_t i) {
  const quant::BlockQ8_0& b = static_cast<const quant::BlockQ8_0*>(p)[i / quant::kQK8_0];
  const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b.qs + i % quant::kQK8_0));
  return _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(b.d)), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)));
}

// A[k][i..i+8) in the low half, A[k+1][i..i+8) in the high half.
inline __m512 load_pair(const LowRankFactors& f, int64_t lo, int64_t hi) {
  if (f.type == LowRankType::Q8_0)
    return _mm512_insertf32x8(_mm512_castps256_ps512(q8_load8(f.a, lo)), q8_load8(f.a, hi), 1);
  if (f.type == LowRankType::F16) {
    const uint16_t* a = static_cast<const uint16_t*>(f.a);
    const __m256i h =
        _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + lo))),
                                _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + hi)), 1);
    return _mm512_cvtph_ps(h);
  }
  const float* a = static_cast<const float*>(f.a);
  return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(a + lo)), _mm256_loadu_ps(a + hi), 1);
}

// Elements [i, i+16) as f32; Q8_0: i % 8 == 0 (j0 is), so it is two loads of eight, each within
// one block (the sixteen may span two).
inline __m512 load16(const void* p, LowRankType type, int64_t i) {
  if (type == LowRankType::Q8_0)
    return _mm512_insertf32x8(_mm512_castps256_ps512(q8_load8(p, i)), q8_load8(p, i + 8), 1);
  if (type == LowRankType::F16)
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i)));
  return _mm512_loadu_ps(static_cast<const float*>(p) + i);
}

// dot8's fixed tree on one 8-lane half (see lowrank.h).
inline float reduce8(__m256 acc) {
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 0x55)));
}

inline void store_pair(__m512 acc, float* t, int64_t k) {
  t[k] = reduce8(_mm512_castps512_ps256(acc));
  t[k + 1] = reduce8(_mm512_extractf32x8_ps(acc, 1));
}

}  // namespace

void lowrank_a_avx512(const LowRankFactors& f, const float* const* xs, int64_t n_x, int64_t n_in, int64_t k0,
                      int64_t k1, float* const* ts) {
  // Rows not a multiple of 8 (factored matrices of any shape): the AVX2 kernel, which has the tail.
  if (n_in % 8 != 0) return lowrank_a_avx2(f, xs, n_x, n_in, k0, k1, ts);
  int64_t k = k0;
  for (; k + 2 <= k1; k += 2) {
    const int64_t b0 = k * n_in, b1 = (k + 1) * n_in;
    int64_t r = 0;
    for (; r + 4 <= n_x; r += 4) {
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      const float *x0 = xs[r], *x1 = xs[r + 1], *x2 = xs[r + 2], *x3 = xs[r + 3];
      for (int64_t i = 0; i < n_in; i += 8) {
        const __m512 a = load_pair(f, b0 + i, b1 + i);
        a0 = _mm512_fmadd_ps(a, _mm512_broadcast_f32x8(_mm256_loadu_ps(x0 + i)), a0);
        a1 = _mm512_fmadd_ps(a, _mm512_broadcast_f32x8(_mm256_loadu_ps(x1 + i)), a1);
        a2 = _mm512_fmadd_ps(a, _mm512_broadcast_f32x8(_mm256_loadu_ps(x2 + i)), a2);
        a3 = _mm512_fmadd_ps(a, _mm512_broadcast_f32x8(_mm256_loadu_ps(x3 + i)), a3);
      }
      store_pair(a0, ts[r], k), store_pair(a1, ts[r + 1], k), store_pair(a2, ts[r + 2], k),
          store_pair(a3, ts[r + 3], k);
    }
    for (; r < n_x; ++r) {
      __m512 acc = _mm512_setzero_ps();
      for (int64_t i = 0; i < n_in; i += 8)
        acc = _mm512_fmadd_ps(load_pair(f, b0 + i, b1 + i), _mm512_broadcast_f32x8(_mm256_loadu_ps(xs[r] + i)), acc);
      store_pair(acc, ts[r], k);
    }
  }
  if (k < k1) lowrank_a_avx2(f, xs, n_x, n_in, k, k1, ts);
}

// Rows in blocks of four sharing each load of Bt (32 columns: 8 accumulators), then single rows
// 64 columns at a time; the AVX2 kernel finishes what is left (fewer than 32 / 64 columns).
void lowrank_b_avx512(const LowRankFactors& f, const float* const* ts, float* const* ys, int64_t n_y, int64_t n_out,
                      int64_t j0, int64_t j1) {
  const __m512 sc = _mm512_set1_ps(f.scale);
  const int64_t r = f.r;
  int64_t i = 0;
  for (; i + 4 <= n_y; i += 4) {
    const float *t0 = ts[i], *t1 = ts[i + 1], *t2 = ts[i + 2], *t3 = ts[i + 3];
    int64_t j = j0;
    for (; j + 32 <= j1; j += 32) {
      __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
      for (int64_t k = 0; k < r; ++k) {
        const __m512 b0 = load16(f.bt, f.type, k * n_out + j), b1 = load16(f.bt, f.type, k * n_out + j + 16);
        __m512 tk = _mm512_set1_ps(t0[k]);
        c00 = _mm512_fmadd_ps(tk, b0, c00), c01 = _mm512_fmadd_ps(tk, b1, c01);
        tk = _mm512_set1_ps(t1[k]);
        c10 = _mm512_fmadd_ps(tk, b0, c10), c11 = _mm512_fmadd_ps(tk, b1, c11);
        tk = _mm512_set1_ps(t2[k]);
        c20 = _mm512_fmadd_ps(tk, b0, c20), c21 = _mm512_fmadd_ps(tk, b1, c21);
        tk = _mm512_set1_ps(t3[k]);
        c30 = _mm512_fmadd_ps(tk, b0, c30), c31 = _mm512_fmadd_ps(tk, b1, c31);
      }
      const __m512 c[4][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
      for (int q = 0; q < 4; ++q) {
        float* y = ys[i + q];
        _mm512_storeu_ps(y + j, _mm512_fmadd_ps(c[q][0], sc, _mm512_loadu_ps(y + j)));
        _mm512_storeu_ps(y + j + 16, _mm512_fmadd_ps(c[q][1], sc, _mm512_loadu_ps(y + j + 16)));
      }
    }
    if (j < j1) lowrank_b_avx2(f, ts + i, ys + i, 4, n_out, j, j1);
  }
  for (; i < n_y; ++i) {
    const float* t = ts[i];
    float* y = ys[i];
    int64_t j = j0;
    for (; j + 64 <= j1; j += 64) {
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t k = 0; k < r; ++k) {
        const __m512 tk = _mm512_set1_ps(t[k]);
        const int64_t o = k * n_out + j;
        a0 = _mm512_fmadd_ps(tk, load16(f.bt, f.type, o), a0);
        a1 = _mm512_fmadd_ps(tk, load16(f.bt, f.type, o + 16), a1);
        a2 = _mm512_fmadd_ps(tk, load16(f.bt, f.type, o + 32), a2);
        a3 = _mm512_fmadd_ps(tk, load16(f.bt, f.type, o + 48), a3);
      }
      _mm512_storeu_ps(y + j, _mm512_fmadd_ps(a0, sc, _mm512_loadu_ps(y + j)));
      _mm512_storeu_ps(y + j + 16, _mm512_fmadd_ps(a1, sc, _mm512_loadu_ps(y + j + 16)));
      _mm512_storeu_ps(y + j + 32, _mm512_fmadd_ps(a2, sc, _mm512_loadu_ps(y + j + 32)));
      _mm512_storeu_ps(y + j + 48, _mm512_fmadd_ps(a3, sc, _mm512_loadu_ps(y + j + 48)));
    }
    if (j < j1) lowrank_b_avx2(f, ts + i, ys + i, 1, n_out, j, j1);
  }
}

}  // namespace llmserve
