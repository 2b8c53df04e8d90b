// AVX-512 (VNNI) GEMM kernels of Q4_1, Q5_0, Q5_1 and IQ4_NL: 16 packed rows in the lanes of a
// zmm, T <= 8 tokens per call (gemm_avx512_driver.h). Per 32-element block and token, ia = the
// block's exact integer dot (vpdpbusd: the unsigned weight byte of each row times the token's 4
// activation bytes broadcast), started from the activation row's c term where the weights are
// stored with an offset; then the canonical sequence of gemm_ref_legacy.cpp:
//   acc = fma(float(ia), d_w * d_x, acc)   (+ Q4_1/Q5_1: acc_m = fma(m_w, s_x, acc_m), y = acc + acc_m)
// so every lane's result depends only on its row and token, bit-identical to the scalar GEMM.
#include "quant/gemm_avx512_driver.h"

namespace llmserve::quant {
namespace {

// Q supplies: kRecord; kOffQs (the qs[4][16][4] of the record); kOffM (u16 m[16], 0 if none);
// kC (the activation's c term offset per block: 36 = c4, 40 = c128, 0 = none) and kCShift (c << it);
// weights<j>(g, lo, hi): the 16 rows' unsigned values of elements 4j.. (lo) and 16 + 4j.. (hi).
template <class Q>
struct KBlock32 {
  static constexpr int kMaxT = 8;
  static constexpr size_t kRecord = Q::kRecord;
  static constexpr bool kHasM = Q::kOffM != 0;
  template <int T>
  static void run(const uint8_t* g, int64_t nb, const uint8_t* const* x, __m512* acc, const Prefetcher& pf) {
    // Activation row: qs[nb][32] | f32 d[nb] | Q8_0: i32 c4[nb] | i32 c128[nb]; Q8_1: f32 s[nb].
    const size_t od = static_cast<size_t>(nb) * 32, oc = static_cast<size_t>(nb) * Q::kC;
    const size_t os = static_cast<size_t>(nb) * 36;
    __m512 acc_m[kHasM ? T : 1];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      acc[t] = _mm512_setzero_ps();
      if constexpr (kHasM) acc_m[t] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < nb; ++b, g += kRecord) {
      pf(b);
      __m512i ia[T];
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        if constexpr (Q::kC != 0) ia[t] = _mm512_slli_epi32(bcast32(x[t] + oc + 4 * b), Q::kCShift);
        else ia[t] = _mm512_setzero_si512();
      }
      const size_t xb = 32 * static_cast<size_t>(b);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        __m512i lo, hi;
        Q::weights(g, j, &lo, &hi);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          ia[t] = dpbusd_bcast(ia[t], lo, x[t] + xb + 4 * j);
          ia[t] = dpbusd_bcast(ia[t], hi, x[t] + xb + 16 + 4 * j);
        }
      }
      const __m512 dw = load_f16x16(g);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m512 d = _mm512_mul_ps(dw, bcastf(x[t] + od + 4 * b));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[t]), d, acc[t]);
      }
      if constexpr (kHasM) {
        const __m512 mw = load_f16x16(g + Q::kOffM);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) acc_m[t] = _mm512_fmadd_ps(mw, bcastf(x[t] + os + 4 * b), acc_m[t]);
      }
    }
    if constexpr (kHasM) {
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) acc[t] = _mm512_add_ps(acc[t], acc_m[t]);
    }
  }
};

inline __m512i nibbles_lo(__m512i v) { return _mm512_and_si512(v, _mm512_set1_epi8(0x0F)); }
inline __m512i nibbles_hi(__m512i v) { return _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(0x0F)); }

// Q4_1: u16 d[16] | u16 m[16] | qs[4][16][4]; unsigned nibbles, no c term.
struct Q4_1W {
  static constexpr size_t kRecord = kPackQ4_1, kOffM = 32, kC = 0;
  static constexpr int kCShift = 0;
  static void weights(const uint8_t* g, int j, __m512i* lo, __m512i* hi) {
    const __m512i v = load512(g + 64 + 64 * j);
    *lo = nibbles_lo(v);
    *hi = nibbles_hi(v);
  }
};

// Q5_0 / Q5_1: nibbles plus the fifth bit from the transposed h word of each row (gemm_impl.h):
// group j's low nibbles take bit j of each byte of h, the high nibbles bit 4 + j, moved to bit 4.
template <size_t kOffQs, size_t kOffH>
inline void q5_weights(const uint8_t* g, int j, __m512i* lo, __m512i* hi) {
  const __m512i v = load512(g + kOffQs + 64 * j), h = load512(g + kOffH), b4 = _mm512_set1_epi8(0x10);
  // 32-bit shifts are exact here: the kept bit 4 of each byte comes from bit j (or 4 + j) of
  // the same byte. (j is a constant once the caller's loop is unrolled.)
  *lo = _mm512_or_si512(nibbles_lo(v), _mm512_and_si512(_mm512_sllv_epi32(h, _mm512_set1_epi32(4 - j)), b4));
  *hi = _mm512_or_si512(nibbles_hi(v), _mm512_and_si512(_mm512_srlv_epi32(h, _mm512_set1_epi32(j)), b4));
}

// Q5_0: u16 d[16] | qs[4][16][4] | u32 h[16]; values q - 16: c term 2 * c4 = -16 * sum x.
struct Q5_0W {
  static constexpr size_t kRecord = kPackQ5_0, kOffM = 0, kC = 36;
  static constexpr int kCShift = 1;
  static void weights(const uint8_t* g, int j, __m512i* lo, __m512i* hi) { q5_weights<32, 288>(g, j, lo, hi); }
};

// Q5_1: u16 d[16] | u16 m[16] | qs[4][16][4] | u32 h[16]; unsigned values.
struct Q5_1W {
  static constexpr size_t kRecord = kPackQ5_1, kOffM = 32, kC = 0;
  static constexpr int kCShift = 0;
  static void weights(const uint8_t* g, int j, __m512i* lo, __m512i* hi) { q5_weights<64, 320>(g, j, lo, hi); }
};

// IQ4_NL: Q4_0's record; the nibble picks a grid value, looked up (vpshufb) + 128 so it is
// unsigned; c term c128 = -128 * sum x.
struct IQ4_NLW {
  static constexpr size_t kRecord = kPackIQ4_NL, kOffM = 0, kC = 40;
  static constexpr int kCShift = 0;
  static __m512i lut() {  // kIQ4NLValues + 128
    return _mm512_broadcast_i32x4(_mm_setr_epi8(1, 24, 45, 63, 79, 93, 106, 118, (char)129, (char)141, (char)153,
                                                (char)166, (char)181, (char)197, (char)217, (char)241));
  }
  static void weights(const uint8_t* g, int j, __m512i* lo, __m512i* hi) {
    const __m512i t = lut(), v = load512(g + 32 + 64 * j);
    *lo = _mm512_shuffle_epi8(t, nibbles_lo(v));
    *hi = _mm512_shuffle_epi8(t, nibbles_hi(v));
  }
};

void pack_group(GgmlType t, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out, const Prefetcher& pf) {
  if (pack_group_more_avx512(t, w, rb, nr, nb, out, pf.next, pf.bytes, pf.nb)) return;
  for (int64_t b = 0; b < nb; ++b) pf(b);  // (touches the next group ahead of its packing)
  gemm_pack_group_ref(t, w, rb, nr, nb, out);
}

}  // namespace

void install_avx512_gemm_legacy(KernelTable& t) {
  t.gemm[idx(GgmlType::Q4_1)] = gemm_quant<KBlock32<Q4_1W>>;
  t.gemm[idx(GgmlType::Q5_0)] = gemm_quant<KBlock32<Q5_0W>>;
  t.gemm[idx(GgmlType::Q5_1)] = gemm_quant<KBlock32<Q5_1W>>;
  t.gemm[idx(GgmlType::IQ4_NL)] = gemm_quant<KBlock32<IQ4_NLW>>;
}

}  // namespace llmserve::quant
