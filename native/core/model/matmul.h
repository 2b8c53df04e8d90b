// Batched matrix multiply with ggml's activation conversion (see matmul.cpp, quant/gemm.h).
#pragma once
#include <cstddef>
#include <cstdint>

#include "../threadpool/thread_pool.h"
#include "model.h"

namespace llmserve {

// One matrix product sharing its input with others (e.g. Q, K, V).
struct MatmulTask {
  const MatrixView* w;  // [n_in] -> [n_out]
  const float* bias;    // [n_out] or null
  float* y;             // [n, n_out] f32, row stride ldy
  int64_t ldy;
};

// x: [n, n_in] f32 (contiguous rows) -> for each task y[t, r] = dot(w.row(r), xq[t]) (+ bias[r]),
// where xq[t] holds quantize_row(type_traits(w.type).vec_dot_type, x[t]) (converted once per
// distinct vec_dot type, as ggml's mul_mat does) and dot is gemm's canonical formula
// (quant/gemm.h): exact integer block sums accumulated in block order, equal to vec_dot_ref within
// f32 rounding. y[t, r] is bit-identical for any n, any batch composition and any thread count.
// Parallel over 16-row tiles; each weight tile is read once per call and reused for every token.
// All tasks must share n_in. n_tasks <= 4.
// The prepared activations live in a grow-only buffer of the calling thread.
// q8 (optional): also x's q8_0 gemm rows (gemm_prepare_act(Q8_0), the bytes a Q4_0 or Q8_0
// weight's product reads), prepared with the others when no task made them, for a caller that
// multiplies the same x by q8_0 factors next (LoRA: lowrank.h). They live in the same buffer:
// valid until this thread's next matmul. Left empty when no task is a dense matrix.
struct PreparedQ8 {
  const uint8_t* data = nullptr;  // row t at data + t * stride
  size_t stride = 0;
};
void matmul(const MatmulTask* tasks, int n_tasks, const float* x, int64_t n, ThreadPool& pool,
            PreparedQ8* q8 = nullptr);

// Load-time repacking of a weight matrix into gemm's 16-row interleaved layout (Q4_0, Q8_0, Q4_K,
// Q6_K; about the raw size, e.g. +0% for Q4_0, +2.8% for Q4_K). The copy hangs off the view
// (MatrixView::packed) and matmul() reads it instead of the raw rows: results are bit-identical to
// the unpacked path; it only saves the on-the-fly packing, which matters for 1-8 tokens (decode).
// Bytes of w's packed copy; 0 if w's type or layout is not packable.
size_t packed_bytes(const MatrixView& w);
// Writes w's packed copy to dst (packed_bytes(w) bytes, 64-byte aligned, outliving every use of w;
// e.g. a slice of one arena for a whole model, see os::alloc_huge) and sets w->packed. False (w
// unchanged) if w is not packable.
bool pack_matrix(MatrixView* w, uint8_t* dst);

}  // namespace llmserve
