// Sliding-window KV (KvPools split): local layers' K/V in a second, bounded pool whose blocks are
// freed once they leave every query's window. The logits must be bit-identical to the full cache
// (one pool, every position of every layer kept) for prompts and generations several windows long,
// batched with other sequences, through forward_batch and through the engine (prefix-cache hits
// past the window, preemption under a tiny KV budget), while the local pool's blocks stay bounded.
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "engine_test_util.h"
#include "kv/batch.h"
#include "kv/block_allocator.h"
#include "model_test_util.h"
#include "sched/engine.h"

using namespace llmserve;
using namespace llmserve_test;

namespace {

// gemma2 (layers 0, 2 local), gemma3 pattern 3 (0, 1, 3 local) and gemma3 pattern 0 (every layer
// local: no global pool at all), window 8, as the gemma tests' models.
SynthOptions swa_opts(const std::string& arch) {
  SynthOptions o;
  o.arch = arch, o.type = GgmlType::F32, o.dim = 64, o.layers = 4, o.heads = 4, o.kv_heads = 2, o.head_dim = 32;
  o.ffn = 96, o.context = 512, o.vocab_size = 320, o.seed = 11, o.sliding_window = 8, o.final_softcap = 4.0f;
  if (arch == "gemma2") o.attn_softcap = 1.5f;
  else o.swa_pattern = 3, o.rope_freq_base = 1e6f, o.rope_freq_base_swa = 1e4f;
  return o;
}

const std::vector<std::string>& swa_models() {
  static const std::vector<std::string> paths = [] {
    std::vector<std::string> p;
    p.push_back(synth_to(swa_opts("gemma2"), "swa_gemma2.gguf"));
    p.push_back(synth_to(swa_opts("gemma3"), "swa_gemma3.gguf"));
    // llama.cpp's set_swa_pattern: period 0 makes every layer local.
    p.push_back(rewrite(
        p.back(), "swa_gemma3_all_local.gguf", {"gemma3.attention.sliding_window_pattern"},
        [](GgufWriter& w) { w.set_u32("gemma3.attention.sliding_window_pattern", 0); }, nullptr));
    return p;
  }();
  return paths;
}

int64_t count_local(const ModelConfig& c) {
  int64_t n = 0;
  for (int64_t il = 0; il < c.n_layer; ++il) n += c.is_swa(il) ? 1 : 0;
  return n;
}

// One sequence driven by hand over split pools: a global table of every block, a local table whose
// blocks come from `lalloc` and go back to it once out of the window.
struct HandSeq {
  std::vector<int32_t> toks, blocks, lblocks;
  int64_t pos = 0;
  std::vector<int64_t> chunks;
  size_t ci = 0;
  std::vector<float> logits;  // every position's, in order
};

}  // namespace

TEST(swa_split_pools_match_the_full_cache_batched) {
  for (const std::string& path : swa_models()) {
    CHECK(!path.empty());
    auto m = load_model(path);
    CHECK(m != nullptr);
    if (!m) continue;
    const ModelConfig& c = m->config();
    const int64_t n_local = count_local(c), W = c.n_swa, bs = 4, V = c.n_vocab;
    CHECK(n_local > 0 && W == 8);
    std::vector<HandSeq> seqs(2);
    seqs[0].toks = test_tokens(60, V), seqs[0].chunks = {3, 1, 7, 5};
    seqs[1].toks = test_tokens(90, V), seqs[1].chunks = {1, 6, 2};
    for (int32_t& t : seqs[1].toks) t = (t * 7 + 3) % static_cast<int32_t>(V);
    // The full cache, one sequence at a time in one pool.
    std::vector<std::vector<float>> want;
    for (auto& s : seqs) want.push_back(run_chunked(*m, s.toks, {5, 2}, 2, GgmlType::F16));
    // Split: global pool with room for everything, local pool of only 2 x (window + chunk + block).
    KvShape shape = kv_shape(c);
    KvPoolOptions po;
    po.block_size = static_cast<int32_t>(bs), po.type = GgmlType::F16, po.n_blocks = 64;
    std::unique_ptr<KvPool> global, local;
    if (n_local < c.n_layer) {
      shape.n_layer = c.n_layer - n_local;
      CHECK(KvPool::create(shape, po, &global).is_ok());
    }
    shape.n_layer = n_local;
    const int32_t n_lblocks = 2 * static_cast<int32_t>((W - 1 + 7 + bs - 1) / bs + 1);
    po.n_blocks = n_lblocks;
    CHECK(KvPool::create(shape, po, &local).is_ok());
    BlockAllocator galloc(64), lalloc(n_lblocks);
    const KvPools pools{global.get(), local.get()};
    ThreadPool tp(2);
    ForwardScratch scratch;
    int32_t max_local_used = 0;
    for (;;) {
      std::vector<int32_t> tokens;
      std::vector<BatchSeq> batch;
      for (auto& s : seqs) {
        if (s.pos >= (int64_t)s.toks.size()) continue;
        const int64_t k = std::min<int64_t>(s.chunks[s.ci++ % s.chunks.size()], (int64_t)s.toks.size() - s.pos);
        while ((int64_t)s.blocks.size() * bs < s.pos + k) {
          s.blocks.push_back(galloc.allocate());
          s.lblocks.push_back(lalloc.allocate());
          CHECK(s.lblocks.back() >= 0);
        }
        tokens.insert(tokens.end(), s.toks.begin() + s.pos, s.toks.begin() + s.pos + k);
        BatchSeq b;
        b.blocks = s.blocks.data(), b.local_blocks = s.lblocks.data(), b.n_blocks = (int64_t)s.blocks.size();
        b.pos0 = s.pos, b.n_tokens = k, b.out = 2;
        batch.push_back(b);
      }
      if (batch.empty()) break;
      max_local_used = std::max(max_local_used, lalloc.n_used());
      std::vector<float> lg;
      Status st = forward_batch(*m, pools, tokens.data(), batch.data(), (int64_t)batch.size(), &lg, tp, scratch);
      CHECK(st.is_ok());
      if (!st) break;
      size_t row = 0, bi = 0;
      for (auto& s : seqs) {
        if (bi >= batch.size() || batch[bi].blocks != s.blocks.data()) continue;
        const int64_t k = batch[bi++].n_tokens;
        s.logits.insert(s.logits.end(), lg.begin() + (long)(row * V), lg.begin() + (long)((row + k) * V));
        row += (size_t)k;
        s.pos += k;
        // Free what no later query sees: positions < pos - W + 1.
        const int64_t dead = std::max<int64_t>(0, s.pos - W + 1) / bs;
        for (int64_t j = 0; j < dead; ++j)
          if (s.lblocks[(size_t)j] >= 0) lalloc.unref(s.lblocks[(size_t)j]), s.lblocks[(size_t)j] = -1;
      }
    }
    for (size_t i = 0; i < seqs.size(); ++i) {
      CHECK_EQ(seqs[i].logits.size(), want[i].size());
      CHECK(seqs[i].logits.size() == want[i].size() &&
            std::memcmp(seqs[i].logits.data(), want[i].data(), want[i].size() * 4) == 0);
    }
    // 150 positions went through a local pool of n_lblocks blocks (a full cache needs 38).
    CHECK(max_local_used <= n_lblocks);
    CHECK(galloc.n_used() == 38);
    // A local table missing a block inside the window is refused, not read.
    HandSeq& s = seqs[1];
    s.lblocks.push_back(lalloc.allocate());
    s.blocks.push_back(galloc.allocate());
    s.lblocks[s.lblocks.size() - 2] = -1;
    BatchSeq b;
    b.blocks = s.blocks.data(), b.local_blocks = s.lblocks.data(), b.n_blocks = (int64_t)s.blocks.size();
    b.pos0 = s.pos, b.n_tokens = 1, b.out = 1;
    std::vector<float> lg;
    const int32_t tok = 5;
    CHECK(forward_batch(*m, pools, &tok, &b, 1, &lg, tp, scratch).code == Code::InvalidArgument);
  }
}

namespace {

// One request's tokens and the logprob of each (bit-compared: equal logprobs mean equal logits).
struct Out {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  bool operator==(const Out& o) const {
    return tokens == o.tokens && logprobs.size() == o.logprobs.size() &&
           std::memcmp(logprobs.data(), o.logprobs.data(), logprobs.size() * 4) == 0;
  }
};

std::unique_ptr<Engine> load_swa(const std::string& path, EngineOptions o) {
  o.threads = 1, o.n_ctx = 512, o.block_size = 4;
  std::unique_ptr<Engine> e;
  Status st = Engine::load(path, o, {}, &e);
  if (!st) std::fprintf(stderr, "  Engine::load: %s\n", st.message.c_str());
  return e;
}

// Submits every prompt at once (greedy, logprobs recorded) and waits for all. session: the first
// request keeps its KV under this session id.
std::vector<Out> run_all(Engine& e, const std::vector<std::vector<int32_t>>& prompts, int64_t max_tokens,
                         int64_t session = 0, std::vector<int64_t>* reused = nullptr) {
  struct Rec {
    Run run;
    std::vector<float> lp;
  };
  std::vector<std::shared_ptr<Rec>> recs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto req = greedy_request(prompts[i], max_tokens);
    req->sampling.compute_logprob = true;
    req->want_logprobs = true;
    if (i == 0) req->session = session;
    auto rec = std::make_shared<Rec>();
    req->on_event = [rec](GenEvent&& ev) {
      std::lock_guard<std::mutex> lk(rec->run.mu);
      rec->run.tokens.insert(rec->run.tokens.end(), ev.tokens.begin(), ev.tokens.end());
      for (auto& r : ev.logprobs) rec->lp.push_back(r.logprob);
      if (ev.done) rec->run.done = true, rec->run.error = ev.error, rec->run.tm = ev.timings;
      rec->run.cv.notify_all();
    };
    int64_t id = 0;
    Status st = e.submit(req, &id);
    CHECK(st.is_ok());
    if (!st) rec->run.done = true;
    recs.push_back(rec);
  }
  std::vector<Out> out;
  const auto until = deadline(60);
  for (auto& r : recs) {
    CHECK(wait_done(r->run, until));
    CHECK(r->run.error.is_ok());
    std::lock_guard<std::mutex> lk(r->run.mu);
    out.push_back(Out{r->run.tokens, r->lp});
    if (reused) reused->push_back(r->run.tm.reused_tokens);
  }
  return out;
}

std::vector<std::vector<int32_t>> prompts_of(const std::vector<int>& lens, int64_t V, int salt = 0) {
  std::vector<std::vector<int32_t>> p;
  for (size_t i = 0; i < lens.size(); ++i) {
    auto t = test_tokens(lens[i], V);
    for (auto& x : t) x = (x * (int32_t)(2 * i + 3 + 2 * salt) + (int32_t)i + salt) % (int32_t)V;
    t[0] = 1;
    p.push_back(t);
  }
  return p;
}

// The full cache: every layer in one pool, room for everything, no prefix cache.
std::vector<Out> full_cache(const std::string& path, const std::vector<std::vector<int32_t>>& prompts,
                            int64_t max_tokens) {
  EngineOptions o;
  o.local_kv_tokens = -1, o.prefix_cache = false, o.kv_tokens = 4096;
  auto e = load_swa(path, o);
  std::vector<Out> out;
  if (!e) return out;
  CHECK_EQ(e->stats().local_blocks_total, int64_t(0));
  for (auto& p : prompts) out.push_back(run_all(*e, {p}, max_tokens)[0]);
  return out;
}

}  // namespace

TEST(swa_engine_matches_the_full_cache_and_stays_bounded) {
  for (const std::string& path : swa_models()) {
    // Three sequences batched together (continuous batching, chunked prefill), each prompt and
    // generation several windows long. (Short enough that the second turn below stays under
    // kPromptTiledMinTokens: the turn that reaches it recomputes the conversation once with the
    // prompt arithmetic; test_engine_tiled.cpp checks that case.)
    const auto prompts = prompts_of({37, 23, 50}, 320);
    const int64_t gen = 24;
    static_assert(37 + 24 + 1 < kPromptTiledMinTokens, "the second turn adopts the whole session");
    const auto want = full_cache(path, prompts, gen);
    EngineOptions o;
    o.kv_tokens = 1024, o.max_sequences = 4, o.max_batch_tokens = 16, o.prefill_chunk = 8;
    auto e = load_swa(path, o);
    CHECK(e != nullptr);
    if (!e || want.size() != 3) continue;
    const EngineStats s0 = e->stats();
    // Auto size: max_sequences x (window + 2 blocks) + one batch = 4 x 16 + 16 tokens = 20 blocks.
    CHECK_EQ(s0.local_blocks_total, int64_t(20));
    // f16 rows of 2 x 32 elements: 128 bytes for K and as many for V, per layer and token.
    const int64_t n_local = count_local(e->config());
    CHECK_EQ(s0.kv_bytes_local, int64_t(80 * n_local * 256));
    CHECK_EQ(s0.kv_bytes_global, int64_t(1024 * (4 - n_local) * 256));
    const auto got = run_all(*e, prompts, gen, /*session=*/7);
    for (size_t i = 0; i < 3; ++i) {
      CHECK_EQ(got[i].tokens.size(), size_t(gen));
      CHECK(got[i] == want[i]);
    }
    const EngineStats s = e->stats();
    CHECK_EQ(s.preemptions, int64_t(0));  // the local pool's bound held without evicting anyone
    // The kept session holds every position in the global table but only its window locally.
    CHECK_EQ(s.blocks_used, int64_t((37 + gen - 1 + 3) / 4));
    CHECK(s.local_blocks_used >= 2 && s.local_blocks_used <= 3);
    // A second turn of the session continues from that window: same tokens as the full cache.
    auto turn2 = prompts[0];
    turn2.insert(turn2.end(), got[0].tokens.begin(), got[0].tokens.end());
    turn2.push_back(9);
    std::vector<int64_t> reused;
    const auto again = run_all(*e, {turn2}, 12, 7, &reused);
    const auto want2 = full_cache(path, {turn2}, 12);
    CHECK(again.size() == 1 && want2.size() == 1 && again[0] == want2[0]);
    CHECK(reused.size() == 1 && reused[0] == 37 + gen - 1);
  }
}

TEST(swa_engine_prefix_cache_past_the_window) {
  for (const std::string& path : swa_models()) {
    auto a = prompts_of({40}, 320)[0];
    auto b = std::vector<int32_t>(a.begin(), a.begin() + 36);
    const auto tail = prompts_of({6}, 320, 5)[0];
    b.insert(b.end(), tail.begin(), tail.end());
    const auto c = prompts_of({44}, 320, 9)[0];
    const auto want = full_cache(path, {b}, 10);
    EngineOptions o;
    o.kv_tokens = 1024, o.max_batch_tokens = 8, o.prefill_chunk = 8;
    o.local_kv_tokens = 24;  // 6 blocks: one sequence's window and chunk, nothing more
    auto e = load_swa(path, o);
    CHECK(e != nullptr);
    if (!e || want.size() != 1) continue;
    // Hit: A's window blocks are still in the local prefix cache; B reuses 36 positions.
    run_all(*e, {a}, 3);
    std::vector<int64_t> reused;
    const auto hit = run_all(*e, {b}, 10, 0, &reused);
    CHECK(hit.size() == 1 && hit[0] == want[0]);
    CHECK(reused.size() == 1 && reused[0] == 36);
    CHECK_EQ(e->stats().prefix_window_misses, int64_t(0));
    // Miss: C cycles every local block, evicting A's and B's windows; the global blocks of the
    // prefix are still cached but cannot be reused alone, so B is recomputed (same tokens).
    run_all(*e, {c}, 20);
    reused.clear();
    const auto miss = run_all(*e, {b}, 10, 0, &reused);
    CHECK(miss.size() == 1 && miss[0] == want[0]);
    CHECK(reused.size() == 1 && reused[0] < 36);
    CHECK(e->stats().prefix_window_misses >= 1);
    CHECK(e->stats().prefix_hits > 0);
  }
}

TEST(swa_engine_preemption_under_a_tiny_kv_budget) {
  for (const std::string& path : swa_models()) {
    const auto prompts = prompts_of({30, 26, 34}, 320);
    const auto want = full_cache(path, prompts, 24);
    EngineOptions o;
    o.kv_tokens = 64, o.max_batch_tokens = 16, o.prefill_chunk = 8;  // 16 blocks: not all three at once
    auto e = load_swa(path, o);
    CHECK(e != nullptr);
    if (!e || want.size() != 3) continue;
    const auto got = run_all(*e, prompts, 24);
    for (size_t i = 0; i < 3; ++i) CHECK(got[i] == want[i]);
    CHECK(e->stats().preemptions > 0);
    CHECK_EQ(e->stats().local_blocks_used, int64_t(0));
    CHECK_EQ(e->stats().blocks_used, int64_t(0));
  }
}

// Mistral-style llama files declare llama.attention.sliding_window; llama.cpp's llama architecture
// never reads it (no SWA, every layer attends over every position, as test/parity/arch.test.ts's
// llama-swa-key case checks against llama.cpp itself), and neither do we: no window, one KV pool,
// the same logits as without the key on a prompt five windows long.
TEST(swa_llama_window_key_is_ignored_as_llama_cpp) {
  SynthOptions o;
  o.arch = "llama", o.type = GgmlType::F32, o.dim = 64, o.layers = 2, o.heads = 4, o.kv_heads = 2, o.ffn = 96;
  o.context = 256, o.vocab_size = 320, o.seed = 5;
  const std::string plain = synth_to(o, "swa_llama_plain.gguf");
  o.sliding_window = 8;
  const std::string keyed = synth_to(o, "swa_llama_keyed.gguf");
  std::unique_ptr<GgufFile> f;
  CHECK(GgufFile::open(keyed, &f).is_ok() && f->find("llama.attention.sliding_window"));
  auto a = load_model(plain), b = load_model(keyed);
  CHECK(a && b);
  if (!a || !b) return;
  CHECK_EQ(b->config().n_swa, int64_t(0));
  for (int64_t il = 0; il < b->config().n_layer; ++il) CHECK(!b->config().is_swa(il));
  const auto toks = test_tokens(40, 320);
  const auto la = run_chunked(*a, toks, {40}, 1, GgmlType::F16), lb = run_chunked(*b, toks, {40}, 1, GgmlType::F16);
  CHECK(!la.empty() && la.size() == lb.size() && std::memcmp(la.data(), lb.data(), la.size() * 4) == 0);
  // Through the engine: one pool, no local blocks.
  EngineOptions eo;
  auto e = load_swa(keyed, eo);
  CHECK(e && e->stats().local_blocks_total == 0 && e->stats().kv_bytes_local == 0);
}
