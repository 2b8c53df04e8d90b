// Scoring a model's next-token distributions against a text, as llama.cpp's llama-perplexity does
// (tools/perplexity/perplexity.cpp): per scored token the negative log-likelihood of the true next
// token and, given a reference model's logits for the same positions, the KL divergence
// KL(reference || model) over the whole vocabulary, whether both put their maximum on the same
// token ("Same top p") and the change in the true token's probability (Δp); then the statistics
// llama-perplexity prints (PPL ± error, ln(PPL(Q)/PPL(base)) with its covariance-corrected error,
// KL mean ± error and percentiles, Δp RMS, top-1 agreement ± error).
//
// Pure math over float logit rows: no model, no threads. Log-sum-exps, probabilities and every sum
// are in double (a 32k-entry softmax summed in float loses ~1e-4 relative, as much as the quantity
// measured for good quantizations). One departure from llama.cpp, on purpose: llama-perplexity
// --kl-divergence reads the reference's log-probabilities back from a file where each is stored in
// 16 bits over a 16-nat range below the row's maximum (and skips reference probabilities under
// e^-16 in the KL sum); here both full distributions are at hand, so nothing is rounded or skipped.
#pragma once
#include <cstdint>
#include <vector>

#include "../status.h"

namespace llmserve {

// log(sum_i exp(x[i])) in double: the maximum is taken first so no exp overflows.
double log_sum_exp(const float* x, int64_t n);
// Index of the largest entry (the first of equal ones, as llama.cpp's strict > scan).
int64_t first_argmax(const float* x, int64_t n);

// A chunk of n_ctx tokens is scored from its middle on (llama-perplexity's `first = n_ctx/2`: every
// scored token has at least half a context before it): rows first .. n_ctx-2 predict tokens
// first+1 .. n_ctx-1, so n_ctx - 1 - n_ctx/2 tokens per chunk (at least 1 from n_ctx = 3 on).
inline int64_t first_scored_row(int64_t n_ctx) { return n_ctx / 2; }
inline int64_t scored_per_chunk(int64_t n_ctx) { return n_ctx - 1 - n_ctx / 2; }
inline constexpr int64_t kMinEvalChunk = 3;

// One scored token.
struct TokenScore {
  double nll = 0;      // -log p_model(target)
  double nll_ref = 0;  // -log p_ref(target) (with a reference)
  double kl = 0;       // KL(ref || model) = sum_i p_ref(i) (log p_ref(i) - log p_model(i))
  double p_diff = 0;   // p_model(target) - p_ref(target)
  bool same_top = false;
};

// Scores one row: model (and ref, or null) are [n_vocab] logits; target in [0, n_vocab).
TokenScore score_token(const float* model, const float* ref, int64_t n_vocab, int32_t target);

// A value's mean and the standard error of that mean.
struct MeanError {
  double mean = 0;
  double error = 0;
};

// Order statistics of a sample, interpolated as llama-perplexity's `percentile` (linear between
// the two nearest ranks of fraction * (n - 1)); the median is the middle value or the mean of the
// two middle ones.
struct Quantiles {
  double min = 0, p0_1 = 0, p1 = 0, p5 = 0, p10 = 0, p25 = 0, median = 0;
  double p75 = 0, p90 = 0, p95 = 0, p99 = 0, p99_9 = 0, max = 0;
};
Quantiles quantiles(std::vector<float> values);  // sorts its own copy; all 0 for an empty sample

struct PerplexitySummary {
  int64_t count = 0;     // tokens scored
  MeanError nll;         // mean negative log-likelihood (nats) ± standard error
  double ppl = 0;        // exp(nll.mean)
  double ppl_error = 0;  // ppl * nll.error (llama-perplexity's "+/-")
  bool has_reference = false;
  // With a reference (all zero without):
  MeanError nll_ref;
  double ref_ppl = 0, ref_ppl_error = 0;
  double correlation = 0;                       // of the per-token NLLs (0 when undefined)
  double log_ratio = 0, log_ratio_error = 0;    // ln(PPL / PPL_ref)
  double ppl_ratio = 0, ppl_ratio_error = 0;    // PPL / PPL_ref
  double ppl_diff = 0, ppl_diff_error = 0;      // PPL - PPL_ref
  MeanError kl;                                 // nats
  MeanError p_diff;                             // Δp, probability units
  double p_diff_rms = 0, p_diff_rms_error = 0;  //
  double same_top = 0, same_top_error = 0;      // fraction of tokens whose argmax agrees
  bool has_quantiles = false;                   // kl_q and p_diff_q are filled (summary())
  Quantiles kl_q, p_diff_q;
};

// Accumulates scored tokens over chunks; summary statistics at any point. Not thread safe: one
// caller at a time (the evaluation runs one chunk at a time).
class PerplexityAccumulator {
 public:
  explicit PerplexityAccumulator(bool with_reference) : with_ref_(with_reference) {}
  bool with_reference() const { return with_ref_; }

  // Scores rows [n_rows] of model (and reference) logits [n_rows, n_vocab]: row i predicts
  // targets[i]. ref must be non-null exactly when the accumulator was made with a reference.
  // InvalidArgument for a target outside [0, n_vocab) or a missing/extra reference (nothing added).
  Status add(const float* model, const float* ref, const int32_t* targets, int64_t n_rows, int64_t n_vocab);

  int64_t count() const { return count_; }
  // The statistics of everything added so far. Without quantiles: O(1), for progress reports.
  PerplexitySummary running() const;
  // With quantiles (sorts copies of the per-token values).
  PerplexitySummary summary() const;

  // Per scored token, in order (kl and p_diff are empty without a reference).
  const std::vector<float>& nll_values() const { return nll_; }
  const std::vector<float>& kl_values() const { return kl_; }
  const std::vector<float>& p_diff_values() const { return p_diff_; }
  const std::vector<uint8_t>& same_top_values() const { return same_top_; }

 private:
  bool with_ref_;
  int64_t count_ = 0, n_same_top_ = 0;
  double sum_nll_ = 0, sum_nll2_ = 0;
  double sum_nll_ref_ = 0, sum_nll_ref2_ = 0, sum_nll_nll_ref_ = 0;
  double sum_kl_ = 0, sum_kl2_ = 0;
  double sum_pd_ = 0, sum_pd2_ = 0, sum_pd4_ = 0;
  std::vector<float> nll_, kl_, p_diff_;
  std::vector<uint8_t> same_top_;
};

}  // namespace llmserve
