// Packed evaluation (embeddings and evaluations that arrive together): Executor::evaluate_batch
// packs sequences into shared forward passes of the private evaluation cache, and each row must be
// the same bits as evaluate() of that sequence alone, whatever the pass split (token budget, cache
// capacity, a sequence longer than the budget). Engine::submit_evals queues requests together and
// the engine runs the packable ones (whole sequence, last or every row) in one pass, the others
// alone; eval_sequences / eval_passes count them.
#include <chrono>
#include <cstring>
#include <future>
#include <memory>
#include <vector>

#include "backend/executor.h"
#include "model_test_util.h"
#include "sched/engine.h"
#include "testing.h"

using namespace llmserve;
using namespace llmserve_test;

namespace {

const std::string& batch_model(GgmlType type) {
  static std::string p[2];
  std::string& s = p[type == GgmlType::F32 ? 0 : 1];
  if (s.empty()) {
    SynthOptions o;
    o.dim = 64;
    o.layers = 2;
    o.heads = 4;
    o.kv_heads = 2;
    o.ffn = 96;
    o.vocab_size = 300;
    o.context = 256;
    o.type = type;
    o.seed = 11;
    s = synth_to(o, std::string("eval_batch_") + type_traits(type).name + ".gguf");
  }
  return s;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Lengths chosen so the block runs (16 tokens a block) overflow a 64-token cache in several ways.
const int64_t kLens[] = {1, 5, 17, 20, 33, 64, 2};

void check_packed_equals_alone(GgmlType type) {
  ExecutorOptions eo;
  eo.threads = 2;
  eo.n_ctx = 64;  // 4 blocks of 16: the cache capacity cuts passes too
  std::unique_ptr<Executor> ex;
  Status st = load_executor(batch_model(type), eo, {}, &ex);
  CHECK(st.is_ok());
  if (!ex) return;
  const int64_t n_vocab = ex->config().n_vocab;
  std::vector<std::vector<int32_t>> toks;
  std::vector<Executor::EvalSeq> seqs;
  for (size_t i = 0; i < std::size(kLens); ++i) {
    toks.push_back(test_tokens(kLens[i], n_vocab));
    for (auto& t : toks.back()) t = (t + (int32_t)i * 7) % (int32_t)n_vocab;
  }
  for (size_t i = 0; i < toks.size(); ++i) seqs.push_back({toks[i].data(), (int64_t)toks[i].size(), i % 2 == 0});
  for (bool hidden : {true, false}) {
    std::vector<float> alone, part;
    for (auto& s : seqs) {
      CHECK(ex->evaluate(s.tokens, s.n, s.all_rows ? 0 : s.n - 1, 0, &part, hidden, 0).is_ok());
      alone.insert(alone.end(), part.begin(), part.end());
    }
    // Budgets: everything the cache holds (passes cut by blocks: {1,5,17}, {20}, {33}, {64}, {2}),
    // 8 tokens (a pass per sequence but the first two), and 1 (one sequence a pass).
    const int64_t budgets[] = {1000, 8, 1};
    const int64_t want_passes[] = {5, 6, 7};
    for (size_t b = 0; b < std::size(budgets); ++b) {
      std::vector<float> rows;
      int64_t passes = -1;
      CHECK(ex->evaluate_batch(seqs.data(), (int64_t)seqs.size(), hidden, budgets[b], &rows, &passes).is_ok());
      CHECK(same_bits(rows, alone));
      CHECK_EQ(passes, want_passes[b]);
    }
  }
  // A sequence longer than the cache is refused before any pass.
  std::vector<int32_t> too_long = test_tokens(65, n_vocab);
  Executor::EvalSeq bad{too_long.data(), 65, false};
  std::vector<float> rows;
  int64_t passes = 0;
  CHECK(ex->evaluate_batch(&bad, 1, true, 1000, &rows, &passes).code == Code::InvalidArgument);
  CHECK_EQ(passes, 0);
}

struct Waiter {
  std::promise<std::pair<Status, std::vector<float>>> p;
  std::future<std::pair<Status, std::vector<float>>> f = p.get_future();
};

std::shared_ptr<EvalRequest> request(const std::vector<int32_t>& t, bool hidden, bool all_rows, int64_t n_batch,
                                     std::shared_ptr<Waiter> w) {
  auto r = std::make_shared<EvalRequest>();
  r->tokens = t;
  r->hidden = hidden;
  r->logits_from = all_rows ? 0 : (int64_t)t.size() - 1;
  r->n_batch = n_batch;
  r->on_done = [w](Status s, std::vector<float>&& rows) { w->p.set_value({s, std::move(rows)}); };
  return r;
}

bool wait_ok(Waiter& w, std::vector<float>* rows) {
  if (w.f.wait_for(std::chrono::seconds(60)) != std::future_status::ready) return false;
  auto [s, r] = w.f.get();
  *rows = std::move(r);
  return s.is_ok();
}

}  // namespace

TEST(eval_batch_packed_rows_equal_each_sequence_alone_f32) { check_packed_equals_alone(GgmlType::F32); }

TEST(eval_batch_packed_rows_equal_each_sequence_alone_q8_0) { check_packed_equals_alone(GgmlType::Q8_0); }

TEST(eval_batch_engine_packs_requests_queued_together) {
  EngineOptions o;
  o.threads = 2;
  o.n_ctx = 256;  // 16 blocks: the cache never cuts the 10-request pass
  o.max_batch_tokens = 64;
  std::unique_ptr<Engine> e;
  CHECK(Engine::load(batch_model(GgmlType::F32), o, {}, &e).is_ok());
  if (!e) return;
  const int64_t n_vocab = e->config().n_vocab;
  // Ten embedding-style requests of 1..10 tokens (55 tokens: one pass of 64), two logits requests
  // (a kind of their own: a second pass), one with n_batch (not packable: alone).
  std::vector<std::vector<int32_t>> toks;
  for (int i = 1; i <= 13; ++i) {
    toks.push_back(test_tokens(i <= 10 ? i : 6, n_vocab));
    for (auto& t : toks.back()) t = (t + i * 13) % (int32_t)n_vocab;
  }
  auto kind = [](int i) { return i < 10 ? 0 : i < 12 ? 1 : 2; };  // 0 hidden, 1 logits, 2 n_batch
  // Each request alone first, one at a time: the reference rows.
  std::vector<std::vector<float>> alone(toks.size());
  const EngineStats before_alone = e->stats();
  for (size_t i = 0; i < toks.size(); ++i) {
    auto w = std::make_shared<Waiter>();
    const int k = kind((int)i);
    CHECK(e->submit_eval(request(toks[i], k == 0, i % 3 == 0, k == 2 ? 2 : 0, w)).is_ok());
    CHECK(wait_ok(*w, &alone[i]));
  }
  const EngineStats mid = e->stats();
  CHECK_EQ(mid.eval_sequences - before_alone.eval_sequences, 13);
  CHECK_EQ(mid.eval_passes - before_alone.eval_passes, 13);
  // Then all together.
  std::vector<std::shared_ptr<Waiter>> ws;
  std::vector<std::shared_ptr<EvalRequest>> reqs;
  for (size_t i = 0; i < toks.size(); ++i) {
    ws.push_back(std::make_shared<Waiter>());
    const int k = kind((int)i);
    reqs.push_back(request(toks[i], k == 0, i % 3 == 0, k == 2 ? 2 : 0, ws.back()));
  }
  CHECK(e->submit_evals(std::move(reqs)).is_ok());
  for (size_t i = 0; i < toks.size(); ++i) {
    std::vector<float> rows;
    CHECK(wait_ok(*ws[i], &rows));
    CHECK(same_bits(rows, alone[i]));
  }
  const EngineStats end = e->stats();
  CHECK_EQ(end.eval_sequences - mid.eval_sequences, 13);
  CHECK_EQ(end.eval_passes - mid.eval_passes, 3);
  // All or none: one bad request refuses the whole submission.
  std::vector<std::shared_ptr<EvalRequest>> bad{
      request(toks[0], true, false, 0, std::make_shared<Waiter>()),
      request({(int32_t)n_vocab}, true, false, 0, std::make_shared<Waiter>())};
  CHECK(e->submit_evals(std::move(bad)).code == Code::InvalidArgument);
  CHECK_EQ(e->stats().eval_sequences, end.eval_sequences);
}
