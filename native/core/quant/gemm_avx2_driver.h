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

// T tokens (x) against half h of packed group g, stored to y rows r0.. (mask m) plus the bias. T
// is a constant here so the accumulators stay in registers (a store loop over a runtime T indexed
// them, and GCC kept them in memory).
template <class K, int T>
void tile(const uint8_t* g, int64_t nb, const uint8_t* const* x, int h, const Prefetcher& p, const GemmArgs& a,
          int64_t r0, int64_t t0, __m256i m, __m256 bias) {
  __m256 acc[T];
  K::template run<T>(g, nb, x, h, acc, p);
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t) {
    const __m256 v = a.bias ? _mm256_add_ps(acc[t], bias) : acc[t];
    _mm256_maskstore_ps(a.y + (t0 + t) * a.ldy + r0, m, v);
  }
}

// One packed group g (rows r .. r + nr - 1) against tokens [t_begin, t_end), both halves, T <=
// kMaxT tokens per call; kpf (the next group's prefetch) runs with the first call of a half only.
template <class K>
void group_tokens(const uint8_t* g, int64_t nb, const GemmArgs& a, int64_t r, int nr, int64_t t_begin, int64_t t_end,
                  const Prefetcher& kpf) {
  constexpr int kMaxT = K::kMaxT;
  for (int h = 0; h < 2; ++h) {
    const int hr = std::min(8, nr - 8 * h);
    if (hr <= 0) break;
    const __m256i m = row_mask(hr);
    const int64_t r0 = r + 8 * h;
    const __m256 bias = a.bias ? _mm256_maskload_ps(a.bias + r0, m) : _mm256_setzero_ps();
    for (int64_t t0 = t_begin; t0 < t_end; t0 += kMaxT) {
      const int T = static_cast<int>(std::min<int64_t>(kMaxT, t_end - t0));
      const uint8_t* x[kMaxT];
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) x[t] = a.act + (t0 + t) * a.act_stride;
      const Prefetcher& p = t0 == t_begin ? kpf : Prefetcher();
      switch (T) {
        case 1: tile<K, 1>(g, nb, x, h, p, a, r0, t0, m, bias); break;
        case 2: tile<K, (kMaxT >= 2 ? 2 : 1)>(g, nb, x, h, p, a, r0, t0, m, bias); break;
        case 3: tile<K, (kMaxT >= 3 ? 3 : 1)>(g, nb, x, h, p, a, r0, t0, m, bias); break;
        default: tile<K, kMaxT>(g, nb, x, h, p, a, r0, t0, m, bias); break;
      }
    }
  }
}

// Runs kernel K over rows [r0, r1) and all tokens. Few tokens: group by group (packed on the fly
// into L1 unless a.packed). Many tokens: batches of groups (~256 KiB packed) are swept by blocks of
// tokens (~128 KiB of activations), so both stay in L2 while they are reused instead of every
// group streaming all activations from L3. The order of the calls does not change any output
// (each is one micro-kernel run over its full K).
template <class K>
void gemm_quant(const GemmArgs& a) {
  const int64_t nb = gemm_blocks(a.type, a.n_in);
  const size_t group_bytes = K::kRecord * static_cast<size_t>(nb);
  const int64_t n_groups = (a.r1 - a.r0 + kGemmGroupRows - 1) / kGemmGroupRows;
  int64_t batch = 1, tb = a.n;
  if (a.n > 64) {
    batch = std::max<int64_t>(1, static_cast<int64_t>((size_t(256) << 10) / group_bytes));
    tb = std::max<int64_t>(16, static_cast<int64_t>((size_t(128) << 10) / a.act_stride) / 4 * 4);
  }
  batch = std::min(batch, n_groups);
  uint8_t* buf = a.packed ? nullptr : gemm_thread_buffer(group_bytes * static_cast<size_t>(batch));
  for (int64_t b0 = 0; b0 < n_groups; b0 += batch) {
    const int64_t b1 = std::min(n_groups, b0 + batch);
    if (!a.packed) {
      for (int64_t gi = b0; gi < b1; ++gi) {
        const int64_t r = a.r0 + gi * kGemmGroupRows;
        const int nr = static_cast<int>(std::min<int64_t>(kGemmGroupRows, a.r1 - r));
        Prefetcher pf;
        if (r + 2 * kGemmGroupRows <= a.r1) {
          pf.next = a.w + (r + kGemmGroupRows) * a.row_bytes;
          pf.bytes = kGemmGroupRows * a.row_bytes;
          pf.nb = nb;
        }
        pack_group(a.type, a.w + r * a.row_bytes, a.row_bytes, nr, nb, buf + (gi - b0) * group_bytes, pf);
      }
    }
    for (int64_t t_begin = 0; t_begin < a.n; t_begin += tb) {
      const int64_t t_end = std::min(a.n, t_begin + tb);
      for (int64_t gi = b0; gi < b1; ++gi) {
        const int64_t r = a.r0 + gi * kGemmGroupRows;
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
          g = buf + (gi - b0) * group_bytes;
        }
        group_tokens<K>(g, nb, a, r, nr, t_begin, t_end, kpf);
      }
    }
  }
}

}  // namespace
}  // namespace llmserve::quant
