// Perplexity / KL scoring (core/eval) against a long-double reference, its statistics (llama-
// perplexity's formulas and percentiles), evaluate()'s logits_from / n_batch passes against one
// full pass, and a chunk through two engines (sched/eval_chunk): a model against itself has KL 0
// and full top-1 agreement, and the scores equal those computed from evaluate()'s logits.
// Embeddings: evaluate()'s hidden rows against the double-precision reference forward pass
// (forward_ref_hidden), and pool_hidden's mean / last / cls / normalize against the pools of those
// reference rows.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "eval/perplexity.h"
#include "eval/pooling.h"
#include "forward_ref.h"
#include "model_test_util.h"
#include "sched/engine.h"
#include "sched/eval_chunk.h"
#include "synth/synth.h"
#include "testing.h"

using namespace llmserve;

namespace {

std::vector<float> random_logits(std::mt19937& rng, int64_t n, float scale, float offset) {
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng) + offset;
  return v;
}

// The definitions, in long double, with no shared code: log p = x - log(sum exp x).
long double ref_lse(const std::vector<float>& x) {
  long double m = x[0];
  for (float v : x) m = std::max<long double>(m, v);
  long double s = 0;
  for (float v : x) s += std::exp((long double)v - m);
  return m + std::log(s);
}

const std::string& model_path(int seed, GgmlType type) {
  static std::string paths[4];
  std::string& p = paths[(seed & 1) * 2 + (type == GgmlType::F32 ? 0 : 1)];
  if (p.empty()) {
    p = "/tmp/llmserve_test_eval_" + std::to_string(static_cast<long>(::getpid())) + "_" + std::to_string(seed) + "_" +
        type_traits(type).name + ".gguf";
    SynthOptions o;
    o.dim = 64;
    o.layers = 2;
    o.heads = 4;
    o.kv_heads = 2;
    o.ffn = 128;
    o.vocab_size = 300;
    o.context = 256;
    o.type = type;
    o.seed = static_cast<uint64_t>(seed);
    Status st = synth_model(o, p);
    if (!st) std::fprintf(stderr, "  synth_model: %s\n", st.message.c_str());
  }
  return p;
}

std::shared_ptr<Engine> load(const std::string& path) {
  EngineOptions o;
  o.threads = 1;
  o.n_ctx = 256;
  std::unique_ptr<Engine> e;
  Status st = Engine::load(path, o, {}, &e);
  if (!st) std::fprintf(stderr, "  Engine::load: %s\n", st.message.c_str());
  return std::shared_ptr<Engine>(std::move(e));
}

// Evaluates tokens with the given first row and pass size; waits (with a deadline).
Status evaluate(Engine& e, const std::vector<int32_t>& tokens, int64_t logits_from, int64_t n_batch,
                std::vector<float>* out, bool hidden = false) {
  auto done = std::make_shared<std::promise<std::pair<Status, std::vector<float>>>>();
  auto fut = done->get_future();
  auto r = std::make_shared<EvalRequest>();
  r->tokens = tokens;
  r->logits_from = logits_from;
  r->n_batch = n_batch;
  r->hidden = hidden;
  r->on_done = [done](Status s, std::vector<float>&& l) { done->set_value({s, std::move(l)}); };
  Status st = e.submit_eval(r);
  if (!st) return st;
  if (fut.wait_for(std::chrono::seconds(60)) != std::future_status::ready)
    return make_error(Code::Internal, "evaluate timed out");
  auto [s, l] = fut.get();
  *out = std::move(l);
  return s;
}

Status run_chunk(Engine& model, std::shared_ptr<Engine> ref, const std::vector<int32_t>& tokens,
                 std::shared_ptr<PerplexityAccumulator> acc, int64_t n_batch = 0) {
  auto done = std::make_shared<std::promise<Status>>();
  auto fut = done->get_future();
  EvalChunk c;
  c.tokens = tokens;
  c.n_batch = n_batch;
  c.acc = std::move(acc);
  c.on_done = [done](Status s) { done->set_value(s); };
  Status st = submit_eval_chunk(model, std::move(ref), std::move(c));
  if (!st) return st;
  if (fut.wait_for(std::chrono::seconds(60)) != std::future_status::ready)
    return make_error(Code::Internal, "chunk timed out");
  return fut.get();
}

std::vector<int32_t> tokens_of(int n, int seed) {
  std::mt19937 rng(static_cast<unsigned>(seed));
  std::vector<int32_t> t{1};
  while ((int)t.size() < n) t.push_back(3 + static_cast<int32_t>(rng() % 297));
  return t;
}

}  // namespace

TEST(eval_score_token_matches_the_definitions) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t n = 1 + trial * 37;
    // Large offsets check the max subtraction; a wide scale puts many probabilities near 0.
    const auto model = random_logits(rng, n, trial % 2 ? 8.f : 1.f, trial % 3 ? 0.f : 1000.f);
    const auto ref = random_logits(rng, n, 3.f, trial % 3 ? 0.f : -500.f);
    const int32_t target = static_cast<int32_t>(rng() % n);
    const TokenScore t = score_token(model.data(), ref.data(), n, target);
    const long double lm = ref_lse(model), lr = ref_lse(ref);
    CHECK_NEAR(t.nll, (double)(lm - model[target]), 1e-9);
    CHECK_NEAR(t.nll_ref, (double)(lr - ref[target]), 1e-9);
    long double kl = 0;
    for (int64_t i = 0; i < n; ++i) kl += std::exp(ref[i] - lr) * ((ref[i] - lr) - (model[i] - lm));
    CHECK_NEAR(t.kl, (double)kl, 1e-9);
    CHECK(t.kl >= -1e-12);
    CHECK_NEAR(t.p_diff, (double)(std::exp(model[target] - lm) - std::exp(ref[target] - lr)), 1e-12);
    CHECK_EQ(t.same_top, first_argmax(model.data(), n) == first_argmax(ref.data(), n));
    // Against itself: KL exactly 0, same top, no Δp.
    const TokenScore self = score_token(model.data(), model.data(), n, target);
    CHECK_EQ(self.kl, 0.0);
    CHECK(self.same_top);
    CHECK_EQ(self.p_diff, 0.0);
  }
  const float tie[] = {1.f, 3.f, 3.f, 2.f};
  CHECK_EQ(first_argmax(tie, 4), (int64_t)1);
  CHECK_EQ(scored_per_chunk(512), (int64_t)255);
  CHECK_EQ(first_scored_row(513), (int64_t)256);
  CHECK_EQ(scored_per_chunk(513), (int64_t)256);
  CHECK_EQ(scored_per_chunk(kMinEvalChunk), (int64_t)1);
}

TEST(eval_statistics_follow_llama_perplexity) {
  // Two rows per add; the targets' log-probabilities are known in closed form.
  std::mt19937 rng(9);
  const int64_t V = 16;
  PerplexityAccumulator plain(false), kl(true);
  std::vector<double> nll, nll_ref, kls, pd;
  int same = 0;
  for (int k = 0; k < 60; ++k) {
    const auto m = random_logits(rng, 2 * V, 2.f, 0.f), r = random_logits(rng, 2 * V, 2.f, 0.f);
    const int32_t tg[2] = {static_cast<int32_t>(rng() % V), static_cast<int32_t>(rng() % V)};
    CHECK(plain.add(m.data(), nullptr, tg, 2, V).is_ok());
    CHECK(kl.add(m.data(), r.data(), tg, 2, V).is_ok());
    for (int i = 0; i < 2; ++i) {
      const TokenScore t = score_token(m.data() + i * V, r.data() + i * V, V, tg[i]);
      nll.push_back(t.nll), nll_ref.push_back(t.nll_ref), kls.push_back(t.kl), pd.push_back(t.p_diff);
      same += t.same_top;
    }
  }
  const double n = (double)nll.size();
  auto mean = [&](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return s / n;
  };
  auto sem = [&](const std::vector<double>& v) {  // standard error of the mean (sample variance / n)
    const double mu = mean(v);
    double s = 0;
    for (double x : v) s += (x - mu) * (x - mu);
    return std::sqrt(s / n / (n - 1));
  };
  const PerplexitySummary p = plain.summary();
  CHECK_EQ(p.count, (int64_t)120);
  CHECK_NEAR(p.ppl, std::exp(mean(nll)), 1e-9);
  CHECK_NEAR(p.ppl_error, std::exp(mean(nll)) * sem(nll), 1e-9);
  CHECK(!p.has_reference && !p.has_quantiles && plain.kl_values().empty());
  const PerplexitySummary s = kl.summary();
  CHECK_NEAR(s.ppl, p.ppl, 1e-12);
  CHECK_NEAR(s.ref_ppl, std::exp(mean(nll_ref)), 1e-9);
  CHECK_NEAR(s.kl.mean, mean(kls), 1e-12);
  CHECK_NEAR(s.kl.error, sem(kls), 1e-9);
  CHECK_NEAR(s.same_top, same / n, 1e-12);
  CHECK_NEAR(s.same_top_error, std::sqrt((same / n) * (1 - same / n) / (n - 1)), 1e-12);
  CHECK_NEAR(s.log_ratio, mean(nll) - mean(nll_ref), 1e-12);
  CHECK_NEAR(s.ppl_ratio, std::exp(mean(nll) - mean(nll_ref)), 1e-9);
  CHECK_NEAR(s.ppl_diff, s.ppl - s.ref_ppl, 1e-12);
  // Var(a - b) / n = the error of the mean of the per-token differences.
  std::vector<double> diff(nll.size());
  for (size_t i = 0; i < nll.size(); ++i) diff[i] = nll[i] - nll_ref[i];
  CHECK_NEAR(s.log_ratio_error, sem(diff), 1e-9);
  CHECK_NEAR(s.p_diff.mean, mean(pd), 1e-12);
  std::vector<double> pd2(pd.size());
  for (size_t i = 0; i < pd.size(); ++i) pd2[i] = pd[i] * pd[i];
  CHECK_NEAR(s.p_diff_rms, std::sqrt(mean(pd2)), 1e-12);
  CHECK(s.has_quantiles);
  CHECK(s.kl_q.min <= s.kl_q.median && s.kl_q.median <= s.kl_q.p99 && s.kl_q.p99 <= s.kl_q.max);
  CHECK_EQ(kl.kl_values().size(), (size_t)120);
  // Running statistics are the summary without quantiles.
  const PerplexitySummary run = kl.running();
  CHECK(!run.has_quantiles);
  CHECK_EQ(run.kl.mean, s.kl.mean);

  // Percentiles as llama-perplexity interpolates them; the median of an even sample is the mean of
  // the middle two.
  const Quantiles q = quantiles({5, 1, 4, 2, 3});
  CHECK_EQ(q.median, 3.0);
  CHECK_EQ(q.min, 1.0);
  CHECK_EQ(q.max, 5.0);
  CHECK_NEAR(q.p25, 2.0, 1e-12);
  CHECK_NEAR(q.p99, 4.96, 1e-9);
  CHECK_NEAR(q.p0_1, 1.004, 1e-9);
  CHECK_EQ(quantiles({4, 1, 3, 2}).median, 2.5);

  // Refusals leave the accumulator unchanged.
  const float row[4] = {0, 1, 2, 3};
  const int32_t bad = 4;
  CHECK(plain.add(row, nullptr, &bad, 1, 4).code == Code::InvalidArgument);
  CHECK(plain.add(row, row, &bad, 1, 4).code == Code::InvalidArgument);
  CHECK(kl.add(row, nullptr, &bad, 1, 4).code == Code::InvalidArgument);
  CHECK_EQ(plain.count(), (int64_t)120);
}

TEST(eval_evaluate_passes_equal_one_full_pass) {
  auto e = load(model_path(1, GgmlType::F32));
  CHECK(e != nullptr);
  if (!e) return;
  const auto toks = tokens_of(40, 3);
  std::vector<float> all;
  CHECK(evaluate(*e, toks, 0, 0, &all).is_ok());
  const size_t V = (size_t)e->config().n_vocab;
  CHECK_EQ(all.size(), toks.size() * V);
  for (int64_t from : {0, 1, 20, 39})
    for (int64_t batch : {0, 1, 7, 20, 64}) {
      std::vector<float> part;
      CHECK(evaluate(*e, toks, from, batch, &part).is_ok());
      CHECK_EQ(part.size(), (toks.size() - (size_t)from) * V);
      CHECK(std::equal(part.begin(), part.end(), all.begin() + (ptrdiff_t)((size_t)from * V)));
    }
  std::vector<float> out;
  CHECK(evaluate(*e, toks, 40, 0, &out).code == Code::InvalidArgument);
  CHECK(evaluate(*e, toks, -1, 0, &out).code == Code::InvalidArgument);
  CHECK(evaluate(*e, toks, 0, -1, &out).code == Code::InvalidArgument);
  e->shutdown();
}

TEST(eval_chunk_scores_the_second_half_on_both_engines) {
  auto a = load(model_path(1, GgmlType::F32));
  auto b = load(model_path(2, GgmlType::F32));
  CHECK(a && b);
  if (!a || !b) return;
  const int64_t n_ctx = 33;  // odd: first = 16, 16 scored tokens
  auto toks = tokens_of((int)n_ctx, 8);
  std::vector<float> la, lb;
  CHECK(evaluate(*a, toks, 0, 0, &la).is_ok());
  CHECK(evaluate(*b, toks, 0, 0, &lb).is_ok());
  const int64_t V = a->config().n_vocab, first = first_scored_row(n_ctx);

  // Against itself (the same engine runs both stages): KL 0, every top-1 agrees.
  auto self = std::make_shared<PerplexityAccumulator>(true);
  CHECK(run_chunk(*a, a, toks, self, 5).is_ok());
  PerplexitySummary s = self->summary();
  CHECK_EQ(s.count, scored_per_chunk(n_ctx));
  CHECK_EQ(s.kl.mean, 0.0);
  CHECK_EQ(s.kl_q.max, 0.0);
  CHECK_EQ(s.same_top, 1.0);
  CHECK_NEAR(s.ppl, s.ref_ppl, 0);

  // Against another model: each token's scores are score_token on the full pass's rows.
  auto ab = std::make_shared<PerplexityAccumulator>(true);
  CHECK(run_chunk(*a, b, toks, ab).is_ok());
  CHECK_EQ(ab->count(), n_ctx - 1 - first);
  double sum_nll = 0;
  for (int64_t j = first; j < n_ctx - 1; ++j) {
    const TokenScore t = score_token(la.data() + j * V, lb.data() + j * V, V, toks[(size_t)j + 1]);
    const size_t k = (size_t)(j - first);
    CHECK_EQ(ab->nll_values()[k], (float)t.nll);
    CHECK_EQ(ab->kl_values()[k], (float)t.kl);
    CHECK(t.kl > 0);
    sum_nll += t.nll;
  }
  CHECK_NEAR(ab->running().ppl, std::exp(sum_nll / (double)ab->count()), 1e-9);
  // Without a reference: the same NLLs.
  auto plain = std::make_shared<PerplexityAccumulator>(false);
  CHECK(run_chunk(*a, nullptr, toks, plain).is_ok());
  CHECK(plain->nll_values() == ab->nll_values());

  // Refusals before anything is queued.
  CHECK(run_chunk(*a, nullptr, {1, 2}, plain).code == Code::InvalidArgument);
  CHECK(run_chunk(*a, b, toks, plain).code == Code::InvalidArgument);  // accumulator without a reference
  toks[3] = 100000;
  CHECK(run_chunk(*a, nullptr, toks, plain).code == Code::InvalidArgument);
  // A disposed reference: the error comes through on_done after the model's stage.
  b->shutdown();
  toks[3] = 5;
  CHECK(run_chunk(*a, b, toks, ab).code == Code::Disposed);
  CHECK_EQ(ab->count(), n_ctx - 1 - first);
  a->shutdown();
  CHECK(run_chunk(*a, nullptr, toks, plain).code == Code::Disposed);
}

TEST(eval_embedding_pools_the_reference_hidden_states) {
  const std::string& path = model_path(1, GgmlType::F32);
  auto e = load(path);
  auto m = llmserve_test::load_model(path);
  CHECK(e && m);
  if (!e || !m) return;
  const auto toks = tokens_of(24, 5);
  const int64_t n = (int64_t)toks.size(), E = e->config().n_embd;
  const auto ref = forward_ref_hidden(*m, toks);  // [n][E], double, no shared kernels
  CHECK_EQ((int64_t)ref.size(), n);
  std::vector<float> rows;
  CHECK(evaluate(*e, toks, 0, 0, &rows, true).is_ok());
  CHECK_EQ((int64_t)rows.size(), n * E);
  // f32 weights; the engine's f16 attention path (ggml's flash attention) stays within ~1e-3 of
  // the double reference on these O(1) values.
  const double tol = 5e-3;
  double max_diff = 0;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < E; ++i) max_diff = std::max(max_diff, std::fabs(rows[t * E + i] - ref[t][i]));
  CHECK(max_diff < tol);
  // The last-token pass (logits_from = n - 1) gives the same bits as that row of the full pass.
  std::vector<float> last;
  CHECK(evaluate(*e, toks, n - 1, 0, &last, true).is_ok());
  CHECK(std::equal(last.begin(), last.end(), rows.begin() + (n - 1) * E));

  auto pooled_ref = [&](Pooling p, bool normalize) {
    std::vector<double> v((size_t)E, 0.0);
    if (p == Pooling::Mean) {
      for (const auto& r : ref)
        for (int64_t i = 0; i < E; ++i) v[i] += r[i] / (double)n;
    } else {
      v = p == Pooling::Last ? ref.back() : ref.front();
    }
    double ss = 0;
    for (double x : v) ss += x * x;
    if (normalize)
      for (double& x : v) x /= std::sqrt(ss);
    return v;
  };
  for (Pooling p : {Pooling::Mean, Pooling::Last, Pooling::Cls})
    for (bool normalize : {false, true}) {
      const int64_t first = pooling_first_row(p, n);
      std::vector<float> out;
      CHECK(pool_hidden(p, rows.data() + first * E, n - first, E, normalize, &out).is_ok());
      const auto want = pooled_ref(p, normalize);
      CHECK_EQ((int64_t)out.size(), E);
      double d = 0;
      for (int64_t i = 0; i < E; ++i) d = std::max(d, std::fabs(out[i] - want[i]));
      if (d >= tol) std::fprintf(stderr, "  pooling %d normalize %d: max diff %g\n", (int)p, (int)normalize, d);
      CHECK(d < tol);
    }
  // Mean and last differ here (a mutation that pools the wrong rows cannot pass both).
  CHECK(std::fabs(pooled_ref(Pooling::Mean, false)[0] - pooled_ref(Pooling::Last, false)[0]) > 10 * tol);
  std::vector<float> out;
  CHECK(pool_hidden(Pooling::Last, rows.data(), 2, E, false, &out).code == Code::InvalidArgument);
  CHECK(pool_hidden(Pooling::Mean, rows.data(), 0, E, false, &out).code == Code::InvalidArgument);
  e->shutdown();
}
