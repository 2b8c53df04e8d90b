#include "perplexity.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace llmserve {

double log_sum_exp(const float* x, int64_t n) {
  float m = x[0];
  for (int64_t i = 1; i < n; ++i) m = std::max(m, x[i]);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(x[i]) - m);
  return static_cast<double>(m) + std::log(s);
}

int64_t first_argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

TokenScore score_token(const float* model, const float* ref, int64_t n_vocab, int32_t target) {
  TokenScore t;
  const double lse = log_sum_exp(model, n_vocab);
  t.nll = lse - model[target];
  if (!ref) return t;
  const double lse_ref = log_sum_exp(ref, n_vocab);
  t.nll_ref = lse_ref - ref[target];
  double kl = 0;
  for (int64_t i = 0; i < n_vocab; ++i) {
    const double lp_ref = ref[i] - lse_ref;
    const double lp = model[i] - lse;
    kl += std::exp(lp_ref) * (lp_ref - lp);
  }
  t.kl = kl;
  t.p_diff = std::exp(-t.nll) - std::exp(-t.nll_ref);
  t.same_top = first_argmax(model, n_vocab) == first_argmax(ref, n_vocab);
  return t;
}

Quantiles quantiles(std::vector<float> v) {
  Quantiles q;
  if (v.empty()) return q;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  auto at = [&](double fraction) {  // llama-perplexity's percentile()
    if (fraction <= 0) return static_cast<double>(v.front());
    if (fraction >= 1) return static_cast<double>(v.back());
    double p = fraction * static_cast<double>(n - 1);
    const size_t ip = static_cast<size_t>(p);
    p -= static_cast<double>(ip);
    return (1 - p) * v[ip] + p * v[std::min(ip + 1, n - 1)];
  };
  q.min = v.front();
  q.max = v.back();
  q.median = n % 2 == 0 ? 0.5 * (static_cast<double>(v[n / 2]) + v[n / 2 - 1]) : v[n / 2];
  q.p0_1 = at(0.001);
  q.p1 = at(0.01);
  q.p5 = at(0.05);
  q.p10 = at(0.10);
  q.p25 = at(0.25);
  q.p75 = at(0.75);
  q.p90 = at(0.90);
  q.p95 = at(0.95);
  q.p99 = at(0.99);
  q.p99_9 = at(0.999);
  return q;
}

Status PerplexityAccumulator::add(const float* model, const float* ref, const int32_t* targets, int64_t n_rows,
                                  int64_t n_vocab) {
  if ((ref != nullptr) != with_ref_)
    return make_error(Code::InvalidArgument, with_ref_
                                                 ? "perplexity: reference logits are missing"
                                                 : "perplexity: reference logits given to an evaluation without one");
  if (n_rows < 0 || n_vocab < 1 || (n_rows > 0 && (!model || !targets)))
    return make_error(Code::InvalidArgument, "perplexity: bad rows");
  for (int64_t r = 0; r < n_rows; ++r)
    if (targets[r] < 0 || targets[r] >= n_vocab)
      return make_error(Code::InvalidArgument, "Token id " + std::to_string(targets[r]) +
                                                   " is outside the vocabulary [0, " + std::to_string(n_vocab) + ").");
  const size_t row = static_cast<size_t>(n_vocab);
  for (int64_t r = 0; r < n_rows; ++r) {
    const size_t off = static_cast<size_t>(r) * row;
    const TokenScore t = score_token(model + off, ref ? ref + off : nullptr, n_vocab, targets[r]);
    ++count_;
    sum_nll_ += t.nll;
    sum_nll2_ += t.nll * t.nll;
    nll_.push_back(static_cast<float>(t.nll));
    if (!with_ref_) continue;
    sum_nll_ref_ += t.nll_ref;
    sum_nll_ref2_ += t.nll_ref * t.nll_ref;
    sum_nll_nll_ref_ += t.nll * t.nll_ref;
    sum_kl_ += t.kl;
    sum_kl2_ += t.kl * t.kl;
    sum_pd_ += t.p_diff;
    sum_pd2_ += t.p_diff * t.p_diff;
    sum_pd4_ += t.p_diff * t.p_diff * t.p_diff * t.p_diff;
    n_same_top_ += t.same_top ? 1 : 0;
    kl_.push_back(static_cast<float>(t.kl));
    p_diff_.push_back(static_cast<float>(t.p_diff));
    same_top_.push_back(t.same_top ? 1 : 0);
  }
  return Status::ok();
}

namespace {

// llama-perplexity's mean_and_uncertainty: the standard error is reported only above 10 values.
MeanError mean_and_uncertainty(double sum, double sum2, int64_t count) {
  if (count < 1) return {};
  const double n = static_cast<double>(count);
  const double f = sum / n;
  const double df = sum2 / n - f * f;
  return {f, df > 0 && count > 10 ? std::sqrt(df / (n - 1)) : 0.0};
}

// llama-perplexity's covariance of two per-token series (0 below 10 values).
double covariance(double sum_a, double sum_b, double sum_ab, int64_t count) {
  if (count < 10) return 0;
  const double n = static_cast<double>(count);
  return (sum_ab / n - (sum_a / n) * (sum_b / n)) / (n - 1);
}

}  // namespace

PerplexitySummary PerplexityAccumulator::running() const {
  PerplexitySummary s;
  s.count = count_;
  s.has_reference = with_ref_;
  if (count_ == 0) return s;
  const double n = static_cast<double>(count_);
  // The plain perplexity run's formula (perplexity()): var = E[nll^2] - E[nll]^2, error of the mean
  // sqrt(var / (count - 1)); PPL's error is PPL times it (d exp(x) = exp(x) dx).
  s.nll.mean = sum_nll_ / n;
  const double var = sum_nll2_ / n - s.nll.mean * s.nll.mean;
  s.nll.error = var > 0 && count_ > 1 ? std::sqrt(var / (n - 1)) : 0.0;
  s.ppl = std::exp(s.nll.mean);
  s.ppl_error = s.ppl * s.nll.error;
  if (!with_ref_) return s;

  // The --kl-divergence run's statistics (kl_divergence()).
  const MeanError lp = mean_and_uncertainty(sum_nll_, sum_nll2_, count_);
  s.nll_ref = mean_and_uncertainty(sum_nll_ref_, sum_nll_ref2_, count_);
  s.ref_ppl = std::exp(s.nll_ref.mean);
  s.ref_ppl_error = s.ref_ppl * s.nll_ref.error;
  const double cov = covariance(sum_nll_, sum_nll_ref_, sum_nll_nll_ref_, count_);
  const double denom = lp.error * s.nll_ref.error;
  s.correlation = denom > 0 ? cov / denom : 0.0;
  s.log_ratio = lp.mean - s.nll_ref.mean;
  s.log_ratio_error = std::sqrt(std::max(0.0, lp.error * lp.error + s.nll_ref.error * s.nll_ref.error - 2.0 * cov));
  s.ppl_ratio = std::exp(s.log_ratio);
  s.ppl_ratio_error = s.ppl_ratio * s.log_ratio_error;
  const double ppl_unc = s.ppl * lp.error;
  s.ppl_diff = s.ppl - s.ref_ppl;
  s.ppl_diff_error =
      std::sqrt(std::max(0.0, ppl_unc * ppl_unc + s.ref_ppl_error * s.ref_ppl_error - 2.0 * s.ppl * s.ref_ppl * cov));
  s.kl = mean_and_uncertainty(sum_kl_, sum_kl2_, count_);
  s.p_diff = mean_and_uncertainty(sum_pd_, sum_pd2_, count_);
  const MeanError mse = mean_and_uncertainty(sum_pd2_, sum_pd4_, count_);
  s.p_diff_rms = std::sqrt(mse.mean);
  s.p_diff_rms_error = s.p_diff_rms > 0 ? 0.5 / s.p_diff_rms * mse.error : 0.0;
  s.same_top = static_cast<double>(n_same_top_) / n;
  s.same_top_error = count_ > 1 ? std::sqrt(s.same_top * (1 - s.same_top) / (n - 1)) : 0.0;
  return s;
}

PerplexitySummary PerplexityAccumulator::summary() const {
  PerplexitySummary s = running();
  if (with_ref_) {
    s.kl_q = quantiles(kl_);
    s.p_diff_q = quantiles(p_diff_);
    s.has_quantiles = true;
  }
  return s;
}

}  // namespace llmserve
