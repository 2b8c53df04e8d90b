// Batched low-rank updates y[t] += scale_g · B_g·(A_g·x[t]) for groups of rows that each use their
// own factors (one LoRA adapter per group): the CPU shape of Punica's SGMV (prefill) and BGMV
// (decode). One call covers every adapter of a projection in two parallel passes, so the cost of
// dispatching work to threads does not grow with the number of adapters in a batch.
//
// Numerics (fixed per output element, so a row's result never depends on the batch, the grouping
// or the thread count, and the AVX2 kernels are bit-identical to the scalar references):
//   t[k]  = dot8(A[k, :], x)                  8 lanes, lane l sums elements i ≡ l (mod 8) in order
//                                             with fused multiply-adds, then ((l0+l4)+(l2+l6)) +
//                                             ((l1+l5)+(l3+l7))
//   acc_j = fma(t[r-1], Bt[r-1, j], ... fma(t[0], Bt[0, j], 0))   (k ascending)
//   y[j]  = fma(acc_j, scale, y[j])
#pragma once
#include <cstdint>
#include <vector>

#include "../threadpool/thread_pool.h"

namespace llmserve {

// One adapter's factors for one projection. Both in f16 (IEEE half bits) or both in f32.
struct LowRankFactors {
  const void* a = nullptr;   // A: [r, n_in] row-major
  const void* bt = nullptr;  // B transposed: [r, n_out] row-major (row k = column k of B)
  bool f16 = false;
  int64_t r = 0;
  float scale = 0.0f;
};

// The rows of a batch that use one set of factors.
struct LowRankGroup {
  LowRankFactors f;
  const int64_t* rows = nullptr;  // ascending row indices into x / y
  int64_t n_rows = 0;
};

// x: [*, n_in] (row stride n_in); y: [*, n_out] (row stride ldy); n_in % 8 == 0.
void lowrank_apply(const LowRankGroup* groups, int64_t n_groups, const float* x, int64_t n_in, float* y, int64_t ldy,
                   int64_t n_out, ThreadPool& pool);

// The two passes (scalar references and their AVX2 versions).
// ts[i][k] = dot8(A[k, :], xs[i]) for k in [k0, k1) and i in [0, n_x): each A row is read once for
// all the rows of its group. n_in is a multiple of 8.
void lowrank_a_ref(const LowRankFactors& f, const float* const* xs, int64_t n_x, int64_t n_in, int64_t k0, int64_t k1,
                   float* const* ts);
void lowrank_a_avx2(const LowRankFactors& f, const float* const* xs, int64_t n_x, int64_t n_in, int64_t k0, int64_t k1,
                    float* const* ts);
void lowrank_a_avx512(const LowRankFactors& f, const float* const* xs, int64_t n_x, int64_t n_in, int64_t k0,
                      int64_t k1, float* const* ts);
// ys[i][j] for j in [j0, j1) and i in [0, n_y), from ts[i]: [r]; bt rows have n_out elements.
// Each loaded range of Bt is used for several rows.
void lowrank_b_ref(const LowRankFactors& f, const float* const* ts, float* const* ys, int64_t n_y, int64_t n_out,
                   int64_t j0, int64_t j1);
void lowrank_b_avx2(const LowRankFactors& f, const float* const* ts, float* const* ys, int64_t n_y, int64_t n_out,
                    int64_t j0, int64_t j1);
void lowrank_b_avx512(const LowRankFactors& f, const float* const* ts, float* const* ys, int64_t n_y, int64_t n_out,
                      int64_t j0, int64_t j1);

// Which kernels lowrank_apply uses (tests compare the two).
void lowrank_force_scalar_for_testing(bool on);

}  // namespace llmserve
