// Batched matrix multiply with ggml's activation conversion (see matmul.cpp).
#pragma once
#include <cstddef>
#include <cstdint>

#include "../threadpool/thread_pool.h"
#include "model.h"

namespace llmserve {

// One matrix product sharing its input with others (e.g. Q, K, V).
struct MatmulTask {
  const MatrixView* w;   // [n_in] -> [n_out]
  const float* bias;     // [n_out] or null
  float* y;              // [n, n_out] f32, row stride ldy
  int64_t ldy;
};

// Bytes of activation scratch matmul() needs for n tokens of the given tasks.
size_t matmul_scratch_bytes(const MatmulTask* tasks, int n_tasks, int64_t n);

// x: [n, n_in] f32 (contiguous rows) -> for each task y[t, r] = vec_dot(w.type, n_in, w.row(r),
// xq[t]) (+ bias[r]), where xq[t] = quantize_row(type_traits(w.type).vec_dot_type, x[t]) is
// converted once per distinct vec_dot type, as ggml's mul_mat does. Parallel over row tiles; each
// weight tile is read from memory once per call and reused for every token.
// All tasks must share n_in. n_tasks <= 4. scratch: matmul_scratch_bytes(tasks, n_tasks, n).
void matmul(const MatmulTask* tasks, int n_tasks, const float* x, int64_t n, uint8_t* scratch,
            ThreadPool& pool);

}  // namespace llmserve
