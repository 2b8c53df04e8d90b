// AVX-512 (F/BW/VL/DQ/VNNI) dot kernels; compiled with those flags and only called after
// dispatch.cpp confirmed them. The activation quantizers are the AVX2 ones (installed first).
// VNNI's vpdpbusd multiplies unsigned by signed bytes and sums groups of 4 into int32 without
// saturation, so the integer block sums are exact for any input bytes.
// GCC 12's avx512fintrin.h trips -Wuninitialized on its own _mm512_undefined_* helpers.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "quant/quant_impl.h"

namespace llmserve::quant {
namespace {

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

inline __m512 load_f16x16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline __m512 load_bf16x16(const uint16_t* p) {
  __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

// w, xq: [n] f32
float vec_dot_f32_avx512(int64_t n, const void* w, const void* xq) {
  const float* a = static_cast<const float*>(w);
  const float* b = static_cast<const float*>(xq);
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
    s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
  }
  for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
  if (i < n) {  // masked tail: lanes past n load as 0
    const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
    s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_maskz_loadu_ps(k, b + i), s1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

// w, xq: [n] f16 bits; f32 lanes (f16*f16 products are exact in f32)
float vec_dot_f16_avx512(int64_t n, const void* w, const void* xq) {
  const uint16_t* a = static_cast<const uint16_t*>(w);
  const uint16_t* b = static_cast<const uint16_t*>(xq);
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_fmadd_ps(load_f16x16(a + i), load_f16x16(b + i), s0);
    s1 = _mm512_fmadd_ps(load_f16x16(a + i + 16), load_f16x16(b + i + 16), s1);
    s2 = _mm512_fmadd_ps(load_f16x16(a + i + 32), load_f16x16(b + i + 32), s2);
    s3 = _mm512_fmadd_ps(load_f16x16(a + i + 48), load_f16x16(b + i + 48), s3);
  }
  for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(load_f16x16(a + i), load_f16x16(b + i), s0);
  float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  for (; i < n; ++i) s += h2f(a[i]) * h2f(b[i]);
  return s;
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

// x: [n] f16 bits -> y: [n] f32
void dequantize_row_f16_avx512(const void* x, float* y, int64_t n) {
  const uint16_t* h = static_cast<const uint16_t*>(x);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, load_f16x16(h + i));
  for (; i < n; ++i) y[i] = h2f(h[i]);
}

// Two consecutive 32-byte quant arrays (blocks i and i+1) as one 512-bit vector.
template <typename Block>
inline __m512i load_qs_pair(const Block* blk) {
  return _mm512_inserti64x4(
      _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[0].qs))),
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[1].qs)), 1);
}

// [d_w*d_x of block i] x8 | [d_w*d_x of block i+1] x8
template <typename BlockW, typename BlockX>
inline __m512 scale_pair(const BlockW* a, const BlockX* b) {
  return _mm512_insertf32x8(_mm512_set1_ps(h2f(a[0].d) * h2f(b[0].d)),
                            _mm256_set1_ps(h2f(a[1].d) * h2f(b[1].d)), 1);
}

// w: [n/32] BlockQ8_0, xq: [n/32] BlockQ8_0. vpdpbusd wants unsigned bytes, so w is biased by 128
// (xor 0x80) and 128*sum(x) subtracted again: exact for every int8 on both sides.
float vec_dot_q8_0_avx512(int64_t n, const void* w, const void* xq) {
  const BlockQ8_0* a = static_cast<const BlockQ8_0*>(w);
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(xq);
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512 acc = _mm512_setzero_ps();
  const int64_t nb = n / kQK8_0;
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    const __m512i x = load_qs_pair(a + i), v = load_qs_pair(b + i);
    const __m512i s = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_xor_si512(x, bias), v),
                                       _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, v));
    acc = _mm512_fmadd_ps(scale_pair(a + i, b + i), _mm512_cvtepi32_ps(s), acc);
  }
  float tail = 0.0f;
  if (i < nb) tail = vec_dot_q8_0_ref(kQK8_0, a + i, b + i);
  return _mm512_reduce_add_ps(acc) + tail;
}

// w: [n/32] BlockQ4_0, xq: [n/32] BlockQ8_0. Two blocks per 512-bit step: sum(q*x) - 8*sum(x)
// with q the unsigned nibble, both via vpdpbusd.
float vec_dot_q4_0_avx512(int64_t n, const void* w, const void* xq) {
  const BlockQ4_0* a = static_cast<const BlockQ4_0*>(w);
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(xq);
  const __m128i m4 = _mm_set1_epi8(0x0F);
  const __m512i eight = _mm512_set1_epi8(8);
  auto nibbles = [&m4](const BlockQ4_0& blk) {  // 32 unsigned values in element order
    __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.qs));
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m4), _mm_and_si128(q, m4));
  };
  __m512 acc = _mm512_setzero_ps();
  const int64_t nb = n / kQK4_0;
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(nibbles(a[i])), nibbles(a[i + 1]), 1);
    __m512i v = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i + 1].qs)), 1);
    __m512i s = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q, v),
                                 _mm512_dpbusd_epi32(_mm512_setzero_si512(), eight, v));
    __m512 d = _mm512_insertf32x8(_mm512_set1_ps(h2f(a[i].d) * h2f(b[i].d)),
                                  _mm256_set1_ps(h2f(a[i + 1].d) * h2f(b[i + 1].d)), 1);
    acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc);
  }
  __m256 acc8 = _mm256_setzero_ps();
  if (i < nb) {
    __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs));
    __m256i s = _mm256_sub_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), nibbles(a[i]), v),
                                 _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(8), v));
    acc8 = _mm256_mul_ps(_mm256_set1_ps(h2f(a[i].d) * h2f(b[i].d)), _mm256_cvtepi32_ps(s));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc, _mm512_castps256_ps512(acc8)));
}

// w: [n/256] BlockQ4_K, xq: [n/256] BlockQ8_K (bsums used for the mins term). Per 64 elements the
// 32 nibble bytes expand to [low nibbles | high nibbles] = elements 0..63 of that chunk, matching
// 64 contiguous activation bytes; lanes 0-7 belong to sub-block 2j, lanes 8-15 to 2j+1.
float vec_dot_q4_K_avx512(int64_t n, const void* w, const void* xq) {
  const BlockQ4_K* a = static_cast<const BlockQ4_K*>(w);
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(xq);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  __m512 acc = _mm512_setzero_ps();
  float acc_min = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; ++j) get_scale_min_k4(j, a[i].scales, &sc[j], &mn[j]);
    int summ = 0;
    for (int j = 0; j < 8; ++j) summ += mn[j] * (b[i].bsums[2 * j] + b[i].bsums[2 * j + 1]);
    __m512i sumi = _mm512_setzero_si512();
    for (int j = 0; j < 4; ++j) {
      __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qs + 32 * j));
      __m512i qz = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(q, m4)),
                                      _mm256_and_si256(_mm256_srli_epi16(q, 4), m4), 1);
      __m512i v = _mm512_loadu_si512(b[i].qs + 64 * j);
      __m512i dp = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qz, v);
      __m512i s = _mm512_inserti64x4(_mm512_set1_epi32(sc[2 * j]), _mm256_set1_epi32(sc[2 * j + 1]), 1);
      sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(dp, s));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(h2f(a[i].d) * b[i].d), _mm512_cvtepi32_ps(sumi), acc);
    acc_min += h2f(a[i].dmin) * b[i].d * static_cast<float>(summ);
  }
  return _mm512_reduce_add_ps(acc) - acc_min;
}

// w: [n/256] BlockQ6_K, xq: [n/256] BlockQ8_K (bsums fold in the -32 offset). Per 128 elements,
// ql (64 bytes) as [ql0 | ql1] with qh broadcast to both halves: variable per-half shifts give
// [q(0..31) | q(32..63)] from the low nibbles and [q(64..95) | q(96..127)] from the high ones.
// Each int32 lane of vpdpbusd covers 4 elements, so lane l of part p uses scale 8h + 4p + l/4.
float vec_dot_q6_K_avx512(int64_t n, const void* w, const void* xq) {
  const BlockQ6_K* a = static_cast<const BlockQ6_K*>(w);
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(xq);
  const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
  // 16-bit shift counts: first 256 bits take qh bits 0-1 / 4-5, second 256 bits bits 2-3 / 6-7.
  const __m512i shl_lo = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
  const __m512i shr_hi = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);
  __m512i lane_group[4];
  for (int p = 0; p < 4; ++p) {
    alignas(64) int32_t ix[16];
    for (int l = 0; l < 16; ++l) ix[l] = 4 * p + l / 4;
    lane_group[p] = _mm512_load_si512(ix);
  }
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const __m512i sc32 = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a[i].scales)));
    __m512i sumi = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      __m512i ql = _mm512_loadu_si512(a[i].ql + 64 * h);
      __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qh + 32 * h)));
      __m512i lo = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_and_si512(_mm512_sllv_epi16(qh, shl_lo), m30));
      __m512i hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                   _mm512_and_si512(_mm512_srlv_epi16(qh, shr_hi), m30));
      __m512i d_lo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(b[i].qs + 128 * h));
      __m512i d_hi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi, _mm512_loadu_si512(b[i].qs + 128 * h + 64));
      __m512i s_lo = _mm512_permutexvar_epi32(lane_group[2 * h], sc32);
      __m512i s_hi = _mm512_permutexvar_epi32(lane_group[2 * h + 1], sc32);
      sumi = _mm512_add_epi32(sumi, _mm512_add_epi32(_mm512_mullo_epi32(d_lo, s_lo), _mm512_mullo_epi32(d_hi, s_hi)));
    }
    __m512i bs = _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].bsums)));
    sumi = _mm512_sub_epi32(sumi, _mm512_slli_epi32(_mm512_mullo_epi32(bs, sc32), 5));
    acc = _mm512_fmadd_ps(_mm512_set1_ps(h2f(a[i].d) * b[i].d), _mm512_cvtepi32_ps(sumi), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

}  // namespace

void install_avx512_kernels(KernelTable& t) {
  t.isa = "avx512";
  t.dot[idx(GgmlType::F32)] = vec_dot_f32_avx512;
  t.dot[idx(GgmlType::F16)] = vec_dot_f16_avx512;
  t.dequant[idx(GgmlType::F16)] = dequantize_row_f16_avx512;
  t.dot[idx(GgmlType::BF16)] = vec_dot_bf16_avx512;
  t.dot[idx(GgmlType::Q8_0)] = vec_dot_q8_0_avx512;
  t.dot[idx(GgmlType::Q4_0)] = vec_dot_q4_0_avx512;
  t.dot[idx(GgmlType::Q4_K)] = vec_dot_q4_K_avx512;
  t.dot[idx(GgmlType::Q6_K)] = vec_dot_q6_K_avx512;
}

}  // namespace llmserve::quant
