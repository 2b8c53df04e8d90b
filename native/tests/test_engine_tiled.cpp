// The prompt arithmetic through the engine (kv/batch.h: a request whose prompt has
// kPromptTiledMinTokens tokens or more runs every token through attention_prompt): a request's
// tokens and logprobs are the same bits whatever runs beside it, whatever the prefix cache holds
// and whether a session turn adopts the previous turn's KV. A short prompt that shares a long
// one's prefix does not reuse its blocks (computed with the other arithmetic), a longer prompt
// does; a long session's second turn adopts the whole first turn and equals a fresh request with
// the same history, while a short first turn is recomputed by the long second one.
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include <memory>
#include <string>
#include <vector>

#include "engine_test_util.h"
#include "kv/batch.h"
#include "sched/engine.h"
#include "synth/synth.h"
#include "testing.h"

using namespace llmserve;
using namespace llmserve_test;

namespace {

const std::string& tiled_model_path() {
  static const std::string p = synth_small_model("tiled", 23);
  return p;
}

std::unique_ptr<Engine> load_tiled(EngineOptions o) {
  o.threads = 2;
  o.n_ctx = 1024;
  std::unique_ptr<Engine> e;
  Status st = Engine::load(tiled_model_path(), o, {}, &e);
  if (!st) std::fprintf(stderr, "  Engine::load: %s\n", st.message.c_str());
  return e;
}

std::vector<int32_t> tokens_of(int n, int seed) {
  std::vector<int32_t> p = {1};
  uint32_t s = static_cast<uint32_t>(seed) * 2654435761u + 7;
  for (int i = 1; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    p.push_back(3 + static_cast<int32_t>((s >> 8) % 290));
  }
  return p;
}

std::shared_ptr<Run> go(Engine& e, const std::vector<int32_t>& prompt, int64_t max_tokens, int64_t session = 0) {
  auto req = greedy_request(prompt, max_tokens);
  req->want_logprobs = true;
  req->sampling.compute_logprob = true;
  req->session = session;
  Status st;
  auto run = submit_recorded(e, req, &st);
  CHECK(st.is_ok());
  return run;
}

bool same(const Run& a, const Run& b) {
  return a.tokens == b.tokens && a.logprobs.size() == a.tokens.size() && a.logprobs.size() == b.logprobs.size() &&
         std::memcmp(a.logprobs.data(), b.logprobs.data(), a.logprobs.size() * 4) == 0;
}

}  // namespace

TEST(engine_tiled_prompts_keep_their_bits) {
  const auto a = tokens_of(100, 1);                          // prompt arithmetic
  auto c = std::vector<int32_t>(a.begin(), a.begin() + 50);  // shares A's first 3 blocks, decode arithmetic
  for (int32_t t : tokens_of(4, 2)) c.push_back(t);
  auto d = a;  // extends A: prompt arithmetic, reuses A's blocks
  for (int32_t t : tokens_of(20, 3)) d.push_back(t);
  const auto b = tokens_of(40, 4);
  static_assert(54 < kPromptTiledMinTokens && 100 >= kPromptTiledMinTokens, "C short, A long");
  const std::vector<std::vector<int32_t>> prompts = {a, b, c, d};
  const int64_t gen = 12;
  // Each alone on an engine without a prefix cache.
  std::vector<std::shared_ptr<Run>> want;
  {
    EngineOptions o;
    o.prefix_cache = false;
    auto e = load_tiled(o);
    CHECK(e != nullptr);
    if (!e) return;
    const auto until = deadline();
    for (const auto& p : prompts) {
      want.push_back(go(*e, p, gen));
      CHECK(wait_done(*want.back(), until));
    }
  }
  // All at once, in chunks of 8 prompt tokens next to the others' decode.
  {
    EngineOptions o;
    o.max_batch_tokens = 16, o.prefill_chunk = 8;
    auto e = load_tiled(o);
    CHECK(e != nullptr);
    if (!e) return;
    const auto until = deadline();
    std::vector<std::shared_ptr<Run>> runs;
    for (const auto& p : prompts) runs.push_back(go(*e, p, gen));
    for (size_t i = 0; i < runs.size(); ++i) {
      CHECK(wait_done(*runs[i], until));
      CHECK(same(*runs[i], *want[i]));
    }
  }
  // One after another on one prefix cache: C reuses nothing of A, D all of A's full blocks.
  {
    EngineOptions o;
    auto e = load_tiled(o);
    CHECK(e != nullptr);
    if (!e) return;
    const auto until = deadline();
    auto ra = go(*e, a, gen);
    CHECK(wait_done(*ra, until));
    auto rc = go(*e, c, gen);
    CHECK(wait_done(*rc, until));
    auto rd = go(*e, d, gen);
    CHECK(wait_done(*rd, until));
    CHECK(same(*ra, *want[0]));
    CHECK(same(*rc, *want[2]));
    CHECK(same(*rd, *want[3]));
    CHECK_EQ(rc->tm.reused_tokens, int64_t(0));
    CHECK_EQ(rd->tm.reused_tokens, int64_t(96));  // A's six full blocks of 16
  }
  // Sessions: after a long first turn the second adopts all of it; after a short one (decode
  // arithmetic) the long second turn recomputes it. Both equal fresh requests.
  {
    EngineOptions o;
    o.prefix_cache = false;
    auto e = load_tiled(o);
    CHECK(e != nullptr);
    if (!e) return;
    const auto until = deadline();
    auto t1 = go(*e, a, gen, 5);
    CHECK(wait_done(*t1, until));
    CHECK(same(*t1, *want[0]));
    auto turn2 = a;
    turn2.insert(turn2.end(), t1->tokens.begin(), t1->tokens.end());
    turn2.push_back(9);
    auto t2 = go(*e, turn2, gen, 5);
    CHECK(wait_done(*t2, until));
    EngineOptions o2;
    o2.prefix_cache = false;
    auto cold = load_tiled(o2);
    CHECK(cold != nullptr);
    if (!cold) return;
    auto ref = go(*cold, turn2, gen);
    CHECK(wait_done(*ref, until));
    CHECK(same(*t2, *ref));
    CHECK_EQ(t2->tm.reused_tokens, int64_t(100 + gen - 1));
    auto s1 = go(*e, b, gen, 6);  // 40 tokens: decode arithmetic
    CHECK(wait_done(*s1, until));
    CHECK(same(*s1, *want[1]));
    auto turn2b = b;
    turn2b.insert(turn2b.end(), s1->tokens.begin(), s1->tokens.end());
    for (int32_t t : tokens_of(20, 5)) turn2b.push_back(t);  // 72 tokens: prompt arithmetic
    auto s2 = go(*e, turn2b, gen, 6);
    CHECK(wait_done(*s2, until));
    auto ref2 = go(*cold, turn2b, gen);
    CHECK(wait_done(*ref2, until));
    CHECK(same(*s2, *ref2));
    CHECK_EQ(s2->tm.reused_tokens, int64_t(0));
  }
}
