// AVX2 GEMM kernels of Q5_K, Q3_K, Q2_K and IQ4_XS: the AVX-512 kernels' arithmetic
// (gemm_kquants_avx512.cpp) on 8 rows per ymm (half h of each 16-row record), with maddubs + madd
// for the 4-byte dots. Pair sums stay below int16 saturation: Q2_K/Q3_K values are at most 3/7,
// so a group's 4 maddubs add up in int16 (<= 4 * 2 * 7 * 127); Q5_K (<= 31) widens each one;
// IQ4_XS multiplies |v| by x carrying v's sign (<= 2 * 127 * 127) and needs no offset term. The
// integer sums are exact and the float sequence is the canonical one, so the results are
// bit-identical to the scalar and AVX-512 GEMMs.
#include "quant/gemm_avx2_driver.h"

namespace llmserve::quant {
namespace {

inline __m256i mask8(int v) { return _mm256_set1_epi8(static_cast<char>(v)); }
inline __m256i load_u8x16(const uint8_t* p) {  // 16 bytes -> 16 int16
  return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256i load_i8x16(const uint8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
template <int kFrom, int kTo>
inline __m256i move_bit(__m256i v) {  // bit kFrom of each byte -> bit kTo (see the AVX-512 file)
  if constexpr (kFrom > kTo) return _mm256_and_si256(_mm256_srli_epi32(v, kFrom - kTo), mask8(1 << kTo));
  else return _mm256_and_si256(_mm256_slli_epi32(v, kTo - kFrom), mask8(1 << kTo));
}
inline __m256i pair_lo(__m256i p) { return _mm256_srai_epi32(_mm256_slli_epi32(p, 16), 16); }
inline __m256i pair_hi(__m256i p) { return _mm256_srai_epi32(p, 16); }
inline __m256i widen(__m256i s16) { return _mm256_madd_epi16(s16, _mm256_set1_epi16(1)); }

template <int T>
inline void zero(__m256i* v) {
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t) v[t] = _mm256_setzero_si256();
}
template <int T>
inline void add_scaled(__m256i* sumi, const __m256i* ia, __m256i sc) {
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t) {
    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_mullo_epi32(ia[t], sc));
    keep(sumi[t]);
  }
}
template <int T>
inline void accumulate(__m256* acc, const __m256i* s, __m256 dw, const uint8_t* const* x, size_t xo) {
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t)
    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t]), _mm256_mul_ps(dw, bcastf(x[t] + xo)), acc[t]);
}
// Group sums of a K-quant with (m_j, m_j)-style int16 pairs m against bsums pairs k.
template <int T>
inline void mins(__m256i* summ, __m256i m, const uint8_t* const* x, size_t xb) {
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t) {
    summ[t] = _mm256_add_epi32(summ[t], _mm256_madd_epi16(m, bcast32(x[t] + xb)));
    keep(summ[t]);
  }
}

struct KQ5_K : StepPasses<KQ5_K> {
  static constexpr int kMaxT = 3;
  static constexpr size_t kRecord = kPackQ5_K;
  static constexpr bool kMins = true;
  template <int T, int J>
  static void sub_block(const uint8_t* g, int h, const uint8_t* const* x, size_t xo, __m256i* sumi) {
    __m256i ia[T];
    zero<T>(ia);
    const uint8_t* q = g + 320 + 64 * 8 * (J / 2) + 32 * h;
#pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) {
      const __m256i v = load256(q + 64 * c);
      const __m256i nib =
          J & 1 ? _mm256_and_si256(_mm256_srli_epi16(v, 4), mask8(0x0F)) : _mm256_and_si256(v, mask8(0x0F));
      const __m256i w = _mm256_or_si256(nib, move_bit<J, 4>(load256(g + 2368 + 64 * c + 32 * h)));
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) ia[t] = dot4(ia[t], w, bcast32(x[t] + xo + 4 + 32 * J + 4 * c));
    }
    add_scaled<T>(sumi, ia, load_u8x8(g + 64 + 16 * J + 8 * h));
  }
  // Block i (record g) of half h into acc / acc_min[0, T).
  template <int T>
  static void step(const uint8_t* g, int64_t i, int64_t nb, const uint8_t* const* x, int h, __m256* acc,
                   __m256* acc_min) {
    const size_t xo = kQ8KBlock * static_cast<size_t>(i);
    __m256i sumi[T], summ[T];
    zero<T>(sumi);
    sub_block<T, 0>(g, h, x, xo, sumi);
    sub_block<T, 1>(g, h, x, xo, sumi);
    sub_block<T, 2>(g, h, x, xo, sumi);
    sub_block<T, 3>(g, h, x, xo, sumi);
    sub_block<T, 4>(g, h, x, xo, sumi);
    sub_block<T, 5>(g, h, x, xo, sumi);
    sub_block<T, 6>(g, h, x, xo, sumi);
    sub_block<T, 7>(g, h, x, xo, sumi);
    mins_q4_K<T>(g, i, nb, x, h, summ);
    accumulate<T>(acc, sumi, load_f16x8(g + 16 * h), x, xo);
    accumulate<T>(acc_min, summ, load_f16x8(g + 32 + 16 * h), x, xo);
  }
};

// Group g = 8hh + 2P + s: 2-bit fields at shift 2P of qs groups 8hh + 4s + c (see the AVX-512 file).
struct KQ2_K {
  static constexpr int kMaxT = 3;
  static constexpr size_t kRecord = kPackQ2_K;
  template <int T, int P>
  static void groups(const uint8_t* g, int h, int hh, const uint8_t* const* x, size_t xo, __m256i* sumi) {
    const __m256i sp = load_u8x16(g + 64 + 32 * (4 * hh + P) + 16 * h);
#pragma GCC unroll 2
    for (int s = 0; s < 2; ++s) {
      __m256i s16[T];
      zero<T>(s16);
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        const __m256i w =
            _mm256_and_si256(_mm256_srli_epi16(load256(g + 320 + 64 * (8 * hh + 4 * s + c) + 32 * h), 2 * P), mask8(3));
        const size_t xe = xo + 4 + 16 * (8 * hh + 2 * P + s) + 4 * c;
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
          s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(w, bcast32(x[t] + xe)));
          keep(s16[t]);
          keep(s16[t]);
        }
      }
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) s16[t] = widen(s16[t]);
      add_scaled<T>(sumi, s16, _mm256_and_si256(s ? _mm256_srli_epi32(sp, 16) : sp, _mm256_set1_epi32(0x0F)));
    }
  }
  template <int T>
  static void run(const uint8_t* g, int64_t nb, const uint8_t* const* x, int h, __m256* acc, const Prefetcher& pf) {
    __m256 acc_min[T];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) acc[t] = acc_min[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, g += kRecord) {
      pf(i);
      const size_t xo = kQ8KBlock * static_cast<size_t>(i);
      __m256i sumi[T], summ[T];
      zero<T>(sumi);
      for (int hh = 0; hh < 2; ++hh) {
        groups<T, 0>(g, h, hh, x, xo, sumi);
        groups<T, 1>(g, h, hh, x, xo, sumi);
        groups<T, 2>(g, h, hh, x, xo, sumi);
        groups<T, 3>(g, h, hh, x, xo, sumi);
      }
      zero<T>(summ);
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        const __m256i m =
            _mm256_and_si256(_mm256_srli_epi16(load_u8x16(g + 64 + 32 * k + 16 * h), 4), _mm256_set1_epi16(0x0F));
        mins<T>(summ, m, x, xo + 260 + 4 * k);
      }
      accumulate<T>(acc, sumi, load_f16x8(g + 16 * h), x, xo);
      accumulate<T>(acc_min, summ, load_f16x8(g + 32 + 16 * h), x, xo);
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) acc[t] = _mm256_sub_ps(acc[t], acc_min[t]);
  }
};

struct KQ3_K {
  static constexpr int kMaxT = 4;
  static constexpr size_t kRecord = kPackQ3_K;
  template <int T, int HH, int P>
  static void groups(const uint8_t* g, int h, const uint8_t* const* x, size_t xo, __m256i* sumi) {
    const __m256i sp = load_i8x16(g + 32 + 32 * (4 * HH + P) + 16 * h);
#pragma GCC unroll 2
    for (int s = 0; s < 2; ++s) {
      __m256i s16[T];
      zero<T>(s16);
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        const __m256i lo =
            _mm256_and_si256(_mm256_srli_epi16(load256(g + 288 + 64 * (8 * HH + 4 * s + c) + 32 * h), 2 * P), mask8(3));
        const __m256i w = _mm256_or_si256(lo, move_bit<4 * HH + P, 2>(load256(g + 1312 + 64 * (4 * s + c) + 32 * h)));
        const size_t xe = xo + 4 + 16 * (8 * HH + 2 * P + s) + 4 * c;
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
          s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(w, bcast32(x[t] + xe)));
          keep(s16[t]);
          keep(s16[t]);
        }
      }
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) s16[t] = widen(s16[t]);
      add_scaled<T>(sumi, s16, s ? pair_hi(sp) : pair_lo(sp));
    }
  }
  template <int T>
  static void run(const uint8_t* g, int64_t nb, const uint8_t* const* x, int h, __m256* acc, const Prefetcher& pf) {
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, g += kRecord) {
      pf(i);
      const size_t xo = kQ8KBlock * static_cast<size_t>(i);
      __m256i sumi[T];
      zero<T>(sumi);
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {  // -4 * (sc_2k, sc_2k+1) . (bsums[2k], bsums[2k+1])
        const __m256i sp =
            _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(load_i8x16(g + 32 + 32 * k + 16 * h), 2));
        mins<T>(sumi, sp, x, xo + 260 + 4 * k);
      }
      groups<T, 0, 0>(g, h, x, xo, sumi);
      groups<T, 0, 1>(g, h, x, xo, sumi);
      groups<T, 0, 2>(g, h, x, xo, sumi);
      groups<T, 0, 3>(g, h, x, xo, sumi);
      groups<T, 1, 0>(g, h, x, xo, sumi);
      groups<T, 1, 1>(g, h, x, xo, sumi);
      groups<T, 1, 2>(g, h, x, xo, sumi);
      groups<T, 1, 3>(g, h, x, xo, sumi);
      accumulate<T>(acc, sumi, load_f16x8(g + 16 * h), x, xo);
    }
  }
};

struct KIQ4_XS {
  static constexpr int kMaxT = 4;
  static constexpr size_t kRecord = kPackIQ4_XS;
  template <int T>
  static void run(const uint8_t* g, int64_t nb, const uint8_t* const* x, int h, __m256* acc, const Prefetcher& pf) {
    const __m256i lut = _mm256_broadcastsi128_si256(
        _mm_setr_epi8(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113));
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, g += kRecord) {
      pf(i);
      const size_t xo = kQ8KBlock * static_cast<size_t>(i);
      __m256i sumi[T];
      zero<T>(sumi);
#pragma GCC unroll 8
      for (int ib = 0; ib < 8; ++ib) {
        __m256i ia[T];
        zero<T>(ia);
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
          const __m256i v = load256(g + 160 + 64 * (4 * ib + c) + 32 * h);
          const __m256i wl = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, mask8(0x0F)));
          const __m256i wh = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), mask8(0x0F)));
          const __m256i al = _mm256_sign_epi8(wl, wl), ah = _mm256_sign_epi8(wh, wh);
          const size_t xe = xo + 4 + 32 * ib + 4 * c;
#pragma GCC unroll 4
          for (int t = 0; t < T; ++t) {
            const __m256i pl = _mm256_maddubs_epi16(al, _mm256_sign_epi8(bcast32(x[t] + xe), wl));
            const __m256i ph = _mm256_maddubs_epi16(ah, _mm256_sign_epi8(bcast32(x[t] + xe + 16), wh));
            ia[t] = _mm256_add_epi32(ia[t], _mm256_add_epi32(_mm256_madd_epi16(pl, ones), _mm256_madd_epi16(ph, ones)));
            keep(ia[t]);
          }
        }
        const __m256i sc =
            _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(g + 32 + 16 * ib + 8 * h)));
        add_scaled<T>(sumi, ia, sc);
      }
      accumulate<T>(acc, sumi, load_f16x8(g + 16 * h), x, xo);
    }
  }
};

void pack_group(GgmlType t, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out, const Prefetcher& pf) {
  if (pack_group_more_avx2(t, w, rb, nr, nb, out, pf.next, pf.bytes, pf.nb)) return;
  for (int64_t b = 0; b < nb; ++b) pf(b);  // (touches the next group ahead of its packing)
  gemm_pack_group_ref(t, w, rb, nr, nb, out);
}

}  // namespace

void install_avx2_gemm_kquants(KernelTable& t) {
  t.gemm[idx(GgmlType::Q5_K)] = gemm_quant<KQ5_K>;
  t.gemm[idx(GgmlType::Q3_K)] = gemm_quant<KQ3_K>;
  t.gemm[idx(GgmlType::Q2_K)] = gemm_quant<KQ2_K>;
  t.gemm[idx(GgmlType::IQ4_XS)] = gemm_quant<KIQ4_XS>;
}

}  // namespace llmserve::quant
