// Blocked, threaded drivers of the f32 training products (train_gemm.h) and the tier dispatch.
#include "train_gemm.h"

#include <algorithm>
#include <atomic>
#include <vector>

#include "../isa/isa.h"

namespace llmserve {
namespace {

std::atomic<int> g_tier_override{-1};

// Blocks: a work item owns kTok tokens × kOut outputs of nt (their lane accumulators, 128 KiB, and
// x's and w's kCol-column panels, 128 KiB each, stay in L2), or kRows × kCols elements of an axpy
// output, over panels of kInner rows of S.
constexpr int64_t kTok = 64, kOut = 64, kCol = 512;
constexpr int64_t kRows = 16, kCols = 256, kInner = 256;

using LanesFn = void (*)(const float*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*);
using AxpyFn = void (*)(const AxpyArgs&, int64_t, int64_t, int64_t, int64_t, int64_t);

LanesFn lanes_fn() {
#if defined(LLMSERVE_X86)
  return train_gemm_tier() >= 2 ? train_nt_lanes_avx512 : train_nt_lanes_avx2;
#else
  return nullptr;
#endif
}

AxpyFn axpy_fn() {
#if defined(LLMSERVE_X86)
  return train_gemm_tier() >= 2 ? train_axpy_avx512 : train_axpy_avx2;
#else
  return nullptr;
#endif
}

// C[a, i] += Σ_b coef(a, b)·S[b, i] over na × ni, b ascending through panels of kInner.
void axpy_drive(const AxpyArgs& p, int64_t na, int64_t nb, int64_t ni, ThreadPool& pool) {
  const AxpyFn fn = axpy_fn();
  const int64_t n_rb = (na + kRows - 1) / kRows, n_cb = (ni + kCols - 1) / kCols;
  pool.parallel_for(n_rb * n_cb, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t a0 = (j / n_cb) * kRows, i0 = (j % n_cb) * kCols;
      AxpyArgs q = p;
      q.coef += a0 * p.ca;
      q.C += a0 * p.ldc;
      for (int64_t b0 = 0; b0 < nb; b0 += kInner)
        fn(q, std::min(kRows, na - a0), b0, std::min(nb, b0 + kInner), i0, std::min(ni, i0 + kCols));
    }
  });
}

}  // namespace

void train_gemm_set_tier_for_testing(int tier) { g_tier_override.store(tier, std::memory_order_relaxed); }

int train_gemm_tier() {
#if defined(LLMSERVE_X86)
  const int isa = static_cast<int>(active_isa());
  const int o = g_tier_override.load(std::memory_order_relaxed);
  return o < 0 ? isa : std::min(o, isa);
#else
  return 0;
#endif
}

void train_mm_nt_f32(const float* x, const float* w, int64_t n, int64_t k, int64_t m, float* y, ThreadPool& pool) {
  const LanesFn fn = lanes_fn();
  const int64_t k8 = k & ~int64_t{7};
  const int64_t n_tb = (n + kTok - 1) / kTok, n_ob = (m + kOut - 1) / kOut;
  pool.parallel_for(n_tb * n_ob, [&](int64_t j0, int64_t j1) {
    // 128 KiB per thread, kept: a fresh one per call would be an mmap + page faults each time.
    thread_local std::vector<float> acc(static_cast<size_t>(kTok * kOut * 8));
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t t0 = (j / n_ob) * kTok, o0 = (j % n_ob) * kOut;
      const int64_t nt = std::min(kTok, n - t0), no = std::min(kOut, m - o0);
      std::fill(acc.begin(), acc.begin() + nt * no * 8, 0.0f);
      for (int64_t c0 = 0; c0 < k8; c0 += kCol)
        fn(x + t0 * k, w + o0 * k, k, nt, no, c0, std::min(k8, c0 + kCol), acc.data());
      // dot8's tail (k % 8 elements into lanes 0..) and its fixed reduction tree, as the reference.
      for (int64_t t = 0; t < nt; ++t)
        for (int64_t o = 0; o < no; ++o) {
          float* l = acc.data() + (t * no + o) * 8;
          const float* xt = x + (t0 + t) * k;
          const float* wo = w + (o0 + o) * k;
          for (int64_t i = k8; i < k; ++i) l[i - k8] += xt[i] * wo[i];
          y[(t0 + t) * m + o0 + o] = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
        }
    }
  });
}

void train_mm_nn_acc_f32(const float* dy, const float* w, int64_t n, int64_t m, int64_t k, float* dx,
                         ThreadPool& pool) {
  // dx[t, i] += Σ_o dy[t, o]·w[o, i]: rows a = tokens, b = outputs o.
  axpy_drive(AxpyArgs{dy, m, 1, w, k, dx, k}, n, m, k, pool);
}

void train_mm_tn_acc_f32(const float* dy, const float* x, int64_t n, int64_t m, int64_t k, float* g, ThreadPool& pool) {
  // g[o, i] += Σ_t dy[t, o]·x[t, i]: rows a = outputs o, b = tokens t.
  axpy_drive(AxpyArgs{dy, 1, m, x, k, g, k}, m, n, k, pool);
}

#if !defined(LLMSERVE_X86)  // the SIMD files are not built; never called (train_gemm_tier() is 0)
void train_nt_lanes_avx2(const float*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*) {}
void train_nt_lanes_avx512(const float*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*) {}
void train_axpy_avx2(const AxpyArgs&, int64_t, int64_t, int64_t, int64_t, int64_t) {}
void train_axpy_avx512(const AxpyArgs&, int64_t, int64_t, int64_t, int64_t, int64_t) {}
#endif

}  // namespace llmserve
