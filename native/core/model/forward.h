// forward(): one transformer pass of a llama / qwen2 Model over a batch of tokens of one sequence.
//
// Per layer: RMSNorm -> Q, K, V (+ biases) -> RoPE (NORM for llama, NEOX for qwen2; linear / YaRN
// scaling and rope_freqs factors) -> K, V appended to the cache -> causal GQA attention -> output
// projection -> residual -> RMSNorm -> SwiGLU FFN -> residual; then output_norm and the output
// projection (token_embd when output.weight is absent). Numerics mirror ggml's CPU backend:
// activations are converted to the weight's vec_dot type before each dot (Q8_0, Q8_K, F16, BF16
// or f32), and attention follows ggml's CPU flash-attention kernel (llama.cpp's default on CPU,
// flash_attn "auto"): Q converted to f16, online softmax, f16 V accumulator (see ops.h AttnRow).
#pragma once
#include <cstdint>
#include <vector>

#include "../status.h"
#include "../threadpool/thread_pool.h"
#include "kv_cache.h"
#include "model.h"

namespace llmserve {

// Runs tokens [n] at positions n_past .. n_past + n - 1 (appending their K/V to kv), writes logits.
// logits_all = false: logits [n_vocab] for the last token only; true: [n, n_vocab] for every token.
// Batch invariant: the logits of a token are bit-identical however the sequence is split into
// forward calls and whatever pool.size() is.
// Errors (kv is left unchanged): InvalidArgument (n < 1, null pointers, token id outside
// [0, n_vocab), kv cache made for another model), ContextOverflow (n_past + n > n_ctx),
// OutOfMemory (scratch allocation).
Status forward(const Model& model, KvCache& kv, const int32_t* tokens, int64_t n, bool logits_all,
               std::vector<float>* logits, ThreadPool& pool);

}  // namespace llmserve
