// Optimizers for the LoRA factors (AdamW, LARS), the learning-rate schedule (linear warm-up then
// cosine decay), global gradient-norm clipping and PEFT's LoRA initialisation. Formulas are in
// docs/design.md "Training"; each step is deterministic (fixed order, no threads).
#pragma once
#include <cstdint>
#include <vector>

#include "../status.h"
#include "lora_train.h"

namespace llmserve {

enum class OptimKind : int { AdamW = 0, Lars = 1 };

struct OptimOptions {
  OptimKind kind = OptimKind::AdamW;
  // AdamW (Loshchilov & Hutter): m = β1·m + (1−β1)·g, v = β2·v + (1−β2)·g²,
  // w −= lr·( m/(1−β1^t) / (sqrt(v/(1−β2^t)) + eps) + weight_decay·w ).
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
  // LARS (You et al. 2017), per LoRA matrix w (each A and each B on its own):
  //   trust = η·‖w‖ / (‖g‖ + weight_decay·‖w‖)   (1 when ‖w‖ or ‖g‖ is 0: B starts at zero and
  //                                                would otherwise never move)
  //   u = momentum·u + lr·trust·(g + weight_decay·w);  w −= u
  double momentum = 0.9, lars_eta = 0.001;
};

// Optimizer state (moments / momentum) shaped like the LoRA set, and the step count.
class Optimizer {
 public:
  // Errors: InvalidArgument (negative or non-finite hyperparameters, β outside [0, 1)).
  static Status create(const OptimOptions& o, const LoraSet<float>& params, Optimizer* out);
  // One update of every targeted matrix with learning rate lr (after clipping). trust (optional)
  // receives LARS's trust ratio of each matrix in mats order, A then B ([2·mats], 0 for AdamW and
  // for untargeted projections).
  void step(LoraSet<float>* params, const LoraSet<float>& grad, double lr, std::vector<double>* trust = nullptr);
  int64_t steps() const { return t_; }

 private:
  OptimOptions o_;
  LoraSet<float> m_, v_;  // AdamW: first and second moments; LARS: m_ is the momentum buffer
  int64_t t_ = 0;
};

// Learning rate of step `step` (0-based) of `total`: lr·(step+1)/warmup during the first `warmup`
// steps, then min_lr + ½·(lr − min_lr)·(1 + cos(π·(step − warmup)/(total − warmup))).
double lr_at(int64_t step, int64_t total, int64_t warmup, double lr, double min_lr);

// Scales grad so its global L2 norm (over all factors) is at most max_norm (<= 0: no clipping);
// returns the norm before clipping.
double clip_grad_norm(LoraSet<float>* grad, double max_norm);

// PEFT's init: A ~ U(−1/√n_in, 1/√n_in) (torch's kaiming_uniform_ with a = √5, what PEFT uses),
// B = 0, so the adapter starts as the identity change. Values come from a SplitMix64 stream of
// `seed` (same seed ⇒ same bits on every platform; no std distributions, whose output varies by
// standard library).
void lora_init(LoraSet<float>* lora, uint64_t seed);

}  // namespace llmserve
