// AVX2 + FMA + F16C kernels (this file is compiled with -mavx2 -mfma -mf16c and only called after
// dispatch.cpp has confirmed the CPU supports them). Integer block sums are exact; only the order
// of the final f32 accumulation differs from the *_ref kernels. Activation quantizers (Q8_0, Q8_K,
// F16, BF16) produce bytes identical to their references.
#include <immintrin.h>

#include "quant/dot_avx2.h"
#include "quant/quant_impl.h"

namespace llmserve::quant {
namespace {

// Hides v from the optimiser so a multiply is never fused with a following add (GCC contracts
// a*b+c into an FMA under -ffp-contract=fast, which would change rounding vs the reference).
inline __m256 opaque(__m256 v) {
  __asm__("" : "+x"(v));
  return v;
}

using avx2::hsum_ps;

inline float hmax_ps(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

// Four vectors of 8 int32 (elements 0-7, 8-15, 16-23, 24-31) -> 32 saturated int8 in order.
inline __m256i pack_i32x32_to_i8(__m256i a, __m256i b, __m256i c, __m256i d) {
  __m256i ab = _mm256_packs_epi32(a, b);   // 0-3 8-11 | 4-7 12-15   (per 128-bit lane)
  __m256i cd = _mm256_packs_epi32(c, d);   // 16-19 24-27 | 20-23 28-31
  __m256i v = _mm256_packs_epi16(ab, cd);  // dwords: 0-3 8-11 16-19 24-27 | 4-7 12-15 20-23 28-31
  return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// ------------------------------------------------------------------------------- float formats

// w, xq: [n] f32
float vec_dot_f32_avx2(int64_t n, const void* w, const void* xq) {
  return avx2::dot_f32(n, static_cast<const float*>(w), static_cast<const float*>(xq));
}

inline __m256 load_f16x8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// w, xq: [n] f16 bits; products and sums in f32 lanes (f16*f16 products are exact in f32)
float vec_dot_f16_avx2(int64_t n, const void* w, const void* xq) {
  const uint16_t* a = static_cast<const uint16_t*>(w);
  const uint16_t* b = static_cast<const uint16_t*>(xq);
  return avx2::dot_order(
      n, [a](int64_t i) { return load_f16x8(a + i); }, [b](int64_t i) { return load_f16x8(b + i); },
      [a](int64_t i) { return h2f(a[i]); }, [b](int64_t i) { return h2f(b[i]); });
}

// x: [n] f16 bits -> y: [n] f32
void dequantize_row_f16_avx2(const void* x, float* y, int64_t n) {
  const uint16_t* h = static_cast<const uint16_t*>(x);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, load_f16x8(h + i));
  for (; i < n; ++i) y[i] = h2f(h[i]);
}

// x: [n] f32 -> y: [n] f16 bits. F16C rounds to nearest even like fp32_to_fp16; NaNs are then
// rewritten to sign|0x7E00 as the scalar path does (F16C would keep payload bits).
void quantize_row_f16_avx2(const float* x, void* y, int64_t n) {
  uint16_t* h = static_cast<uint16_t*>(y);
  const __m128i abs_mask = _mm_set1_epi16(0x7FFF), inf = _mm_set1_epi16(0x7C00);
  const __m128i sign_mask = _mm_set1_epi16(static_cast<short>(0x8000)), qnan = _mm_set1_epi16(0x7E00);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i v = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), 0);  // imm 0: round to nearest even
    __m128i nan = _mm_cmpgt_epi16(_mm_and_si128(v, abs_mask), inf);
    __m128i fixed = _mm_or_si128(_mm_and_si128(v, sign_mask), qnan);
    v = _mm_or_si128(_mm_andnot_si128(nan, v), _mm_and_si128(nan, fixed));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h + i), v);
  }
  for (; i < n; ++i) h[i] = fp32_to_fp16(x[i]);
}

inline __m256 load_bf16x8(const uint16_t* p) {
  __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

// w, xq: [n] bf16 bits
float vec_dot_bf16_avx2(int64_t n, const void* w, const void* xq) {
  const uint16_t* a = static_cast<const uint16_t*>(w);
  const uint16_t* b = static_cast<const uint16_t*>(xq);
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(load_bf16x8(a + i), load_bf16x8(b + i), s0);
    s1 = _mm256_fmadd_ps(load_bf16x8(a + i + 8), load_bf16x8(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(load_bf16x8(a + i), load_bf16x8(b + i), s0);
  float s = hsum_ps(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += bf16_to_fp32(a[i]) * bf16_to_fp32(b[i]);
  return s;
}

// x: [n] bf16 bits -> y: [n] f32
void dequantize_row_bf16_avx2(const void* x, float* y, int64_t n) {
  const uint16_t* h = static_cast<const uint16_t*>(x);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, load_bf16x8(h + i));
  for (; i < n; ++i) y[i] = bf16_to_fp32(h[i]);
}

// x: [n] f32 -> y: [n] bf16 bits; same integer rounding as fp32_to_bf16 (nearest even, quiet NaN)
void quantize_row_bf16_avx2(const float* x, void* y, int64_t n) {
  uint16_t* h = static_cast<uint16_t*>(y);
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF), inf = _mm256_set1_epi32(0x7F800000);
  const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7FFF), quiet = _mm256_set1_epi32(64);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i u = _mm256_castps_si256(_mm256_loadu_ps(x + i));
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
    __m256i hi = _mm256_srli_epi32(u, 16);
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(hi, one))), 16);
    r = _mm256_blendv_epi8(r, _mm256_or_si256(hi, quiet), nan);
    __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);  // qwords 0,2 -> low lane
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h + i), _mm256_castsi256_si128(p));
  }
  for (; i < n; ++i) h[i] = fp32_to_bf16(x[i]);
}

// ---------------------------------------------------------------------------------------- Q8_0

// x: [n] f32 -> y: [n/32] BlockQ8_0, byte-identical to quantize_row_q8_0_ref: same d and id, and
// round half to even.
void quantize_row_q8_0_avx2(const float* x, void* y, int64_t n) {
  BlockQ8_0* b = static_cast<BlockQ8_0*>(y);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t i = 0; i < n / kQK8_0; ++i, x += kQK8_0) {
    __m256 v[4];
    __m256 nan = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_loadu_ps(x + 8 * k);
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(v[k], v[k], _CMP_UNORD_Q));
    }
    if (_mm256_movemask_ps(nan)) {  // the reference's running max is order-dependent with NaNs
      quantize_row_q8_0_ref(x, &b[i], kQK8_0);
      continue;
    }
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                             _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
    const float amax = hmax_ps(m);
    const float d = amax / 127;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    b[i].d = fp32_to_fp16(d);
    const __m256 idv = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) {
      __m256 p = opaque(_mm256_mul_ps(v[k], idv));
      p = _mm256_and_ps(p, _mm256_cmp_ps(p, p, _CMP_ORD_Q));  // inf*0 = NaN -> 0, as the reference
      q[k] = _mm256_cvtps_epi32(_mm256_round_ps(p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(b[i].qs), pack_i32x32_to_i8(q[0], q[1], q[2], q[3]));
  }
}

// w: [n/32] BlockQ8_0, xq: [n/32] BlockQ8_0 with activation values in [-127, 127] (what
// quantize_row(Q8_0) produces). maddubs needs an unsigned operand, so it multiplies |w| by x with
// w's sign moved onto x; |w| = 128 for w = -128 still reads correctly as unsigned, only x = -128
// would wrap, hence the precondition on the activation side.
float vec_dot_q8_0_avx2(int64_t n, const void* w, const void* xq) {
  const BlockQ8_0* a = static_cast<const BlockQ8_0*>(w);
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(xq);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK8_0; ++i) {
    __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qs));
    __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs));
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(v, x));
    __m256i s = _mm256_madd_epi16(p, ones);
    const float d = h2f(a[i].d) * h2f(b[i].d);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc);
  }
  return hsum_ps(acc);
}

// ---------------------------------------------------------------------------------------- Q4_0

// w: [n/32] BlockQ4_0, xq: [n/32] BlockQ8_0. Unsigned nibbles q (0..15) times int8 x via maddubs,
// minus 8*x the same way: both pair sums stay far below int16 saturation for any input bytes.
float vec_dot_q4_0_avx2(int64_t n, const void* w, const void* xq) {
  const BlockQ4_0* a = static_cast<const BlockQ4_0*>(w);
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(xq);
  const __m128i m4 = _mm_set1_epi8(0x0F);
  const __m256i eight = _mm256_set1_epi8(8), ones = _mm256_set1_epi16(1);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK4_0; ++i) {
    __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a[i].qs));
    __m256i qv = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m4), _mm_and_si128(q, m4));
    __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs));
    __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(qv, v), _mm256_maddubs_epi16(eight, v));
    __m256i s = _mm256_madd_epi16(p, ones);
    const float d = h2f(a[i].d) * h2f(b[i].d);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc);
  }
  return hsum_ps(acc);
}

// ---------------------------------------------------------------------------------------- Q8_K

// x: [n] f32 -> y: [n/256] BlockQ8_K, byte-identical to quantize_row_q8_K_ref (cvtps_epi32 rounds
// half to even under the default MXCSR, exactly like nearest_int's magic-number add).
void quantize_row_q8_K_avx2(const float* x, void* y, int64_t n) {
  BlockQ8_K* b = static_cast<BlockQ8_K*>(y);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256i max127 = _mm256_set1_epi32(127), flip = _mm256_set1_epi8(static_cast<char>(0x80));
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    __m256 m = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
    for (int j = 0; j < kQK_K; j += 8) {
      __m256 v = _mm256_loadu_ps(x + j);
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v));
    }
    if (_mm256_movemask_ps(nan)) {  // NaNs: defer to the reference, whose max skips them
      quantize_row_q8_K_ref(x, &b[i], kQK_K);
      continue;
    }
    const float amax = hmax_ps(m);
    if (!amax) {
      std::memset(&b[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    int first = 0;  // the reference keeps the first element of largest magnitude (its sign matters)
    while (std::fabs(x[first]) != amax) ++first;
    const float iscale = -127.f / x[first];
    const __m256 isv = _mm256_set1_ps(iscale);
    for (int j = 0; j < kQK_K; j += 32) {
      __m256i q[4];
      for (int k = 0; k < 4; ++k) {
        __m256 p = opaque(_mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * k), isv));
        p = _mm256_and_ps(p, _mm256_cmp_ps(p, p, _CMP_ORD_Q));
        q[k] = _mm256_min_epi32(_mm256_cvtps_epi32(p), max127);
      }
      __m256i packed = pack_i32x32_to_i8(q[0], q[1], q[2], q[3]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(b[i].qs + j), packed);
      // Group sums: bias to unsigned, sum 8 bytes per qword with SAD, remove 8*128 per qword.
      __m256i sad = _mm256_sad_epu8(_mm256_xor_si256(packed, flip), _mm256_setzero_si256());
      alignas(32) uint64_t s[4];
      _mm256_store_si256(reinterpret_cast<__m256i*>(s), sad);
      b[i].bsums[j / 16] = static_cast<int16_t>(static_cast<int>(s[0] + s[1]) - 16 * 128);
      b[i].bsums[j / 16 + 1] = static_cast<int16_t>(static_cast<int>(s[2] + s[3]) - 16 * 128);
    }
    b[i].d = 1 / iscale;
  }
}

// ---------------------------------------------------------------------------------------- Q4_K

// w: [n/256] BlockQ4_K, xq: [n/256] BlockQ8_K. Per 64 elements: 32 bytes of nibbles, low nibbles
// pair with x[0..31] (sub-block 2j), high with x[32..63] (sub-block 2j+1); the mins term uses
// the activation's bsums, so xq must come from quantize_row(Q8_K).
float vec_dot_q4_K_avx2(int64_t n, const void* w, const void* xq) {
  const BlockQ4_K* a = static_cast<const BlockQ4_K*>(w);
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(xq);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  __m256 acc = _mm256_setzero_ps();
  __m128 acc_m = _mm_setzero_ps();
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    alignas(16) uint8_t sm[16];
    unpack_q4_K_scales(a[i].scales, sm);
    const __m256i sm16 = _mm256_cvtepu8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(sm)));
    // mins . (bsums[2j] + bsums[2j+1]) -> 4 int32 partial sums
    const __m128i bs_lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].bsums));
    const __m128i bs_hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].bsums + 8));
    const __m128i mins = _mm_madd_epi16(_mm256_extracti128_si256(sm16, 1), _mm_hadd_epi16(bs_lo, bs_hi));
    // int16 scales in both 128-bit lanes; a byte shuffle broadcasts scale k to all 16 lanes
    const __m256i scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm16));
    __m256i sumi = _mm256_setzero_si256();
    for (int j = 0; j < 4; ++j) {
      const __m256i s0 =
          _mm256_shuffle_epi8(scales, _mm256_set1_epi16(static_cast<short>(((4 * j + 1) << 8) | (4 * j))));
      const __m256i s1 =
          _mm256_shuffle_epi8(scales, _mm256_set1_epi16(static_cast<short>(((4 * j + 3) << 8) | (4 * j + 2))));
      __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qs + 32 * j));
      __m256i lo = _mm256_and_si256(q, m4);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      __m256i y0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs + 64 * j));
      __m256i y1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs + 64 * j + 32));
      __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), s0);
      __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), s1);
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(a[i].d) * b[i].d), _mm256_cvtepi32_ps(sumi), acc);
    acc_m = _mm_fmadd_ps(_mm_set1_ps(h2f(a[i].dmin) * b[i].d), _mm_cvtepi32_ps(mins), acc_m);
  }
  __m128 m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
  m = _mm_add_ss(m, _mm_movehdup_ps(m));
  return hsum_ps(acc) - _mm_cvtss_f32(m);
}

// ---------------------------------------------------------------------------------------- Q6_K

// w: [n/256] BlockQ6_K, xq: [n/256] BlockQ8_K. The 6-bit values are used unsigned (0..63) in
// maddubs; the -32 offset is folded in afterwards as 32*sum_g(scale_g*bsums_g), so xq must come
// from quantize_row(Q8_K).
float vec_dot_q6_K_avx2(int64_t n, const void* w, const void* xq) {
  const BlockQ6_K* a = static_cast<const BlockQ6_K*>(w);
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(xq);
  const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const int8_t* sc = a[i].scales;
    __m256i sumi = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].ql + 64 * h));
      __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].ql + 64 * h + 32));
      __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qh + 32 * h));
      __m256i q[4];
      q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
      q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
      q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m30));
      q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                             _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
      for (int k = 0; k < 4; ++k) {
        const int g = 8 * h + 2 * k;  // scale group of the first 16 of these 32 elements
        __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs + 128 * h + 32 * k));
        __m256i s = _mm256_set_m128i(_mm_set1_epi16(sc[g + 1]), _mm_set1_epi16(sc[g]));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], v), s));
      }
    }
    __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].bsums));
    __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc)));
    sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5));
    const float d = h2f(a[i].d) * b[i].d;
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum_ps(acc);
}

}  // namespace

void install_avx2_kernels(KernelTable& t) {
  t.isa = "avx2";
  t.dot[idx(GgmlType::F32)] = vec_dot_f32_avx2;
  t.dot[idx(GgmlType::F16)] = vec_dot_f16_avx2;
  t.dequant[idx(GgmlType::F16)] = dequantize_row_f16_avx2;
  t.quant[idx(GgmlType::F16)] = quantize_row_f16_avx2;
  t.dot[idx(GgmlType::BF16)] = vec_dot_bf16_avx2;
  t.dequant[idx(GgmlType::BF16)] = dequantize_row_bf16_avx2;
  t.quant[idx(GgmlType::BF16)] = quantize_row_bf16_avx2;
  t.quant[idx(GgmlType::Q8_0)] = quantize_row_q8_0_avx2;
  t.dot[idx(GgmlType::Q8_0)] = vec_dot_q8_0_avx2;
  t.dot[idx(GgmlType::Q4_0)] = vec_dot_q4_0_avx2;
  t.quant[idx(GgmlType::Q8_K)] = quantize_row_q8_K_avx2;
  t.dot[idx(GgmlType::Q4_K)] = vec_dot_q4_K_avx2;
  t.dot[idx(GgmlType::Q6_K)] = vec_dot_q6_K_avx2;
}

}  // namespace llmserve::quant
