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

// How both factors are stored. Q8_0: ggml's q8_0 blocks (f16 scale d, 32 int8 q) along each row,
// so n_in and n_out are multiples of 32; an element is d·q, exact in f32 (11 by 8 significant
// bits), so every kernel sees the same f32 values and the numerics below are unchanged. It halves
// an adapter's memory against f16 (34 bytes per 32 elements); the passes then convert more per
// element (int8 -> f32, times d), which on 2 AVX-512 cores cost more time than the bytes saved.
//
// Q8_0Gemm: the other numerics, for q8_0 factors whose rank is a multiple of 32 -- llama.cpp's
// q8_0 adapter arithmetic (two ggml_mul_mat, then ggml_scale and ggml_add), run by quant/gemm.h:
//   t = gemm(A, q8_0(x))        A [r, n_in] q8_0 rows; x quantized per row as ggml's q8_0
//   u = gemm(B, q8_0(t))        B [n_out, r] q8_0 rows (not transposed: blocks run along r)
//   y[j] = y[j] + u[j] * scale
// Integer block dots, so a step streams the factors at the int8 kernels' speed (a decode step
// over 16 adapters of rank 64 reads more factor bytes than base weights). Bit-identical to
// LoraAdapter::add (matmul() over the same rows), for any batch, grouping or thread count, as gemm
// guarantees; it is the path for q8_0 adapter files and for Model.load's adapterType "q8_0".
//
// Q4_0Gemm: the same arithmetic over q4_0 factors (ggml's q4_0 blocks: f16 scale d, 32 4-bit
// q - 8), as llama.cpp runs a q4_0 adapter file: A and B stream 18 bytes per 32 elements instead
// of 34, for decode steps over many adapters, where those bytes are the LoRA cost; x and t are
// still quantized as q8_0 (q4_0's vec_dot type). The path for q4_0 adapter files and
// adapterType "q4_0".
enum class LowRankType : uint8_t { F32, F16, Q8_0, Q8_0Gemm, Q4_0Gemm };

// One adapter's factors for one projection, both of one type.
struct LowRankFactors {
  const void* a = nullptr;   // A: [r, n_in] row-major
  const void* bt = nullptr;  // B transposed: [r, n_out] row-major (row k = column k of B); Q8_0Gemm: unused
  LowRankType type = LowRankType::F32;
  int64_t r = 0;
  float scale = 0.0f;
  // Q8_0Gemm / Q4_0Gemm only: B [n_out, r] (rows of r in the factors' type), and optional copies of A and B packed by
  // gemm_pack (read instead of the rows, same results); a may be null when a_packed is set, b when
  // b_packed is.
  const void* b = nullptr;
  const uint8_t* a_packed = nullptr;
  const uint8_t* b_packed = nullptr;
};

// Element i of a factor stored row-major as `type` (rows of a quantized factor hold whole blocks).
float lowrank_elem(const void* p, LowRankType type, int64_t i);

// The rows of a batch that use one set of factors.
struct LowRankGroup {
  LowRankFactors f;
  const int64_t* rows = nullptr;  // ascending row indices into x / y
  int64_t n_rows = 0;
};

// x: [*, n_in] (row stride n_in); y: [*, n_out] (row stride ldy); any n_in (Q8_0 factors:
// n_in and n_out multiples of 32; Q8_0Gemm: n_in and r multiples of 32).
// xq (optional): x's rows as q8_0 gemm activations (matmul's PreparedQ8: row t at xq + t *
// xq_stride), which Q8_0Gemm groups of consecutive rows read instead of quantizing x again (the
// same bytes either way).
void lowrank_apply(const LowRankGroup* groups, int64_t n_groups, const float* x, int64_t n_in, float* y, int64_t ldy,
                   int64_t n_out, ThreadPool& pool, const uint8_t* xq = nullptr, size_t xq_stride = 0);

// One projection's update in a lowrank_apply_jobs call (the arguments of lowrank_apply).
struct LowRankJob {
  const LowRankGroup* groups = nullptr;
  int64_t n_groups = 0;
  const float* x = nullptr;
  int64_t n_in = 0;
  float* y = nullptr;
  int64_t ldy = 0, n_out = 0;
  const uint8_t* xq = nullptr;  // optional, as lowrank_apply's
  size_t xq_stride = 0;
};
// Several projections' updates (Q, K and V, or gate and up, which share x): where every group of
// every job is Q8_0Gemm and there are at least two per thread in all, each group runs whole as one
// task of a single parallel region for all the jobs (the many-adapter decode step: one region
// instead of one per projection); otherwise lowrank_apply per job. The same bits either way.
void lowrank_apply_jobs(const LowRankJob* jobs, int n_jobs, ThreadPool& pool);

// y[j] = y[j] + u[j] * scale for j < n: how a delta u computed apart joins y (ggml_scale, then
// ggml_add), shared by the Q8_0Gemm pass and LoraAdapter::add so both give the same bits
// (a rounded product, then a rounded sum: never fused; the SIMD versions do the same per lane).
void lowrank_add_scaled(float* y, const float* u, int64_t n, float scale);
void lowrank_add_scaled_ref(float* y, const float* u, int64_t n, float scale);
void lowrank_add_scaled_avx2(float* y, const float* u, int64_t n, float scale);
void lowrank_add_scaled_avx512(float* y, const float* u, int64_t n, float scale);

// The two passes (scalar references and their AVX2 versions).
// ts[i][k] = dot8(A[k, :], xs[i]) for k in [k0, k1) and i in [0, n_x): each A row is read once for
// all the rows of its group. Any n_in: the SIMD kernels add the last n_in % 8 elements to their
// lanes (i % 8) in scalar fmas, as the reference does.
void lowrank_a_ref(const LowRankFactors& f, const float* const* xs, int64_t n_x, int64_t n_in, int64_t k0, int64_t k1,
                   float* const* ts);
void lowrank_a_avx2(const LowRankFactors& f, const float* const* xs, int64_t n_x, int64_t n_in, int64_t k0, int64_t k1,
                    float* const* ts);
void lowrank_a_avx512(const LowRankFactors& f, const float* const* xs, int64_t n_x, int64_t n_in, int64_t k0,
                      int64_t k1, float* const* ts);
// ys[i][j] for j in [j0, j1) and i in [0, n_y), from ts[i]: [r]; bt rows have n_out elements.
// Each loaded range of Bt is used for several rows. Q8_0 factors: j0 a multiple of 8 (the SIMD
// loads of 8 columns then never straddle a block; lowrank_apply's ranges start at multiples of 128).
void lowrank_b_ref(const LowRankFactors& f, const float* const* ts, float* const* ys, int64_t n_y, int64_t n_out,
                   int64_t j0, int64_t j1);
void lowrank_b_avx2(const LowRankFactors& f, const float* const* ts, float* const* ys, int64_t n_y, int64_t n_out,
                    int64_t j0, int64_t j1);
void lowrank_b_avx512(const LowRankFactors& f, const float* const* ts, float* const* ys, int64_t n_y, int64_t n_out,
                      int64_t j0, int64_t j1);

// Which kernels lowrank_apply uses (tests compare the two).
void lowrank_force_scalar_for_testing(bool on);

}  // namespace llmserve
