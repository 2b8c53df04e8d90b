// Mixture-of-experts feed-forward (Mixtral, qwen3moe) as llama.cpp's build_moe_ffn computes it,
// run as a grouped expert GEMM: the step's tokens are routed, grouped by expert, and each selected
// expert's gate/up/down matrices multiply its whole group in one matmul() call (each expert's
// weights are read once per step, not once per token), then the weighted outputs are summed back
// per token.
#pragma once
#include <cstdint>

#include "../threadpool/thread_pool.h"
#include "model.h"

namespace llmserve {

// Scratch of one moe_ffn call for up to n tokens (carved by the forward pass's arena).
struct MoeBuffers {
  float* probs;    // [n, n_expert] router logits, then probabilities
  int32_t* sel;    // [n, n_expert_used] chosen experts, most probable first
  float* wts;      // [n, n_expert_used] their renormalised weights
  int32_t* order;  // [n * n_expert_used] (token, slot) pairs t*K + j grouped by expert, tokens ascending
  int64_t* start;  // [n_expert + 1] each expert's range in order
  float* gx;       // [n, n_embd] the gathered input rows of one expert's group
  float* gate;     // [n, n_ff_exp]
  float* up;       // [n, n_ff_exp]
  float* ey;       // [n, n_embd] one expert's outputs for its group
  float* eo;       // [n, n_expert_used, n_embd] every (token, slot)'s expert output
};

// Counts of each MoeBuffers field for n tokens, in field order (floats or ints as declared).
struct MoeSizes {
  int64_t probs, sel, order, start, gx, ff, eo;
};
MoeSizes moe_sizes(const ModelConfig& c, int64_t n);

// xn: [m, n_embd] the FFN-normed rows -> y: [m, n_embd] (y may not alias xn):
//   p = softmax(router · xn[t]) over all experts; S = the n_expert_used largest (descending);
//   w_j = p_Sj / max(sum_j p_Sj, 2^-14)   (llama.cpp: ggml_sum_rows, ggml_clamp, ggml_div);
//   y[t] = ((e_S0 * w_0) + e_S1 * w_1) + ...   with e_k = down_k · swiglu(gate_k · xn[t], up_k · xn[t]).
// Batch invariant: y[t] is bit-identical whatever other rows share the call, since matmul() rows
// are independent of the group they are multiplied with and every per-token sum runs in slot
// order. Threads: pool, inside each matmul and over tokens for the elementwise work.
void moe_ffn(const ModelConfig& c, const LayerWeights& L, const float* xn, int64_t m, float* y, const MoeBuffers& b,
             ThreadPool& pool);

}  // namespace llmserve
