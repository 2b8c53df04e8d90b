// Knowledge distillation's loss on the student's logits: per labelled position t (labels[t] >= 0),
//   L_t = (1 − α)·CE(z_t, label_t) + α·T²·KL( softmax(s_t / T) ‖ softmax(z_t / T) )
// z_t: student logits, s_t: teacher logits (the teacher's inference forward on the same tokens),
// α in [0, 1], temperature T > 0. The T² keeps the KL gradient's size independent of T (Hinton et
// al. 2015): d/dz of T²·KL(p ‖ q) with p = softmax(s/T), q = softmax(z/T) is T·(q − p), so
//   dL_t/dz_t = (1 − α)·(softmax(z_t) − onehot(label_t)) + α·T·(q_t − p_t).
// Unlabelled positions (prompt turns, the last token) have neither term. docs/design.md "Training".
#pragma once
#include <cstdint>

#include "../threadpool/thread_pool.h"

namespace llmserve {

// What lora_loss_grad needs to train against a teacher, and the two parts of the loss it returns.
struct DistillTerm {
  const float* teacher = nullptr;  // [n, n_vocab] teacher logits of the sequence's positions
  double alpha = 0;                // α: the KL term's share
  double temperature = 1;          // T
  double ce_sum = 0;               // out: Σ CE_t over labelled positions
  double kl_sum = 0;               // out: Σ KL_t (at temperature T) over labelled positions
};

// logits [n, V] (student), labels [n] (−1: no loss), d->teacher [n, V]. Returns Σ_t L_t (double),
// fills d->ce_sum / d->kl_sum, and when dlogits [n, V] is given writes weight·dL_t/dz_t there (0 on
// unlabelled rows). Rows run in parallel; every sum is in double in a fixed order (the same result
// for any thread count).
template <typename T>
double distill_loss(const T* logits, const int32_t* labels, int64_t n, int64_t V, double weight, T* dlogits,
                    DistillTerm* d, ThreadPool& pool);

}  // namespace llmserve
