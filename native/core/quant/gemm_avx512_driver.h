// Internal to the AVX-512 GEMM files (gemm_*avx512.cpp, compiled with AVX-512 F/BW/VL/DQ/VNNI):
// the driver that runs a micro-kernel K over row groups and tokens (load helpers and transposes:
// gemm_avx512_util.h). Everything has
// internal linkage (only files built with these flags include it). A file that includes this
// defines pack_group (its on-the-fly packer, same bytes as gemm_pack_group_ref) in its own
// anonymous namespace.
//
// A kernel K provides kMaxT (tokens per call), kRecord (packed bytes per block) and
//   template <int T> static void run(const uint8_t* g, int64_t nb, const uint8_t* const* x,
//                                    __m512* acc, const Prefetcher& pf);
// computing acc[t] (lane i = row i of the group) for T tokens over all nb blocks of group g.
#pragma once
#if defined(__GNUC__) && !defined(__clang__)  // GCC 12's avx512fintrin.h trips these on its own helpers
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "quant/gemm_avx512_util.h"
#include "quant/gemm_impl.h"

namespace llmserve::quant {
namespace {

// Packs rows [0, nr) of w into one group of nb records (defined by each including file).
void pack_group(GgmlType t, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out, const Prefetcher& pf);

// Runs kernel K over rows [r0, r1) (16-row groups; packed on the fly unless a.packed) and all
// tokens, T <= 8 tokens per call.
// T tokens (x) against packed group g, stored to y rows t0.. (lanes m) plus the bias. T is a
// constant here, so the T accumulators live in registers: with a runtime T the store loop indexed
// them and GCC kept them in memory, a store per block and token in the kernel's loop.
template <class K, int T>
void tile(const uint8_t* g, int64_t nb, const uint8_t* const* x, const Prefetcher& kpf, const GemmArgs& a, int64_t r,
          int64_t t0, __mmask16 m, __m512 bias) {
  __m512 acc[T];
  K::template run<T>(g, nb, x, acc, kpf);
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) {
    const __m512 v = a.bias ? _mm512_add_ps(acc[t], bias) : acc[t];
    _mm512_mask_storeu_ps(a.y + (t0 + t) * a.ldy + r, m, v);
  }
}

// One packed group g (rows r .. r + nr - 1) against tokens [t_begin, t_end), T <= 8 per call.
template <class K>
void group_tokens(const uint8_t* g, int64_t nb, const GemmArgs& a, int64_t r, int nr, int64_t t_begin, int64_t t_end,
                  const Prefetcher& kpf) {
  constexpr int kMaxT = K::kMaxT;
  const __mmask16 m = static_cast<__mmask16>(nr == 16 ? 0xFFFF : (1u << nr) - 1);
  const __m512 bias = a.bias ? _mm512_maskz_loadu_ps(m, a.bias + r) : _mm512_setzero_ps();
  for (int64_t t0 = t_begin; t0 < t_end; t0 += kMaxT) {
    const int T = static_cast<int>(std::min<int64_t>(kMaxT, t_end - t0));
    const uint8_t* x[kMaxT];
    for (int t = 0; t < T; ++t) x[t] = a.act + (t0 + t) * a.act_stride;
    // The output lines of the next tile: fetched for writing while this one computes (otherwise
    // their read-for-ownership misses stall the stores; ~8% at 512 tokens).
    if (T == kMaxT) {
      const int64_t tn = std::min<int64_t>(kMaxT, t_end - t0 - kMaxT);
      for (int64_t t = 0; t < tn; ++t) __asm__ volatile("prefetchw %0" : : "m"(a.y[(t0 + kMaxT + t) * a.ldy + r]));
    }
    switch (T) {
      case 1: tile<K, 1>(g, nb, x, kpf, a, r, t0, m, bias); break;
      case 2: tile<K, (kMaxT >= 2 ? 2 : 1)>(g, nb, x, kpf, a, r, t0, m, bias); break;
      case 3: tile<K, (kMaxT >= 3 ? 3 : 1)>(g, nb, x, kpf, a, r, t0, m, bias); break;
      case 4: tile<K, (kMaxT >= 4 ? 4 : 1)>(g, nb, x, kpf, a, r, t0, m, bias); break;
      case 5: tile<K, (kMaxT >= 5 ? 5 : 1)>(g, nb, x, kpf, a, r, t0, m, bias); break;
      case 6: tile<K, (kMaxT >= 6 ? 6 : 1)>(g, nb, x, kpf, a, r, t0, m, bias); break;
      case 7: tile<K, (kMaxT >= 7 ? 7 : 1)>(g, nb, x, kpf, a, r, t0, m, bias); break;
      default: tile<K, kMaxT>(g, nb, x, kpf, a, r, t0, m, bias); break;
    }
  }
}

// Runs kernel K over rows [r0, r1) and all tokens (gemm_impl.h's gemm_sweep): ~512 KiB of packed
// groups swept by ~256 KiB of activations, 8 tokens per micro-kernel call.
// Records from this size on get the few-token sweep's software prefetch at 1-2 tokens (SweepPrefetch).
constexpr size_t kMinPrefetchRecord = 1025;

template <class K>
void gemm_quant(const GemmArgs& a) {
  // One token over packed groups of 1-4 small records (a rank-32/64 LoRA B factor, [n_out, r]):
  // group_tokens' per-group setup cost as much as the records themselves, so the groups run in
  // one loop. Records under the sweep's min_record get no software prefetch at 1 token there
  // either, and each group is the same run<1> call: the same reads and bits.
  if constexpr (K::kRecord < kMinPrefetchRecord) {
    const int64_t nb = gemm_blocks(a.type, a.n_in);
    if (a.n == 1 && a.packed && !a.bias && nb <= 4) {
      const size_t group_bytes = K::kRecord * static_cast<size_t>(nb);
      const uint8_t* x[1] = {a.act};
      const Prefetcher none;
      int64_t r = a.r0;
      const uint8_t* g = a.packed + static_cast<size_t>(r / kGemmGroupRows) * group_bytes;
      for (; r + kGemmGroupRows <= a.r1; r += kGemmGroupRows, g += group_bytes) {
        __m512 acc[1];
        K::template run<1>(g, nb, x, acc, none);
        _mm512_storeu_ps(a.y + r, acc[0]);
      }
      if (r < a.r1) group_tokens<K>(g, nb, a, r, static_cast<int>(a.r1 - r), 0, 1, none);
      return;
    }
  }
  gemm_sweep(a, K::kRecord, size_t(512) << 10, size_t(256) << 10, 8,
             SweepPrefetch{kMinPrefetchRecord, kernel_prefetch_ahead<K>()}, pack_group, group_tokens<K>);
}

}  // namespace
}  // namespace llmserve::quant
