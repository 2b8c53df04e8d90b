// AVX2 GEMM kernels of Q4_1, Q5_0, Q5_1 and IQ4_NL: 8 packed rows per ymm (half h of a 16-row
// group), T <= 4 tokens per call (gemm_avx2_driver.h). The 4-byte dots use maddubs + madd (no
// VNNI); pair sums are kept below int16 saturation (per kernel below), so every block's integer
// dot is exact and the float sequence is the canonical one of gemm_ref_legacy.cpp:
//   acc = fma(float(ia), d_w * d_x, acc)   (+ Q4_1/Q5_1: acc_m = fma(m_w, s_x, acc_m), y = acc + acc_m)
// bit-identical to the scalar and AVX-512 GEMMs.
#include "quant/gemm_avx2_driver.h"

namespace llmserve::quant {
namespace {

// Q: kRecord; kOffM (u16 m[16], 0 if none); kC / kCShift (the activation's c term: 36 = c4,
// 0 = none, shifted left by kCShift); dot<T>(g, x, xb, h, ia): ia[t] += the block's integer dot.
template <class Q>
struct KBlock32 {
  static constexpr bool kHasM = Q::kOffM != 0;
  static constexpr int kMaxT = kHasM ? 3 : 4;  // acc, acc_m, ia per token in 16 ymm
  static constexpr size_t kRecord = Q::kRecord;
  template <int T>
  static void run(const uint8_t* g, int64_t nb, const uint8_t* const* x, int h, __m256* acc, const Prefetcher& pf) {
    const size_t od = static_cast<size_t>(nb) * 32, oc = static_cast<size_t>(nb) * Q::kC;
    const size_t os = static_cast<size_t>(nb) * 36;
    __m256 acc_m[kHasM ? T : 1];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      acc[t] = _mm256_setzero_ps();
      if constexpr (kHasM) acc_m[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; ++b, g += kRecord) {
      pf(b);
      __m256i ia[T];
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        if constexpr (Q::kC != 0) ia[t] = _mm256_slli_epi32(bcast32(x[t] + oc + 4 * b), Q::kCShift);
        else ia[t] = _mm256_setzero_si256();
      }
      Q::template dot<T>(g, x, 32 * static_cast<size_t>(b), h, ia);
      const __m256 dw = load_f16x8(g + 16 * h);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        const __m256 d = _mm256_mul_ps(dw, bcastf(x[t] + od + 4 * b));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia[t]), d, acc[t]);
      }
      if constexpr (kHasM) {
        const __m256 mw = load_f16x8(g + Q::kOffM + 16 * h);
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) acc_m[t] = _mm256_fmadd_ps(mw, bcastf(x[t] + os + 4 * b), acc_m[t]);
      }
    }
    if constexpr (kHasM) {
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) acc[t] = _mm256_add_ps(acc[t], acc_m[t]);
    }
  }
};

inline __m256i nibbles_lo(__m256i v) { return _mm256_and_si256(v, _mm256_set1_epi8(0x0F)); }
inline __m256i nibbles_hi(__m256i v) { return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F)); }

// Q4_1: unsigned nibbles (pair sums <= 2 * 15 * 127, so a block's 8 maddubs add up in int16).
struct Q4_1Dot {
  static constexpr size_t kRecord = kPackQ4_1, kOffM = 32, kC = 0;
  static constexpr int kCShift = 0;
  template <int T>
  static void dot(const uint8_t* g, const uint8_t* const* x, size_t xb, int h, __m256i* ia) {
    __m256i s16[T];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) s16[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m256i v = load256(g + 64 + 64 * j + 32 * h);
      const __m256i lo = nibbles_lo(v), hi = nibbles_hi(v);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(lo, bcast32(x[t] + xb + 4 * j)));
        keep(s16[t]);
        s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(hi, bcast32(x[t] + xb + 16 + 4 * j)));
        keep(s16[t]);
      }
    }
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      ia[t] = _mm256_add_epi32(ia[t], _mm256_madd_epi16(s16[t], ones));
      keep(ia[t]);
    }
  }
};

// Q5_0 / Q5_1: 5-bit unsigned values (nibble | fifth bit from the transposed h words, see
// gemm_impl.h); pair sums <= 2 * 31 * 127, so two groups' 4 maddubs add up in int16 (31496).
template <size_t kOffQs, size_t kOffH>
struct Q5Dot {
  template <int T>
  static void dot(const uint8_t* g, const uint8_t* const* x, size_t xb, int h, __m256i* ia) {
    const __m256i hw = load256(g + kOffH + 32 * h), b4 = _mm256_set1_epi8(0x10), ones = _mm256_set1_epi16(1);
#pragma GCC unroll 2
    for (int jj = 0; jj < 4; jj += 2) {
      __m256i s16[T];
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) s16[t] = _mm256_setzero_si256();
#pragma GCC unroll 2
      for (int j = jj; j < jj + 2; ++j) {
        const __m256i v = load256(g + kOffQs + 64 * j + 32 * h);
        const __m256i lo =
            _mm256_or_si256(nibbles_lo(v), _mm256_and_si256(_mm256_sllv_epi32(hw, _mm256_set1_epi32(4 - j)), b4));
        const __m256i hi =
            _mm256_or_si256(nibbles_hi(v), _mm256_and_si256(_mm256_srlv_epi32(hw, _mm256_set1_epi32(j)), b4));
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
          s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(lo, bcast32(x[t] + xb + 4 * j)));
          keep(s16[t]);
          s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(hi, bcast32(x[t] + xb + 16 + 4 * j)));
          keep(s16[t]);
        }
      }
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        ia[t] = _mm256_add_epi32(ia[t], _mm256_madd_epi16(s16[t], ones));
        keep(ia[t]);
      }
    }
  }
};

// Q5_0: values q - 16, started from c term 2 * c4 = -16 * sum x.
struct Q5_0Dot : Q5Dot<32, 288> {
  static constexpr size_t kRecord = kPackQ5_0, kOffM = 0, kC = 36;
  static constexpr int kCShift = 1;
};
struct Q5_1Dot : Q5Dot<64, 320> {
  static constexpr size_t kRecord = kPackQ5_1, kOffM = 32, kC = 0;
  static constexpr int kCShift = 0;
};

// IQ4_NL: the grid value v (signed, |v| <= 127) by table lookup; maddubs(|v|, x with v's sign)
// (pair sums <= 2 * 127 * 127: exact; each widened at once).
struct IQ4_NLDot {
  static constexpr size_t kRecord = kPackIQ4_NL, kOffM = 0, kC = 0;
  static constexpr int kCShift = 0;
  template <int T>
  static void dot(const uint8_t* g, const uint8_t* const* x, size_t xb, int h, __m256i* ia) {
    const __m256i lut = _mm256_broadcastsi128_si256(
        _mm_setr_epi8(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113));
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m256i v = load256(g + 32 + 64 * j + 32 * h);
      const __m256i wl = _mm256_shuffle_epi8(lut, nibbles_lo(v)), wh = _mm256_shuffle_epi8(lut, nibbles_hi(v));
      const __m256i al = _mm256_sign_epi8(wl, wl), ah = _mm256_sign_epi8(wh, wh);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        const __m256i pl = _mm256_maddubs_epi16(al, _mm256_sign_epi8(bcast32(x[t] + xb + 4 * j), wl));
        const __m256i ph = _mm256_maddubs_epi16(ah, _mm256_sign_epi8(bcast32(x[t] + xb + 16 + 4 * j), wh));
        ia[t] = _mm256_add_epi32(ia[t], _mm256_add_epi32(_mm256_madd_epi16(pl, ones), _mm256_madd_epi16(ph, ones)));
        keep(ia[t]);
      }
    }
  }
};

void pack_group(GgmlType t, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out, const Prefetcher& pf) {
  if (pack_group_more_avx2(t, w, rb, nr, nb, out, pf.next, pf.bytes, pf.nb)) return;
  for (int64_t b = 0; b < nb; ++b) pf(b);  // (touches the next group ahead of its packing)
  gemm_pack_group_ref(t, w, rb, nr, nb, out);
}

}  // namespace

void install_avx2_gemm_legacy(KernelTable& t) {
  t.gemm[idx(GgmlType::Q4_1)] = gemm_quant<KBlock32<Q4_1Dot>>;
  t.gemm[idx(GgmlType::Q5_0)] = gemm_quant<KBlock32<Q5_0Dot>>;
  t.gemm[idx(GgmlType::Q5_1)] = gemm_quant<KBlock32<Q5_1Dot>>;
  t.gemm[idx(GgmlType::IQ4_NL)] = gemm_quant<KBlock32<IQ4_NLDot>>;
}

}  // namespace llmserve::quant
