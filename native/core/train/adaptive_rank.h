// Adaptive rank for LoRA training (AdaLoRA, Zhang et al. 2023): each adapted matrix is trained as
// P·diag(λ)·Q (an SVD-like form) with an orthogonality penalty, and the components (P column i,
// λ_i, Q row i) with the lowest importance are masked on a cubic budget schedule until each
// matrix keeps its share of a total of target_rank·n_matrices components. The score, schedule and
// export are documented in docs/design.md "Training" (Adaptive rank).
//
// The forward and backward of the model are those of plain LoRA (lora_train.h): the trainer
// materializes A = diag(λ∘keep)·Q, B = P and chains the gradient of A and B back to P, λ, Q.
#pragma once
#include <cstdint>
#include <vector>

#include "../status.h"
#include "lora_train.h"
#include "optim.h"

namespace llmserve {

// Which components of each matrix are kept, [mats][r] in the plain set's mats order (1 = kept);
// an untargeted projection has an empty row.
struct RankMask {
  std::vector<std::vector<uint8_t>> keep;
  // Kept components of matrix i.
  int64_t rank(size_t i) const;
  // Kept components of all matrices.
  int64_t total() const;
};

// The trainable parameters laid out as a LoraSet (so that Optimizer and clip_grad_norm treat them
// like any LoRA factors): for matrix i of M plain matrices, mats[i].a = Q [r, n_in],
// mats[i].b = P [n_out, r], and mats[M + i].a = λ [r] (its b empty). rank and scale are the plain
// set's (scale = alpha / r with the starting r, as AdaLoRA: the export folds per-matrix ranks in).
template <typename T>
using AdaParams = LoraSet<T>;

// Parameters shaped for the plain set `plain` (lora_zeros), λ = 0 (the adapter starts as no change)
// and P's columns, Q's rows orthonormal (Gram–Schmidt of SplitMix64 uniforms of `seed`; when r
// exceeds a dimension the extra vectors are only normalised), so the penalty starts at 0.
void ada_init(const LoraSet<float>& plain, uint64_t seed, AdaParams<float>* out);

// A = diag(λ∘keep)·Q [r, n_in], B = P [n_out, r] into plain (which must have params' plain shape;
// mask empty: all kept).
template <typename T>
void ada_materialize(const AdaParams<T>& params, const RankMask& mask, LoraSet<T>* plain);

// Chain rule from the plain factors' gradient (dA, dB) to the parameters':
// dQ[i,:] += λ_i·keep_i·dA[i,:], dλ_i += keep_i·Σⱼ dA[i,j]·Q[i,j], dP += dB. grad: params' shape.
template <typename T>
void ada_chain_grad(const AdaParams<T>& params, const RankMask& mask, const LoraSet<T>& plain_grad, AdaParams<T>* grad);

// Orthogonality penalty: weight / M_on · Σ over targeted matrices of ‖PᵀP − I‖²_F + ‖QQᵀ − I‖²_F
// (M_on = targeted matrices, so the weight does not scale with the model's depth). Returns it and,
// when grad is given, adds its gradient: weight / M_on · 4·P·(PᵀP − I) and 4·(QQᵀ − I)·Q.
template <typename T>
double orth_penalty(const AdaParams<T>& params, double weight, AdaParams<T>* grad);

// The total kept components after optimizer step `done` (1-based) of `total`: b0 while
// done <= t_init, b_target once done >= total − t_final, between them
// floor(b_target + (b0 − b_target)·(1 − (done − t_init)/(total − t_final − t_init))³).
int64_t rank_budget(int64_t done, int64_t total, int64_t t_init, int64_t t_final, int64_t b0, int64_t b_target);

// Masks kept components with the lowest score[i][k] (all matrices together; ties: the lower matrix
// index, then the lower component, goes first) until mask->total() <= budget. Masked components
// stay masked. Returns how many it masked.
int64_t prune_to_budget(const std::vector<std::vector<double>>& score, int64_t budget, RankMask* mask);

struct AdaOptions {
  int64_t target_rank = 0;            // components kept per matrix on average at the end (1..r)
  double orth_weight = 0.1;           // γ of the orthogonality penalty
  double beta1 = 0.85, beta2 = 0.85;  // importance and uncertainty EMAs (AdaLoRA's defaults)
  int64_t t_init = 0, t_final = 0;    // steps without pruning at the start; with the final budget at the end
};

// The AdaLoRA state of one run: parameters, their optimizer, importance EMAs, the mask.
class AdaptiveRank {
 public:
  // plain: the zero plain set (lora_zeros). Errors: InvalidArgument (target_rank outside [1, r],
  // negative or non-finite weight, β outside [0, 1), t_init / t_final < 0), the optimizer's.
  static Status create(const LoraSet<float>& plain, const AdaOptions& o, const OptimOptions& optim, uint64_t seed,
                       AdaptiveRank* out);
  // The plain factors the model trains through.
  void materialize(LoraSet<float>* plain) const { ada_materialize(params_, mask_, plain); }
  // One step after the loss gradient plain_grad of the plain factors (0-based step of total):
  // chains it to P, λ, Q; updates the importance from that loss gradient (before the penalty and
  // clipping); adds the penalty's gradient; clips the global norm to clip; runs the optimizer with
  // lr; keeps masked λ at 0; then masks down to rank_budget(step + 1). Returns the gradient norm
  // before clipping; *penalty gets the penalty's value before the update.
  double step(const LoraSet<float>& plain_grad, int64_t step, int64_t total, double lr, double clip, double* penalty);
  // Importance of each component, [mats][r]: s(λ_i) + mean_j s(Q[i,j]) + mean_j s(P[j,i]) with
  // s(w) = Ī(w)·Ū(w), Ī the EMA of |w·∂L/∂w| and Ū the EMA of |I − Ī|.
  std::vector<std::vector<double>> scores() const;
  const RankMask& mask() const { return mask_; }
  const AdaParams<float>& params() const { return params_; }
  int64_t budget_start() const { return b0_; }
  int64_t budget_target() const { return bt_; }

 private:
  AdaOptions o_;
  AdaParams<float> params_, grad_, ipt_, unc_;
  RankMask mask_;
  Optimizer optim_;
  LoraSet<float> scratch_;
  int64_t b0_ = 0, bt_ = 0;
};

}  // namespace llmserve
