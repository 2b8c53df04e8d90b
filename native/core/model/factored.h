// Low-rank factored weight matrices, optionally plus a sparse residual (llmserve's own GGUF
// format, docs/sparse-formats.md): W [n_out, n_in] ≈ U·V (+ S) is stored as companion tensors in
// place of the dense `NAME`:
//   NAME.lr_v   F16 or F32  ne [n_in, r]       V, r rows of n_in
//   NAME.lr_ut  same type   ne [n_out, r]      Uᵀ, r rows of n_out (column k of U is row k)
//   NAME.sp_ptr I32         ne [n_out + 1]     S in CSR: row i's entries are [ptr[i], ptr[i+1])
//   NAME.sp_col I32         ne [nnz]           their columns, ascending within a row
//   NAME.sp_val F16 or F32  ne [nnz]           their values
// (the three sp_ tensors only when S has entries). r·(n_in + n_out) factor values instead of
// n_in·n_out: decode streams that fraction of the bytes.
//
// y = U·(V·x) runs on the LoRA kernels (model/lowrank.h, scale 1 onto a zeroed y: the same
// numerics, scalar reference and AVX2 / AVX-512 versions, bit-identical to each other), then the
// CSR kernels (model/csr.h, accumulate onto y, then + bias[i]).
// Each output depends only on its row and its token: batch and thread invariant.
#pragma once
#include <cstdint>

#include "../threadpool/thread_pool.h"
#include "csr.h"

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
  const int32_t* sp_ptr = nullptr;  // [n_out + 1] or null (no residual)
  const int32_t* sp_col = nullptr;  // [nnz]
  const void* sp_val = nullptr;     // [nnz] f16 (or f32 with sp_f32)
  bool sp_f32 = false;
  // The residual as a CSR matrix (ptr null when there is none).
  CsrMatrix residual() const {
    CsrMatrix m;
    m.ptr = sp_ptr, m.col = sp_col, m.val = sp_val, m.f32 = sp_f32, m.n_in = n_in, m.n_out = n_out;
    return m;
  }
};

// y[t, :] = U·(V·x[t]) (+ S·x[t]) (+ bias) for t in [0, n); x rows of n_in (any length).
void factored_matmul(const FactoredMatrix& w, const float* x, int64_t n, const float* bias, float* y, int64_t ldy,
                     ThreadPool& pool);

// The same in plain loops (the LoRA scalar references for the factors, csr_gemm_ref), for tests.
void factored_matmul_ref(const FactoredMatrix& w, const float* x, int64_t n, const float* bias, float* y, int64_t ldy);

}  // namespace llmserve
