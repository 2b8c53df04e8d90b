// The f32 products of LoRA training (train_ops.h's mm_nt / mm_nn_acc / mm_tn_acc for T = float):
// cache-blocked, threaded, with AVX2 and AVX-512 kernels chosen by isa/. Every kernel is
// bit-identical to the scalar loops in train_ops.cpp (the references), because each output
// element keeps the references' operations in the references' order:
//   nt:   y[t, o] = dot8(x[t, :], w[o, :])   8 lanes, lane l sums x·w (multiply, then add: no fused
//         multiply-add) over i ≡ l (mod 8) in ascending i, then ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7))
//   axpy: C[a, i] += c(a, b)·S[b, i]  for b ascending, skipping c = 0 (multiply, then add)
// Blocking only changes when an accumulator goes through memory (exact for f32), never the order,
// so results do not depend on the tiles, the thread count or the tier.
#pragma once
#include <cstdint>

#include "../threadpool/thread_pool.h"

namespace llmserve {

// y [n, m] = x [n, k] · wᵀ (w [m, k]).
void train_mm_nt_f32(const float* x, const float* w, int64_t n, int64_t k, int64_t m, float* y, ThreadPool& pool);
// dx [n, k] += dy [n, m] · w (w [m, k]).
void train_mm_nn_acc_f32(const float* dy, const float* w, int64_t n, int64_t m, int64_t k, float* dx, ThreadPool& pool);
// g [m, k] += dyᵀ · x (dy [n, m], x [n, k]).
void train_mm_tn_acc_f32(const float* dy, const float* x, int64_t n, int64_t m, int64_t k, float* g, ThreadPool& pool);

// Which kernels the three products use: -1 the tier isa/ chose (default), 0 the scalar reference
// loops, 1 AVX2, 2 AVX-512 (1 and 2 only where the CPU has them; tests compare them).
void train_gemm_set_tier_for_testing(int tier);
// The tier the products run now (0, 1, 2).
int train_gemm_tier();

// ---- tile kernels (the blocked drivers in train_gemm.cpp call them) ----
// Lanes of dot8 for nt rows x[t] (t < nt, row stride k) against w[o] (o < no, row stride k) over
// columns [c0, c1) (multiples of 8): acc[(t·no + o)·8 + l] += x[t, i]·w[o, i] for i ≡ l (mod 8).
void train_nt_lanes_avx2(const float* x, const float* w, int64_t k, int64_t nt, int64_t no, int64_t c0, int64_t c1,
                         float* acc);
void train_nt_lanes_avx512(const float* x, const float* w, int64_t k, int64_t nt, int64_t no, int64_t c0, int64_t c1,
                           float* acc);
// C[a·ldc + i] += coef[a·ca + b·cb]·S[b·lds + i] for a < na, b in [b0, b1) ascending, i in [i0, i1);
// a zero coefficient adds nothing (as the references skip it).
struct AxpyArgs {
  const float* coef;
  int64_t ca, cb;
  const float* S;
  int64_t lds;
  float* C;
  int64_t ldc;
};
void train_axpy_avx2(const AxpyArgs& p, int64_t na, int64_t b0, int64_t b1, int64_t i0, int64_t i1);
void train_axpy_avx512(const AxpyArgs& p, int64_t na, int64_t b0, int64_t b1, int64_t i0, int64_t i1);

}  // namespace llmserve
