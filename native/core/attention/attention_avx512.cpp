// AVX-512 attention_group (compiled with the AVX-512 flags; only called after attention.cpp has
// checked the CPU (isa/)): the tiled driver (attention_tiled.h) with 16-lane scores and
// accumulators. Bit-identical to attention_group_ref and to the AVX2 kernel:
//   - a score keeps avx2::dot_order's four 8-lane chains (chain c % 4 takes the 8-element chunk
//     c): a 16-lane register holds chunks 2c' and 2c' + 1, so one register carries chains 0 and 1
//     and another chains 2 and 3, each chain seeing its chunks in the same order; the halves are
//     then added as (s0 + s1) + (s2 + s3) and share the 8-lane transposed horizontal sum;
//   - the accumulator's per-element fma and f16 rounding are the same on 16 lanes as on 8.
// Lengths these pieces do not cover (head sizes not a multiple of 32, element tails) use the
// 8-lane pieces of attention_avx2_ops.h.
// GCC 12's avx512fintrin.h trips -Wuninitialized on its own _mm512_undefined_* helpers.
#if defined(__GNUC__) && !defined(__clang__)  // clang has no -Wmaybe-uninitialized (and no such trip)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "attention.h"
#include "attention_avx2_ops.h"
#include "attention_prompt_tiled.h"
#include "attention_tiled.h"

namespace llmserve {

namespace {

inline __m512 round16_512(__m512 x) { return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT)); }

// As scores_head (attention_avx2_ops.h), 16 lanes at a time. HD: a multiple of 32.
template <int HD>
void scores_head512(const float* qh, const float* const* krow, int64_t jn, float scale, float* out) {
  static_assert(HD % 32 == 0, "whole 32-element steps");
  __m512 q[HD / 16];
#pragma GCC unroll 16
  for (int c = 0; c < HD / 16; ++c) q[c] = _mm512_loadu_ps(qh + 16 * c);
  const __m256 sc8 = _mm256_set1_ps(scale), zero = _mm256_setzero_ps();
  for (int64_t jb = 0; jb < jn; jb += 8) {
    __m256 part[8];
    for (int u = 0; u < 8; ++u) {
      if (jb + u >= jn) {
        part[u] = zero;
        continue;
      }
      const float* k = krow[jb + u];
      __m512 s01 = _mm512_setzero_ps(), s23 = _mm512_setzero_ps();
#pragma GCC unroll 16
      for (int c = 0; c < HD / 16; c += 2) {
        s01 = _mm512_fmadd_ps(_mm512_loadu_ps(k + 16 * c), q[c], s01);
        s23 = _mm512_fmadd_ps(_mm512_loadu_ps(k + 16 * c + 16), q[c + 1], s23);
      }
      const __m256 a01 = _mm256_add_ps(_mm512_castps512_ps256(s01), _mm512_extractf32x8_ps(s01, 1));
      const __m256 a23 = _mm256_add_ps(_mm512_castps512_ps256(s23), _mm512_extractf32x8_ps(s23, 1));
      part[u] = _mm256_add_ps(a01, a23);
    }
    _mm256_storeu_ps(out + jb, _mm256_mul_ps(avx2::hsum8_ps(part), sc8));
  }
}

// The 16-lane width for accumulate_block (attention_avx2_ops.h).
struct Vec16 {
  using V = __m512;
  static constexpr int kLanes = 16;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V round16(V x) { return round16_512(x); }
};

struct Avx512Ops {
  static void f16_to_f32(const uint8_t* src, float* dst, int64_t n) {
    const auto* h = reinterpret_cast<const uint16_t*>(src);
    int64_t e = 0;
    for (; e + 16 <= n; e += 16)
      _mm512_storeu_ps(dst + e, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + e))));
    f16_to_f32_8(src + 2 * e, dst + e, n - e);
  }
  static void scores(const float* qh, const float* const* krow, int64_t n, float scale, int64_t hd, float* out) {
    if (hd == 64) scores_head512<64>(qh, krow, n, scale, out);
    else if (hd == 128) scores_head512<128>(qh, krow, n, scale, out);
    else if (hd == 256) scores_head512<256>(qh, krow, n, scale, out);
    else Avx2Ops::scores(qh, krow, n, scale, hd, out);
  }
  // 32 zmm registers: 16 chains (2 rows of 128 elements, 4 rows of 64).
  template <bool F16, bool RESCALE>
  static void accumulate(float* const* acc, int nr, const float* const* vrow, const float* const* ms,
                         const float* const* vs, int64_t n, int64_t hd) {
    int64_t d = 0;
    for (; d + 128 <= hd; d += 128) accumulate_rows<Vec16, F16, RESCALE, 8, 2>(acc, nr, vrow, ms, vs, n, d);
    for (; d + 64 <= hd; d += 64) accumulate_rows<Vec16, F16, RESCALE, 4, 4>(acc, nr, vrow, ms, vs, n, d);
    for (; d + 16 <= hd; d += 16) accumulate_rows<Vec16, F16, RESCALE, 1, 4>(acc, nr, vrow, ms, vs, n, d);
    // The tail (fewer than 16 elements): the 8-lane pieces.
    if (d < hd) accumulate8<F16, RESCALE>(acc, nr, vrow, ms, vs, n, d, hd);
  }
};

}  // namespace

void attention_group_avx512(const AttnGroup& a) { attention_group_tiled<Avx512Ops>(a); }

// Scores 8 positions x 2 row vectors of 16 (16 chains) per block; calls of at most 8 rows (a
// decoded token's query heads) in 8-lane vectors, 8 positions x 1 vector, so fewer lanes idle.
void attention_prompt_avx512(const AttnGroup& a) {
  if (a.n_tok * a.n_q <= 8) attention_prompt_tiled<Avx512Ops, Vec8, 8, 1>(a);
  else attention_prompt_tiled<Avx512Ops, Vec16, 8, 2>(a);
}

}  // namespace llmserve
