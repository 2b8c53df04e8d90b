// AVX-512 (VNNI) GEMM kernels of Q5_K, Q3_K, Q2_K and IQ4_XS (records: gemm_impl.h; Q8_K
// activation rows: d f32 at 0, qs at 4, bsums at 260, 292 bytes per super-block). As for Q4_K and
// Q6_K (gemm_avx512.cpp): 16 rows in the lanes, each sub-block's integer dot by vpdpbusd of the
// rows' unsigned values with the token's activation bytes, times the sub-block scale (vpmulld)
// into sumi, offsets and mins from the activation's bsums (vpdpwssd on int16 pairs), then the
// canonical float sequence of gemm_ref_kquants.cpp:
//   acc = fma(float(sumi), d_w * d_x, acc)   (+ Q5_K/Q2_K: acc_min with dmin, y = acc - acc_min)
// so each lane's result is bit-identical to the scalar GEMM's.
#include "quant/gemm_avx512_driver.h"

namespace llmserve::quant {
namespace {

inline __m512i mask8(int v) { return _mm512_set1_epi8(static_cast<char>(v)); }
// 32 bytes -> 32 int16 (zero / sign extended)
inline __m512i load_u8x32(const uint8_t* p) {
  return _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline __m512i load_i8x32(const uint8_t* p) {
  return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
// Bit `from` of every byte of v moved to bit `to` (the others cleared); 32-bit shifts suffice as
// the kept bit never crosses a byte.
template <int kFrom, int kTo>
inline __m512i move_bit(__m512i v) {
  if constexpr (kFrom > kTo) return _mm512_and_si512(_mm512_srli_epi32(v, kFrom - kTo), mask8(1 << kTo));
  else return _mm512_and_si512(_mm512_slli_epi32(v, kTo - kFrom), mask8(1 << kTo));
}
// Lane i of an int16-pair vector (a_i | b_i << 16) -> a_i or b_i as int32, sign extended.
inline __m512i pair_lo(__m512i p) { return _mm512_srai_epi32(_mm512_slli_epi32(p, 16), 16); }
inline __m512i pair_hi(__m512i p) { return _mm512_srai_epi32(p, 16); }

template <int T>
inline void zero(__m512i* v) {
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) v[t] = _mm512_setzero_si512();
}
// sumi[t] += ia[t] * sc (per lane)
template <int T>
inline void add_scaled(__m512i* sumi, const __m512i* ia, __m512i sc) {
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) {
    sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(ia[t], sc));
    keep(sumi[t]);
  }
}
// acc[t] = fma(float(s[t]), dw * d_x(t), acc[t])
template <int T>
inline void accumulate(__m512* acc, const __m512i* s, __m512 dw, const uint8_t* const* x, size_t xo) {
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t)
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[t]), _mm512_mul_ps(dw, bcastf(x[t] + xo)), acc[t]);
}

// ------------------------------------------------------------------------------------- Q5_K
// Q4_K's record and kernel, plus the fifth bit: sub-block j's group c takes bit j of each byte
// of qh group c (record offset 2368).
struct KQ5_K {
  static constexpr int kMaxT = 6;
  static constexpr size_t kRecord = kPackQ5_K;
  template <int T, int J>
  static void sub_block(const uint8_t* g, const uint8_t* const* x, size_t xo, __m512i* sumi) {
    __m512i ia[T];
    zero<T>(ia);
    const uint8_t* q = g + 320 + 64 * 8 * (J / 2);
#pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) {
      const __m512i v = load512(q + 64 * c);
      const __m512i nib =
          J & 1 ? _mm512_and_si512(_mm512_srli_epi16(v, 4), mask8(0x0F)) : _mm512_and_si512(v, mask8(0x0F));
      const __m512i w = _mm512_or_si512(nib, move_bit<J, 4>(load512(g + 2368 + 64 * c)));
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) ia[t] = dpbusd_bcast(ia[t], w, x[t] + xo + 4 + 32 * J + 4 * c);
    }
    add_scaled<T>(sumi, ia, load_u8x16(g + 64 + 16 * J));
  }
  template <int T>
  static void run(const uint8_t* g, int64_t nb, const uint8_t* const* x, __m512* acc, const Prefetcher& pf) {
    __m512 acc_min[T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[t] = acc_min[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, g += kRecord) {
      pf(i);
      const size_t xo = kQ8KBlock * static_cast<size_t>(i);
      __m512i sumi[T], summ[T];
      zero<T>(sumi);
      sub_block<T, 0>(g, x, xo, sumi);
      sub_block<T, 1>(g, x, xo, sumi);
      sub_block<T, 2>(g, x, xo, sumi);
      sub_block<T, 3>(g, x, xo, sumi);
      sub_block<T, 4>(g, x, xo, sumi);
      sub_block<T, 5>(g, x, xo, sumi);
      sub_block<T, 6>(g, x, xo, sumi);
      sub_block<T, 7>(g, x, xo, sumi);
      mins_q4_K<T>(g, i, nb, x, summ);
      accumulate<T>(acc, sumi, load_f16x16(g), x, xo);
      accumulate<T>(acc_min, summ, load_f16x16(g + 32), x, xo);
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[t] = _mm512_sub_ps(acc[t], acc_min[t]);
  }
};

// ------------------------------------------------------------------------------ Q2_K and Q3_K
// Group g = 8h + 2p + s (16 elements 16g..16g+15): the 2-bit fields at shift 2p of qs groups
// 8h + 4s + c (c < 4), elements 16g + 4c + k. Scales come as int16 pairs per row (groups 2k,
// 2k+1 with k = 4h + p): one 32-byte load serves both groups of (h, p).

// Q2_K record: u16 d[16] | u16 dmin[16] | u8 sm[8][16][2] (scale | min << 4) | qs[16][16][4].
struct KQ2_K {
  static constexpr int kMaxT = 6;
  static constexpr size_t kRecord = kPackQ2_K;
  template <int T, int P>
  static void groups(const uint8_t* g, int h, const uint8_t* const* x, size_t xo, __m512i* sumi) {
    const __m512i sp = load_u8x32(g + 64 + 32 * (4 * h + P));
#pragma GCC unroll 2
    for (int s = 0; s < 2; ++s) {
      __m512i ia[T];
      zero<T>(ia);
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        const __m512i w =
            _mm512_and_si512(_mm512_srli_epi16(load512(g + 320 + 64 * (8 * h + 4 * s + c)), 2 * P), mask8(3));
        const size_t xe = xo + 4 + 16 * (8 * h + 2 * P + s) + 4 * c;
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) ia[t] = dpbusd_bcast(ia[t], w, x[t] + xe);
      }
      const __m512i sc = _mm512_and_si512(s ? _mm512_srli_epi32(sp, 16) : sp, _mm512_set1_epi32(0x0F));
      add_scaled<T>(sumi, ia, sc);
    }
  }
  template <int T>
  static void run(const uint8_t* g, int64_t nb, const uint8_t* const* x, __m512* acc, const Prefetcher& pf) {
    __m512 acc_min[T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[t] = acc_min[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, g += kRecord) {
      pf(i);
      const size_t xo = kQ8KBlock * static_cast<size_t>(i);
      __m512i sumi[T], summ[T];
      zero<T>(sumi);
      zero<T>(summ);
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {  // mins: (m_2k, m_2k+1) . (bsums[2k], bsums[2k+1])
        const __m512i m = _mm512_and_si512(_mm512_srli_epi16(load_u8x32(g + 64 + 32 * k), 4), _mm512_set1_epi16(0x0F));
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          summ[t] = _mm512_dpwssd_epi32(summ[t], m, bcast32(x[t] + xo + 260 + 4 * k));
          keep(summ[t]);
        }
      }
      for (int h = 0; h < 2; ++h) {
        groups<T, 0>(g, h, x, xo, sumi);
        groups<T, 1>(g, h, x, xo, sumi);
        groups<T, 2>(g, h, x, xo, sumi);
        groups<T, 3>(g, h, x, xo, sumi);
      }
      accumulate<T>(acc, sumi, load_f16x16(g), x, xo);
      accumulate<T>(acc_min, summ, load_f16x16(g + 32), x, xo);
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[t] = _mm512_sub_ps(acc[t], acc_min[t]);
  }
};

// Q3_K record: u16 d[16] | i8 sc[8][16][2] (signed scales) | qs[16][16][4] | hmask[8][16][4].
// Values q' = 2-bit field | third bit << 2 (0..7) stand for q' - 4: sumi starts at
// sum_g (-4 sc_g) * bsums_g. Group g's third bit is bit 4h + p of hmask groups 4s + c.
struct KQ3_K {
  static constexpr int kMaxT = 8;
  static constexpr size_t kRecord = kPackQ3_K;
  template <int T, int H, int P>
  static void groups(const uint8_t* g, const uint8_t* const* x, size_t xo, __m512i* sumi) {
    const __m512i sp = load_i8x32(g + 32 + 32 * (4 * H + P));
#pragma GCC unroll 2
    for (int s = 0; s < 2; ++s) {
      __m512i ia[T];
      zero<T>(ia);
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        const __m512i lo =
            _mm512_and_si512(_mm512_srli_epi16(load512(g + 288 + 64 * (8 * H + 4 * s + c)), 2 * P), mask8(3));
        const __m512i w = _mm512_or_si512(lo, move_bit<4 * H + P, 2>(load512(g + 1312 + 64 * (4 * s + c))));
        const size_t xe = xo + 4 + 16 * (8 * H + 2 * P + s) + 4 * c;
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) ia[t] = dpbusd_bcast(ia[t], w, x[t] + xe);
      }
      add_scaled<T>(sumi, ia, s ? pair_hi(sp) : pair_lo(sp));
    }
  }
  template <int T>
  static void run(const uint8_t* g, int64_t nb, const uint8_t* const* x, __m512* acc, const Prefetcher& pf) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, g += kRecord) {
      pf(i);
      const size_t xo = kQ8KBlock * static_cast<size_t>(i);
      __m512i sumi[T];
      zero<T>(sumi);
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {  // -4 * (sc_2k, sc_2k+1) . (bsums[2k], bsums[2k+1])
        const __m512i sp = _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_slli_epi16(load_i8x32(g + 32 + 32 * k), 2));
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          sumi[t] = _mm512_dpwssd_epi32(sumi[t], sp, bcast32(x[t] + xo + 260 + 4 * k));
          keep(sumi[t]);
        }
      }
      groups<T, 0, 0>(g, x, xo, sumi);
      groups<T, 0, 1>(g, x, xo, sumi);
      groups<T, 0, 2>(g, x, xo, sumi);
      groups<T, 0, 3>(g, x, xo, sumi);
      groups<T, 1, 0>(g, x, xo, sumi);
      groups<T, 1, 1>(g, x, xo, sumi);
      groups<T, 1, 2>(g, x, xo, sumi);
      groups<T, 1, 3>(g, x, xo, sumi);
      accumulate<T>(acc, sumi, load_f16x16(g), x, xo);
    }
  }
};

// ------------------------------------------------------------------------------------ IQ4_XS
// Record: u16 d[16] | i8 sc[8][16] (ls - 32) | qs[32][16][4]. Sub-block ib: qs groups 4ib + c,
// low nibbles = elements 32ib + 4c + k, high = 32ib + 16 + 4c + k. The grid value is looked up
// + 128 (unsigned); sumi starts at sum_ib (-128 sc_ib) * (bsums[2ib] + bsums[2ib+1]).
struct KIQ4_XS {
  static constexpr int kMaxT = 8;
  static constexpr size_t kRecord = kPackIQ4_XS;
  template <int T>
  static void run(const uint8_t* g, int64_t nb, const uint8_t* const* x, __m512* acc, const Prefetcher& pf) {
    const __m512i lut = _mm512_broadcast_i32x4(_mm_setr_epi8(1, 24, 45, 63, 79, 93, 106, 118, (char)129, (char)141,
                                                             (char)153, (char)166, (char)181, (char)197, (char)217,
                                                             (char)241));  // kIQ4NLValues + 128
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, g += kRecord) {
      pf(i);
      const size_t xo = kQ8KBlock * static_cast<size_t>(i);
      __m512i sumi[T];
      zero<T>(sumi);
#pragma GCC unroll 8
      for (int ib = 0; ib < 8; ++ib) {
        const __m512i sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 32 + 16 * ib)));
        __m512i off = _mm512_and_si512(_mm512_slli_epi32(sc, 7), _mm512_set1_epi32(0xFFFF));  // -(-128 sc) as int16
        off = _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_or_si512(off, _mm512_slli_epi32(off, 16)));
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          sumi[t] = _mm512_dpwssd_epi32(sumi[t], off, bcast32(x[t] + xo + 260 + 4 * ib));
          keep(sumi[t]);
        }
        __m512i ia[T];
        zero<T>(ia);
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
          const __m512i v = load512(g + 160 + 64 * (4 * ib + c));
          const __m512i lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(v, mask8(0x0F)));
          const __m512i hi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(v, 4), mask8(0x0F)));
          const size_t xe = xo + 4 + 32 * ib + 4 * c;
#pragma GCC unroll 8
          for (int t = 0; t < T; ++t) {
            ia[t] = dpbusd_bcast(ia[t], lo, x[t] + xe);
            ia[t] = dpbusd_bcast(ia[t], hi, x[t] + xe + 16);
          }
        }
        add_scaled<T>(sumi, ia, sc);
      }
      accumulate<T>(acc, sumi, load_f16x16(g), x, xo);
    }
  }
};

void pack_group(GgmlType t, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out, const Prefetcher& pf) {
  if (pack_group_more_avx512(t, w, rb, nr, nb, out, pf.next, pf.bytes, pf.nb)) return;
  for (int64_t b = 0; b < nb; ++b) pf(b);  // (touches the next group ahead of its packing)
  gemm_pack_group_ref(t, w, rb, nr, nb, out);
}

}  // namespace

void install_avx512_gemm_kquants(KernelTable& t) {
  t.gemm[idx(GgmlType::Q5_K)] = gemm_quant<KQ5_K>;
  t.gemm[idx(GgmlType::Q3_K)] = gemm_quant<KQ3_K>;
  t.gemm[idx(GgmlType::Q2_K)] = gemm_quant<KQ2_K>;
  t.gemm[idx(GgmlType::IQ4_XS)] = gemm_quant<KIQ4_XS>;
}

}  // namespace llmserve::quant
