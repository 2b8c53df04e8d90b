// AVX2 + FMA + F16C attention_group (compiled with -mavx2 -mfma -mf16c; only called after
// attention.cpp has checked the CPU (isa/)). Bit-identical to attention_group_ref: per head and element the
// same operations in the same order, only scheduled differently:
//   - positions go in tiles of kAttnTile: K row j is dotted with every query head of the group
//     while it is in L1, and V row j is read (dequantized once for q8_0) for all heads;
//   - the tile's softmax factors come from one 8-lane fast_exp per 8 scores (the running max is a
//     scalar scan first, so every argument is the one the sequential loop would use);
//   - each head's accumulator walks the tile in registers, 32 elements at a time (4 independent
//     chains), rounding to f16 after each step with an f16 cache, as ggml's f16 VKQ accumulator.
// Multiplying by ms = 1 (no new maximum) and rounding an f16 value to f16 are exact identities, so
// a tile without a new maximum skips the rescale without changing any bit.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../math/fast_exp_avx2.h"
#include "../quant/dot_avx2.h"
#include "../quant/quant.h"
#include "attention.h"

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

// CH vectors of acc (8 * CH elements from d) through tile rows jj in [0, jn):
// acc = R(acc * ms[jj]) (if RESCALE), acc = R(fma(V[jj][d], vs[jj], acc)); R rounds to f16 when
// F16. CH independent dependency chains hide the fma + conversion latency.
template <bool F16, bool RESCALE, int CH>
inline void accumulate_run(float* acc, const float* const* vrow, const float* ms, const float* vs, int64_t jn,
                           int64_t d) {
  __m256 a[CH];
#pragma GCC unroll 8
  for (int c = 0; c < CH; ++c) a[c] = _mm256_loadu_ps(acc + d + 8 * c);
  for (int64_t jj = 0; jj < jn; ++jj) {
    if constexpr (RESCALE) {
      const __m256 m = _mm256_set1_ps(ms[jj]);
#pragma GCC unroll 8
      for (int c = 0; c < CH; ++c) {
        a[c] = _mm256_mul_ps(a[c], m);
        if constexpr (F16) a[c] = round16(a[c]);
      }
    }
    const __m256 w = _mm256_set1_ps(vs[jj]);
    const float* v = vrow[jj] + d;
#pragma GCC unroll 8
    for (int c = 0; c < CH; ++c) {
      a[c] = _mm256_fmadd_ps(_mm256_loadu_ps(v + 8 * c), w, a[c]);
      if constexpr (F16) a[c] = round16(a[c]);
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < CH; ++c) _mm256_storeu_ps(acc + d + 8 * c, a[c]);
}

template <bool F16, bool RESCALE>
void accumulate(float* acc, const float* const* vrow, const float* ms, const float* vs, int64_t jn, int64_t hd) {
  int64_t d = 0;
  for (; d + 64 <= hd; d += 64) accumulate_run<F16, RESCALE, 8>(acc, vrow, ms, vs, jn, d);
  for (; d + 32 <= hd; d += 32) accumulate_run<F16, RESCALE, 4>(acc, vrow, ms, vs, jn, d);
  for (; d + 8 <= hd; d += 8) accumulate_run<F16, RESCALE, 1>(acc, vrow, ms, vs, jn, d);
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

}  // namespace

// a: see AttnGroup (ops.h)
void attention_group_avx2(const AttnGroup& a) {
  constexpr int64_t T = kAttnTile;
  static_assert(T % 8 == 0, "tile must be whole vectors");
  const int64_t nq = a.n_q, hd = a.hd, hdp = (hd + 15) / 16 * 16;
  const GgmlType type = a.kv_type;
  float* sc = a.work;          // [nq][T] scores
  float* msv = sc + nq * T;    // [T]
  float* vsv = msv + T;        // [T]
  float* acc = vsv + T;        // [nq][hdp]
  float* vt = acc + nq * hdp;  // [T][hdp] V rows as f32 (f16, q8_0)
  float* kt = vt + T * hdp;    // [T][hdp] K rows as f32 (f16)
  float* qf = kt + T * hdp;    // [nq][hdp] queries as f32 (f16)
  // An F16 dot is avx2::dot_order over the converted values, so converting K and q once and
  // running the F32 dot gives vec_dot(F16)'s bits. (vec_dot_ref's order differs; the dispatcher
  // never pairs this kernel with the scalar dots.)
  const bool k_f16 = type == GgmlType::F16, k_f32 = type == GgmlType::F32;
  if (k_f16)
    for (int64_t h = 0; h < nq; ++h) dequantize_row(GgmlType::F16, a.q + h * a.q_stride, qf + h * hdp, hd);
  float M[kMaxAttnGroup], S[kMaxAttnGroup];
  for (int64_t h = 0; h < nq; ++h) {
    M[h] = -INFINITY, S[h] = 0.0f;
    std::memset(acc + h * hdp, 0, static_cast<size_t>(hd) * 4);
  }
  const float* vrow[T];
  const float* krow[T];
  alignas(32) float arg[T];
  alignas(32) uint8_t fresh[T];
  for (int64_t j0 = a.begin; j0 < a.len; j0 += T) {
    const int64_t jn = std::min(T, a.len - j0);
    for (int64_t jj = 0; jj < jn; ++jj) {
      const size_t off = attn_row_offset(a, j0 + jj);
      const uint8_t* k = a.k + off;
      if (k_f16) {
        dequantize_row(GgmlType::F16, k, kt + jj * hdp, hd);
        krow[jj] = kt + jj * hdp;
      } else if (k_f32) {
        krow[jj] = reinterpret_cast<const float*>(k);
      } else {
        for (int64_t h = 0; h < nq; ++h) sc[h * T + jj] = vec_dot(type, hd, k, a.q + h * a.q_stride) * a.scale;
      }
      if (k_f32) {
        vrow[jj] = reinterpret_cast<const float*>(a.v + off);
      } else {
        dequantize_row(type, a.v + off, vt + jj * hdp, hd);
        vrow[jj] = vt + jj * hdp;
      }
    }
    if (k_f16 || k_f32) {
      const float* q0 = k_f16 ? qf : reinterpret_cast<const float*>(a.q);
      const int64_t qs = k_f16 ? hdp : static_cast<int64_t>(a.q_stride / 4);
      for (int64_t h = 0; h < nq; ++h) {
        const float* qh = q0 + h * qs;
        if (hd == 64) {
          scores_head<64>(qh, krow, jn, a.scale, sc + h * T);
        } else if (hd == 128) {
          scores_head<128>(qh, krow, jn, a.scale, sc + h * T);
        } else if (hd % 8 == 0) {  // 8 positions' dots share one transposed horizontal sum
          const __m256 sc8 = _mm256_set1_ps(a.scale);
          for (int64_t jb = 0; jb < jn; jb += 8) {
            __m256 part[8];
            for (int u = 0; u < 8; ++u)
              part[u] = jb + u < jn ? avx2::dot_f32_vec(hd, krow[jb + u], qh) : _mm256_setzero_ps();
            _mm256_storeu_ps(sc + h * T + jb, _mm256_mul_ps(avx2::hsum8_ps(part), sc8));
          }
        } else {
          for (int64_t jj = 0; jj < jn; ++jj) sc[h * T + jj] = avx2::dot_f32(hd, krow[jj], qh) * a.scale;
        }
      }
    }
    if (a.softcap != 0.0f) {  // ggml: s = softcap * tanhf(s * scale / softcap), per score
      for (int64_t h = 0; h < nq; ++h)
        for (int64_t jj = 0; jj < jn; ++jj) sc[h * T + jj] = a.softcap * tanhf(sc[h * T + jj]);
    }
    for (int64_t h = 0; h < nq; ++h) {
      // Running max over the tile: the exp argument of each step, and whether it rescales.
      const float* s = sc + h * T;
      float Mh = M[h];
      bool any = false;
      for (int64_t jj = 0; jj < jn; ++jj) {  // branch-free: Mold - s is exactly -(s - Mold)
        const float sj = s[jj], dlt = sj - Mh;
        const bool f = sj > Mh;
        arg[jj] = f ? -dlt : dlt;
        fresh[jj] = f;
        any |= f;
        Mh = f ? sj : Mh;
      }
      for (int64_t jj = jn; jj < T; ++jj) arg[jj] = 0.0f;
      M[h] = Mh;
      for (int64_t jj = 0; jj < T; jj += 8) _mm256_storeu_ps(vsv + jj, exp8(_mm256_load_ps(arg + jj)));
      float Sh = S[h];
      for (int64_t jj = 0; jj < jn; ++jj) {
        const float e = vsv[jj];
        msv[jj] = fresh[jj] ? e : 1.0f;
        vsv[jj] = fresh[jj] ? 1.0f : e;
        Sh = __builtin_fmaf(Sh, msv[jj], vsv[jj]);
      }
      S[h] = Sh;
      float* ah = acc + h * hdp;
      if (k_f16) {
        if (any) accumulate<true, true>(ah, vrow, msv, vsv, jn, hd);
        else accumulate<true, false>(ah, vrow, msv, vsv, jn, hd);
      } else {
        if (any) accumulate<false, true>(ah, vrow, msv, vsv, jn, hd);
        else accumulate<false, false>(ah, vrow, msv, vsv, jn, hd);
      }
    }
  }
  for (int64_t h = 0; h < nq; ++h) {
    const float S_inv = S[h] == 0.0f ? 0.0f : 1.0f / S[h];
    const float* ah = acc + h * hdp;
    float* out = a.out + h * a.out_stride;
    const __m256 si = _mm256_set1_ps(S_inv);
    int64_t d = 0;
    for (; d + 8 <= hd; d += 8) _mm256_storeu_ps(out + d, _mm256_mul_ps(_mm256_loadu_ps(ah + d), si));
    for (; d < hd; ++d) out[d] = ah[d] * S_inv;
  }
}

}  // namespace llmserve
