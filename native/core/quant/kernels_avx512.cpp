// AVX-512 (F/BW/VL/DQ/VNNI) kernels; compiled with those flags and only called after dispatch.cpp
// confirmed them. The AVX-512 table starts as a copy of the AVX2 one and replaces only what was
// measured faster here (AMD EPYC, double-pumped 512-bit units): BF16 and Q6_K dots. 512-bit
// VNNI variants of Q4_0/Q8_0/Q4_K and F16/F32 dots were tried and were no faster than AVX2.
// GCC 12's avx512fintrin.h trips -Wuninitialized on its own _mm512_undefined_* helpers.
#if defined(__GNUC__) && !defined(__clang__)  // clang has no -Wmaybe-uninitialized (and no such trip)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "quant/quant_impl.h"

namespace llmserve::quant {
namespace {

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

inline __m512 load_bf16x16(const uint16_t* p) {
  __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

// w, xq: [n] bf16 bits
float vec_dot_bf16_avx512(int64_t n, const void* w, const void* xq) {
  const uint16_t* a = static_cast<const uint16_t*>(w);
  const uint16_t* b = static_cast<const uint16_t*>(xq);
  __m512 s0 = _mm512_setzero_ps(), s1 = s0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(load_bf16x16(a + i), load_bf16x16(b + i), s0);
    s1 = _mm512_fmadd_ps(load_bf16x16(a + i + 16), load_bf16x16(b + i + 16), s1);
  }
  for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(load_bf16x16(a + i), load_bf16x16(b + i), s0);
  float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
  for (; i < n; ++i) s += bf16_to_fp32(a[i]) * bf16_to_fp32(b[i]);
  return s;
}

// w: [n/256] BlockQ6_K, xq: [n/256] BlockQ8_K (bsums fold in the -32 offset). Per 128 elements,
// ql (64 bytes) as [ql0 | ql1] with qh broadcast to both halves: variable per-half shifts give
// [q(0..31) | q(32..63)] from the low nibbles and [q(64..95) | q(96..127)] from the high ones.
// After maddubs each 128-bit lane (8 int16 pair sums) is one 16-element scale group.
float vec_dot_q6_K_avx512(int64_t n, const void* w, const void* xq) {
  const BlockQ6_K* a = static_cast<const BlockQ6_K*>(w);
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(xq);
  const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
  // 16-bit shift counts: first 256 bits take qh bits 0-1 / 4-5, second 256 bits bits 2-3 / 6-7.
  const __m512i shl_lo = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
  const __m512i shr_hi = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);
  __m512i group_sel[4];  // int16 lane l of part p takes scale 4p + l/8
  for (int p = 0; p < 4; ++p) {
    alignas(64) int16_t ix[32];
    for (int l = 0; l < 32; ++l) ix[l] = static_cast<int16_t>(4 * p + l / 8);
    group_sel[p] = _mm512_load_si512(ix);
  }
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a[i].scales)));
    const __m512i scales = _mm512_castsi256_si512(sc16);
    __m512i sumi = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = _mm512_loadu_si512(a[i].ql + 64 * h);
      const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qh + 32 * h)));
      const __m512i lo =
          _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_and_si512(_mm512_sllv_epi16(qh, shl_lo), m30));
      const __m512i hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                         _mm512_and_si512(_mm512_srlv_epi16(qh, shr_hi), m30));
      const __m512i p_lo = _mm512_maddubs_epi16(lo, _mm512_loadu_si512(b[i].qs + 128 * h));
      const __m512i p_hi = _mm512_maddubs_epi16(hi, _mm512_loadu_si512(b[i].qs + 128 * h + 64));
      sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(p_lo, _mm512_permutexvar_epi16(group_sel[2 * h], scales)));
      sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(p_hi, _mm512_permutexvar_epi16(group_sel[2 * h + 1], scales)));
    }
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].bsums));
    const __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5);  // 32*sum_g(sc_g*bsums_g)
    sumi = _mm512_sub_epi32(sumi, _mm512_castsi256_si512(off));
    acc = _mm512_fmadd_ps(_mm512_set1_ps(h2f(a[i].d) * b[i].d), _mm512_cvtepi32_ps(sumi), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

}  // namespace

void install_avx512_kernels(KernelTable& t) {
  t.isa = "avx512";
  t.dot[idx(GgmlType::BF16)] = vec_dot_bf16_avx512;
  t.dot[idx(GgmlType::Q6_K)] = vec_dot_q6_K_avx512;
}

}  // namespace llmserve::quant
