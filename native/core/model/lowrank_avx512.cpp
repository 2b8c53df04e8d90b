// AVX-512 versions of lowrank.cpp's two passes (compiled with the AVX-512 flags; called only after
// lowrank.cpp checked the CPU). Bit-identical to the scalar references, as the AVX2 ones: pass 1
// runs two ranks at once, one per 256-bit half, each half being exactly the reference's 8 lanes;
// pass 2 is the same fused multiply-adds per element, 16 columns per register.
#include <immintrin.h>

#include <vector>

#include "../quant/quant_impl.h"
#include "lowrank.h"

// GCC 12's _mm512_cvtph_ps starts from _mm512_undefined_ps(), which -Wmaybe-uninitialized reports
// at every inlined use; the value is fully overwritten.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace llmserve {
namespace {

// Eight int8 of a q8_0 factor at element i (i % 8 == 0: one block) times its scale, exact.
inline __m256 q8_load8(const void* p, int64_t i) {
  const quant::BlockQ8_0& b = static_cast<const quant::BlockQ8_0*>(p)[i / quant::kQK8_0];
  const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b.qs + i % quant::kQK8_0));
  return _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(b.d)), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)));
}

// Sixteen int8 of block b from element off (off <= 16) times its scale d (broadcast), exact.
inline __m512 q8_16(const quant::BlockQ8_0& b, int64_t off, __m512 d) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs + off));
  return _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)));
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
  if (type == LowRankType::Q8_0) {
    if (i % quant::kQK8_0 <= quant::kQK8_0 - 16) {  // all sixteen in one block: one scale
      const quant::BlockQ8_0& b = static_cast<const quant::BlockQ8_0*>(p)[i / quant::kQK8_0];
      return q8_16(b, i % quant::kQK8_0, _mm512_set1_ps(_cvtsh_ss(b.d)));
    }
    return _mm512_insertf32x8(_mm512_castps256_ps512(q8_load8(p, i)), q8_load8(p, i + 8), 1);
  }
  if (type == LowRankType::F16)
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i)));
  return _mm512_loadu_ps(static_cast<const float*>(p) + i);
}

// Byte offset of element e of a factor stored row-major as `type` (e % 32 == 0 for q8_0, or the
// start of e's block): for prefetch addresses.
inline size_t factor_offset(LowRankType type, int64_t e) {
  if (type == LowRankType::Q8_0) return static_cast<size_t>(e / quant::kQK8_0) * sizeof(quant::BlockQ8_0);
  return static_cast<size_t>(e) * (type == LowRankType::F32 ? 4 : 2);
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

// The P x R accumulators of a_block / a_block_q8 to ts[row][k + 2p], ts[row][k + 2p + 1].
template <int P, int R>
inline void store_pairs(const __m512 (&acc)[P][R], float* const* ts, int64_t k) {
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int q = 0; q < R; ++q) store_pair(acc[p][q], ts[q], k + 2 * p);
}

}  // namespace

namespace {
// R rows x P rank pairs (ranks k .. k + 2P - 1) at once: P * R independent accumulators (one
// row's dot8 lanes of two ranks each), so the fma latency does not bound a single row; each lane
// still sums its elements in order, as the reference.
template <int P, int R>
inline void a_block(const LowRankFactors& f, const float* const* xs, int64_t n_in, int64_t k, float* const* ts) {
  __m512 acc[P][R];
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int q = 0; q < R; ++q) acc[p][q] = _mm512_setzero_ps();
  const auto* base = static_cast<const char*>(f.a);
  for (int64_t i = 0; i < n_in; i += 8) {
    // The factor rows are short streams (a page or two each, 2P of them at once), too short for
    // the hardware prefetcher to ramp up: fetch 1 KiB ahead in each, one line per 32 elements.
    if (i % 32 == 0)
#pragma GCC unroll 8
      for (int p = 0; p < 2 * P; ++p) _mm_prefetch(base + factor_offset(f.type, (k + p) * n_in + i + 512), _MM_HINT_T0);
    __m512 xv[R];
#pragma GCC unroll 4
    for (int q = 0; q < R; ++q) xv[q] = _mm512_broadcast_f32x8(_mm256_loadu_ps(xs[q] + i));
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) {
      const __m512 a = load_pair(f, (k + 2 * p) * n_in + i, (k + 2 * p + 1) * n_in + i);
#pragma GCC unroll 4
      for (int q = 0; q < R; ++q) acc[p][q] = _mm512_fmadd_ps(a, xv[q], acc[p][q]);
    }
  }
  store_pairs<P, R>(acc, ts, k);
}

// a_block for q8_0 factors, a block (32 elements) at a time: the two scales of a rank pair become
// one register once per block ([d_k x8 | d_k+1 x8]), then each step of 8 elements converts the
// pair's 16 int8 together and multiplies by it. Every element is d·q as in load_pair (exact), so
// the sums are a_block's.
template <int P, int R>
inline void a_block_q8(const LowRankFactors& f, const float* const* xs, int64_t n_in, int64_t k, float* const* ts) {
  const auto* blocks = static_cast<const quant::BlockQ8_0*>(f.a);
  const int64_t nb = n_in / quant::kQK8_0;
  const __m512i halves = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  __m512 acc[P][R];
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int q = 0; q < R; ++q) acc[p][q] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const quant::BlockQ8_0* lo[P];
    const quant::BlockQ8_0* hi[P];
    __m512 d[P];
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) {
      lo[p] = blocks + (k + 2 * p) * nb + b, hi[p] = blocks + (k + 2 * p + 1) * nb + b;
      if (b % 2 == 0) {  // one line of each row ahead: ~1 KiB further on
        _mm_prefetch(reinterpret_cast<const char*>(lo[p] + 30), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(hi[p] + 30), _MM_HINT_T0);
      }
      const __m128i dh = _mm_insert_epi16(_mm_cvtsi32_si128(lo[p]->d), hi[p]->d, 1);
      d[p] = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(_mm_cvtph_ps(dh)));
    }
#pragma GCC unroll 4
    for (int s8 = 0; s8 < quant::kQK8_0; s8 += 8) {
      const int64_t i = b * quant::kQK8_0 + s8;
      __m512 xv[R];
#pragma GCC unroll 4
      for (int q = 0; q < R; ++q) xv[q] = _mm512_broadcast_f32x8(_mm256_loadu_ps(xs[q] + i));
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) {
        const __m128i qq = _mm_unpacklo_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(lo[p]->qs + s8)),
                                              _mm_loadl_epi64(reinterpret_cast<const __m128i*>(hi[p]->qs + s8)));
        const __m512 a = _mm512_mul_ps(d[p], _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(qq)));
#pragma GCC unroll 4
        for (int q = 0; q < R; ++q) acc[p][q] = _mm512_fmadd_ps(a, xv[q], acc[p][q]);
      }
    }
  }
  store_pairs<P, R>(acc, ts, k);
}

template <int P, int R>
inline void a_block_any(const LowRankFactors& f, const float* const* xs, int64_t n_in, int64_t k, float* const* ts) {
  if (f.type == LowRankType::Q8_0) a_block_q8<P, R>(f, xs, n_in, k, ts);
  else a_block<P, R>(f, xs, n_in, k, ts);
}

// Rows [0, n_x) for the P rank pairs from k.
template <int P>
inline void a_rows(const LowRankFactors& f, const float* const* xs, int64_t n_x, int64_t n_in, int64_t k,
                   float* const* ts) {
  int64_t r = 0;
  if constexpr (P <= 2)
    for (; r + 4 <= n_x; r += 4) a_block_any<P, 4>(f, xs + r, n_in, k, ts + r);
  for (; r + 2 <= n_x; r += 2) a_block_any<P, 2>(f, xs + r, n_in, k, ts + r);
  for (; r < n_x; ++r) a_block_any<P, 1>(f, xs + r, n_in, k, ts + r);
}
}  // namespace

// Ranks two per register (one per 256-bit half), up to four pairs and four rows at a time.
void lowrank_a_avx512(const LowRankFactors& f, const float* const* xs, int64_t n_x, int64_t n_in, int64_t k0,
                      int64_t k1, float* const* ts) {
  // Rows not a multiple of 8 (factored matrices of any shape): the AVX2 kernel, which has the tail.
  if (n_in % 8 != 0) return lowrank_a_avx2(f, xs, n_x, n_in, k0, k1, ts);
  int64_t k = k0;
  // Many rows give enough chains with two pairs; few rows need more pairs.
  if (n_x >= 4) {
    for (; k + 4 <= k1; k += 4) a_rows<2>(f, xs, n_x, n_in, k, ts);
  } else {
    for (; k + 8 <= k1; k += 8) a_rows<4>(f, xs, n_x, n_in, k, ts);
    for (; k + 4 <= k1; k += 4) a_rows<2>(f, xs, n_x, n_in, k, ts);
  }
  for (; k + 2 <= k1; k += 2) a_rows<1>(f, xs, n_x, n_in, k, ts);
  if (k < k1) lowrank_a_avx2(f, xs, n_x, n_in, k, k1, ts);
}

namespace {
// One row, NV x 16 columns from j: NV independent chains over the r ranks.
template <int NV>
inline void b_row(const LowRankFactors& f, const float* t, float* y, int64_t n_out, int64_t j, __m512 sc) {
  __m512 acc[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) acc[v] = _mm512_setzero_ps();
  const auto* base = static_cast<const char*>(f.bt);
  for (int64_t k = 0; k < f.r; ++k) {
    // Each rank reads NV x 16 columns, then jumps a whole row of Bt: fetch the rows 4 ranks ahead.
    if (k + 4 < f.r)
#pragma GCC unroll 8
      for (int v = 0; v < NV; v += 2)
        _mm_prefetch(base + factor_offset(f.type, (k + 4) * n_out + j + 16 * v), _MM_HINT_T0);
    const __m512 tk = _mm512_set1_ps(t[k]);
    const int64_t o = k * n_out + j;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[v] = _mm512_fmadd_ps(tk, load16(f.bt, f.type, o + 16 * v), acc[v]);
  }
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v)
    _mm512_storeu_ps(y + j + 16 * v, _mm512_fmadd_ps(acc[v], sc, _mm512_loadu_ps(y + j + 16 * v)));
}

// One row of q8_0 factors over columns [j0, j0 + n) (j0, n multiples of 32), rank by rank: each
// rank's part of its Bt row is read in address order, one stream the hardware prefetcher follows
// (b_row's 128-column tiles touched all r rows, each ~n_out bytes apart, per tile), and the
// accumulators wait in a scratch row in L1/L2 between ranks. Per column the same fma chain over k
// as b_row.
inline void b_row_stream_q8(const LowRankFactors& f, const float* t, float* y, int64_t n_out, int64_t j0, int64_t n,
                            __m512 sc) {
  thread_local std::vector<float> buf;
  if (buf.size() < static_cast<size_t>(n)) buf.resize(static_cast<size_t>(n));
  float* acc = buf.data();
  for (int64_t c = 0; c < n; c += 16) _mm512_storeu_ps(acc + c, _mm512_setzero_ps());
  // One rank per pass: interleaving four ranks' rows (four streams a row apart, one accumulator
  // load per four fmas) measured ~20% slower on 2-core Zen 5.
  for (int64_t k = 0; k < f.r; ++k) {
    const __m512 tk = _mm512_set1_ps(t[k]);
    const auto* b = static_cast<const quant::BlockQ8_0*>(f.bt) + (k * n_out + j0) / quant::kQK8_0;
    for (int64_t c = 0; c < n; c += 32, ++b) {  // a block: one scale, 32 values
      const __m512 d = _mm512_set1_ps(_cvtsh_ss(b->d));
      const __m512 w0 = q8_16(*b, 0, d), w1 = q8_16(*b, 16, d);
      _mm512_storeu_ps(acc + c, _mm512_fmadd_ps(tk, w0, _mm512_loadu_ps(acc + c)));
      _mm512_storeu_ps(acc + c + 16, _mm512_fmadd_ps(tk, w1, _mm512_loadu_ps(acc + c + 16)));
    }
  }
  for (int64_t c = 0; c < n; c += 16)
    _mm512_storeu_ps(y + j0 + c, _mm512_fmadd_ps(_mm512_loadu_ps(acc + c), sc, _mm512_loadu_ps(y + j0 + c)));
}
}  // namespace

// Rows in blocks of four sharing each load of Bt (32 columns: 8 accumulators), then single rows
// 128 or 64 columns at a time; the AVX2 kernel finishes what is left (fewer than 32 / 64 columns).
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
    int64_t j = j0;
    // q8_0 rows stream (j0 is a multiple of 8; whole blocks only). f16 ones do not: measured on
    // 2-core Zen 5 they kept b_row's speed on 2048-wide rows and lost ~20% on 5632-wide ones.
    if (f.type == LowRankType::Q8_0 && j1 - j0 >= 256 && j0 % quant::kQK8_0 == 0) {
      const int64_t n = (j1 - j0) / 32 * 32;
      b_row_stream_q8(f, ts[i], ys[i], n_out, j0, n, sc);
      j += n;
    }
    for (; j + 128 <= j1; j += 128) b_row<8>(f, ts[i], ys[i], n_out, j, sc);
    for (; j + 64 <= j1; j += 64) b_row<4>(f, ts[i], ys[i], n_out, j, sc);
    if (j < j1) lowrank_b_avx2(f, ts + i, ys + i, 1, n_out, j, j1);
  }
}

// y, u: [n]; as lowrank_add_scaled_avx2, 16 lanes and a masked tail.
void lowrank_add_scaled_avx512(float* y, const float* u, int64_t n, float scale) {
  const __m512 s = _mm512_set1_ps(scale);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    _mm512_storeu_ps(y + j, _mm512_add_ps(_mm512_loadu_ps(y + j), _mm512_mul_ps(_mm512_loadu_ps(u + j), s)));
  if (j < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - j)) - 1);
    _mm512_mask_storeu_ps(
        y + j, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, y + j), _mm512_mul_ps(_mm512_maskz_loadu_ps(m, u + j), s)));
  }
}

}  // namespace llmserve
