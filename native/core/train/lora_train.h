// LoRA training over a frozen base Model: the training forward (keeping the activations each
// backward op needs, per layer) and the backward to the LoRA factors, for fixed token sequences at
// positions 0..n-1 (no KV cache, no paging, the scheduler not involved: docs/design.md "Training").
//
// Base weights of any type are dequantized when their projection runs (QLoRA-style) and dropped
// after it. Memory per sequence of n tokens is the kept activations, about
// n_layer·n·(4·n_embd + 4·n_embd_q + 4·n_embd_kv + 3·n_ff + 7·r) + n_layer·n_head·n² values, plus
// n·n_vocab logits and one dequantized weight matrix.
#pragma once
#include <cstdint>
#include <vector>

#include "../model/forward.h"
#include "../model/model.h"
#include "../status.h"
#include "../threadpool/thread_pool.h"
#include "distill.h"

namespace llmserve {

// The 7 projections of a block LoRA can target (Proj::Q .. Proj::Down); bit i of a mask = Proj(i).
constexpr int kLoraProjs = 7;
constexpr uint32_t kAllBlockProjs = (1u << kLoraProjs) - 1;

// The LoRA factors of one projection: A [r, n_in], B [n_out, r]; delta(x) = scale·B·(A·x).
// Empty a/b: the projection is not targeted.
template <typename T>
struct LoraMatrix {
  int64_t n_in = 0, n_out = 0;
  std::vector<T> a, b;
  bool on() const { return !a.empty(); }
};

// Every projection's factors, [n_layer][kLoraProjs]; the same shape holds their gradients.
template <typename T>
struct LoraSet {
  int64_t rank = 0;
  double scale = 1.0;  // alpha / rank
  std::vector<LoraMatrix<T>> mats;
  LoraMatrix<T>& at(int64_t il, int p) { return mats[static_cast<size_t>(il * kLoraProjs + p)]; }
  const LoraMatrix<T>& at(int64_t il, int p) const { return mats[static_cast<size_t>(il * kLoraProjs + p)]; }
  // Total values in all factors.
  int64_t size() const;
};

// n_in / n_out of projection p (Proj::Q .. Proj::Down) of model c.
void proj_shape(const ModelConfig& c, int p, int64_t* n_in, int64_t* n_out);

// Zero-valued factors for the projections in `targets` (bit mask over Proj::Q .. Proj::Down).
// Errors: InvalidArgument (rank < 1, empty target mask).
template <typename T>
Status lora_zeros(const ModelConfig& c, int64_t rank, double alpha, uint32_t targets, LoraSet<T>* out);

// What one block's backward needs from its forward, for n tokens (shapes in comments).
template <typename T>
struct BlockActs {
  std::vector<T> x_in;            // [n, E] residual input
  std::vector<T> rstd1, xn1;      // [n], [n, E] attention RMSNorm
  std::vector<T> q_raw, k_raw;    // [n, Eq], [n, Ekv] projections before the qwen3 head norms
  std::vector<T> q_rstd, k_rstd;  // [n, H], [n, Hkv] head-norm ρ (qwen3 only)
  std::vector<T> q, k, v;         // [n, Eq], [n, Ekv], [n, Ekv] after the head norms and RoPE
  std::vector<T> P, attn;         // [H, n, n] softmax, [n, Eq] attention output
  std::vector<T> x_mid;           // [n, E] residual after attention
  std::vector<T> rstd2, xn2;      // [n], [n, E] FFN RMSNorm
  std::vector<T> gate, up, h;     // [n, F] each
  std::vector<T> u[kLoraProjs];   // [n, r] LoRA A·x of each targeted projection
};

// Buffers a block's forward / backward reuse between calls (contents are scratch): a training run
// keeps one, so the dequantized weight and the gradient temporaries are not allocated (and
// page-faulted in) again for every projection of every sequence.
template <typename T>
struct BlockScratch {
  std::vector<T> w, du;                              // a projection's dequantized weight, LoRA scratch
  std::vector<T> dx_mid, dh, dg, dup, dxn;           // [n, E], [n, F] x3, [n, E]
  std::vector<T> dattn, dq, dk, dv, dq_raw, dk_raw;  // [n, Eq] x2, [n, Ekv] x2, qwen3 [n, Eq], [n, Ekv]
};

// Everything lora_loss_grad allocates, kept between its calls (one per training run / thread).
template <typename T>
struct LossScratch {
  BlockScratch<T> block;
  std::vector<BlockActs<T>> acts;
  std::vector<std::vector<T>> inputs;
  std::vector<T> x, next, rstd, xf, logits, dlogits, dxf, dx, dprev;
  std::vector<float> cache, row;
};

// One transformer block over x_in [n, E] (rope_cache [n, n_rot] from rope_cache_f32 at positions
// 0..n-1): fills acts and writes x_out [n, E].
template <typename T>
void block_fwd(const Model& model, int64_t il, const LoraSet<T>& lora, const float* rope_cache, const T* x_in,
               int64_t n, BlockActs<T>* acts, T* x_out, ThreadPool& pool, BlockScratch<T>* scratch = nullptr);
// dx_out [n, E] -> dx_in [n, E] (overwritten) and grad (+=, null: activations only).
template <typename T>
void block_bwd(const Model& model, int64_t il, const LoraSet<T>& lora, const float* rope_cache,
               const BlockActs<T>& acts, int64_t n, const T* dx_out, T* dx_in, LoraSet<T>* grad, ThreadPool& pool,
               BlockScratch<T>* scratch = nullptr);

// Loss and gradient of one sequence. tokens [n] (ids in [0, n_vocab)), labels [n]: the token each
// position must predict, or -1 (no loss there: prompt turns, padding).
// Returns via *nll_sum the sum of −log p(label) over labelled positions; when grad is given,
// grad += weight · d(nll_sum)/d(factors) (weight = 1 / labelled tokens of the whole batch makes
// the batch loss a mean). grad must have lora's shape.
// distill (optional): train against a teacher's logits for these positions (train/distill.h):
// *nll_sum is then the distillation loss Σ L_t, and distill->ce_sum / kl_sum its two parts.
// recompute: activation recomputation per layer: keeps only each layer's input [n, E] and one
// layer's BlockActs, running each block's forward again before its backward (one more forward
// pass of time); the gradients are bit-identical to those without it.
// scratch (optional): buffers reused between calls (results do not depend on it).
// Errors: InvalidArgument (n < 1, null pointers, token / label ids outside [0, n_vocab), grad of
// another shape). Sequences longer than the model's training context are allowed (RoPE extends).
template <typename T>
Status lora_loss_grad(const Model& model, const LoraSet<T>& lora, const int32_t* tokens, const int32_t* labels,
                      int64_t n, double weight, double* nll_sum, LoraSet<T>* grad, ThreadPool& pool,
                      DistillTerm* distill = nullptr, bool recompute = false, LossScratch<T>* scratch = nullptr);

}  // namespace llmserve
