// Batched matrix multiply with ggml's activation conversion (see matmul.cpp, quant/gemm.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

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

// Bytes of activation scratch matmul() needs for n tokens of the given tasks. (matmul keeps its
// prepared activations in a per-thread buffer of its own since the GEMM kernels; callers may go on
// passing a block of this size, or null.)
size_t matmul_scratch_bytes(const MatmulTask* tasks, int n_tasks, int64_t n);

// x: [n, n_in] f32 (contiguous rows) -> for each task y[t, r] = dot(w.row(r), xq[t]) (+ bias[r]),
// where xq[t] holds quantize_row(type_traits(w.type).vec_dot_type, x[t]) (converted once per
// distinct vec_dot type, as ggml's mul_mat does) and dot is gemm's canonical formula
// (quant/gemm.h): exact integer block sums accumulated in block order, equal to vec_dot_ref within
// f32 rounding. y[t, r] is bit-identical for any n, any batch composition and any thread count.
// Parallel over 16-row tiles; each weight tile is read once per call and reused for every token.
// All tasks must share n_in. n_tasks <= 4.
void matmul(const MatmulTask* tasks, int n_tasks, const float* x, int64_t n, uint8_t* scratch,
            ThreadPool& pool);

// Optional load-time repacking of a weight matrix into gemm's 16-row interleaved layout (Q4_0,
// Q8_0, Q4_K, Q6_K; about the raw size, e.g. +0% for Q4_0, +2.8% for Q4_K). While the returned
// object lives, matmul() reads the packed copy for every MatrixView with the same data pointer,
// type and shape (results are bit-identical to the unpacked path; it only saves the on-the-fly
// packing, which matters for 1-8 tokens: decode). Returns null when w's type is not packable
// (matmul then packs tiles on the fly). Thread-safe. Destroy it before the weights' memory is
// unmapped (e.g. declare the owning member after the GgufFile in Model).
class PackedWeights {
 public:
  // dst: where to write the packed copy (bytes_for(w) bytes, 64-byte aligned, outliving the
  // returned object; e.g. a slice of one arena for a whole model, see alloc_huge), or null for a
  // buffer of its own.
  static std::unique_ptr<PackedWeights> create(const MatrixView& w, uint8_t* dst = nullptr);
  // Bytes of w's packed copy; 0 if w is not packable.
  static size_t bytes_for(const MatrixView& w);
  // A 2 MiB aligned buffer of at least `bytes`, marked for transparent huge pages (std::free it).
  static uint8_t* alloc_huge(size_t bytes);
  ~PackedWeights();
  PackedWeights(const PackedWeights&) = delete;
  PackedWeights& operator=(const PackedWeights&) = delete;
  size_t bytes() const { return bytes_; }

 private:
  PackedWeights() = default;
  const uint8_t* raw_ = nullptr;
  uint8_t* data_ = nullptr;
  size_t bytes_ = 0;
  bool owned_ = true;
};

}  // namespace llmserve
