// train_lora(): the LoRA fine-tuning loop over token sequences prepared by the caller (lib/train
// tokenizes, chunks, renders chat, shuffles), and write_lora_gguf(): the adapter in llama.cpp's
// GGUF LoRA format. Runs on the caller's thread (the addon's worker); deterministic for a seed.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "../model/model.h"
#include "../status.h"
#include "../threadpool/thread_pool.h"
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
};

struct StepEvent {
  int64_t step = 0, steps = 0;  // 1-based step done, of steps
  double loss = 0;              // mean cross-entropy over the step's labelled tokens
  double lr = 0, grad_norm = 0;
  int64_t tokens = 0;  // tokens the step ran (labelled or not)
  double seconds = 0;  // wall time of the step
};

// Trains a LoRA adapter (initialised by lora_init(seed)) for opt.steps steps; on_step after each.
// cancel (optional): checked between sequences; Cancelled when set.
// Errors: InvalidArgument (options, empty data, token ids, a step without labelled tokens is
// skipped rather than an error), Cancelled.
Status train_lora(const Model& model, const TrainData& data, const TrainOptions& opt, ThreadPool& pool,
                  const std::function<void(const StepEvent&)>& on_step, const std::atomic<bool>* cancel,
                  LoraSet<float>* out);

// Writes the adapter (f32 tensors "<base>.lora_a" ne [n_in, r], ".lora_b" ne [r, n_out],
// adapter.lora.alpha) to path via a temp file + rename. Errors: Io.
Status write_lora_gguf(const Model& model, const LoraSet<float>& lora, double alpha, const std::string& path);

// Mean cross-entropy per labelled token of the base model plus lora over data (for held-out loss).
Status lora_eval_loss(const Model& model, const LoraSet<float>& lora, const TrainData& data, ThreadPool& pool,
                      double* mean_nll);

}  // namespace llmserve
