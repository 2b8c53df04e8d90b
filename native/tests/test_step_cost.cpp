// The dynamic batching policy (EngineOptions::target_step_ms): StepCostModel recovers a linear
// step cost from observations and turns a latency target into a prompt-token budget; driven
// through the scheduler with a fake executor whose steps advance a fake clock by a known cost, the
// steps that mix decode tokens and a long prompt stay within the target once the model has seen
// enough steps (and took a fixed prefill_chunk before that), while every request still gets its
// own continuation.
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "engine_test_util.h"
#include "fake_executor.h"
#include "sched/engine.h"
#include "sched/step_cost.h"
#include "testing.h"

using namespace llmserve;
using namespace llmserve_test;

namespace {

constexpr int64_t kVocab = 97;

// The modelled cost of a step: 1 ms + 0.0625 ms a token + 0.5 ms a sampled row.
double cost(int64_t tokens, int64_t rows) { return 1.0 + 0.0625 * (double)tokens + 0.5 * (double)rows; }

std::vector<int32_t> prompt(int32_t id, int n) {
  std::vector<int32_t> p = {id};
  uint32_t s = (uint32_t)id * 2654435761u + 7;
  for (int i = 1; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    p.push_back(3 + static_cast<int32_t>((s >> 8) % (kVocab - 3)));
  }
  return p;
}

}  // namespace

TEST(step_cost_recovers_a_linear_cost_and_budgets_prompt_tokens) {
  StepCostModel m;
  // Decode-only steps (prompt tokens always 0) cannot tell a token's cost from a row's.
  for (int i = 0; i < 20; ++i) m.observe(4 + i % 3, 4 + i % 3, cost(4 + i % 3, 4 + i % 3));
  CHECK(!m.ready());
  // Steps with prompt chunks of several sizes.
  const int64_t chunks[] = {0, 16, 64, 200, 0, 128, 32, 0};
  for (int i = 0; i < 40; ++i) {
    const int64_t rows = 2 + i % 5, tokens = rows + chunks[i % 8];
    m.observe(tokens, rows, cost(tokens, rows));
  }
  CHECK(m.ready());
  CHECK_NEAR(m.a(), 1.0, 1e-3);
  CHECK_NEAR(m.b(), 0.0625, 1e-5);
  CHECK_NEAR(m.c(), 0.5, 1e-3);
  // 4 decode tokens and 5 rows cost 1 + 0.25 + 2.5 = 3.75 ms: 10 ms leaves 6.25 ms, 100 tokens.
  const int64_t n = m.prefill_budget(10.0, 4, 16, 512);
  CHECK(n >= 99 && n <= 100);
  CHECK_EQ(m.prefill_budget(3.0, 4, 16, 512), 16);      // decode alone is over: one block still goes
  CHECK_EQ(m.prefill_budget(1000.0, 4, 16, 512), 512);  // capped by the step budget
  // Bad observations are ignored.
  m.observe(0, 0, 5.0);
  m.observe(10, 2, -1.0);
  CHECK_NEAR(m.b(), 0.0625, 1e-5);
}

TEST(sched_dynamic_prefill_keeps_mixed_steps_within_the_target) {
  const double target = 12.0;
  for (const bool dynamic : {true, false}) {
    auto clock = std::make_shared<double>(0.0);
    auto x = std::make_unique<FakeExecutor>(1024, 16, kVocab);
    FakeExecutor* fake = x.get();
    // The decoders' steps take microseconds: their 8th step waits (up to 10 s) until the long
    // prompts are queued, and they are queued only once it waits, so all three arrive together
    // while the four are generating, after the cost model has seen those steps.
    auto prompts_queued = std::make_shared<std::atomic<bool>>(false);
    auto holding = std::make_shared<std::atomic<bool>>(false);
    auto n_forward = std::make_shared<int64_t>(0);
    fake->on_forward = [clock, prompts_queued, holding, n_forward](int64_t tokens, int64_t rows) {
      *clock += cost(tokens, rows);
      if (++*n_forward != 8) return;
      holding->store(true);
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!prompts_queued->load() && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    };
    EngineOptions o;
    o.n_ctx = 4096;
    o.block_size = 16;
    o.max_batch_tokens = 512;
    o.prefill_chunk = 256;  // the fixed cap: 4 decode tokens + 256 prompt tokens cost 19.75 ms
    o.prefix_cache = false;
    o.target_step_ms = dynamic ? target : 0;
    o.step_clock = [clock] { return *clock; };
    std::unique_ptr<Engine> e;
    CHECK(Engine::create(std::move(x), o, &e).is_ok());
    if (!e) return;
    // Four sequences generating for a while, then three long prompts arrive.
    std::vector<std::vector<int32_t>> prompts;
    std::vector<int64_t> max_tokens;
    std::vector<std::shared_ptr<Run>> runs;
    Status st;
    for (int32_t id = 10; id < 14; ++id) {
      prompts.push_back(prompt(id, 4));
      max_tokens.push_back(120);
      runs.push_back(submit_recorded(*e, greedy_request(prompts.back(), 120), &st));
    }
    for (auto& r : runs) CHECK(wait_tokens(*r, 2, deadline()));
    for (const auto until = deadline(10); !holding->load() && Clock::now() < until;)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    for (int32_t id = 20; id < 23; ++id) {
      prompts.push_back(prompt(id, 900));
      max_tokens.push_back(2);
      runs.push_back(submit_recorded(*e, greedy_request(prompts.back(), 2), &st));
    }
    prompts_queued->store(true);
    for (size_t i = 0; i < runs.size(); ++i) {
      CHECK(wait_done(*runs[i], deadline()));
      CHECK(runs[i]->tokens == expected(prompts[i], max_tokens[i], kVocab));
    }
    // Steps that mixed decode tokens with a prompt chunk: their modelled cost.
    int64_t mixed = 0, over = 0, largest_chunk = 0;
    for (const StepRecord& step : fake->steps()) {
      int64_t tokens = 0, rows = 0, chunk = 0, decoding = 0;
      for (const SeqRecord& r : step) {
        tokens += r.n_tokens;
        rows += r.out ? 1 : 0;
        if (r.n_tokens > 1) chunk += r.n_tokens;
        else decoding += 1;
      }
      if (chunk == 0 || decoding == 0) continue;
      ++mixed;
      largest_chunk = std::max(largest_chunk, chunk);
      if (cost(tokens, rows) > target + 1e-9) ++over;
    }
    const EngineStats s = e->stats();
    if (dynamic) {
      // Before the model is ready the fixed 256-token chunk runs (one or two steps); after, every
      // mixed step fits the target, with chunks near the ~130 tokens it leaves room for.
      CHECK(over <= 2);
      CHECK(mixed >= 10);
      CHECK(s.dynamic_steps >= 10);
      CHECK_NEAR(s.step_ms_per_token, 0.0625, 1e-3);
      int64_t near_budget = 0;
      for (const StepRecord& step : fake->steps()) {
        int64_t chunk = 0;
        for (const SeqRecord& r : step) chunk += r.n_tokens > 1 ? r.n_tokens : 0;
        if (chunk >= 100 && chunk <= 140) ++near_budget;
      }
      CHECK(near_budget >= 5);
    } else {
      // The fixed policy: every mixed step takes the 256-token chunk and runs over the target.
      CHECK(mixed >= 5);
      CHECK_EQ(over, mixed);
      CHECK_EQ(largest_chunk, 256);
      CHECK_EQ(s.dynamic_steps, 0);
    }
  }
}
