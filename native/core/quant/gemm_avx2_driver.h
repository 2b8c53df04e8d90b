// Internal to the AVX2 GEMM files (gemm_*avx2.cpp, compiled with -mavx2 -mfma -mf16c): load
// helpers and the driver that runs a micro-kernel K over row groups and tokens, 8 rows per ymm (a
// 16-row group as two halves). Everything has internal linkage (only files built with these flags
// include it). A file that includes this defines pack_group (its on-the-fly packer, same bytes as
// gemm_pack_group_ref) in its own anonymous namespace.
//
// A kernel K provides kMaxT (tokens per call, <= 4), kRecord (packed bytes per block) and
//   template <int T> static void run(const uint8_t* g, int64_t nb, const uint8_t* const* x, int h,
//                                    __m256* acc, const Prefetcher& pf);
// computing acc[t] (lane i = row 8h + i of the group) for T tokens over all nb blocks of group g.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "quant/gemm_impl.h"

namespace llmserve::quant {
namespace {

inline __m256i bcast32(const uint8_t* p) { return _mm256_set1_epi32(ld32(p)); }
inline __m256 bcastf(const uint8_t* p) { return _mm256_set1_ps(ldf(p)); }
inline __m256i load256(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m256 load_f16x8(const uint8_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
// 8 bytes -> 8 int32
inline __m256i load_u8x8(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
// acc + per-lane sum of 4 products u8 x s8 (|pair sums| < 2^15 by the callers' ranges)
inline __m256i dot4(__m256i acc, __m256i u, __m256i s) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}

// Packs rows [0, nr) of w into one group of nb records (defined by each including file).
void pack_group(GgmlType t, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out, const Prefetcher& pf);

inline __m256i row_mask(int nr) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

template <class K>
void gemm_quant(const GemmArgs& a) {
  constexpr int kMaxT = K::kMaxT;
  const int64_t nb = gemm_blocks(a.type, a.n_in);
  const size_t group_bytes = K::kRecord * static_cast<size_t>(nb);
  uint8_t* buf = a.packed ? nullptr : gemm_thread_buffer(group_bytes);
  for (int64_t r = a.r0; r < a.r1; r += kGemmGroupRows) {
    const int nr = static_cast<int>(std::min<int64_t>(kGemmGroupRows, a.r1 - r));
    const uint8_t* g;
    Prefetcher kpf;
    if (a.packed) {
      g = a.packed + static_cast<size_t>(r / kGemmGroupRows) * group_bytes;
      if (((a.n <= 2 && K::kRecord > 1024) || (a.n >= 3 && a.n <= 64)) && r + 2 * kGemmGroupRows <= a.r1) {
        kpf.next = g + group_bytes;
        kpf.bytes = group_bytes;
        kpf.nb = nb;
      }
    } else {
      Prefetcher pf;
      if (r + 2 * kGemmGroupRows <= a.r1) {
        pf.next = a.w + (r + kGemmGroupRows) * a.row_bytes;
        pf.bytes = kGemmGroupRows * a.row_bytes;
        pf.nb = nb;
      }
      pack_group(a.type, a.w + r * a.row_bytes, a.row_bytes, nr, nb, buf, pf);
      g = buf;
    }
    for (int h = 0; h < 2; ++h) {
      const int hr = std::min(8, nr - 8 * h);
      if (hr <= 0) break;
      const __m256i m = row_mask(hr);
      const int64_t r0 = r + 8 * h;
      const __m256 bias = a.bias ? _mm256_maskload_ps(a.bias + r0, m) : _mm256_setzero_ps();
      for (int64_t t0 = 0; t0 < a.n; t0 += kMaxT) {
        const int T = static_cast<int>(std::min<int64_t>(kMaxT, a.n - t0));
        const uint8_t* x[kMaxT];
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) x[t] = a.act + (t0 + t) * a.act_stride;
        __m256 acc[kMaxT] = {};
        const Prefetcher& p = t0 == 0 ? kpf : Prefetcher();
        switch (T) {
          case 1: K::template run<1>(g, nb, x, h, acc, p); break;
          case 2: K::template run<(kMaxT >= 2 ? 2 : 1)>(g, nb, x, h, acc, p); break;
          case 3: K::template run<(kMaxT >= 3 ? 3 : 1)>(g, nb, x, h, acc, p); break;
          default: K::template run<kMaxT>(g, nb, x, h, acc, p); break;
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
          const __m256 v = a.bias ? _mm256_add_ps(acc[t], bias) : acc[t];
          _mm256_maskstore_ps(a.y + (t0 + t) * a.ldy + r0, m, v);
        }
      }
    }
  }
}

}  // namespace
}  // namespace llmserve::quant
