// AVX2 + FMA + F16C GEMM kernels (compiled with those flags, installed only after dispatch.cpp
// confirmed them). Same design and packed layout as gemm_avx512.cpp, with 8 rows per ymm: a
// 16-row group is processed as two halves (rows 0-7, 8-15). The 4-byte dot products use
// maddubs + madd (no VNNI): for Q4_0/Q4_K/Q6_K the unsigned operand is a 4/6-bit weight, so the
// int16 pair sums cannot saturate; Q8_0 moves the weight's sign onto the activation (|w| <= 128,
// |x| <= 127). Integer sums are exact and the per-block float sequence is the canonical one of
// gemm.h, so quantized results are bit-identical to the scalar and AVX-512 GEMMs.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "quant/gemm_avx2_driver.h"
#include "quant/gemm_float_simd.h"

namespace llmserve::quant {
namespace {

// Each kernel: run<T>(group, nb, token rows, half, acc[T], prefetcher) for rows 8*half..8*half+7.

// Q4_0: unsigned nibbles q (low: elements 4j.., high: 16+4j..), started from c4 = -8 * sum x.
// maddubs pair sums are at most 2 * 15 * 127 = 3810, so a block's 8 of them add up in int16
// without overflow (30480) before one madd widens them: exact, and 1/3 fewer instructions.
struct Q4_0Dot {
  static constexpr size_t kRecord = kPackQ4_0;
  static constexpr size_t kCTerm = 36;
  template <int T>
  static void dot(const uint8_t* g, const uint8_t* const* x, size_t xb, int h, __m256i* ia) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256i s16[T];  // each chain starts from its first term (an add of zero would be issued: keep)
#pragma GCC unroll 8
    for (int j = 0; j < 4; ++j) {
      const __m256i v = load256(g + 32 + 64 * j + 32 * h);
      const __m256i lo = _mm256_and_si256(v, m4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        const __m256i p = _mm256_maddubs_epi16(lo, bcast32(x[t] + xb + 4 * j));
        s16[t] = j == 0 ? p : _mm256_add_epi16(s16[t], p);
        keep(s16[t]);
        s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(hi, bcast32(x[t] + xb + 16 + 4 * j)));
        keep(s16[t]);
      }
    }
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) ia[t] = _mm256_add_epi32(ia[t], _mm256_madd_epi16(s16[t], ones));
  }
};

// Q8_0: packed bytes are w ^ 0x80; maddubs(w + 128, x) would saturate, so w is recovered and |w|
// multiplied by x with w's sign moved onto x (pair sums <= 2 * 128 * 127: exact; no c term).
struct Q8_0Dot {
  static constexpr size_t kRecord = kPackQ8_0;
  static constexpr size_t kCTerm = 0;
  template <int T>
  static void dot(const uint8_t* g, const uint8_t* const* x, size_t xb, int h, __m256i* ia) {
    const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8(static_cast<char>(0x80));
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const __m256i w = _mm256_xor_si256(load256(g + 32 + 64 * j + 32 * h), flip);
      const __m256i aw = _mm256_sign_epi8(w, w);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        const __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(bcast32(x[t] + xb + 4 * j), w));
        ia[t] = _mm256_add_epi32(ia[t], _mm256_madd_epi16(p, ones));
        keep(ia[t]);
      }
    }
  }
};

using KQ4_0 = KBlock32Dot<Q4_0Dot>;
using KQ8_0 = KBlock32Dot<Q8_0Dot>;

struct KQ4_K : StepPasses<KQ4_K> {
  static constexpr int kMaxT = 4;
  static constexpr size_t kRecord = kPackQ4_K;
  static constexpr int kBothMaxT = 1;  // run_both: two tokens' accumulators would spill
  static constexpr bool kMins = true;
  // run_both (below) prefetches each record one record farther ahead than kPrefetchAhead, in one
  // burst at its start: call by call against 4 KiB, +5% with the host's memory contended and fast
  // alike. (In slices per sub-block, as the AVX-512 kernel: -1% contended, +4% fast.)
  static constexpr size_t kPrefetchLead = kRecord;
  // Block i (record g), halves h0 .. h0 + NH - 1, into acc / acc_min[k * T + t] (k: the half's
  // place among them). NH = 2 is the one-token pass (run_both): both halves' sub-block j at a time,
  // so each activation broadcast serves the 16 rows, not 8 twice (~190 instead of ~220 cycles per
  // L2-resident record on Zen 5, where one token is compute-bound once memory gives ~40 GB/s per
  // core). (Unpacking the nibbles ahead, as Q6_K does, made it slower: its arithmetic is one and,
  // or a shift and an and, per 32 bytes.)
  template <int T, int NH = 1>
  static void step(const uint8_t* g, int64_t i, int64_t nb, const uint8_t* const* x, int h0, __m256* acc,
                   __m256* acc_min) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const size_t xo = kQ8KBlock * static_cast<size_t>(i);
    // Each chain starts from its first term, not from zero: keep() pins every add, so an add of
    // zero would be issued (8 of ~130 vector operations per sub-block at 4 tokens).
    __m256i sumi[NH][T];
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      // The sub-block's 8 maddubs pair sums add up in int16, as Q4_0's: each is at most
      // 2 * 15 * 128 = 3840 in magnitude (Q8_K values lie in [-128, 127]), 8 of them 30720, so
      // one madd then widens an exact sum.
      __m256i s16[NH][T];
      const uint8_t* q = g + 320 + 64 * 8 * (j / 2) + 32 * h0;
      const size_t xj = xo + 4 + 32 * j;
      const int shift = 4 * (j & 1);
#pragma GCC unroll 8
      for (int c = 0; c < 8; ++c) {
        __m256i xb[T];
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) xb[t] = bcast32(x[t] + xj + 4 * c);
#pragma GCC unroll 2
        for (int k = 0; k < NH; ++k) {
          const __m256i w = _mm256_and_si256(_mm256_srli_epi16(load256(q + 64 * c + 32 * k), shift), m4);
#pragma GCC unroll 4
          for (int t = 0; t < T; ++t) {
            const __m256i p = _mm256_maddubs_epi16(w, xb[t]);
            s16[k][t] = c == 0 ? p : _mm256_add_epi16(s16[k][t], p);
            keep(s16[k][t]);
          }
        }
      }
      // The row's 6-bit scale as an int16 pair (sc, sc): one madd widens and scales the lane's
      // two sums, (s0 + s1) * sc, the same integer as madd by ones then a multiply.
#pragma GCC unroll 2
      for (int k = 0; k < NH; ++k) {
        __m256i sc = load_u8x8(g + 64 + 16 * j + 8 * (h0 + k));
        sc = _mm256_or_si256(sc, _mm256_slli_epi32(sc, 16));
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
          const __m256i m = _mm256_madd_epi16(s16[k][t], sc);
          sumi[k][t] = j == 0 ? m : _mm256_add_epi32(sumi[k][t], m);
          keep(sumi[k][t]);
        }
      }
    }
#pragma GCC unroll 2
    for (int k = 0; k < NH; ++k) {
      __m256i summ[T];
      mins_q4_K<T>(g, i, nb, x, h0 + k, summ);
      const __m256 dw = load_f16x8(g + 16 * (h0 + k)), dm = load_f16x8(g + 32 + 16 * (h0 + k));
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        const __m256 dx = bcastf(x[t] + xo);
        acc[k * T + t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[k][t]), _mm256_mul_ps(dw, dx), acc[k * T + t]);
        acc_min[k * T + t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(summ[t]), _mm256_mul_ps(dm, dx), acc_min[k * T + t]);
      }
    }
  }
  // One token over both halves in one pass (the sweep's run_both; T = kBothMaxT = 1): step over
  // both halves at once, with the whole record's prefetch at its start.
  template <int T>
  static void run_both(const uint8_t* g, int64_t nb, const uint8_t* const* x, __m256* acc, const Prefetcher& pf) {
    static_assert(T == 1, "run_both runs one token (kBothMaxT)");
    __m256 acc_min[2];
    acc[0] = acc[1] = acc_min[0] = acc_min[1] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, g += kRecord) {
      pf(i);
      step<1, 2>(g, i, nb, x, 0, acc, acc_min);
    }
    acc[0] = _mm256_sub_ps(acc[0], acc_min[0]);
    acc[1] = _mm256_sub_ps(acc[1], acc_min[1]);
  }
};

struct KQ6_K : StepPasses<KQ6_K> {
  static constexpr int kMaxT = 4;
  static constexpr size_t kRecord = kPackQ6_K;
  static constexpr bool kMins = false;
  // Quarter s of byte group c (see gemm_avx512.cpp), rows of half h.
  static __m256i quarter(const uint8_t* ql, const uint8_t* qh, int s, int c) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    const __m256i H = load256(qh + 64 * c);
    switch (s) {
      case 0:
        return _mm256_or_si256(_mm256_and_si256(load256(ql + 64 * c), m4),
                               _mm256_and_si256(_mm256_slli_epi16(H, 4), m30));
      case 1:
        return _mm256_or_si256(_mm256_and_si256(load256(ql + 64 * (8 + c)), m4),
                               _mm256_and_si256(_mm256_slli_epi16(H, 2), m30));
      case 2:
        return _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(load256(ql + 64 * c), 4), m4),
                               _mm256_and_si256(H, m30));
      default:
        return _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(load256(ql + 64 * (8 + c)), 4), m4),
                               _mm256_and_si256(_mm256_srli_epi16(H, 2), m30));
    }
  }
  static constexpr int kBothMaxT = 1;  // run_both: two tokens' accumulators would spill
  // Unpacked half of a block: quarter(s, c) of 128-element half hh at 32 * (32hh + 8s + c).
  static constexpr size_t kUnpacked = 2048;
  static void unpack(const uint8_t* g, int64_t nb, int h, uint8_t* u, const Prefetcher& pf) {
    for (int64_t i = 0; i < nb; ++i, g += kRecord, u += kUnpacked) {
      pf(i);
#pragma GCC unroll 2
      for (int hh = 0; hh < 2; ++hh) {
        const uint8_t* ql = g + 288 + 64 * 16 * hh + 32 * h;
        const uint8_t* qh = g + 2336 + 64 * 8 * hh + 32 * h;
#pragma GCC unroll 4
        for (int s = 0; s < 4; ++s)
#pragma GCC unroll 8
          for (int c = 0; c < 8; ++c) store256(u + 32 * (32 * hh + 8 * s + c), quarter(ql, qh, s, c));
      }
    }
  }
  // Block i (record g, or its unpacked half u when U) of half h into acc[0, T).
  template <int T, bool U = false>
  static void step(const uint8_t* g, int64_t i, int64_t, const uint8_t* const* x, int h, __m256* acc, __m256*,
                   const uint8_t* u = nullptr) {
    const size_t xo = kQ8KBlock * static_cast<size_t>(i);
    __m256i sumi[T];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) sumi[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) {  // -32 * sum_g sc_g * bsums_g
      __m256i sp = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 32 + 32 * k + 16 * h)));
      sp = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sp, 5));
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(sp, bcast32(x[t] + xo + 260 + 4 * k)));
        keep(sumi[t]);
      }
    }
#pragma GCC unroll 2
    for (int hh = 0; hh < 2; ++hh) {
      const uint8_t* ql = g + 288 + 64 * 16 * hh + 32 * h;
      const uint8_t* qh = g + 2336 + 64 * 8 * hh + 32 * h;
#pragma GCC unroll 4
      for (int s = 0; s < 4; ++s) {
        const __m256i sp = _mm256_cvtepi8_epi16(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 32 + 32 * (4 * hh + s) + 16 * h)));
        // A lane's two int16 scales (sub-blocks 2(4hh+s) and +1 of its row); each becomes a pair
        // (sc, sc) so that one madd both widens a lane's two pair sums and scales them:
        // madd(s16, (sc, sc)) = (s0 + s1) * sc, the same integer as madd(s16, 1) * sc.
        const __m256i lo = _mm256_setr_epi8(0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13, 0, 1, 0, 1, 4, 5, 4, 5,
                                            8, 9, 8, 9, 12, 13, 12, 13);
        const __m256i hi = _mm256_add_epi8(lo, _mm256_set1_epi8(2));
#pragma GCC unroll 2
        for (int cc = 0; cc < 2; ++cc) {
          const __m256i sc = _mm256_shuffle_epi8(sp, cc ? hi : lo);
          // Pairs of maddubs sums add in int16 before a madd: each is at most 2 * 63 * 128 = 16128
          // in magnitude (6-bit values, Q8_K in [-128, 127]), two 32256, so the sums are exact;
          // times a scale (|sc| <= 128) and summed over a super-block they stay within int32.
#pragma GCC unroll 2
          for (int c2 = 4 * cc; c2 < 4 * cc + 4; c2 += 2) {
            const __m256i q0 = U ? load256(u + 32 * (32 * hh + 8 * s + c2)) : quarter(ql, qh, s, c2);
            const __m256i q1 = U ? load256(u + 32 * (32 * hh + 8 * s + c2 + 1)) : quarter(ql, qh, s, c2 + 1);
            const size_t xe = xo + 4 + 128 * hh + 32 * s + 4 * c2;
#pragma GCC unroll 8
            for (int t = 0; t < T; ++t) {
              const __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(q0, bcast32(x[t] + xe)),
                                                   _mm256_maddubs_epi16(q1, bcast32(x[t] + xe + 4)));
              sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(s16, sc));
              keep(sumi[t]);
            }
          }
        }
      }
    }
    const __m256 dw = load_f16x8(g + 16 * h);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const __m256 d = _mm256_mul_ps(dw, bcastf(x[t] + xo));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]), d, acc[t]);
    }
  }
};

// Q4_0 / Q8_0 groups get SIMD transposes (the 1-token path is dominated by packing); the K-quant
// groups use the scalar packer.
void pack_group(GgmlType t, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out, const Prefetcher& pf) {
  if (nr == kGemmGroupRows && (t == GgmlType::Q4_0 || t == GgmlType::Q8_0)) {
    const bool q8 = t == GgmlType::Q8_0;
    const size_t bs = q8 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0), rec = q8 ? kPackQ8_0 : kPackQ4_0;
    const __m256i flip = q8 ? _mm256_set1_epi8(static_cast<char>(0x80)) : _mm256_setzero_si256();
    for (int64_t b = 0; b < nb; ++b, out += rec) {
      pf(b);
      const uint8_t* blk = w + b * bs;
#pragma GCC unroll 4
      for (int r = 0; r < 16; ++r) std::memcpy(out + 2 * r, blk + r * rb, 2);
      transpose_16x16(blk + 2, rb, out + 32, flip);
      if (q8) transpose_16x16(blk + 18, rb, out + 32 + 256, flip);
    }
    return;
  }
  if (pack_group_more_avx2(t, w, rb, nr, nb, out, pf.next, pf.bytes, pf.nb)) return;
  for (int64_t b = 0; b < nb; ++b) pf(b);  // (touches the next group ahead of its packing)
  gemm_pack_group_ref(t, w, rb, nr, nb, out);
}

// --------------------------------------------------------------------------- float weights

// 8 lanes; tiles of 2 tokens (AVX2 has 16 registers).
struct V8 {
  using reg = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kTokens = 2;
  static reg zero() { return _mm256_setzero_ps(); }
  static reg loadx(const float* p) { return _mm256_loadu_ps(p); }
  static reg loadx_tail(const float* p, int count) { return _mm256_maskload_ps(p, row_mask(count)); }
  static reg fma(reg w, reg x, reg acc) { return _mm256_fmadd_ps(w, x, acc); }
  static float hsum(reg v) {
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
  }
};

// Loads of 8 weights as f32; tail(p, k, count) reads only `count` < 8 elements (rest zero).
struct WF32 {
  static __m256 load(const uint8_t* p, int64_t k) { return _mm256_loadu_ps(reinterpret_cast<const float*>(p) + k); }
  static __m256 tail(const uint8_t* p, int64_t k, int count) {
    alignas(32) float v[8] = {};
    std::memcpy(v, p + 4 * k, 4 * static_cast<size_t>(count));
    return _mm256_load_ps(v);
  }
};
struct WF16 {
  static __m256 load(const uint8_t* p, int64_t k) { return load_f16x8(p + 2 * k); }
  static __m256 tail(const uint8_t* p, int64_t k, int count) {
    alignas(16) uint16_t v[8] = {};
    std::memcpy(v, p + 2 * k, 2 * static_cast<size_t>(count));
    return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(v)));
  }
};
struct WBF16 {
  static __m256 expand(__m128i h) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); }
  static __m256 load(const uint8_t* p, int64_t k) {
    return expand(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * k)));
  }
  static __m256 tail(const uint8_t* p, int64_t k, int count) {
    alignas(16) uint16_t v[8] = {};
    std::memcpy(v, p + 2 * k, 2 * static_cast<size_t>(count));
    return expand(_mm_load_si128(reinterpret_cast<const __m128i*>(v)));
  }
};

}  // namespace

void pack_group_avx2(GgmlType t, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out, const uint8_t* next,
                     size_t next_bytes, int64_t next_nb) {
  const Prefetcher pf(next, next_bytes, next_nb);
  pack_group(t, w, rb, nr, nb, out, pf);
}

void install_avx2_gemm(KernelTable& t) {
  t.pack_group = [](GgmlType ty, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out) {
    pack_group(ty, w, rb, nr, nb, out, Prefetcher());
  };
  t.gemm[idx(GgmlType::Q4_0)] = gemm_quant<KQ4_0>;
  t.gemm[idx(GgmlType::Q8_0)] = gemm_quant<KQ8_0>;
  t.gemm[idx(GgmlType::Q4_K)] = gemm_quant<KQ4_K>;
  t.gemm[idx(GgmlType::Q6_K)] = gemm_quant<KQ6_K>;
  t.gemm[idx(GgmlType::F32)] = gemm_float<V8, WF32>;
  t.gemm[idx(GgmlType::F16)] = gemm_float<V8, WF16>;
  t.gemm[idx(GgmlType::BF16)] = gemm_float<V8, WBF16>;
  install_avx2_gemm_legacy(t);
  install_avx2_gemm_kquants(t);
}

}  // namespace llmserve::quant
