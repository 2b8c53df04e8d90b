// Low-rank factored weight matrices, optionally plus a sparse residual (llmserve's own GGUF
// format, docs/sparse-formats.md): W [n_out, n_in] ≈ U·V (+ S) is stored as companion tensors in
// place of the dense `NAME`:
//   NAME.lr_v   F16 or F32  ne [n_in, r]       V, r rows of n_in
//   NAME.lr_ut  same type   ne [n_out, r]      Uᵀ, r rows of n_out (column k of U is row k)
//   NAME.sp_ptr I32         ne [n_out + 1]     S in CSR: row i's entries are [ptr[i], ptr[i+1])
//   NAME.sp_col I32         ne [nnz]           their columns, ascending within a row
//   NAME.sp_val F16         ne [nnz]           their values
// (the three sp_ tensors only when S has entries). r·(n_in + n_out) factor values instead of
// n_in·n_out: decode streams that fraction of the bytes.
//
// y = U·(V·x) runs on the LoRA kernels (model/lowrank.h, scale 1 onto a zeroed y: the same
// numerics, scalar reference and AVX2 / AVX-512 versions, bit-identical to each other), then
//   y[t, i] += sum over row i's entries in order of fma(val, x[t, col], ·)   (started from 0.0f)
//   y[t, i] += bias[i]
// Each output depends only on its row and its token: batch and thread invariant.
#pragma once
#include <cstdint>

#include "../threadpool/thread_pool.h"

namespace llmserve {

inline constexpr const char* kLowRankVSuffix = ".lr_v";
inline constexpr const char* kLowRankUtSuffix = ".lr_ut";
inline constexpr const char* kSparsePtrSuffix = ".sp_ptr";
inline constexpr const char* kSparseColSuffix = ".sp_col";
inline constexpr const char* kSparseValSuffix = ".sp_val";

struct FactoredMatrix {
  const void* v = nullptr;   // [r, n_in]
  const void* ut = nullptr;  // [r, n_out]
  bool f16 = true;           // factor element type (else f32)
  int64_t r = 0, n_in = 0, n_out = 0;
  const int32_t* sp_ptr = nullptr;   // [n_out + 1] or null (no residual)
  const int32_t* sp_col = nullptr;   // [nnz]
  const uint16_t* sp_val = nullptr;  // [nnz] f16
};

// The residual rows [r0, r1) for tokens [0, n), added onto y (and the bias, when given): the
// scalar kernel (the work is nnz·n multiply-adds with scattered x reads; there is no SIMD version).
void csr_add_rows(const FactoredMatrix& w, const float* x, int64_t n, int64_t r0, int64_t r1, const float* bias,
                  float* y, int64_t ldy);

// y[t, :] = U·(V·x[t]) (+ S·x[t]) (+ bias) for t in [0, n); x rows of n_in (n_in % 8 == 0).
void factored_matmul(const FactoredMatrix& w, const float* x, int64_t n, const float* bias, float* y, int64_t ldy,
                     ThreadPool& pool);

// The same in plain loops (the LoRA scalar references for the factors), for tests.
void factored_matmul_ref(const FactoredMatrix& w, const float* x, int64_t n, const float* bias, float* y, int64_t ldy);

// Checks a CSR residual read from a file: ptr[0] == 0, non-decreasing, ptr[n_out] == nnz, columns
// in [0, n_in) and ascending within each row. False on the first violation.
bool csr_valid(const int32_t* ptr, const int32_t* col, int64_t n_out, int64_t n_in, int64_t nnz);

}  // namespace llmserve
