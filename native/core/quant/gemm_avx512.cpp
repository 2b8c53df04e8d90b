// AVX-512 (F/BW/VL/DQ/VNNI) GEMM kernels; compiled with those flags and installed only after
// dispatch.cpp confirmed them.
//
// Quantized weights: a micro-kernel takes one packed group of 16 weight rows (row i in lane i of a
// zmm, see gemm_impl.h) and T <= 8 tokens, and runs the whole reduction: for every 4 consecutive
// elements k..k+3 it multiplies the 16 rows' bytes (unpacked in registers once per block, then
// shared by the T tokens) with token t's 4 activation bytes broadcast to all lanes (vpdpbusd, exact
// int32 block sums), then does acc[t] = fma(float(sumi), d_w * d_x, acc[t]) lane-wise -- the
// canonical sequence of gemm.h, so the result of a lane depends on nothing but its row and token.
// Float weights: per (row, token) a 16-lane accumulator over k, R rows x T tokens per tile, then a
// fixed reduction tree; again independent of the tile a pair falls into.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "quant/gemm_impl.h"

namespace llmserve::quant {
namespace {

inline int32_t ld32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline float ldf(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}
inline __m512i bcast32(const uint8_t* p) { return _mm512_set1_epi32(ld32(p)); }
inline __m512 bcastf(const uint8_t* p) { return _mm512_set1_ps(ldf(p)); }
inline __m512i load512(const uint8_t* p) { return _mm512_loadu_si512(p); }
inline __m512 load_f16x16(const uint8_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
// 16 bytes -> 16 int32 (zero / sign extended)
inline __m512i load_u8x16(const uint8_t* p) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// ------------------------------------------------------------------------------------- Q4_0
// Record: u16 d[16] | qs[4][16][4]. Activation row: qs[nb][32] | f32 d[nb] | i32 c4[nb] | c8[nb].
struct KQ4_0 {
  static constexpr size_t kRecord = kPackQ4_0;
  template <int T>
  static void run(const uint8_t* g, int64_t nb, const uint8_t* const* x, __m512* acc) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const size_t od = static_cast<size_t>(nb) * 32, oc = static_cast<size_t>(nb) * 36;
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b, g += kRecord) {
      __m512i ia[T];
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) ia[t] = bcast32(x[t] + oc + 4 * b);
      const size_t xb = 32 * b;
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m512i v = load512(g + 32 + 64 * j);
        const __m512i lo = _mm512_and_si512(v, m4);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          ia[t] = _mm512_dpbusd_epi32(ia[t], lo, bcast32(x[t] + xb + 4 * j));
          ia[t] = _mm512_dpbusd_epi32(ia[t], hi, bcast32(x[t] + xb + 16 + 4 * j));
        }
      }
      const __m512 dw = load_f16x16(g);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m512 d = _mm512_mul_ps(dw, bcastf(x[t] + od + 4 * b));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[t]), d, acc[t]);
      }
    }
  }
};

// ------------------------------------------------------------------------------------- Q8_0
// Record: u16 d[16] | qs[8][16][4] stored as w ^ 0x80 (unsigned w + 128); c8 = -128 * sum(x)
// removes the +128.
struct KQ8_0 {
  static constexpr size_t kRecord = kPackQ8_0;
  template <int T>
  static void run(const uint8_t* g, int64_t nb, const uint8_t* const* x, __m512* acc) {
    const size_t od = static_cast<size_t>(nb) * 32, oc = static_cast<size_t>(nb) * 40;
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b, g += kRecord) {
      __m512i ia[T];
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) ia[t] = bcast32(x[t] + oc + 4 * b);
      const size_t xb = 32 * b;
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        const __m512i v = load512(g + 32 + 64 * j);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) ia[t] = _mm512_dpbusd_epi32(ia[t], v, bcast32(x[t] + xb + 4 * j));
      }
      const __m512 dw = load_f16x16(g);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m512 d = _mm512_mul_ps(dw, bcastf(x[t] + od + 4 * b));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[t]), d, acc[t]);
      }
    }
  }
};

// ------------------------------------------------------------------------------------- Q4_K
// Record: u16 d[16] | u16 dmin[16] | u8 sc[8][16] | u8 m[8][16] | qs[32][16][4].
// Activation: BlockQ8_K rows (d f32 at 0, qs at 4, bsums at 260).
// Sub-block j (32 elements): qs groups 8*(j/2) + c, low nibbles for even j, high for odd.
// sumi = sum_j sc_j * dot_j (vpmulld), summ = sum_j m_j * (bsums[2j] + bsums[2j+1]) (vpdpwssd with
// the pair (m_j, m_j) against the bsums pair).
struct KQ4_K {
  static constexpr size_t kRecord = kPackQ4_K;
  template <int T>
  static void run(const uint8_t* g, int64_t nb, const uint8_t* const* x, __m512* acc) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, g += kRecord) {
      const size_t xo = 292 * static_cast<size_t>(i);
      __m512i sumi[T];
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) sumi[t] = _mm512_setzero_si512();
      for (int j = 0; j < 8; ++j) {
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
            for (int t = 0; t < T; ++t) ia[t] = _mm512_dpbusd_epi32(ia[t], w, bcast32(x[t] + xj + 4 * c));
          }
        } else {
#pragma GCC unroll 8
          for (int c = 0; c < 8; ++c) {
            const __m512i w = _mm512_and_si512(load512(q + 64 * c), m4);
#pragma GCC unroll 8
            for (int t = 0; t < T; ++t) ia[t] = _mm512_dpbusd_epi32(ia[t], w, bcast32(x[t] + xj + 4 * c));
          }
        }
        const __m512i sc = load_u8x16(g + 64 + 16 * j);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(ia[t], sc));
      }
      __m512i summ[T];
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) summ[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        __m512i m = load_u8x16(g + 192 + 16 * j);
        m = _mm512_or_si512(m, _mm512_slli_epi32(m, 16));
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) summ[t] = _mm512_dpwssd_epi32(summ[t], m, bcast32(x[t] + xo + 260 + 4 * j));
      }
      const __m512 dw = load_f16x16(g), dm = load_f16x16(g + 32);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m512 dx = bcastf(x[t] + xo);
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[t]), _mm512_mul_ps(dw, dx), acc[t]);
        acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(summ[t]), _mm512_mul_ps(dm, dx), acc[t]);
      }
    }
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
    const __m512i sp = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 32 + 32 * (4 * h + S))));
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
        for (int t = 0; t < T; ++t) ia[t] = _mm512_dpbusd_epi32(ia[t], q, bcast32(x[t] + xe));
      }
      const __m512i sc = cc ? _mm512_srai_epi32(sp, 16) : _mm512_srai_epi32(_mm512_slli_epi32(sp, 16), 16);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(ia[t], sc));
    }
  }
  template <int T>
  static void run(const uint8_t* g, int64_t nb, const uint8_t* const* x, __m512* acc) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, g += kRecord) {
      const size_t xo = 292 * static_cast<size_t>(i);
      __m512i sumi[T];
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) sumi[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        __m512i sp = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 32 + 32 * k)));
        sp = _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_slli_epi16(sp, 5));  // -32 * sc
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) sumi[t] = _mm512_dpwssd_epi32(sumi[t], sp, bcast32(x[t] + xo + 260 + 4 * k));
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

// Runs kernel K over rows [r0, r1) (16-row groups; packed on the fly unless a.packed) and all
// tokens, T <= 8 tokens per call.
template <class K>
void gemm_quant(const GemmArgs& a) {
  constexpr int kMaxT = 8;
  const int64_t nb = gemm_blocks(a.type, a.n_in);
  const size_t group_bytes = K::kRecord * static_cast<size_t>(nb);
  uint8_t* buf = a.packed ? nullptr : gemm_thread_buffer(group_bytes);
  for (int64_t r = a.r0; r < a.r1; r += kGemmGroupRows) {
    const int nr = static_cast<int>(std::min<int64_t>(kGemmGroupRows, a.r1 - r));
    const uint8_t* g;
    if (a.packed) {
      g = a.packed + static_cast<size_t>(r / kGemmGroupRows) * group_bytes;
    } else {
      gemm_pack_group_ref(a.type, a.w + r * a.row_bytes, a.row_bytes, nr, nb, buf);
      g = buf;
    }
    const __mmask16 m = static_cast<__mmask16>(nr == 16 ? 0xFFFF : (1u << nr) - 1);
    const __m512 bias = a.bias ? _mm512_maskz_loadu_ps(m, a.bias + r) : _mm512_setzero_ps();
    for (int64_t t0 = 0; t0 < a.n; t0 += kMaxT) {
      const int T = static_cast<int>(std::min<int64_t>(kMaxT, a.n - t0));
      const uint8_t* x[kMaxT];
      for (int t = 0; t < T; ++t) x[t] = a.act + (t0 + t) * a.act_stride;
      __m512 acc[kMaxT];
      switch (T) {
        case 1: K::template run<1>(g, nb, x, acc); break;
        case 2: K::template run<2>(g, nb, x, acc); break;
        case 3: K::template run<3>(g, nb, x, acc); break;
        case 4: K::template run<4>(g, nb, x, acc); break;
        case 5: K::template run<5>(g, nb, x, acc); break;
        case 6: K::template run<6>(g, nb, x, acc); break;
        case 7: K::template run<7>(g, nb, x, acc); break;
        default: K::template run<8>(g, nb, x, acc); break;
      }
      for (int t = 0; t < T; ++t) {
        const __m512 v = a.bias ? _mm512_add_ps(acc[t], bias) : acc[t];
        _mm512_mask_storeu_ps(a.y + (t0 + t) * a.ldy + r, m, v);
      }
    }
  }
}

// --------------------------------------------------------------------------- float weights

// Fixed reduction tree of one 16-lane accumulator.
inline float hsum16(__m512 v) {
  __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  b = _mm_add_ps(b, _mm_movehl_ps(b, b));
  b = _mm_add_ss(b, _mm_movehdup_ps(b));
  return _mm_cvtss_f32(b);
}

struct WF32 {
  static __m512 load(const uint8_t* p, int64_t k) { return _mm512_loadu_ps(reinterpret_cast<const float*>(p) + k); }
  static __m512 load(const uint8_t* p, int64_t k, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(p) + k);
  }
};
struct WF16 {
  static __m512 load(const uint8_t* p, int64_t k) { return load_f16x16(p + 2 * k); }
  static __m512 load(const uint8_t* p, int64_t k, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p + 2 * k));
  }
};
struct WBF16 {
  static __m512 expand(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
  static __m512 load(const uint8_t* p, int64_t k) {
    return expand(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2 * k)));
  }
  static __m512 load(const uint8_t* p, int64_t k, __mmask16 m) { return expand(_mm256_maskz_loadu_epi16(m, p + 2 * k)); }
};

// R rows (row r at w + r * rb) x T tokens (f32 rows x[t]) over K -> y[t * ldy + r].
template <class W, int R, int T>
void float_tile(const uint8_t* w, size_t rb, const float* const* x, int64_t K, float* y, int64_t ldy,
                const float* bias) {
  __m512 acc[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) wv[r] = W::load(w + r * rb, k);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const __m512 xv = _mm512_loadu_ps(x[t] + k);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  if (k < K) {
    const __mmask16 m = static_cast<__mmask16>((1u << (K - k)) - 1);
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = W::load(w + r * rb, k, m);
    for (int t = 0; t < T; ++t) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x[t] + k);
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) {
      float v = hsum16(acc[r][t]);
      if (bias) v += bias[r];
      y[t * ldy + r] = v;
    }
}

template <class W, int R>
void float_rows(const GemmArgs& a, int64_t r) {
  const uint8_t* w = a.w + r * a.row_bytes;
  const float* bias = a.bias ? a.bias + r : nullptr;
  constexpr int kT = R == 8 ? 1 : 4;
  for (int64_t t0 = 0; t0 < a.n; t0 += kT) {
    const int T = static_cast<int>(std::min<int64_t>(kT, a.n - t0));
    const float* x[4];
    for (int t = 0; t < T; ++t) x[t] = reinterpret_cast<const float*>(a.act + (t0 + t) * a.act_stride);
    float* y = a.y + t0 * a.ldy + r;
    switch (T) {
      case 1: float_tile<W, R, 1>(w, a.row_bytes, x, a.n_in, y, a.ldy, bias); break;
      case 2: float_tile<W, R, 2>(w, a.row_bytes, x, a.n_in, y, a.ldy, bias); break;
      case 3: float_tile<W, R, 3>(w, a.row_bytes, x, a.n_in, y, a.ldy, bias); break;
      default: float_tile<W, R, 4>(w, a.row_bytes, x, a.n_in, y, a.ldy, bias); break;
    }
  }
}

template <class W>
void gemm_float(const GemmArgs& a) {
  int64_t r = a.r0;
  if (a.n == 1) {
    for (; r + 8 <= a.r1; r += 8) float_rows<W, 8>(a, r);
  } else {
    for (; r + 4 <= a.r1; r += 4) float_rows<W, 4>(a, r);
  }
  for (; r < a.r1; ++r) float_rows<W, 1>(a, r);
}

}  // namespace

void install_avx512_gemm(KernelTable& t) {
  t.gemm[idx(GgmlType::Q4_0)] = gemm_quant<KQ4_0>;
  t.gemm[idx(GgmlType::Q8_0)] = gemm_quant<KQ8_0>;
  t.gemm[idx(GgmlType::Q4_K)] = gemm_quant<KQ4_K>;
  t.gemm[idx(GgmlType::Q6_K)] = gemm_quant<KQ6_K>;
  t.gemm[idx(GgmlType::F32)] = gemm_float<WF32>;
  t.gemm[idx(GgmlType::F16)] = gemm_float<WF16>;
  t.gemm[idx(GgmlType::BF16)] = gemm_float<WBF16>;
}

}  // namespace llmserve::quant
