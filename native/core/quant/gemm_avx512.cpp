// AVX-512 (F/BW/VL/DQ/VNNI) GEMM kernels; compiled with those flags and installed only after
// dispatch.cpp confirmed them.
//
// Quantized weights: a micro-kernel takes one packed group of 16 weight rows (row i in lane i of a
// zmm, see gemm_impl.h) and T <= kMaxT tokens (8 for Q4_0/Q8_0/Q6_K, 6 for Q4_K), and runs
// the whole reduction: for every 4 consecutive elements k..k+3 it multiplies the 16 rows' bytes
// (unpacked in registers once per block, then shared by the T tokens) with token t's 4 activation
// bytes broadcast to all lanes (vpdpbusd, exact int32 sums), then does acc[t] = fma(float(sumi),
// d_w * d_x, acc[t]) lane-wise -- the canonical sequence of gemm.h, so the result of a lane
// depends on nothing but its row and token. On Zen 4 vpdpbusd issues once per cycle on the same
// pipes as FMA/MUL, so Q4_0's 8 dpbusd + mul + fma per block and token bound it at ~51 MAC/cycle.
// Float weights: per (row, token) a 16-lane accumulator over k, R rows x T tokens per tile, then a
// fixed reduction tree; again independent of the tile a pair falls into.
#if defined(__GNUC__) && !defined(__clang__)  // clang has no -Wmaybe-uninitialized (and no such trip)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "quant/gemm_avx512_driver.h"
#include "quant/gemm_float_simd.h"

namespace llmserve::quant {
namespace {

// ------------------------------------------------------------------------------------- Q4_0
// Q4_0 and Q8_0 (one record per 32-element block): per block and token, ia = the block's exact
// integer dot (vpdpbusd of unsigned weight bytes with the activation bytes, started from the row's
// c term), then acc = fma(float(ia), d_w * d_x, acc). Activation row: qs[nb][32] | f32 d[nb] |
// i32 c4[nb] | i32 c128[nb]. Q supplies the record size, the c term's offset and the dot.
template <class Q>
struct KBlock32 {
  static constexpr int kMaxT = 8;
  static constexpr size_t kRecord = Q::kRecord;
  template <int T>
  static void run(const uint8_t* g, int64_t nb, const uint8_t* const* x, __m512* acc, const Prefetcher& pf) {
    const size_t od = static_cast<size_t>(nb) * 32, oc = static_cast<size_t>(nb) * Q::kCTerm;
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b, g += kRecord) {
      pf(b);
      __m512i ia[T];
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) ia[t] = bcast32(x[t] + oc + 4 * b);
      Q::template dot<T>(g, x, 32 * b, ia);
      const __m512 dw = load_f16x16(g);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m512 d = _mm512_mul_ps(dw, bcastf(x[t] + od + 4 * b));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[t]), d, acc[t]);
      }
    }
  }
};

// Q4_0 record: u16 d[16] | qs[4][16][4] (low nibbles: elements 4j.., high: 16+4j..); c term
// c4 = -8 * sum x turns the unsigned nibbles q into q - 8.
struct Q4_0Dot {
  static constexpr size_t kRecord = kPackQ4_0;
  static constexpr size_t kCTerm = 36;
  template <int T>
  static void dot(const uint8_t* g, const uint8_t* const* x, size_t xb, __m512i* ia) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m512i v = load512(g + 32 + 64 * j);
      const __m512i lo = _mm512_and_si512(v, m4);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        ia[t] = dpbusd_bcast(ia[t], lo, x[t] + xb + 4 * j);
        ia[t] = dpbusd_bcast(ia[t], hi, x[t] + xb + 16 + 4 * j);
      }
    }
  }
};

// Q8_0 record: u16 d[16] | u8 qs[8][16][4] = w ^ 0x80 (w + 128, unsigned); c term
// c128 = -128 * sum x.
struct Q8_0Dot {
  static constexpr size_t kRecord = kPackQ8_0;
  static constexpr size_t kCTerm = 40;
  template <int T>
  static void dot(const uint8_t* g, const uint8_t* const* x, size_t xb, __m512i* ia) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const __m512i w = load512(g + 32 + 64 * j);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) ia[t] = dpbusd_bcast(ia[t], w, x[t] + xb + 4 * j);
    }
  }
};

using KQ4_0 = KBlock32<Q4_0Dot>;
using KQ8_0 = KBlock32<Q8_0Dot>;

// ------------------------------------------------------------------------------------- Q4_K
// Record: u16 d[16] | u16 dmin[16] | u8 sc[8][16] | u8 m[8][16] | qs[32][16][4].
// Activation: BlockQ8_K rows (d f32 at 0, qs at 4, bsums at 260).
// Sub-block j (32 elements): qs groups 8*(j/2) + c, low nibbles for even j, high for odd.
// sumi = sum_j sc_j * dot_j (vpmulld), summ = sum_j m_j * s32_j (mins_q4_K: vpdpwssd of a row's
// pairs of mins against the token's pairs of 32-element sums); acc and acc_min as llama.cpp's
// q4_K_8x8 kernels.
struct KQ4_K {
  static constexpr int kMaxT = 6;  // acc, acc_min, sumi, dot per token
  static constexpr size_t kRecord = kPackQ4_K;
  // The record's prefetch goes out a slice per sub-block (Prefetcher::part), not in one burst of
  // 37 lines at its start, and one record farther ahead, where the burst's farthest line was: one
  // token +3-16%, 2-64 tokens 12-22% faster (bench/README.md). (The burst one record farther: no
  // gain with the host's memory contended, 9% slower with it fast.)
  static constexpr size_t kPrefetchLead = kRecord;
  template <int T>
  static void run(const uint8_t* g, int64_t nb, const uint8_t* const* x, __m512* acc, const Prefetcher& pf) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 acc_min[T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[t] = acc_min[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, g += kRecord) {
      const size_t xo = kQ8KBlock * static_cast<size_t>(i);
      __m512i sumi[T];
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) sumi[t] = _mm512_setzero_si512();
      for (int j = 0; j < 8; ++j) {
        pf.part<8>(i, j);
        __m512i ia[T];
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) ia[t] = _mm512_setzero_si512();
        const uint8_t* q = g + 320 + 64 * 8 * (j / 2);
        const size_t xj = xo + 4 + 32 * j;
        if (j & 1) {
#pragma GCC unroll 8
          for (int c = 0; c < 8; ++c) {
            const __m512i w = _mm512_and_si512(_mm512_srli_epi16(load512(q + 64 * c), 4), m4);
#pragma GCC unroll 8
            for (int t = 0; t < T; ++t) ia[t] = dpbusd_bcast(ia[t], w, x[t] + xj + 4 * c);
          }
        } else {
#pragma GCC unroll 8
          for (int c = 0; c < 8; ++c) {
            const __m512i w = _mm512_and_si512(load512(q + 64 * c), m4);
#pragma GCC unroll 8
            for (int t = 0; t < T; ++t) ia[t] = dpbusd_bcast(ia[t], w, x[t] + xj + 4 * c);
          }
        }
        const __m512i sc = load_u8x16(g + 64 + 16 * j);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(ia[t], sc));
          keep(sumi[t]);
        }
      }
      __m512i summ[T];
      mins_q4_K<T>(g, i, nb, x, summ);
      const __m512 dw = load_f16x16(g), dm = load_f16x16(g + 32);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m512 dx = bcastf(x[t] + xo);
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[t]), _mm512_mul_ps(dw, dx), acc[t]);
        acc_min[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(summ[t]), _mm512_mul_ps(dm, dx), acc_min[t]);
      }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[t] = _mm512_sub_ps(acc[t], acc_min[t]);
  }
};

// ------------------------------------------------------------------------------------- Q6_K
// Record: u16 d[16] | i8 sc[8][16][2] | ql[32][16][4] | qh[16][16][4].
// Half h, byte group c (elements 128h + 4c.. + {0, 32, 64, 96}): A = ql group 16h + c,
// B = ql group 16h + 8 + c, H = qh group 8h + c; the 4 quarters s are
//   (A & 15) | (H << 4 & 0x30), (B & 15) | (H << 2 & 0x30), (A >> 4 & 15) | (H & 0x30),
//   (B >> 4 & 15) | (H >> 2 & 0x30)
// (16-bit shifts: bits crossing bytes are masked off). Scale group of (h, s, c) = 8h + 2s + c/4.
// The -32 offset: sumi starts at sum_g (-32 sc_g) * bsums_g (vpdpwssd on scale pairs).
struct KQ6_K {
  static constexpr int kMaxT = 8;
  static constexpr size_t kRecord = kPackQ6_K;
  template <int S>
  static __m512i quarter(const uint8_t* ql, const uint8_t* qh, int c) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    const __m512i H = load512(qh + 64 * c);
    if constexpr (S == 0) {
      return _mm512_or_si512(_mm512_and_si512(load512(ql + 64 * c), m4),
                             _mm512_and_si512(_mm512_slli_epi16(H, 4), m30));
    } else if constexpr (S == 1) {
      return _mm512_or_si512(_mm512_and_si512(load512(ql + 64 * (8 + c)), m4),
                             _mm512_and_si512(_mm512_slli_epi16(H, 2), m30));
    } else if constexpr (S == 2) {
      return _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(load512(ql + 64 * c), 4), m4),
                             _mm512_and_si512(H, m30));
    } else {
      return _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(load512(ql + 64 * (8 + c)), 4), m4),
                             _mm512_and_si512(_mm512_srli_epi16(H, 2), m30));
    }
  }
  template <int T, int S>
  static void half_quarter(const uint8_t* g, int h, const uint8_t* const* x, size_t xo, __m512i* sumi) {
    const uint8_t* ql = g + 288 + 64 * 16 * h;
    const uint8_t* qh = g + 2336 + 64 * 8 * h;
    const __m512i sp =
        _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 32 + 32 * (4 * h + S))));
#pragma GCC unroll 2
    for (int cc = 0; cc < 2; ++cc) {
      __m512i ia[T];
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) ia[t] = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int c = 4 * cc; c < 4 * cc + 4; ++c) {
        const __m512i q = quarter<S>(ql, qh, c);
        const size_t xe = xo + 4 + 128 * h + 32 * S + 4 * c;
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) ia[t] = dpbusd_bcast(ia[t], q, x[t] + xe);
      }
      const __m512i sc = cc ? _mm512_srai_epi32(sp, 16) : _mm512_srai_epi32(_mm512_slli_epi32(sp, 16), 16);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(ia[t], sc));
        keep(sumi[t]);
      }
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
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) sumi[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        __m512i sp = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 32 + 32 * k)));
        sp = _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_slli_epi16(sp, 5));  // -32 * sc
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          sumi[t] = _mm512_dpwssd_epi32(sumi[t], sp, bcast32(x[t] + xo + 260 + 4 * k));
          keep(sumi[t]);
        }
      }
      for (int h = 0; h < 2; ++h) {
        half_quarter<T, 0>(g, h, x, xo, sumi);
        half_quarter<T, 1>(g, h, x, xo, sumi);
        half_quarter<T, 2>(g, h, x, xo, sumi);
        half_quarter<T, 3>(g, h, x, xo, sumi);
      }
      const __m512 dw = load_f16x16(g);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m512 d = _mm512_mul_ps(dw, bcastf(x[t] + xo));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[t]), d, acc[t]);
      }
    }
  }
};

// ------------------------------------------------------------------------- on-the-fly packing
// The scalar packers (gemm_ref.cpp) define the packed layouts; these produce the same bytes for
// full 16-row groups with in-register transposes (a partial last group uses the scalar packer).

void pack_q4_0_avx512(const uint8_t* w, size_t rb, int64_t nb, uint8_t* out, const Prefetcher& pf) {
  for (int64_t b = 0; b < nb; ++b, out += kPackQ4_0) {
    pf(b);
    const uint8_t* blk = w + b * sizeof(BlockQ4_0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi32_epi16(gather_rows32(blk, rb)));
    transpose_16x16(blk + 2, rb, out + 32, _mm512_setzero_si512());
  }
}

void pack_q8_0_avx512(const uint8_t* w, size_t rb, int64_t nb, uint8_t* out, const Prefetcher& pf) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t b = 0; b < nb; ++b, out += kPackQ8_0) {
    pf(b);
    const uint8_t* blk = w + b * sizeof(BlockQ8_0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi32_epi16(gather_rows32(blk, rb)));
    transpose_16x16(blk + 2, rb, out + 32, flip);
    transpose_16x16(blk + 18, rb, out + 32 + 256, flip);
  }
}

void pack_q4_K_avx512(const uint8_t* w, size_t rb, int64_t nb, uint8_t* out, const Prefetcher& pf) {
  for (int64_t b = 0; b < nb; ++b, out += kPackQ4_K) {
    pf(b);
    const uint8_t* blk = w + b * sizeof(BlockQ4_K);
    const __m512i dd = gather_rows32(blk, rb);  // d | dmin << 16
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi32_epi16(dd));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32), _mm512_cvtepi32_epi16(_mm512_srli_epi32(dd, 16)));
    for (int r = 0; r < 16; ++r) {
      alignas(16) uint8_t sm[16];
      unpack_q4_K_scales(blk + r * rb + 4, sm);
      for (int j = 0; j < 8; ++j) {
        out[64 + 16 * j + r] = sm[j];
        out[192 + 16 * j + r] = sm[8 + j];
      }
    }
    for (int c = 0; c < 8; ++c) transpose_16x16(blk + 16 + 16 * c, rb, out + 320 + 256 * c, _mm512_setzero_si512());
  }
}

void pack_q6_K_avx512(const uint8_t* w, size_t rb, int64_t nb, uint8_t* out, const Prefetcher& pf) {
  for (int64_t b = 0; b < nb; ++b, out += kPackQ6_K) {
    pf(b);
    const uint8_t* blk = w + b * sizeof(BlockQ6_K);
    // d sits at offset 208 of 210: gather the word at 206 and keep its high half.
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out),
                        _mm512_cvtepi32_epi16(_mm512_srli_epi32(gather_rows32(blk + 206, rb), 16)));
    for (int r = 0; r < 16; ++r) {
      const uint8_t* sc = blk + r * rb + 192;
      for (int k = 0; k < 8; ++k) std::memcpy(out + 32 + 32 * k + 2 * r, sc + 2 * k, 2);
    }
    for (int c = 0; c < 8; ++c) transpose_16x16(blk + 16 * c, rb, out + 288 + 256 * c, _mm512_setzero_si512());
    for (int c = 0; c < 4; ++c) transpose_16x16(blk + 128 + 16 * c, rb, out + 2336 + 256 * c, _mm512_setzero_si512());
  }
}

void pack_group(GgmlType t, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out, const Prefetcher& pf) {
  if (nr == kGemmGroupRows && rb * kGemmGroupRows < (size_t(1) << 31)) {
    switch (t) {
      case GgmlType::Q4_0: pack_q4_0_avx512(w, rb, nb, out, pf); return;
      case GgmlType::Q8_0: pack_q8_0_avx512(w, rb, nb, out, pf); return;
      case GgmlType::Q4_K: pack_q4_K_avx512(w, rb, nb, out, pf); return;
      case GgmlType::Q6_K: pack_q6_K_avx512(w, rb, nb, out, pf); return;
      default: break;
    }
  }
  if (pack_group_more_avx512(t, w, rb, nr, nb, out, pf.next, pf.bytes, pf.nb)) return;
  gemm_pack_group_ref(t, w, rb, nr, nb, out);
}

// --------------------------------------------------------------------------- float weights

// 16 lanes; tiles of 4 tokens.
struct V16 {
  using reg = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kTokens = 4;
  static __mmask16 mask(int count) { return static_cast<__mmask16>((1u << count) - 1); }
  static reg zero() { return _mm512_setzero_ps(); }
  static reg loadx(const float* p) { return _mm512_loadu_ps(p); }
  static reg loadx_tail(const float* p, int count) { return _mm512_maskz_loadu_ps(mask(count), p); }
  static reg fma(reg w, reg x, reg acc) { return _mm512_fmadd_ps(w, x, acc); }
  static float hsum(reg v) {  // fixed tree: 16 -> 8 -> 4 -> 2 -> 1
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
  }
};

struct WF32 {
  static __m512 load(const uint8_t* p, int64_t k) { return _mm512_loadu_ps(reinterpret_cast<const float*>(p) + k); }
  static __m512 tail(const uint8_t* p, int64_t k, int count) {
    return _mm512_maskz_loadu_ps(V16::mask(count), reinterpret_cast<const float*>(p) + k);
  }
};
struct WF16 {
  static __m512 load(const uint8_t* p, int64_t k) { return load_f16x16(p + 2 * k); }
  static __m512 tail(const uint8_t* p, int64_t k, int count) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(V16::mask(count), p + 2 * k));
  }
};
struct WBF16 {
  static __m512 expand(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
  static __m512 load(const uint8_t* p, int64_t k) {
    return expand(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2 * k)));
  }
  static __m512 tail(const uint8_t* p, int64_t k, int count) {
    return expand(_mm256_maskz_loadu_epi16(V16::mask(count), p + 2 * k));
  }
};

}  // namespace

void install_avx512_gemm(KernelTable& t) {
  t.pack_group = [](GgmlType ty, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out) {
    pack_group(ty, w, rb, nr, nb, out, Prefetcher());
  };
  t.gemm[idx(GgmlType::Q4_0)] = gemm_quant<KQ4_0>;
  t.gemm[idx(GgmlType::Q8_0)] = gemm_quant<KQ8_0>;
  t.gemm[idx(GgmlType::Q4_K)] = gemm_quant<KQ4_K>;
  t.gemm[idx(GgmlType::Q6_K)] = gemm_quant<KQ6_K>;
  t.gemm[idx(GgmlType::F32)] = gemm_float<V16, WF32>;
  t.gemm[idx(GgmlType::F16)] = gemm_float<V16, WF16>;
  t.gemm[idx(GgmlType::BF16)] = gemm_float<V16, WBF16>;
  install_avx512_gemm_legacy(t);
  install_avx512_gemm_kquants(t);
}

}  // namespace llmserve::quant
