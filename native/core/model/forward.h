// forward_batch(): one transformer pass of a llama / qwen2 / qwen3 Model over a flattened batch of
// tokens from any number of sequences (each with its own positions and KV block table in a shared
// pool); forward(): the same for one sequence in its own KvCache.
//
// Per layer: RMSNorm -> Q, K, V (+ biases) -> per-head Q and K RMSNorm (qwen3) -> RoPE (NORM for
// llama, NEOX for qwen2/qwen3; linear / YaRN scaling and rope_freqs factors) -> K, V appended to
// the cache -> causal GQA attention -> output projection -> residual -> RMSNorm -> SwiGLU FFN ->
// residual; then output_norm and the output projection (token_embd when output.weight is absent).
// Numerics mirror ggml's CPU backend: activations are converted to the weight's vec_dot type
// before each dot (Q8_0, Q8_K, F16, BF16 or f32), and attention follows ggml's CPU flash-attention
// kernel (llama.cpp's default on CPU, flash_attn "auto"): Q converted to f16, online softmax, f16
// V accumulator (see ops.h AttnRow).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "../kv/batch.h"
#include "../kv/kv_cache.h"
#include "../status.h"
#include "../threadpool/thread_pool.h"
#include "lowrank.h"
#include "model.h"

namespace llmserve {

// Grow-only scratch memory of the forward pass (activations of one batch), owned by whoever runs
// it (the executor) and reused across calls; contents are undefined between calls.
class ForwardScratch {
 public:
  // At least `bytes` bytes, or null if that allocation fails.
  uint8_t* get(size_t bytes);

 private:
  std::unique_ptr<uint8_t[]> buf_;
  size_t bytes_ = 0;
};

// The projections a low-rank delta (a LoRA adapter) can change. Output is the output head.
enum class Proj : int { Q, K, V, O, Gate, Up, Down, Output };
constexpr int kProjCount = 8;

// Extra terms added to some rows' projections (LoRA adapters live in lora/, above model/; the
// forward pass sees only this interface). forward_batch calls add() on each contiguous segment of
// rows that share a delta, right after the base product W·x and before the projection's bias
// (llama.cpp: build_lora_mm, then the bias add).
class ProjectionDelta {
 public:
  virtual ~ProjectionDelta() = default;
  // True if this delta changes projection p of layer il (il is ignored for Proj::Output).
  virtual bool touches(int64_t il, Proj p) const = 0;
  // y[t] += delta(x[t]) for rows t in [0, n). x: [n, n_in of the projection] contiguous rows;
  // y: [n, n_out] with row stride ldy. Each row's result must not depend on n or the other rows.
  virtual void add(int64_t il, Proj p, const float* x, int64_t n, float* y, int64_t ldy, ThreadPool& pool) const = 0;
  // When the delta of projection p is a low-rank product lowrank_apply can run (model/lowrank.h),
  // its factors: the forward pass then applies every such delta of a batch in one call. Must give
  // the same kind of result as add() (add() stays the path for the other deltas).
  virtual bool low_rank(int64_t /*il*/, Proj /*p*/, LowRankFactors* /*out*/) const { return false; }
};

// tokens: [sum of n_tokens] in sequence order. Appends every token's K/V at its position, then
// writes logits [n_out, n_vocab] for the requested rows in batch order. Batch invariant: each
// output row is bit-identical whatever else is in the batch and however work is split.
// deltas: null, or [n_seqs] per-sequence deltas (null entries: the base model only).
// hidden: write the requested rows' final hidden states after output_norm, [n_out, n_embd], in
// place of their logits (embeddings; the output projection is skipped).
// Errors (nothing written to logits): InvalidArgument (bad token ids, sequences, block tables).
Status forward_batch(const Model& model, KvPool& kv, const int32_t* tokens, const BatchSeq* seqs, int64_t n_seqs,
                     std::vector<float>* logits, ThreadPool& pool, ForwardScratch& scratch,
                     const ProjectionDelta* const* deltas = nullptr, bool hidden = false);
// The same over split pools (KvPools): local layers store to and attend over pools.local through
// each sequence's local_blocks. Errors as above, plus InvalidArgument when a local table lacks a
// block inside some query's window.
Status forward_batch(const Model& model, const KvPools& pools, const int32_t* tokens, const BatchSeq* seqs,
                     int64_t n_seqs, std::vector<float>* logits, ThreadPool& pool, ForwardScratch& scratch,
                     const ProjectionDelta* const* deltas = nullptr, bool hidden = false);

// Runs tokens [n] at positions n_past .. n_past + n - 1 (appending their K/V to kv), writes logits.
// logits_all = false: logits [n_vocab] for the last token only; true: [n, n_vocab] for every token.
// Batch invariant: the logits of a token are bit-identical however the sequence is split into
// forward calls and whatever pool.size() is.
// Errors (kv is left unchanged): InvalidArgument (n < 1, null pointers, token id outside
// [0, n_vocab), kv cache made for another model), ContextOverflow (n_past + n > n_ctx),
// OutOfMemory (scratch allocation).
// scratch: reused across calls when given; null allocates one for this call.
// delta: null, or the adapter every token of this call uses. hidden: as forward_batch's.
Status forward(const Model& model, KvCache& kv, const int32_t* tokens, int64_t n, bool logits_all,
               std::vector<float>* logits, ThreadPool& pool, ForwardScratch* scratch = nullptr,
               const ProjectionDelta* delta = nullptr, bool hidden = false);

}  // namespace llmserve
