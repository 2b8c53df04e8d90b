// Transformer kernels used by forward(), written to mirror ggml's CPU semantics (llama.cpp) while
// staying batch invariant: every output element is computed by the same sequence of float
// operations whatever the number of tokens in the batch or the way work is split across threads
// (work is split over output rows / tokens / heads, never inside one reduction).
#pragma once
#include <cstddef>
#include <cstdint>

#include "../threadpool/thread_pool.h"
#include "../kv/kv_pool.h"
#include "matmul.h"
#include "model.h"
#include "model_config.h"

namespace llmserve {

// x: [n, d] f32, w: [d] f32 -> y: [n, d] f32 (y may alias x).
// ggml rms_norm + mul: sum of squares in double, scale = 1/sqrtf(mean + eps), y = (x * scale) * w.
void rms_norm_f32(const float* x, const float* w, float* y, int64_t n, int64_t d, float eps);

// g: [count] <- silu(g) * u, silu(g) = g / (1 + exp(-g))   (ggml swiglu / silu + mul; ggml's
// SIMD builds use their own vector exp too; ours is fast_exp, ops_exp.h).
void swiglu_f32(float* g, const float* u, int64_t count);      // dispatched
void swiglu_f32_ref(float* g, const float* u, int64_t count);  // scalar reference
#if defined(LLMSERVE_X86)
void swiglu_f32_avx2(float* g, const float* u, int64_t count); // bit-identical to the reference
#endif

// cache: [n, n_rot] f32 as (cos, sin) pairs for rotary dims i0 = 0, 2, ..., n_rot - 2 of positions
// pos0 .. pos0 + n - 1: ggml rope cache (theta_i = p * base^(-i0/n_rot) computed by repeated
// multiplication, divided by freq_factors[i0/2] when present, then YaRN/linear scaling).
void rope_cache_f32(const ModelConfig& c, const float* freq_factors, int64_t pos0, int64_t n,
                    float* cache);

// x: [n_heads, head_dim] f32 of one token, rotated in place with that token's cache row [n_rot].
// rope_type 0 (NORM): pairs (i0, i0+1); 2 (NEOX): pairs (i0/2, i0/2 + n_rot/2). Dims >= n_rot pass.
void rope_apply_f32(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int rope_type,
                    const float* cache_row);

// Where each token of a flattened batch lives: token t is at position pos[t] of a sequence whose
// block table is blocks[t] (position p in block blocks[t][p / block_size], slot p % block_size).
struct BatchLayout {
  int64_t n = 0;
  const int64_t* pos = nullptr;          // [n]
  const int32_t* const* blocks = nullptr;  // [n]
};

// k, v: [n_embd_kv] f32 of one token -> KV pool (layer, position pos of the block table), converted
// to the cache type (f16 / q8_0: ggml's from_float, as llama.cpp's KV store).
void kv_store(KvPool& kv, int64_t layer, const int32_t* blocks, int64_t pos, const float* k, const float* v);

// y = H x on every consecutive n-element block of x[count] (n a power of two), H the normalized
// Walsh-Hadamard matrix in natural order, H[i][j] = (-1)^popcount(i & j) / sqrt(n) (symmetric,
// H H = I): an in-place fast transform, then the scale.
void hadamard_blocks_f32(float* x, int64_t count, int64_t n);

// llama.cpp rotates a quantized KV cache (its PR 21038, on by default): Q and K by H of the largest
// power-of-two block >= 64 dividing head_dim, V by H of 64, and the attention output back by the
// V rotation (scores are unchanged, and quantization error spreads evenly over the block). Only
// when head_dim % 64 == 0. Sizes 0 = no rotation (f16/f32 caches).
struct KvRotation {
  int64_t k = 0, v = 0;
};
KvRotation kv_rotation(const ModelConfig& c, GgmlType kv_type);

// Positions one attention tile covers: the softmax factors of a tile are computed together (one
// vector exp), then each head's accumulator walks the tile's V rows in order.
constexpr int64_t kAttnTile = 32;

// Per-thread scratch bytes attention_f32 needs (index with the chunk id of parallel_for_chunked).
size_t attention_scratch_bytes(const ModelConfig& c, GgmlType kv_type);

// The query heads that share one KV head (GQA group) of one token, against positions [0, len) of
// that KV head, with the semantics of ggml's CPU flash attention
// (ggml_compute_forward_flash_attn_ext_f16_one_chunk), llama.cpp's default on CPU. Per head:
//   s_j = vec_dot(K_j, q) * scale  (q converted to K's vec_dot type: f16, q8_0 or f32);
//   online softmax with running max M and sum S: on a new maximum ms = exp(Mold - M), vs = 1,
//   else ms = 1, vs = exp(s_j - M); acc = acc * ms; acc = fma(V_j, vs, acc); S = fma(S, ms, vs);
//   with an f16 cache the accumulator itself is f16 (rounded after every step), as in ggml; q8_0
//   V rows are dequantized to f32 first; out = acc / S.
// exp is fast_exp (ops_exp.h), not libm's expf: within 2 ulp of it, and vectorizable.
// Paged: position j's row is at k + blocks[j / block_size] * block_stride + (j % block_size) *
// row_stride (same for V). Positions are visited in order and each head's arithmetic is the same
// whichever heads share the call, so neither paging nor grouping changes a result.
struct AttnGroup {
  const uint8_t* k;       // the layer's K storage + this KV head's byte offset
  const uint8_t* v;       // the layer's V storage + this KV head's byte offset
  const int32_t* blocks;  // block table
  int64_t block_size;     // slots per block
  size_t row_stride;      // bytes between slots
  size_t block_stride;    // bytes between blocks
  GgmlType kv_type;       // F16, F32 or Q8_0
  const uint8_t* q;       // [n_q][q_stride] query rows converted to K's vec_dot type
  size_t q_stride;
  int64_t n_q;            // query heads in the group (<= kMaxAttnGroup)
  int64_t len;            // positions attended
  int64_t hd;             // head size
  float scale;            // 1 / sqrt(hd)
  float* out;             // [n_q][out_stride] f32
  int64_t out_stride;
  float* work;            // attention_group_work_floats(n_q, hd) floats, 64-byte aligned
};
constexpr int64_t kMaxAttnGroup = 64;
// Scratch floats one attention_group call needs.
size_t attention_group_work_floats(int64_t n_q, int64_t hd);
// Byte offset of position j's K (and V) row from a.k (a.v) through the block table.
inline size_t attn_row_offset(const AttnGroup& a, int64_t j) {
  return static_cast<size_t>(a.blocks[j / a.block_size]) * a.block_stride +
         static_cast<size_t>(j % a.block_size) * a.row_stride;
}
void attention_group(const AttnGroup& a);       // dispatched
void attention_group_ref(const AttnGroup& a);   // scalar reference
#if defined(LLMSERVE_X86)
void attention_group_avx2(const AttnGroup& a);  // AVX2 + FMA + F16C, bit-identical to the reference
#endif

// q: [n_tokens, n_head, head_dim] f32 (after RoPE) for batch rows r0 .. r0 + m - 1 (q points at row
// r0); out: the same shape. Row t attends causally to positions [0, pos[t]] of its sequence, whose
// K/V for this layer are already stored; the heads h of KV head g = h / n_gqa form one
// attention_group() call per token, so the result does not depend on the batch.
// scratch: pool.size() * attention_scratch_bytes(c, kv type).
void attention_f32(const ModelConfig& c, KvPool& kv, int64_t layer, const float* q, const BatchLayout& bl,
                   int64_t r0, int64_t m, float* out, uint8_t* scratch, ThreadPool& pool);

}  // namespace llmserve
