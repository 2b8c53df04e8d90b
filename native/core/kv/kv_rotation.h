// Rotation of a quantized KV cache. llama.cpp rotates a quantized KV cache (its PR 21038, on by
// default): Q and K by H of the largest power-of-two block >= 64 dividing head_dim, V by H of 64,
// and the attention output back by the V rotation. Scores are unchanged (H is orthogonal) and the
// quantization error spreads evenly over each block. Only when head_dim % 64 == 0.
#pragma once
#include <cstdint>

#include "../quant/quant.h"

namespace llmserve {

// y = H x on every consecutive n-element block of x[count] (n a power of two), H the normalized
// Walsh-Hadamard matrix in natural order, H[i][j] = (-1)^popcount(i & j) / sqrt(n) (symmetric,
// H H = I): an in-place fast transform, then the scale.
void hadamard_blocks_f32(float* x, int64_t count, int64_t n);

// Block sizes of the K and V rotations; 0 = no rotation (f16/f32 caches, or head_dim % 64 != 0).
struct KvRotation {
  int64_t k = 0, v = 0;
};
KvRotation kv_rotation(int64_t head_dim, GgmlType kv_type);

}  // namespace llmserve
