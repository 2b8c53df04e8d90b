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

// g: [count] <- silu(g) * u, silu(g) = g / (1 + expf(-g))   (ggml swiglu / silu + mul).
void swiglu_f32(float* g, const float* u, int64_t count);

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
// to the cache type.
void kv_store(KvPool& kv, int64_t layer, const int32_t* blocks, int64_t pos, const float* k, const float* v);

// Per-thread scratch bytes attention_f32 needs (index with the chunk id of parallel_for_chunked).
size_t attention_scratch_bytes(int64_t head_dim);

// One query row of one head against positions [0, len) of one KV head, with the semantics of
// ggml's CPU flash attention (ggml_compute_forward_flash_attn_ext_f16_one_chunk), which llama.cpp
// uses by default on CPU (flash_attn "auto"):
//   s_j = vec_dot(K_j, q) * scale; online softmax with running max M and sum S (expf, f32);
//   acc = acc * expf(Mold - M) on a new maximum, acc += V_j * expf(s_j - M) (fused multiply-add);
//   with an f16 cache the accumulator itself is f16 (rounded after every step), as in ggml;
//   out = acc / S.
// Paged: position j's K row is at k + blocks[j / block_size] * block_stride + (j % block_size) *
// row_stride (same for V). Positions are visited in order, so paging does not change the result.
struct AttnRow {
  const uint8_t* k;       // the layer's K storage + this KV head's byte offset
  const uint8_t* v;       // the layer's V storage + this KV head's byte offset
  const int32_t* blocks;  // block table
  int64_t block_size;     // slots per block
  size_t row_stride;      // bytes between slots
  size_t block_stride;    // bytes between blocks
  const void* q;          // [hd] query converted to the K vec_dot type (f16 cache: f16; else f32)
  int64_t len;            // positions attended
  int64_t hd;             // head size
  float scale;            // 1 / sqrt(hd)
  bool f16;               // cache type f16 (else f32)
  float* out;             // [hd] f32
  void* acc;              // scratch: [hd] f32
};
// Byte offset of position j's K (and V) row from a.k (a.v) through the block table.
inline size_t attn_row_offset(const AttnRow& a, int64_t j) {
  return static_cast<size_t>(a.blocks[j / a.block_size]) * a.block_stride +
         static_cast<size_t>(j % a.block_size) * a.row_stride;
}
void attention_row(const AttnRow& a);       // dispatched
void attention_row_ref(const AttnRow& a);   // scalar reference (std::fma)
#if defined(LLMSERVE_X86)
void attention_row_avx2(const AttnRow& a);  // AVX2 + FMA + F16C, bit-identical to the reference
#endif

// q: [n_tokens, n_head, head_dim] f32 (after RoPE) for batch rows r0 .. r0 + m - 1 (q points at row
// r0); out: the same shape. Row t attends causally to positions [0, pos[t]] of its sequence, whose
// K/V for this layer are already stored; head h reads KV head h / n_gqa; each (token, head) row is
// one attention_row() call, so the result does not depend on the batch. q is converted to f16
// first with an f16 cache (as ggml). scratch: pool.size() * attention_scratch_bytes(head_dim).
void attention_f32(const ModelConfig& c, KvPool& kv, int64_t layer, const float* q, const BatchLayout& bl,
                   int64_t r0, int64_t m, float* out, uint8_t* scratch, ThreadPool& pool);

}  // namespace llmserve
