// train_lora(): the LoRA fine-tuning loop over token sequences prepared by the caller (lib/train
// tokenizes, chunks, renders chat, shuffles), and write_lora_gguf(): the adapter in llama.cpp's
// GGUF LoRA format. Runs on the caller's thread (the addon's worker); deterministic for a seed.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../kv/kv_cache.h"
#include "../model/forward.h"
#include "../model/model.h"
#include "../status.h"
#include "../threadpool/thread_pool.h"
#include "adaptive_rank.h"
#include "lora_train.h"
#include "optim.h"

namespace llmserve {

// Sequences in training order: sequence i is tokens/labels [offsets[i], offsets[i+1]); labels[t] is
// the token position t must predict or -1 (no loss). offsets has n_seqs + 1 entries.
struct TrainData {
  std::vector<int32_t> tokens, labels;
  std::vector<int64_t> offsets;
  int64_t n_seqs() const { return offsets.empty() ? 0 : static_cast<int64_t>(offsets.size()) - 1; }
};

struct TrainOptions {
  int64_t rank = 8;
  double alpha = 16;
  uint32_t targets = kAllBlockProjs;  // bit i = Proj(i)
  OptimOptions optim;
  double lr = 1e-3, min_lr = 0;  // peak and final learning rate of the cosine schedule
  int64_t warmup = 0;            // linear warm-up steps
  int64_t batch = 1;             // sequences per step (step i uses sequences [i·batch, (i+1)·batch))
  int64_t steps = 0;             // ceil(n_seqs / batch) must be >= steps
  double clip = 1.0;             // max global gradient norm (<= 0: none)
  uint64_t seed = 1;             // LoRA init
  // Distillation (train/distill.h): teacher null = plain cross-entropy. With a teacher (same
  // vocabulary as the model), each step's loss is (1 − distill)·CE + distill·T²·KL(teacher_T ‖
  // student_T), T = temperature; the teacher's logits come from its inference forward on the same
  // sequence, one sequence at a time (never a whole epoch's). distill = 0 with a teacher trains on
  // CE alone and runs the teacher only for lora_eval_loss's KL.
  const Model* teacher = nullptr;
  double distill = 0, temperature = 1;
  // A sequence whose kept activations (kept_activation_bytes) exceed this many bytes trains with
  // per-layer recomputation (lora_loss_grad's recompute: same gradients, one more forward pass).
  // Finite, >= 0 (0: every sequence recomputes); else train_lora's InvalidArgument.
  double recompute_above = 1024.0 * 1024 * 1024;
  // Adaptive rank (train/adaptive_rank.h): each matrix trains as P·diag(λ)·Q and is pruned towards
  // ada.target_rank components per matrix on average. ada.t_init < 0: the warm-up steps;
  // ada.t_final < 0: a fifth of the steps. Without it ada.target_rank must stay 0.
  bool adaptive = false;
  AdaOptions ada{0, 0.1, 0.85, 0.85, -1, -1};
};

// The GGUF base tensor name of projection p (Proj::Q .. Proj::Down) of layer il, e.g.
// "blk.0.attn_q.weight" (the adapter's tensors add ".lora_a" / ".lora_b").
std::string lora_tensor_base(int64_t il, int p);

// Bytes of the activations lora_loss_grad keeps for a sequence of n tokens without recomputation
// (the formula of lora_train.h, f32).
double kept_activation_bytes(const ModelConfig& c, int64_t n, int64_t rank);

struct StepEvent {
  int64_t step = 0, steps = 0;  // 1-based step done, of steps
  double loss = 0;              // mean loss over the step's labelled tokens (CE, or the distillation loss)
  double ce = 0, kl = 0;        // with a teacher and distill > 0: the loss's mean CE and KL (at T) parts
  double lr = 0, grad_norm = 0;
  int64_t tokens = 0;      // tokens the step ran (labelled or not)
  int64_t recomputed = 0;  // sequences of the step trained with per-layer recomputation
  double seconds = 0;      // wall time of the step
  // Adaptive rank: the orthogonality penalty before the step, and the components kept after it
  // (0, 0 without adaptive rank).
  double orth = 0;
  int64_t kept_rank = 0;
};

// Trains a LoRA adapter (initialised by lora_init(seed)) for opt.steps steps; on_step after each.
// cancel (optional): checked between sequences; Cancelled when set. With opt.adaptive, *out is
// the plain form of the final P·diag(λ)·Q (rank opt.rank, masked rows of A zero) and *mask
// (required then) which components were kept: write_lora_gguf(mask) exports per-matrix ranks.
// Errors: InvalidArgument (options, empty data, token ids, a teacher of another vocabulary size;
// a step without labelled tokens is skipped rather than an error), Cancelled.
Status train_lora(const Model& model, const TrainData& data, const TrainOptions& opt, ThreadPool& pool,
                  const std::function<void(const StepEvent&)>& on_step, const std::atomic<bool>* cancel,
                  LoraSet<float>* out, RankMask* mask = nullptr);

// Writes the adapter (f32 tensors "<base>.lora_a" ne [n_in, r], ".lora_b" ne [r, n_out],
// adapter.lora.alpha) to path via a temp file + rename. mask (adaptive rank): only the kept rows of
// A and columns of B, so matrix i has rank r_i = mask->rank(i) (no tensors when 0), and A scaled by
// r_i / r: llama.cpp and loadAdapter scale each matrix by alpha / r_i, which then gives the trained
// (alpha / r)·B·A. Errors: Io.
Status write_lora_gguf(const Model& model, const LoraSet<float>& lora, double alpha, const std::string& path,
                       const RankMask* mask = nullptr);

// Mean cross-entropy per labelled token of the base model plus lora over data (for held-out loss).
// teacher (optional, same vocabulary): *mean_kl = mean KL(teacher ‖ student) at temperature 1 over
// the same tokens, how far the student is from the teacher.
Status lora_eval_loss(const Model& model, const LoraSet<float>& lora, const TrainData& data, ThreadPool& pool,
                      double* mean_nll, const Model* teacher = nullptr, double* mean_kl = nullptr);

// Runs a distillation teacher: the inference forward (model/forward.h, f32 KV cache) over one
// sequence at a time, from position 0, all positions' logits. Memory: the KV of the longest
// sequence plus one sequence's logits.
class TeacherRun {
 public:
  // Errors: InvalidArgument (teacher's vocabulary size differs from student's, max_n < 1),
  // OutOfMemory.
  static Status create(const Model& teacher, const Model& student, int64_t max_n, std::unique_ptr<TeacherRun>* out);
  // logits [n, n_vocab] of tokens [n] (n <= max_n).
  Status logits(const int32_t* tokens, int64_t n, ThreadPool& pool, std::vector<float>* out);

 private:
  explicit TeacherRun(const Model& m) : model_(m) {}
  const Model& model_;
  std::unique_ptr<KvCache> kv_;
  ForwardScratch scratch_;
};

}  // namespace llmserve
