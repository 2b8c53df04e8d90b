// The scheduler (sched/Engine) driven through the executor seam by a fake executor
// (fake_executor.h): admission order and limits, chunked-prefill budgets, preemption, prefix
// reuse and session eviction, each checked on the steps the scheduler actually ran and on the
// tokens every request got (equal to the fake model's continuation of its prompt alone, which a
// wrong block table cannot produce). No weights, no math: these run in milliseconds.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "engine_test_util.h"
#include "fake_executor.h"
#include "sched/engine.h"
#include "testing.h"

using namespace llmserve;
using namespace llmserve_test;

namespace {

constexpr int64_t kVocab = 97;

struct Fixture {
  FakeExecutor* fake = nullptr;  // owned by the engine
  std::unique_ptr<Engine> engine;
};

Fixture make(int64_t n_blocks, int32_t block_size, EngineOptions o, bool gate_closed = false) {
  Fixture f;
  auto x = std::make_unique<FakeExecutor>(n_blocks, block_size, kVocab);
  f.fake = x.get();
  if (gate_closed) f.fake->close_gate();
  o.n_ctx = 4096;
  o.block_size = block_size;
  Status st = Engine::create(std::move(x), o, &f.engine);
  CHECK(st.is_ok());
  return f;
}

std::shared_ptr<Run> submit(Engine& e, const std::vector<int32_t>& prompt, int64_t max_tokens, int32_t priority = 0,
                            int64_t session = 0, bool pin = false) {
  auto req = greedy_request(prompt, max_tokens);  // greedy: the fake's one-hot logits decide
  req->priority = priority;
  req->session = session;
  req->pin = pin;
  Status st;
  auto run = submit_recorded(e, req, &st);
  CHECK(st.is_ok());
  return run;
}

// A prompt whose first token (its id in the step records) is `id`; the rest pseudo-random.
std::vector<int32_t> prompt(int32_t id, int n, uint32_t seed) {
  std::vector<int32_t> p = {id};
  uint32_t s = seed * 2654435761u + 7;
  for (int i = 1; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    p.push_back(3 + static_cast<int32_t>((s >> 8) % (kVocab - 3)));
  }
  return p;
}

// Every run finished normally with the fake model's continuation of its own prompt.
void check_runs(const std::vector<std::shared_ptr<Run>>& runs, const std::vector<std::vector<int32_t>>& prompts,
                const std::vector<int64_t>& max_tokens) {
  const auto until = deadline();
  for (size_t i = 0; i < runs.size(); ++i) {
    CHECK(wait_done(*runs[i], until));
    if (!runs[i]->error.is_ok()) std::fprintf(stderr, "  request %zu: %s\n", i, runs[i]->error.message.c_str());
    CHECK(runs[i]->error.is_ok());
    CHECK(runs[i]->finish == FinishReason::Length);
    CHECK(runs[i]->tokens == expected(prompts[i], max_tokens[i], kVocab));
  }
}

// The step index at which each sequence (by id) first ran.
std::map<int32_t, size_t> first_step(const std::vector<StepRecord>& steps) {
  std::map<int32_t, size_t> first;
  for (size_t i = 0; i < steps.size(); ++i)
    for (const SeqRecord& r : steps[i]) first.emplace(r.id, i);
  return first;
}

}  // namespace

TEST(sched_admission_order_and_max_sequences) {
  // Queued while the first step is held: a low-priority request first, then three normal ones,
  // then an urgent one. max_sequences 2: at most two sequences per step; admission takes the
  // urgent one first, then the rest in arrival order, the low-priority one last.
  EngineOptions o;
  o.max_sequences = 2;
  o.max_batch_tokens = 64;
  o.prefix_cache = false;
  Fixture f = make(64, 4, o, /*gate_closed=*/true);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int64_t> max_tokens;
  std::vector<std::shared_ptr<Run>> runs;
  auto add = [&](int32_t id, int32_t priority) {
    prompts.push_back(prompt(id, 6, id));
    max_tokens.push_back(3);
    runs.push_back(submit(*f.engine, prompts.back(), 3, priority));
  };
  add(10, -1);  // low
  add(11, 0);
  add(12, 0);
  add(13, 0);
  add(14, 5);  // urgent
  f.fake->open_gate();
  check_runs(runs, prompts, max_tokens);
  const auto steps = f.fake->steps();
  size_t most = 0;
  for (const StepRecord& s : steps) most = std::max(most, s.size());
  CHECK_EQ(most, size_t(2));
  // The first step may have started with whatever arrived before the gate closed on it (one or
  // two requests, in rank order among themselves); every admission after that follows rank order.
  const auto first = first_step(steps);
  CHECK(first.size() == 5);
  if (first.size() != 5) return;
  std::vector<int32_t> later;
  for (int32_t id : {14, 11, 12, 13, 10})
    if (first.at(id) > 0) later.push_back(id);
  CHECK(later.size() >= 3);
  for (size_t i = 0; i + 1 < later.size(); ++i) CHECK(first.at(later[i]) <= first.at(later[i + 1]));
  if (first.at(10) > 0) CHECK(first.at(10) > first.at(14));
}

TEST(sched_chunked_prefill_respects_both_budgets) {
  // A decodes; B's 90-token prompt arrives meanwhile and is fed at most prefill_chunk (8) prompt
  // tokens per step beside A's decode token, every step within max_batch_tokens (24). Alone, a
  // prompt takes the whole budget per step. The fake holds step 3 (A's first decode step: its
  // prompt runs in steps 0-2) until B is queued, so B always arrives while A generates.
  EngineOptions o;
  o.max_batch_tokens = 24;
  o.prefill_chunk = 8;
  Fixture f = make(256, 4, o);
  f.fake->pause_at(3);
  const auto until = deadline();
  std::vector<std::vector<int32_t>> prompts = {prompt(20, 50, 1), prompt(21, 90, 2)};
  std::vector<int64_t> max_tokens = {60, 3};
  auto ra = submit(*f.engine, prompts[0], max_tokens[0]);
  CHECK(wait_tokens(*ra, 1, until));
  auto rb = submit(*f.engine, prompts[1], max_tokens[1]);
  f.fake->open_gate();
  check_runs({ra, rb}, prompts, max_tokens);
  const auto steps = f.fake->steps();
  // A alone: its 50 prompt tokens in chunks of the whole budget (24, 24, 2).
  CHECK(steps.size() >= 3);
  if (steps.size() < 3) return;
  CHECK(steps[0].size() == 1 && steps[0][0].n_tokens == 24);
  CHECK(steps[1].size() == 1 && steps[1][0].n_tokens == 24 && steps[1][0].pos0 == 24);
  int b_steps = 0, b_prompt = 0;
  for (const StepRecord& s : steps) {
    int64_t total = 0, a_decode = 0, b_chunk = -1;
    for (const SeqRecord& r : s) {
      total += r.n_tokens;
      if (r.id == 20 && r.pos0 >= 50) a_decode = r.n_tokens;
      if (r.id == 21 && r.pos0 < 90) b_chunk = r.n_tokens, b_prompt += static_cast<int>(r.n_tokens);
    }
    CHECK(total <= 24);
    if (b_chunk >= 0 && a_decode == 1) {
      ++b_steps;
      CHECK(b_chunk <= 8);  // the prefill cap while A generates
    }
  }
  CHECK_EQ(b_prompt, 90);
  CHECK(b_steps >= 90 / 8);  // B really was fed beside A's decode tokens, in capped chunks
}

TEST(sched_preemption_recomputes_and_every_request_finishes) {
  // Five requests of 12 + 24 tokens in a pool of 20 blocks of 4 (80 tokens): they cannot all hold
  // their KV at once, so the scheduler preempts (dropping KV) and recomputes; each still gets its
  // own continuation and every block is free at the end.
  EngineOptions o;
  o.max_batch_tokens = 32;
  o.prefix_cache = false;
  Fixture f = make(20, 4, o);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int64_t> max_tokens;
  std::vector<std::shared_ptr<Run>> runs;
  for (int i = 0; i < 5; ++i) {
    prompts.push_back(prompt(30 + i, 12, 40 + i));
    max_tokens.push_back(24);
    runs.push_back(submit(*f.engine, prompts.back(), 24));
  }
  check_runs(runs, prompts, max_tokens);
  const EngineStats st = f.engine->stats();
  CHECK(st.preemptions > 0);
  CHECK_EQ(st.errors, int64_t(0));
  CHECK_EQ(st.blocks_used, int64_t(0));
  // A preempted sequence is recomputed from position 0.
  const auto steps = f.fake->steps();
  std::map<int32_t, int> starts;
  for (const StepRecord& s : steps)
    for (const SeqRecord& r : s) starts[r.id] += r.pos0 == 0;
  int restarted = 0;
  for (auto& [id, n] : starts) restarted += n > 1;
  CHECK(restarted > 0);
}

TEST(sched_prefix_reuse_shares_blocks_and_skips_their_tokens) {
  // A's prompt (41 tokens, blocks of 4) is computed and finishes; B extends A's first 40 tokens:
  // B starts at position 40 on A's ten registered blocks (the very same block ids), and still gets
  // its own continuation, which it could not if a shared block held other tokens.
  EngineOptions o;
  o.max_batch_tokens = 64;
  Fixture f = make(64, 4, o);
  const auto until = deadline();
  std::vector<int32_t> a = prompt(40, 41, 5);
  std::vector<int32_t> b(a.begin(), a.begin() + 40);
  for (int32_t t : prompt(41, 7, 6)) b.push_back(t);
  auto ra = submit(*f.engine, a, 2);
  CHECK(wait_done(*ra, until));
  const EngineStats before = f.engine->stats();
  auto rb = submit(*f.engine, b, 5);
  CHECK(wait_done(*rb, until));
  CHECK(ra->tokens == expected(a, 2, kVocab));
  CHECK(rb->tokens == expected(b, 5, kVocab));
  CHECK_EQ(rb->tm.reused_tokens, int64_t(40));
  const EngineStats after = f.engine->stats();
  CHECK_EQ(after.prefix_hits - before.prefix_hits, int64_t(10));
  const auto steps = f.fake->steps();
  int32_t a_block0 = -1;
  const SeqRecord* b_first = nullptr;
  for (const StepRecord& s : steps)
    for (const SeqRecord& r : s) {
      if (r.id == a[0] && r.pos0 == 0 && a_block0 < 0) a_block0 = r.first_block;
      if (r.pos0 >= 40 && r.n_tokens > 1 && !b_first) b_first = &r;
    }
  CHECK(b_first != nullptr);
  if (!b_first) return;
  CHECK_EQ(b_first->pos0, int64_t(40));
  CHECK_EQ(b_first->n_tokens, int64_t(7));
  CHECK_EQ(b_first->first_block, a_block0);
}

TEST(sched_session_eviction_frees_lru_unpinned_sessions_first) {
  // Three sessions keep their KV between turns, oldest first: S1 pinned, S2 and S3 unpinned. A
  // large request then needs the memory of one: the least recently used unpinned one (S2) is
  // evicted, so its next turn recomputes while S1's and S3's next turns reuse their KV.
  EngineOptions o;
  o.max_batch_tokens = 64;
  o.prefix_cache = false;      // reuse only through sessions
  Fixture f = make(24, 4, o);  // 96 tokens
  const auto until = deadline();
  std::vector<std::vector<int32_t>> p = {prompt(50, 20, 7), prompt(51, 20, 8), prompt(52, 20, 9)};
  std::vector<std::shared_ptr<Run>> first;
  for (int i = 0; i < 3; ++i) {
    first.push_back(submit(*f.engine, p[i], 3, 0, /*session=*/i + 1, /*pin=*/i == 0));
    CHECK(wait_done(*first.back(), until));
  }
  CHECK_EQ(f.engine->stats().sessions, int64_t(3));     // 3 x 6 blocks held, 6 free
  const std::vector<int32_t> big = prompt(53, 40, 10);  // 44 tokens: 11 blocks
  auto rb = submit(*f.engine, big, 4);
  CHECK(wait_done(*rb, until));
  CHECK(rb->error.is_ok());
  CHECK(rb->tokens == expected(big, 4, kVocab));
  const EngineStats mid = f.engine->stats();
  CHECK_EQ(mid.session_evictions, int64_t(1));
  CHECK_EQ(mid.sessions, int64_t(2));
  // Next turns: each extends its conversation (prompt + its answer + a new user token).
  std::vector<std::shared_ptr<Run>> second;
  std::vector<std::vector<int32_t>> turn;
  for (int i = 0; i < 3; ++i) {
    std::vector<int32_t> t = p[i];
    t.insert(t.end(), first[i]->tokens.begin(), first[i]->tokens.end());
    t.push_back(5);
    turn.push_back(t);
    second.push_back(submit(*f.engine, t, 2, 0, i + 1, i == 0));
    CHECK(wait_done(*second.back(), until));
    CHECK(second.back()->tokens == expected(t, 2, kVocab));
  }
  CHECK(second[0]->tm.reused_tokens >= int64_t(p[0].size()));  // pinned: kept
  CHECK_EQ(second[1]->tm.reused_tokens, int64_t(0));           // least recently used: evicted
  CHECK(second[2]->tm.reused_tokens >= int64_t(p[2].size()));  // most recent: kept
}

TEST(sched_prefix_reuse_copies_a_kept_partial_block) {
  // A pinned prefix of 22 tokens (blocks of 4: five full blocks and 2 slots of a sixth) is kept by
  // a prefill-only request. B extends it: B shares the five full blocks (prefix cache) and gets a
  // copy of the partial block (copy-on-write), so it starts at position 22 and only computes its
  // own 6 tokens; a short or wrong copy would show in its tokens (the fake reads every slot back).
  EngineOptions o;
  o.max_batch_tokens = 64;
  Fixture f = make(64, 4, o);
  const auto until = deadline();
  const std::vector<int32_t> prefix = prompt(60, 22, 11);
  auto rp = submit(*f.engine, prefix, 0, 0, /*session=*/9, /*pin=*/true);
  CHECK(wait_done(*rp, until));
  CHECK(rp->tokens.empty());
  std::vector<int32_t> b = prefix;
  for (int32_t t : prompt(61, 6, 12)) b.push_back(t);
  auto rb = submit(*f.engine, b, 4);
  CHECK(wait_done(*rb, until));
  CHECK(rb->error.is_ok());
  CHECK(rb->tokens == expected(b, 4, kVocab));
  CHECK_EQ(rb->tm.reused_tokens, int64_t(22));
  const auto steps = f.fake->steps();
  CHECK(!steps.empty());
  if (steps.empty()) return;
  // The step that started B: its only record begins at position 22 with B's 6 new tokens.
  bool found = false;
  for (const StepRecord& s : steps)
    for (const SeqRecord& r : s)
      if (r.id == 60 && r.pos0 == 22) found = found || r.n_tokens == 6;
  CHECK(found);
}
