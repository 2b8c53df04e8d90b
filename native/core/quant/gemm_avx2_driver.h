// Internal to the AVX2 GEMM files (gemm_*avx2.cpp, compiled with -mavx2 -mfma -mf16c): the driver
// that runs a micro-kernel K over row groups and tokens, 8 rows per ymm (a 16-row group as two
// halves; load helpers and transposes: gemm_avx2_util.h). Everything has internal linkage (only files built with these flags
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

#include "quant/gemm_avx2_util.h"
#include "quant/gemm_impl.h"

namespace llmserve::quant {
namespace {

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
