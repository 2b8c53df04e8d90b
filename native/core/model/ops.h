// Elementwise transformer ops used by forward() (RMSNorm, SwiGLU, RoPE; attention is in
// attention/, KV rotation in kv/), written to mirror ggml's CPU semantics (llama.cpp) while
// staying batch invariant: every output element is computed by the same sequence of float
// operations whatever the number of tokens in the batch or the way work is split across threads
// (work is split over output rows / tokens / heads, never inside one reduction).
#pragma once
#include <cstddef>
#include <cstdint>

#include "model_config.h"

namespace llmserve {

// x: [n, d] f32, w: [d] f32 -> y: [n, d] f32 (y may alias x).
// ggml rms_norm + mul: sum of squares in double, scale = 1/sqrtf(mean + eps), y = (x * scale) * w.
void rms_norm_f32(const float* x, const float* w, float* y, int64_t n, int64_t d, float eps);      // dispatched
void rms_norm_f32_ref(const float* x, const float* w, float* y, int64_t n, int64_t d, float eps);  // scalar reference
#if defined(LLMSERVE_X86)
void rms_norm_f32_avx2(const float* x, const float* w, float* y, int64_t n, int64_t d, float eps);  // same bits
#endif

// g: [count] <- silu(g) * u, silu(g) = g / (1 + exp(-g))   (ggml swiglu / silu + mul; ggml's
// SIMD builds use their own vector exp too; ours is fast_exp, math/fast_exp.h).
void swiglu_f32(float* g, const float* u, int64_t count);      // dispatched
void swiglu_f32_ref(float* g, const float* u, int64_t count);  // scalar reference
#if defined(LLMSERVE_X86)
void swiglu_f32_avx2(float* g, const float* u, int64_t count);  // bit-identical to the reference
#endif

// g: [count] <- gelu(g) * u with ggml's CPU GELU (GGML_GELU_FP16): g <= -10 -> 0, g >= 10 -> g,
// else the f16 table entry of fp16(g), table[h] = fp16(0.5 x (1 + tanhf(sqrt(2/pi) x (1 + 0.044715 x^2)))).
// (ggml_vec_geglu_f32; the same table serves ggml_gelu + mul.)
void geglu_f32(float* g, const float* u, int64_t count);

// Soft-capping of logits: x <- cap * tanhf(x * (1 / cap)) (ggml_scale, ggml_tanh, ggml_scale).
void softcap_f32(float* x, int64_t count, float cap);

// cache: [n, n_rot] f32 as (cos, sin) pairs for rotary dims i0 = 0, 2, ..., n_rot - 2 of positions
// pos0 .. pos0 + n - 1: ggml rope cache (theta_i = p * base^(-i0/n_rot) computed by repeated
// multiplication, divided by freq_factors[i0/2] when present, then YaRN/linear scaling).
void rope_cache_f32(const ModelConfig& c, const float* freq_factors, int64_t pos0, int64_t n, float* cache);

// x: [n_heads, head_dim] f32 of one token, rotated in place with that token's cache row [n_rot].
// rope_type 0 (NORM): pairs (i0, i0+1); 2 (NEOX): pairs (i0/2, i0/2 + n_rot/2). Dims >= n_rot pass.
void rope_apply_f32(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int rope_type, const float* cache_row);

}  // namespace llmserve
