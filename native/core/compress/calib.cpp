// collect_activation_stats: a ProjectionDelta that reads every layer projection's input rows and
// adds their squares per column (y is left untouched), driven by forward() over the calibration
// chunks.
#include "calib.h"

#include <algorithm>

#include "../kv/kv_cache.h"
#include "../model/forward.h"
#include "../threadpool/thread_pool.h"

namespace llmserve {
namespace {

class StatsCollector final : public ProjectionDelta {
 public:
  explicit StatsCollector(const ModelConfig& c) : c_(c), acc_(static_cast<size_t>(c.n_layer * 7)) {}

  bool touches(int64_t il, Proj p) const override { return il >= 0 && p != Proj::Output; }

  void add(int64_t il, Proj p, const float* x, int64_t n, float* /*y*/, int64_t /*ldy*/,
           ThreadPool& pool) const override {
    const int64_t n_in = input_width(p);
    std::vector<double>& acc = acc_[static_cast<size_t>(il * 7 + static_cast<int>(p))];
    if (acc.empty()) acc.assign(static_cast<size_t>(n_in), 0.0);
    // Columns split across threads: each column's sum runs over tokens in order, so the result
    // does not depend on the thread count.
    pool.parallel_for(
        n_in,
        [&](int64_t b, int64_t e) {
          for (int64_t t = 0; t < n; ++t) {
            const float* row = x + t * n_in;
            for (int64_t j = b; j < e; ++j) acc[static_cast<size_t>(j)] += static_cast<double>(row[j]) * row[j];
          }
        },
        256);
  }

  void take(ActivationStats* out) {
    const auto& roles = layer_projection_roles();
    for (int64_t il = 0; il < c_.n_layer; ++il) {
      for (int p = 0; p < 7; ++p) {
        std::vector<double>& acc = acc_[static_cast<size_t>(il * 7 + p)];
        if (acc.empty()) continue;
        out->sumsq["blk." + std::to_string(il) + "." + roles[static_cast<size_t>(p)] + ".weight"] = std::move(acc);
      }
    }
  }

 private:
  int64_t input_width(Proj p) const {
    if (p == Proj::O) return c_.n_embd_q();
    if (p == Proj::Down) return c_.n_ff;
    return c_.n_embd;
  }
  const ModelConfig& c_;
  // add() is const in the interface; the forward pass calls it from one thread at a time.
  mutable std::vector<std::vector<double>> acc_;
};

}  // namespace

const std::vector<std::string>& layer_projection_roles() {
  static const std::vector<std::string> roles = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                 "ffn_gate", "ffn_up", "ffn_down"};
  return roles;
}

Status column_sumsq(const ActivationStats& stats, const std::string& name, int64_t n_in,
                    const std::vector<double>** out) {
  auto it = stats.sumsq.find(name);
  if (it == stats.sumsq.end() || static_cast<int64_t>(it->second.size()) != n_in) {
    return make_error(Code::InvalidArgument, "the calibration statistics have no entry of " + std::to_string(n_in) +
                                                 " columns for '" + name + "'; were they collected on this model?");
  }
  *out = &it->second;
  return Status::ok();
}

Status collect_activation_stats(const Model& model, const std::vector<int32_t>& tokens, int64_t ctx, int threads,
                                const std::function<void(double)>& progress, const std::atomic<bool>* cancel,
                                ActivationStats* out) {
  if (ctx < 1) return make_error(Code::InvalidArgument, "the calibration context must be at least 1 token");
  if (tokens.empty())
    return make_error(Code::InvalidArgument, "the calibration text has no tokens; give a text file with some prose");
  const ModelConfig& c = model.config();
  // Positions past the training context would measure activations the model never produces.
  if (c.n_ctx_train > 0) ctx = std::min(ctx, c.n_ctx_train);
  ctx = std::min<int64_t>(ctx, static_cast<int64_t>(tokens.size()));
  std::unique_ptr<KvCache> kv;
  KvCacheOptions ko;
  ko.n_ctx = ctx;
  LLMS_RETURN_IF_ERROR(KvCache::create(kv_shape(c), ko, &kv));
  ThreadPool pool(threads);
  ForwardScratch scratch;
  StatsCollector collector(c);
  std::vector<float> logits;
  const int64_t total = static_cast<int64_t>(tokens.size());
  for (int64_t t0 = 0; t0 < total; t0 += ctx) {
    if (cancel && cancel->load(std::memory_order_relaxed))
      return make_error(Code::Cancelled, "compress was cancelled during calibration; no output file was written");
    const int64_t n = std::min(ctx, total - t0);
    kv->truncate(0);
    // logits_all: every row goes through the last layer too (else it keeps only the last token).
    LLMS_RETURN_IF_ERROR(forward(model, *kv, tokens.data() + t0, n, true, &logits, pool, &scratch, &collector));
    if (progress) progress(static_cast<double>(t0 + n) / static_cast<double>(total));
  }
  ActivationStats s;
  s.tokens = total;
  collector.take(&s);
  *out = std::move(s);
  return Status::ok();
}

}  // namespace llmserve
