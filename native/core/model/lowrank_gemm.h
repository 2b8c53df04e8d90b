// Internal to lowrank.cpp: the Q8_0Gemm / Q4_0Gemm passes (lowrank.h), run by quant/gemm on q8_0 activations.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../quant/quant.h"
#include "lowrank.h"

namespace llmserve {

inline bool gemm_kind(const LowRankFactors& f) {
  return f.type == LowRankType::Q8_0Gemm || f.type == LowRankType::Q4_0Gemm;
}
// The weight type gemm reads the factors of a gemm_kind group as (both take q8_0 activations).
inline GgmlType gemm_weight_type(const LowRankFactors& f) {
  return f.type == LowRankType::Q4_0Gemm ? GgmlType::Q4_0 : GgmlType::Q8_0;
}

// Whether lowrank_force_scalar_for_testing is on (then gemm_ref runs instead of the dispatched gemm).
bool lowrank_scalar_forced();

// t[i * ldt + k] = gemm(A, xq[i]) for ranks k in [k0, k1) (k0 a multiple of 16), rows i < n; xq:
// n gemm activation rows of x (gemm_prepare_act(Q8_0, x, n_in)), xq_stride bytes apart.
void lowrank_gemm_a(const LowRankFactors& f, int64_t n_in, const uint8_t* xq, size_t xq_stride, int64_t n, int64_t k0,
                    int64_t k1, float* t, int64_t ldt);
// ys[i][j] = ys[i][j] + gemm(B, tq[i])[j] * scale for j in [j0, j1) (j0 a multiple of 16), rows i < n;
// tq: n gemm activation rows of t (r values), tq_stride bytes apart.
void lowrank_gemm_b(const LowRankFactors& f, const uint8_t* tq, size_t tq_stride, int64_t n, int64_t j0, int64_t j1,
                    float* const* ys);
// Both products for n rows of one group, on this thread: the result of lowrank_gemm_a over every
// rank, then lowrank_gemm_b over every column (the same bits as the two passes). xq: the rows'
// gemm activations xq_stride bytes apart if already made, else null (made here from xs).
void lowrank_gemm_group(const LowRankFactors& f, const float* const* xs, int64_t n, int64_t n_in, float* const* ys,
                        int64_t n_out, const uint8_t* xq, size_t xq_stride);

// The gemm activations of a group's rows in a caller's prepared rows (lowrank_apply's xq): the
// first row's, when xq is set and the rows are consecutive (then they lie xq_stride apart), else null.
inline const uint8_t* lowrank_rows_act(const int64_t* rows, int64_t n, const uint8_t* xq, size_t xq_stride) {
  if (!xq || n <= 0 || rows[n - 1] - rows[0] + 1 != n) return nullptr;
  return xq + static_cast<size_t>(rows[0]) * xq_stride;
}

}  // namespace llmserve
