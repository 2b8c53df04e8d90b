// forward_ref(): a naive reference forward pass in double precision, for the native tests (not part
// of the shipped core library).
// Dequantized weights, textbook formulas, no KV cache, no threads, nothing shared with forward()'s
// kernels, so structural errors there (RoPE pairing, GQA head mapping, biases, qwen3's per-head Q/K
// norms, residuals; gemma's embedding scale, post-norms, GELU, soft-caps, sliding windows and local
// RoPE base) show up as large differences. Quadratic in the number of tokens and slow: use
// small models.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "model/model.h"

namespace llmserve {

// tokens: [n] valid ids at positions 0..n-1 -> logits [n_vocab] of the last token.
// Applies linear RoPE scaling and rope_freqs factors; YaRN is not modelled.
std::vector<double> forward_ref(const Model& model, const std::vector<int32_t>& tokens);

// tokens: [n] -> every token's final hidden state after output_norm, [n][n_embd] (what an
// embedding pools: llama.cpp's "result_norm").
std::vector<std::vector<double>> forward_ref_hidden(const Model& model, const std::vector<int32_t>& tokens);

// Called with each matrix-vector product's weight (a MatrixView inside model.weights()) and input
// vector: what llama-imatrix accumulates (the squared inputs per column) for the quantize tests.
using MatvecHook = std::function<void(const MatrixView& w, const std::vector<double>& x)>;
// The logits of every position: [n][n_vocab], row t predicting token t+1; on_matvec optional.
std::vector<std::vector<double>> forward_ref_all(const Model& model, const std::vector<int32_t>& tokens,
                                                 const MatvecHook& on_matvec = {});

}  // namespace llmserve
