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
// Kernels written as a per-block step get run (and run_both, see HasRunBoth) from StepPasses; a
// kernel may define its own run_both (Q4_K's one-token pass), which must give step()'s bits per
// lane.
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

// The block loop of the kernels written as a per-block step: NH = 1 runs half h (run), NH = 2 both
// halves in one pass (run_both: acc[k * T + t] is half k's, the same operations per lane). For
// 1-2 tokens, where the weights' memory traffic is the limit, one pass keeps it streaming and
// shares the record loads' misses between the halves. step(g, b, h, acc, mins) adds block b
// (record g) of half h into acc[0, T), and its min term into mins[0, T) when MINS (subtracted at
// the end).
template <int T, int NH, bool MINS, class Step>
inline void block_pass(const uint8_t* g, int64_t nb, size_t record, int h, __m256* acc, const Prefetcher& pf,
                       const Step& step) {
  __m256 mins[MINS ? NH * T : 1];
#pragma GCC unroll 8
  for (int t = 0; t < NH * T; ++t) {
    acc[t] = _mm256_setzero_ps();
    if constexpr (MINS) mins[t] = _mm256_setzero_ps();
  }
  for (int64_t b = 0; b < nb; ++b, g += record) {
    pf(b);
#pragma GCC unroll 2
    for (int k = 0; k < NH; ++k) step(g, b, NH == 1 ? h : k, acc + k * T, mins + (MINS ? k * T : 0));
  }
  if constexpr (MINS) {
#pragma GCC unroll 8
    for (int t = 0; t < NH * T; ++t) acc[t] = _mm256_sub_ps(acc[t], mins[t]);
  }
}

// run and run_both of a kernel K (derived from StepPasses<K>) that provides kRecord, kMins (whether
// it keeps a min term) and
//   template <int T> static void step(const uint8_t* g, int64_t b, int64_t nb, const uint8_t* const* x,
//                                     int h, __m256* acc, __m256* mins);
// run_both is used only where K also sets kBothMaxT (HasRunBoth), and only where K does not
// define its own.
template <class K>
struct StepPasses {
  template <int T>
  static void run(const uint8_t* g, int64_t nb, const uint8_t* const* x, int h, __m256* acc, const Prefetcher& pf) {
    block_pass<T, 1, K::kMins>(g, nb, K::kRecord, h, acc, pf,
                               [&](const uint8_t* gb, int64_t b, int hh, __m256* ac, __m256* mn) {
                                 K::template step<T>(gb, b, nb, x, hh, ac, mn);
                               });
  }
  template <int T>
  static void run_both(const uint8_t* g, int64_t nb, const uint8_t* const* x, __m256* acc, const Prefetcher& pf) {
    block_pass<T, 2, K::kMins>(g, nb, K::kRecord, 0, acc, pf,
                               [&](const uint8_t* gb, int64_t b, int hh, __m256* ac, __m256* mn) {
                                 K::template step<T>(gb, b, nb, x, hh, ac, mn);
                               });
  }
  // run over half h with the weights already unpacked into u (K::unpack; kUnpacked bytes per block).
  template <int T>
  static void run_unpacked(const uint8_t* g, const uint8_t* u, int64_t nb, const uint8_t* const* x, int h, __m256* acc,
                           const Prefetcher& pf) {
    block_pass<T, 1, K::kMins>(g, nb, K::kRecord, h, acc, pf,
                               [&](const uint8_t* gb, int64_t b, int hh, __m256* ac, __m256* mn) {
                                 K::template step<T, true>(gb, b, nb, x, hh, ac, mn, u + K::kUnpacked * b);
                               });
  }
};

// Kernels that unpack their weights ahead: K::kUnpacked bytes per block and half, and
//   static void unpack(const uint8_t* g, int64_t nb, int h, uint8_t* u, const Prefetcher& pf);
// writing (calling pf(i) per block i) what step<T, true> then reads from u. A call runs at most kMaxT tokens, so the nibble
// and bit arithmetic that turns a record into maddubs operands ran once per kMaxT tokens: for a
// Q6_K block that was a third of the operations at 16 tokens. With more than kMaxT tokens,
// group_tokens unpacks a half once into a per-thread buffer (2 KiB per block: L1 for 4096-wide
// rows, L2 for 14336) and every token chunk reads it. The operands are the same bytes, so the
// outputs keep their bits.
template <class K>
concept HasUnpack = requires(const uint8_t* g, uint8_t* u, const Prefetcher& pf) {
  K::kUnpacked;
  K::unpack(g, int64_t(1), 0, u, pf);
};

// Q4_0 and Q8_0 (one record per 32-element block), rows 8*h..8*h+7 of the group: per block and
// token, ia = the block's exact integer dot, then acc = fma(float(ia), d_w * d_x, acc). Q supplies
// the record size, the dot (maddubs in gemm_avx2.cpp, vpdpbusd in gemm_avxvnni.cpp) and where it
// starts (the activation's c term at byte offset kCTerm * nb, or zero).
template <class Q>
struct KBlock32Dot : StepPasses<KBlock32Dot<Q>> {
  static constexpr int kMaxT = 4;
  static constexpr int kBothMaxT = 2;  // tokens per run_both call
  static constexpr size_t kRecord = Q::kRecord;
  static constexpr bool kMins = false;
  // Block b (record g) of half h into acc[0, T): the dot from its start, then the float step.
  template <int T>
  static void step(const uint8_t* g, int64_t b, int64_t nb, const uint8_t* const* x, int h, __m256* acc, __m256*) {
    // Activation row: qs[nb][32] | f32 d[nb] | the c term at kCTerm * nb.
    const size_t od = static_cast<size_t>(nb) * 32, oc = static_cast<size_t>(nb) * Q::kCTerm;
    __m256i ia[T];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) ia[t] = Q::kCTerm ? bcast32(x[t] + oc + 4 * b) : _mm256_setzero_si256();
    Q::template dot<T>(g, x, 32 * b, h, ia);
    const __m256 dw = load_f16x8(g + 16 * h);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const __m256 d = _mm256_mul_ps(dw, bcastf(x[t] + od + 4 * b));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia[t]), d, acc[t]);
    }
  }
};

// Kernels with run_both (a one-pass version of both halves, for up to K::kBothMaxT tokens).
template <class K>
concept HasRunBoth = requires(const uint8_t* g, const uint8_t* const* x, __m256* acc, const Prefetcher& pf) {
  K::template run_both<1>(g, int64_t(1), x, acc, pf);
  K::kBothMaxT;
};

// T tokens (x) against half h of packed group g, stored to y rows r0.. (mask m) plus the bias. T
// is a constant here so the accumulators stay in registers (a store loop over a runtime T indexed
// them, and GCC kept them in memory).
template <class K, int T>
void tile(const uint8_t* g, const uint8_t* u, int64_t nb, const uint8_t* const* x, int h, const Prefetcher& p,
          const GemmArgs& a, int64_t r0, int64_t t0, __m256i m, __m256 bias) {
  __m256 acc[T];
  if constexpr (HasUnpack<K>) {
    if (u) K::template run_unpacked<T>(g, u, nb, x, h, acc, p);
    else K::template run<T>(g, nb, x, h, acc, p);
  } else {
    (void)u;
    K::template run<T>(g, nb, x, h, acc, p);
  }
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t) {
    const __m256 v = a.bias ? _mm256_add_ps(acc[t], bias) : acc[t];
    _mm256_maskstore_ps(a.y + (t0 + t) * a.ldy + r0, m, v);
  }
}

// tile() for both halves of a full group in one pass (K::run_both).
template <class K, int T>
void tile_both(const uint8_t* g, int64_t nb, const uint8_t* const* x, const Prefetcher& p, const GemmArgs& a, int64_t r,
               int64_t t0) {
  __m256 acc[2 * T];
  K::template run_both<T>(g, nb, x, acc, p);
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    const __m256 bias = a.bias ? _mm256_loadu_ps(a.bias + r + 8 * h) : _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const __m256 v = a.bias ? _mm256_add_ps(acc[h * T + t], bias) : acc[h * T + t];
      _mm256_storeu_ps(a.y + (t0 + t) * a.ldy + r + 8 * h, v);
    }
  }
}

// One packed group g (rows r .. r + nr - 1) against tokens [t_begin, t_end), both halves, T <=
// kMaxT tokens per call; kpf (the next group's prefetch) runs with the first call of a half only.
template <class K>
void group_tokens(const uint8_t* g, int64_t nb, const GemmArgs& a, int64_t r, int nr, int64_t t_begin, int64_t t_end,
                  const Prefetcher& kpf) {
  constexpr int kMaxT = K::kMaxT;
  if constexpr (HasRunBoth<K>) {
    if (nr == 16 && t_end - t_begin <= K::kBothMaxT) {
      const uint8_t* x[2] = {a.act + t_begin * a.act_stride, a.act + (t_end - 1) * a.act_stride};
      // One pass reads the group once in order: kpf is the sweep's one_pass_ahead ahead here
      // (kernel_prefetch_ahead), not the next group (8B-shape Q4_K_M decode ~+10%).
      if constexpr (K::kBothMaxT >= 2)
        if (t_end - t_begin == 2) return tile_both<K, 2>(g, nb, x, kpf, a, r, t_begin);
      return tile_both<K, 1>(g, nb, x, kpf, a, r, t_begin);
    }
  }
  for (int h = 0; h < 2; ++h) {
    const int hr = std::min(8, nr - 8 * h);
    if (hr <= 0) break;
    const __m256i m = row_mask(hr);
    const int64_t r0 = r + 8 * h;
    const __m256 bias = a.bias ? _mm256_maskload_ps(a.bias + r0, m) : _mm256_setzero_ps();
    // Each half prefetches its half of the next group, so memory streams during both passes.
    Prefetcher hp;
    if (kpf.next) {
      const size_t half = kpf.bytes / 2;
      hp = Prefetcher(kpf.next + h * half, h == 0 ? half : kpf.bytes - half, nb);
    }
    const uint8_t* u = nullptr;
    if constexpr (HasUnpack<K>) {
      if (t_end - t_begin > kMaxT) {
        // The next group's prefetch stays with the first chunk: spread over its compute, not
        // issued in a burst during the short unpack loop.
        uint8_t* buf = gemm_thread_buffer(K::kUnpacked * static_cast<size_t>(nb), 1);
        K::unpack(g, nb, h, buf, Prefetcher());
        u = buf;
      }
    }
    for (int64_t t0 = t_begin; t0 < t_end; t0 += kMaxT) {
      const int T = static_cast<int>(std::min<int64_t>(kMaxT, t_end - t0));
      const uint8_t* x[kMaxT];
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) x[t] = a.act + (t0 + t) * a.act_stride;
      const Prefetcher p = t0 == t_begin ? hp : Prefetcher();
      switch (T) {
        case 1: tile<K, 1>(g, u, nb, x, h, p, a, r0, t0, m, bias); break;
        case 2: tile<K, (kMaxT >= 2 ? 2 : 1)>(g, u, nb, x, h, p, a, r0, t0, m, bias); break;
        case 3: tile<K, (kMaxT >= 3 ? 3 : 1)>(g, u, nb, x, h, p, a, r0, t0, m, bias); break;
        default: tile<K, kMaxT>(g, u, nb, x, h, p, a, r0, t0, m, bias); break;
      }
    }
  }
}

// Runs kernel K over rows [r0, r1) and all tokens (gemm_impl.h's gemm_sweep): ~256 KiB of packed
// groups swept by ~128 KiB of activations, 4 tokens per micro-kernel call.
template <class K>
void gemm_quant(const GemmArgs& a) {
  // One token over packed groups of 1-4 records (a rank-32/64 LoRA B factor, [n_out, r]):
  // group_tokens' per-group setup cost as much as the records themselves, so full groups run in
  // one loop, each the sweep's run_both call with its prefetch: the same reads and bits.
  if constexpr (HasRunBoth<K>) {
    const int64_t nb = gemm_blocks(a.type, a.n_in);
    if (a.n == 1 && a.packed && !a.bias && nb <= 4) {
      const size_t group_bytes = K::kRecord * static_cast<size_t>(nb);
      const uint8_t* x[2] = {a.act, a.act};
      int64_t r = a.r0;
      const uint8_t* g = a.packed + static_cast<size_t>(r / kGemmGroupRows) * group_bytes;
      for (; r + kGemmGroupRows <= a.r1; r += kGemmGroupRows, g += group_bytes) {
        __m256 acc[2];
        K::template run_both<1>(g, nb, x, acc, Prefetcher(g + kernel_prefetch_ahead<K>(), group_bytes, nb));
        _mm256_storeu_ps(a.y + r, acc[0]);
        _mm256_storeu_ps(a.y + r + 8, acc[1]);
      }
      if (r < a.r1) group_tokens<K>(g, nb, a, r, static_cast<int>(a.r1 - r), 0, 1, Prefetcher());
      return;
    }
  }
  int64_t one_pass = 0;  // group_tokens' run_both calls
  if constexpr (HasRunBoth<K>) one_pass = K::kBothMaxT;
  gemm_sweep(a, K::kRecord, size_t(256) << 10, size_t(128) << 10, 4,
             SweepPrefetch{0, 0, one_pass, kernel_prefetch_ahead<K>()}, pack_group, group_tokens<K>);
}

}  // namespace
}  // namespace llmserve::quant
