// Fixed-length batching (sched/fixed_batch.cpp) on the fake executor: a batch is formed once, its
// prompts run whole in one step beside pad sequences that fill each to the batch's padded length,
// nothing joins it, and each member that finished early costs one pad token per step until the
// batch ends. Pad sequences show up in the step records with id 0 (the pad token at position 0;
// every test prompt starts with an id >= 10). Every request still gets exactly the fake model's
// continuation of its prompt alone.
#include <algorithm>
#include <memory>
#include <vector>

#include "engine_test_util.h"
#include "fake_executor.h"
#include "sched/engine.h"
#include "testing.h"

using namespace llmserve;
using namespace llmserve_test;

namespace {

constexpr int64_t kVocab = 97;

std::vector<int32_t> fixed_prompt(int32_t id, int n) {
  std::vector<int32_t> p = {id};
  for (int i = 1; i < n; ++i) p.push_back(3 + (id * 7 + i * 13) % (int32_t)(kVocab - 3));
  return p;
}

struct Scenario {
  std::vector<StepRecord> steps;
  EngineStats stats;
  bool ok = true;
};

// A (6 tokens, 10 to generate) runs alone; while it runs, B (5 tokens, 2 to generate), C (9, 4)
// and D (3, 3) arrive: they wait for A's batch to end (fixed batching admits nothing into a
// running batch) and then form one batch of three.
Scenario run_scenario(int64_t n_blocks, int64_t bucket) {
  EngineOptions o;
  o.fixed_batching = true;
  o.fixed_bucket = bucket;
  o.max_sequences = 3;
  o.max_batch_tokens = 8;  // below the batch's 17 prompt tokens: prompts still run whole
  o.prefix_cache = false;
  o.n_ctx = 4096;
  o.block_size = 4;
  auto x = std::make_unique<FakeExecutor>(n_blocks, 4, kVocab);
  FakeExecutor* fake = x.get();
  std::unique_ptr<Engine> engine;
  CHECK(Engine::create(std::move(x), o, &engine).is_ok());
  fake->pause_at(2);  // A's third step waits until B, C and D are queued
  const auto until = deadline();
  Status st;
  const std::vector<std::vector<int32_t>> prompts = {fixed_prompt(10, 6), fixed_prompt(11, 5), fixed_prompt(12, 9),
                                                     fixed_prompt(13, 3)};
  const std::vector<int64_t> max_tokens = {10, 2, 4, 3};
  std::vector<std::shared_ptr<Run>> runs;
  runs.push_back(submit_recorded(*engine, greedy_request(prompts[0], max_tokens[0]), &st));
  CHECK(wait_tokens(*runs[0], 2, until));
  for (size_t i = 1; i < prompts.size(); ++i) {
    runs.push_back(submit_recorded(*engine, greedy_request(prompts[i], max_tokens[i]), &st));
    CHECK(st.is_ok());
  }
  fake->open_gate();
  Scenario sc;
  for (size_t i = 0; i < runs.size(); ++i) {
    sc.ok = wait_done(*runs[i], until) && sc.ok;
    CHECK(runs[i]->error.is_ok());
    CHECK(runs[i]->finish == FinishReason::Length);
    // The batch (and its padding) never changes a request's tokens.
    CHECK(runs[i]->tokens == expected(prompts[i], max_tokens[i], kVocab));
  }
  sc.steps = fake->steps();
  sc.stats = engine->stats();
  return sc;
}

// The records of `step` with this id (pads: id 0), sorted by pos0.
std::vector<SeqRecord> of(const StepRecord& step, int32_t id) {
  std::vector<SeqRecord> r;
  for (const SeqRecord& s : step)
    if (s.id == id) r.push_back(s);
  std::sort(r.begin(), r.end(), [](const SeqRecord& a, const SeqRecord& b) { return a.pos0 < b.pos0; });
  return r;
}

}  // namespace

TEST(sched_fixed_batching_pads_to_the_longest_prompt) {
  Scenario sc = run_scenario(256, 0);
  CHECK(sc.ok);
  // A's batch: 10 steps (prompt, then 9 decode steps), A alone and no padding (one member).
  CHECK_EQ(sc.steps.size(), size_t(10 + 4));
  if (sc.steps.size() != 14) return;
  for (size_t i = 0; i < 10; ++i) {
    CHECK_EQ(sc.steps[i].size(), size_t(1));
    CHECK_EQ(sc.steps[i][0].id, 10);
  }
  // Step 10 forms B, C, D's batch: each prompt whole (past max_batch_tokens), padded to C's 9
  // tokens by two pad sequences from position 0 (B: 9 − 5 = 4, D: 9 − 3 = 6; C needs none).
  const StepRecord& first = sc.steps[10];
  for (int32_t id : {11, 12, 13}) {
    auto r = of(first, id);
    CHECK_EQ(r.size(), size_t(1));
    if (r.size() == 1) CHECK(r[0].pos0 == 0 && r[0].out);
  }
  CHECK_EQ(of(first, 11)[0].n_tokens, int64_t(5));
  CHECK_EQ(of(first, 12)[0].n_tokens, int64_t(9));
  CHECK_EQ(of(first, 13)[0].n_tokens, int64_t(3));
  auto pads = of(first, 0);
  CHECK_EQ(pads.size(), size_t(2));
  std::vector<int64_t> pad_sizes;
  for (const SeqRecord& p : pads) {
    CHECK(p.pos0 == 0 && !p.out);  // no logits: nothing reads a pad's output
    pad_sizes.push_back(p.n_tokens);
  }
  std::sort(pad_sizes.begin(), pad_sizes.end());
  CHECK(pad_sizes == std::vector<int64_t>({4, 6}));
  // Step 11: every member decodes, nothing is padded.
  CHECK_EQ(sc.steps[11].size(), size_t(3));
  CHECK(of(sc.steps[11], 0).empty());
  // Step 12: B finished (2 tokens) but its slot still costs a pad token, after its 4 prompt pads.
  CHECK_EQ(of(sc.steps[12], 11).size(), size_t(0));
  auto p12 = of(sc.steps[12], 0);
  CHECK_EQ(p12.size(), size_t(1));
  if (p12.size() == 1) CHECK(p12[0].pos0 == 4 && p12[0].n_tokens == 1 && !p12[0].out);
  // Step 13: D finished too (3 tokens): two pad tokens beside C's last decode token.
  CHECK_EQ(of(sc.steps[13], 12).size(), size_t(1));
  auto p13 = of(sc.steps[13], 0);
  CHECK_EQ(p13.size(), size_t(2));
  if (p13.size() == 2) {
    CHECK(p13[0].pos0 == 5 && p13[0].n_tokens == 1);  // B's pad
    CHECK(p13[1].pos0 == 6 && p13[1].n_tokens == 1);  // D's pad
  }
  // By hand: 4 + 6 prompt pads, then 1 + 2 decode pads.
  CHECK_EQ(sc.stats.padded_tokens, int64_t(13));
  CHECK_EQ(sc.stats.pad_skipped_tokens, int64_t(0));
  CHECK_EQ(sc.stats.joined_running, int64_t(0));
  // The batch's pad blocks are returned when it ends.
  CHECK_EQ(sc.stats.blocks_used, int64_t(0));
}

TEST(sched_fixed_batching_bucket_rounds_the_padded_length_up) {
  // fixedBucket 4: A alone pads 6 to 8 (2); B, C, D's batch pads to 12 (9 rounded up): 7 + 3 + 9
  // prompt pads, then 1 + 2 decode pads as before.
  Scenario sc = run_scenario(256, 4);
  CHECK(sc.ok);
  CHECK_EQ(sc.stats.padded_tokens, int64_t(2 + 22));
  if (sc.steps.size() == 14) CHECK(of(sc.steps[0], 0).size() == 1 && of(sc.steps[0], 0)[0].n_tokens == 2);
  if (sc.steps.size() != 14) return;
  std::vector<int64_t> sizes;
  for (const SeqRecord& p : of(sc.steps[10], 0)) sizes.push_back(p.n_tokens);
  std::sort(sizes.begin(), sizes.end());
  CHECK(sizes == std::vector<int64_t>({3, 7, 9}));
}

TEST(sched_fixed_batching_padding_never_takes_memory_from_requests) {
  // 7 blocks of 4: the three members' prompts take 6, so some pad work has no room: it is skipped
  // and counted, and no request is preempted or fails for it. Every planned pad token is either
  // computed or skipped (13 in all, as above).
  Scenario sc = run_scenario(7, 0);
  CHECK(sc.ok);
  CHECK(sc.stats.pad_skipped_tokens > 0);
  CHECK_EQ(sc.stats.padded_tokens + sc.stats.pad_skipped_tokens, int64_t(13));
  CHECK_EQ(sc.stats.preemptions, int64_t(0));
  CHECK_EQ(sc.stats.blocks_used, int64_t(0));
}
