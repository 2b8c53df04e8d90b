// LoRA adapters (lora/): every typed load error, forward with an adapter == forward on a merged
// f32 model (W + scale·B·A) within a stated tolerance, batch invariance with mixed adapters, and
// the engine path (CpuExecutor::load_adapter + GenerateRequest::adapter).
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "backend/cpu_executor.h"
#include "engine_test_util.h"
#include "gguf/gguf.h"
#include "kv/kv_cache.h"
#include "kv/kv_pool.h"
#include "lora/lora.h"
#include "lora_test_util.h"
#include "model/forward.h"
#include "model/model.h"
#include "quant/quant.h"
#include "sched/engine.h"
#include "synth/synth.h"
#include "testing.h"
#include "threadpool/thread_pool.h"

using namespace llmserve;
using namespace llmserve_test;

using namespace lora_test;

namespace {

// ---------- adapter files with one thing wrong ----------

struct BadAdapter {
  std::string general_type = "adapter", adapter_type = "lora", arch = "llama";
  struct T {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
  };
  std::vector<T> tensors;
};

std::string write_bad(const BadAdapter& b, const std::string& name) {
  GgufWriter w;
  w.set_str("general.architecture", b.arch);
  w.set_str("general.type", b.general_type);
  w.set_str("adapter.type", b.adapter_type);
  w.set_f32("adapter.lora.alpha", 8.0f);
  for (const auto& t : b.tensors) {
    int64_t rows = 1;
    for (size_t d = 1; d < t.ne.size(); ++d) rows *= t.ne[d];
    std::vector<uint8_t> data(row_size(t.type, t.ne[0]) * static_cast<size_t>(rows), 0);
    Status st = w.add_tensor(t.name, t.type, t.ne, std::move(data));
    if (!st) std::fprintf(stderr, "  add_tensor: %s\n", st.message.c_str());
  }
  const std::string p = tmp_path("bad_" + name + ".gguf");
  CHECK(w.write(p).is_ok());
  return p;
}

BadAdapter good_pair() {
  BadAdapter b;
  b.tensors = {{"blk.0.attn_q.weight.lora_a", GgmlType::F32, {64, 4}},
               {"blk.0.attn_q.weight.lora_b", GgmlType::F32, {4, 64}}};
  return b;
}

void expect_error(const Model& m, const BadAdapter& b, const std::string& name, Code code, const std::string& mention) {
  std::unique_ptr<LoraAdapter> a;
  Status st = LoraAdapter::load(write_bad(b, name), m, 1.0f, &a);
  if (st.code != code || st.message.find(mention) == std::string::npos) {
    std::fprintf(stderr, "  case %s: got %s '%s', expected %s mentioning '%s'\n", name.c_str(), code_name(st.code),
                 st.message.c_str(), code_name(code), mention.c_str());
  }
  CHECK(st.code == code);
  CHECK(st.message.find(mention) != std::string::npos);
  CHECK(a == nullptr);
}

}  // namespace

TEST(lora_load_errors_are_typed_and_name_the_tensor) {
  auto m = load_model(base_path("llama"));
  CHECK(m != nullptr);
  if (!m) return;
  {  // the good pair loads: scale = 1 * alpha 8 / r 4
    std::unique_ptr<LoraAdapter> a;
    CHECK(LoraAdapter::load(write_bad(good_pair(), "good"), *m, 1.0f, &a).is_ok());
    CHECK(a && a->n_pairs() == 1 && a->pair(0, Proj::Q) && a->pair(0, Proj::Q)->scale == 2.0f);
    CHECK(a && !a->touches(0, Proj::K) && !a->touches(1, Proj::Q));
  }
  BadAdapter b = good_pair();
  b.general_type = "model";
  expect_error(*m, b, "general_type", Code::InvalidArgument, "general.type is 'model'");
  b = good_pair();
  b.adapter_type = "ia3";
  expect_error(*m, b, "adapter_type", Code::InvalidArgument, "adapter.type is 'ia3'");
  b = good_pair();
  b.arch = "qwen2";
  expect_error(*m, b, "arch", Code::UnsupportedArch, "'qwen2'");
  b = good_pair();
  b.tensors = {{"blk.0.attn_zz.weight.lora_a", GgmlType::F32, {64, 4}},
               {"blk.0.attn_zz.weight.lora_b", GgmlType::F32, {4, 64}}};
  expect_error(*m, b, "no_base", Code::MissingTensor, "blk.0.attn_zz.weight");
  b = good_pair();
  b.tensors = {{"blk.7.attn_q.weight.lora_a", GgmlType::F32, {64, 4}},
               {"blk.7.attn_q.weight.lora_b", GgmlType::F32, {4, 64}}};
  expect_error(*m, b, "no_layer", Code::MissingTensor, "blk.7.attn_q.weight");
  b = good_pair();
  b.tensors = {{"token_embd.weight.lora_a", GgmlType::F32, {64, 4}},
               {"token_embd.weight.lora_b", GgmlType::F32, {4, 320}}};
  expect_error(*m, b, "target", Code::InvalidArgument, "token_embd.weight");
  b = good_pair();
  b.tensors[0].ne = {32, 4};
  expect_error(*m, b, "n_in", Code::BadShape, "blk.0.attn_q.weight");
  b = good_pair();
  b.tensors[1].ne = {4, 48};
  expect_error(*m, b, "n_out", Code::BadShape, "blk.0.attn_q.weight");
  b = good_pair();
  b.tensors[1].ne = {8, 64};
  expect_error(*m, b, "rank", Code::BadShape, "ranks that differ");
  b = good_pair();
  b.tensors[0].ne = {64, 4, 2};
  expect_error(*m, b, "dims", Code::BadShape, "blk.0.attn_q.weight.lora_a");
  b = good_pair();
  b.tensors[0].type = GgmlType::Q5_1;
  expect_error(*m, b, "type", Code::UnsupportedType, "blk.0.attn_q.weight.lora_a");
  b = good_pair();
  b.tensors.pop_back();
  expect_error(*m, b, "half_b", Code::MissingTensor, "blk.0.attn_q.weight.lora_b");
  b = good_pair();
  b.tensors.erase(b.tensors.begin());
  expect_error(*m, b, "half_a", Code::MissingTensor, "blk.0.attn_q.weight.lora_a");
  b = good_pair();
  b.tensors.push_back({"blk.0.attn_q.weight.extra", GgmlType::F32, {64, 4}});
  expect_error(*m, b, "suffix", Code::InvalidArgument, "blk.0.attn_q.weight.extra");
  b = good_pair();
  b.tensors.clear();
  expect_error(*m, b, "empty", Code::InvalidArgument, "no .lora_a");
  {  // a model file is not an adapter; a tied output has no output.weight to adapt
    std::unique_ptr<LoraAdapter> a;
    CHECK(LoraAdapter::load(base_path("llama"), *m, 1.0f, &a).code == Code::InvalidArgument);
    CHECK(LoraAdapter::load(write_bad(good_pair(), "scale"), *m, NAN, &a).code == Code::InvalidArgument);
    CHECK(LoraAdapter::load("/nonexistent/adapter.gguf", *m, 1.0f, &a).code == Code::FileNotFound);
  }
}

// Forward with the adapter == forward on W + scale·B·A (f32 base, f32 adapter). Tolerance: both
// compute in f32 with different association (B·(A·x) vs (W + sBA)·x); over 2 layers the logits
// (std ~3) agree within 1e-4 (measured ~8e-6), while the adapter moves them by ~15 (checked > 0.5).
TEST(lora_forward_matches_merged_weights) {
  for (const std::string arch : {"llama", "qwen2"}) {
    const std::string base = base_path(arch);
    auto m = load_model(base);
    CHECK(m != nullptr);
    if (!m) return;
    SynthLoraOptions o;
    o.rank = 4, o.alpha = 16.0f, o.seed = 3, o.targets = kAllTargets;
    std::unique_ptr<LoraAdapter> ad;
    CHECK(LoraAdapter::load(adapter_path(base, arch + "_x", o), *m, 0.5f, &ad).is_ok());
    if (!ad) return;
    CHECK(ad->pair(1, Proj::Down) && ad->pair(1, Proj::Down)->scale == 2.0f);  // 0.5 * 16 / 4
    auto merged = load_model(merged_path(base, *ad, *m, arch));
    CHECK(merged != nullptr);
    if (!merged) return;
    const auto toks = test_tokens(12, m->config().n_vocab, 1);
    const auto with = logits_all(*m, toks, ad.get());
    const auto ref = logits_all(*merged, toks, nullptr);
    const auto plain = logits_all(*m, toks, nullptr);
    const double d = max_abs_diff(with, ref), moved = max_abs_diff(plain, ref);
    std::printf("  %s: |lora - merged| = %.3g, |base - merged| = %.3g\n", arch.c_str(), d, moved);
    CHECK(d < 1e-4);
    CHECK(moved > 0.5);
  }
}

// Half-precision and q8_0 adapters: activations are converted to the adapter's vec_dot type, so
// they match the merged model more loosely (still 50x closer than the base).
TEST(lora_forward_f16_bf16_q8_0_adapters) {
  const std::string base = base_path("llama");
  auto m = load_model(base);
  if (!m) {
    CHECK(false);
    return;
  }
  for (GgmlType t : {GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0}) {
    SynthLoraOptions o;
    o.rank = 32, o.alpha = 64.0f, o.seed = 5, o.type = t, o.targets = kAllTargets;
    std::unique_ptr<LoraAdapter> ad;
    CHECK(LoraAdapter::load(adapter_path(base, std::string("t_") + type_traits(t).name, o), *m, 1.0f, &ad).is_ok());
    if (!ad) continue;
    auto merged = load_model(merged_path(base, *ad, *m, std::string("t_") + type_traits(t).name));
    if (!merged) continue;
    const auto toks = test_tokens(10, m->config().n_vocab, 2);
    const double d = max_abs_diff(logits_all(*m, toks, ad.get()), logits_all(*merged, toks, nullptr));
    const double moved = max_abs_diff(logits_all(*m, toks, nullptr), logits_all(*merged, toks, nullptr));
    std::printf("  %s: |lora - merged| = %.3g, |base - merged| = %.3g\n", type_traits(t).name, d, moved);
    CHECK(d * 50 < moved);
  }
}

// A batch mixing adapter X, adapter Y and none, X's rows interleaved with others' (prefills of different lengths, every-token and
// last-token outputs so the last layer compacts rows) gives each row the bits it gets alone.
TEST(lora_batch_invariance_mixed_adapters) {
  for (const std::string arch : {"llama", "qwen2"}) {
    const std::string base = base_path(arch);
    auto m = load_model(base);
    if (!m) {
      CHECK(false);
      return;
    }
    // X in q8_0 (rank 32: q8_0 rows hold whole blocks) runs through add() on gathered rows (its
    // rows are not contiguous); Y in f16
    // through lowrank_apply.
    SynthLoraOptions ox;
    ox.rank = 32, ox.alpha = 8.0f, ox.seed = 21, ox.targets = kAllTargets, ox.type = GgmlType::Q8_0;
    SynthLoraOptions oy;
    oy.rank = 8, oy.seed = 22, oy.targets = {"attn_q", "attn_v", "ffn_down"};
    std::unique_ptr<LoraAdapter> X, Y;
    CHECK(LoraAdapter::load(adapter_path(base, arch + "_bx", ox), *m, 1.0f, &X).is_ok());
    CHECK(LoraAdapter::load(adapter_path(base, arch + "_by", oy), *m, 0.75f, &Y).is_ok());
    if (!X || !Y) return;
    const int64_t V = m->config().n_vocab;
    const std::vector<int64_t> lens = {5, 7, 3, 6, 4};
    const std::vector<const ProjectionDelta*> ds = {X.get(), nullptr, Y.get(), X.get(), X.get()};
    for (int out : {2, 1}) {
      ThreadPool pool(2);
      KvPoolOptions po;
      po.n_blocks = 64, po.block_size = 16, po.type = GgmlType::F16;
      std::unique_ptr<KvPool> kv;
      CHECK(KvPool::create(kv_shape(m->config()), po, &kv).is_ok());
      std::vector<std::vector<int32_t>> tables, toks;
      std::vector<BatchSeq> seqs;
      std::vector<int32_t> flat;
      for (size_t s = 0; s < lens.size(); ++s) {
        tables.push_back({static_cast<int32_t>(s)});
        toks.push_back(test_tokens(lens[s], V, static_cast<int>(s)));
        flat.insert(flat.end(), toks[s].begin(), toks[s].end());
      }
      for (size_t s = 0; s < lens.size(); ++s) {
        BatchSeq b;
        b.blocks = tables[s].data(), b.n_blocks = 1, b.pos0 = 0, b.n_tokens = lens[s], b.out = out;
        seqs.push_back(b);
      }
      ForwardScratch scratch;
      std::vector<float> batched;
      CHECK(forward_batch(*m, *kv, flat.data(), seqs.data(), static_cast<int64_t>(seqs.size()), &batched, pool, scratch,
                          ds.data())
                .is_ok());
      size_t row = 0;
      for (size_t s = 0; s < lens.size(); ++s) {
        std::vector<float> alone;
        ThreadPool pool1(1);
        CHECK(forward_batch(*m, *kv, toks[s].data(), &seqs[s], 1, &alone, pool1, scratch, &ds[s]).is_ok());
        const size_t rows = alone.size() / static_cast<size_t>(V);
        CHECK(rows == (out == 2 ? static_cast<size_t>(lens[s]) : 1));
        CHECK((row + rows) * V <= batched.size() &&
              std::memcmp(alone.data(), batched.data() + row * V, alone.size() * 4) == 0);
        // and the adapter mattered: the base alone differs
        if (ds[s]) {
          std::vector<float> base_only;
          const ProjectionDelta* none = nullptr;
          CHECK(forward_batch(*m, *kv, toks[s].data(), &seqs[s], 1, &base_only, pool1, scratch, &none).is_ok());
          CHECK(max_abs_diff(base_only, alone) > 0.1);
        }
        row += rows;
      }
      CHECK(row * V == batched.size());
    }
  }
}

// The engine path: CpuExecutor owns adapters by id; GenerateRequest::adapter picks one per
// request. Greedy tokens with the adapter equal the merged model's; concurrent requests with
// different adapters each get their solo tokens; an unknown id is refused at submit.
namespace {
std::shared_ptr<Run> submit(Engine& e, const std::vector<int32_t>& prompt, uint64_t adapter, Status* st_out = nullptr,
                            int64_t session = 0, int64_t max_tokens = 12) {
  auto req = greedy_request(prompt, max_tokens);
  req->adapter = adapter;
  req->session = session;
  Status st;
  auto run = submit_recorded(e, req, &st);
  if (st_out) *st_out = st;
  return run;
}

std::vector<int32_t> wait(Run& r) {
  CHECK(wait_done(r, deadline(60)) && r.error.is_ok());
  return r.tokens;
}

std::unique_ptr<Engine> engine_for(const std::string& path,
                                   const std::vector<std::pair<std::string, float>>& adapters) {
  ExecutorOptions xo;
  xo.threads = 1, xo.n_ctx = 256, xo.kv_type = GgmlType::F32;
  std::unique_ptr<CpuExecutor> x;
  Status st = CpuExecutor::load(path, xo, {}, &x);
  CHECK(st.is_ok());
  if (!x) return nullptr;
  CHECK(x->load_adapter(0, adapters.empty() ? path : adapters[0].first, 1.0f).code == Code::InvalidArgument);
  EngineOptions eo;
  eo.threads = 1, eo.n_ctx = 256, eo.kv_type = GgmlType::F32;
  std::unique_ptr<Engine> e;
  CHECK(Engine::create(std::move(x), eo, &e).is_ok());
  for (size_t i = 0; e && i < adapters.size(); ++i)
    CHECK(e->load_adapter(i + 1, adapters[i].first, adapters[i].second).is_ok());
  return e;
}
}  // namespace

TEST(lora_engine_requests_pick_their_adapter) {
  const std::string base = base_path("llama");
  auto m = load_model(base);
  if (!m) {
    CHECK(false);
    return;
  }
  SynthLoraOptions o;
  o.rank = 4, o.alpha = 16.0f, o.seed = 3, o.targets = kAllTargets;
  const std::string px = adapter_path(base, "engine_x", o);
  std::unique_ptr<LoraAdapter> ad;
  CHECK(LoraAdapter::load(px, *m, 0.5f, &ad).is_ok());
  if (!ad) return;
  const std::string merged = merged_path(base, *ad, *m, "engine_x");
  o.seed = 4, o.rank = 2, o.targets = {"attn_k", "ffn_up"};
  const std::string py = adapter_path(base, "engine_y", o);

  const auto prompt = test_tokens(9, m->config().n_vocab, 3);
  auto em = engine_for(merged, {});
  if (!em) return;
  const auto want_x = wait(*submit(*em, prompt, 0));
  em->shutdown();

  auto e = engine_for(base, {{px, 0.5f}, {py, 1.0f}});
  if (!e) return;
  const auto solo_x = wait(*submit(*e, prompt, 1));
  const auto solo_y = wait(*submit(*e, prompt, 2));
  const auto solo_0 = wait(*submit(*e, prompt, 0));
  CHECK(solo_x == want_x);
  CHECK(solo_x != solo_0);
  CHECK(solo_y != solo_0);
  // Concurrently (one batch): each gets its solo tokens.
  auto rx = submit(*e, prompt, 1), r0 = submit(*e, prompt, 0), ry = submit(*e, prompt, 2);
  CHECK(wait(*rx) == solo_x);
  CHECK(wait(*r0) == solo_0);
  CHECK(wait(*ry) == solo_y);
  Status st;
  submit(*e, prompt, 9, &st);
  CHECK(st.code == Code::AdapterNotFound);
  e->shutdown();
}

// Engine::load_adapter / unload_adapter: an unload while a request with the adapter is queued or
// running lets it finish with the adapter's tokens (the request holds the adapter); new submits
// with the id are refused (AdapterNotFound); the executor drops the adapter when the last request
// ends; ids are never reused; the stats count adapters and their bytes.
TEST(lora_engine_unload_while_serving) {
  const std::string base = base_path("llama");
  auto m = load_model(base);
  if (!m) {
    CHECK(false);
    return;
  }
  SynthLoraOptions o;
  o.rank = 4, o.seed = 5, o.targets = kAllTargets;
  const std::string px = adapter_path(base, "unload_x", o);
  auto e = engine_for(base, {});
  if (!e) return;
  CHECK_EQ(e->stats().adapters, (int64_t)0);
  CHECK_EQ(e->stats().adapter_bytes, (int64_t)0);
  CHECK(e->load_adapter(0, px, 1.0f).code == Code::InvalidArgument);
  CHECK(e->load_adapter(7, base, 1.0f).code == Code::InvalidArgument);  // a model, not an adapter
  CHECK(e->load_adapter(1, px, 1.0f).is_ok());
  CHECK(e->load_adapter(1, px, 1.0f).code == Code::InvalidArgument);  // id in use
  CHECK(e->adapter_ids() == std::vector<uint64_t>{1});
  const EngineStats st1 = e->stats();
  CHECK_EQ(st1.adapters, (int64_t)1);
  // rank 4 f32 pairs over 2 layers of 7 projections of a 64/96-wide model, plus the output
  CHECK(st1.adapter_bytes > 0);
  const auto prompt = test_tokens(11, m->config().n_vocab, 8);
  const auto solo = wait(*submit(*e, prompt, 1, nullptr, 0, 40));
  const auto base_tokens = wait(*submit(*e, prompt, 0, nullptr, 0, 40));
  CHECK(solo != base_tokens);

  auto r1 = submit(*e, prompt, 1, nullptr, 0, 40);
  auto r2 = submit(*e, prompt, 1, nullptr, 0, 40);
  CHECK(e->unload_adapter(1).is_ok());
  CHECK(e->unload_adapter(1).code == Code::AdapterNotFound);
  CHECK(e->adapter_ids().empty());
  CHECK_EQ(e->stats().adapters, (int64_t)0);
  Status st;
  submit(*e, prompt, 1, &st);
  CHECK(st.code == Code::AdapterNotFound);
  CHECK(wait(*r1) == solo);
  CHECK(wait(*r2) == solo);
  // Both requests ended (each Sequence is gone before its last event): the executor dropped it.
  CHECK(!e->executor().has_adapter(1));
  CHECK_EQ(e->stats().adapter_bytes, (int64_t)0);
  CHECK(e->load_adapter(1, px, 1.0f).code == Code::InvalidArgument);  // never reused
  CHECK(e->load_adapter(2, px, 1.0f).is_ok());
  CHECK(wait(*submit(*e, prompt, 2, nullptr, 0, 40)) == solo);
  CHECK_EQ(e->stats().adapter_bytes, st1.adapter_bytes);
  e->shutdown();
}

// A session's next turn adopts its KV only when it runs under the same adapter: KV computed under
// adapter 1 is not the base model's (or adapter 2's). The same holds for the copy of a kept
// session's partial last block into another request.
TEST(lora_session_keeps_kv_per_adapter) {
  const std::string base = base_path("llama");
  auto m = load_model(base);
  if (!m) {
    CHECK(false);
    return;
  }
  SynthLoraOptions o;
  o.rank = 4, o.seed = 6, o.targets = kAllTargets;
  const std::string px = adapter_path(base, "session_x", o);
  o.seed = 7;
  const std::string py = adapter_path(base, "session_y", o);
  auto e = engine_for(base, {{px, 1.0f}, {py, 1.0f}});
  if (!e) return;
  const int64_t V = m->config().n_vocab;
  const auto p1 = test_tokens(21, V, 4);  // 21 + 6 generated: a partial second block (block size 16)
  auto t1 = submit(*e, p1, 1, nullptr, /*session=*/5, 6);
  auto turn1 = wait(*t1);
  std::vector<int32_t> p2 = p1;
  p2.insert(p2.end(), turn1.begin(), turn1.end());
  for (int32_t t : test_tokens(5, V, 9)) p2.push_back(t);
  for (uint64_t ad : {uint64_t{0}, uint64_t{2}}) {
    // From scratch: nothing is cached under this adapter yet.
    auto f = submit(*e, p2, ad, nullptr, 0, 6);
    const auto fresh = wait(*f);
    CHECK_EQ(f->tm.reused_tokens, (int64_t)0);
    // Its first block is now cached under ad; session 5's partial second block (adapter 1) must not
    // be copied in.
    auto r = submit(*e, p2, ad, nullptr, 0, 6);
    CHECK(wait(*r) == fresh);
    CHECK_EQ(r->tm.reused_tokens, (int64_t)16);
    // Session 5 holds p1 + turn1 under adapter 1; this turn runs under ad: recomputed, not adopted.
    auto t = submit(*e, p2, ad, nullptr, 5, 6);
    CHECK(wait(*t) == fresh);
    CHECK_EQ(t->tm.reused_tokens, (int64_t)16);  // the prefix cache's block under ad, nothing more
    // Session 5 back under adapter 1 for the next round (p2 does not extend p1: recomputed).
    CHECK(wait(*submit(*e, p1, 1, nullptr, 5, 6)) == turn1);
  }
  // Same adapter: the next turn adopts the session's KV and gives the fresh tokens.
  auto fresh1 = wait(*submit(*e, p2, 1, nullptr, 0, 6));
  auto same = submit(*e, p2, 1, nullptr, 5, 6);
  CHECK(wait(*same) == fresh1);
  CHECK(same->tm.reused_tokens >= (int64_t)p1.size());
  e->shutdown();
}

// Executor::evaluate under an adapter (Model.evaluate's adapter): the logits of the forward pass with
// that adapter's delta, bit for bit, not the base's; an id that is not loaded is AdapterNotFound.
TEST(lora_evaluate_under_an_adapter_is_the_delta_forward) {
  using namespace lora_test;
  const std::string base = base_path("llama");
  auto m = load_model(base);
  CHECK(m != nullptr);
  if (!m) return;
  SynthLoraOptions o;
  o.rank = 8, o.alpha = 16.0f, o.seed = 13, o.type = GgmlType::F16, o.targets = kAllTargets;
  const std::string file = adapter_path(base, "evalad", o);
  std::unique_ptr<LoraAdapter> ad;
  CHECK(LoraAdapter::load(file, *m, 1.0f, &ad).is_ok());
  ExecutorOptions xo;
  xo.n_ctx = 64, xo.kv_type = GgmlType::F32;
  std::unique_ptr<CpuExecutor> x;
  CHECK(CpuExecutor::load(base, xo, nullptr, &x).is_ok());
  if (!x || !ad) return;
  CHECK(x->load_adapter(3, file, 1.0f).is_ok());
  const auto toks = test_tokens(9, m->config().n_vocab, 5);
  const int64_t n = static_cast<int64_t>(toks.size());
  std::vector<float> got, plain;
  CHECK(x->evaluate(toks.data(), n, 0, 0, &got, false, 3).is_ok());
  CHECK(x->evaluate(toks.data(), n, 0, 0, &plain, false, 0).is_ok());
  const auto want = logits_all(*m, toks, ad.get());
  CHECK(got.size() == want.size());
  CHECK(got == want);
  CHECK(max_abs_diff(plain, want) > 1e-3);  // the adapter changes the logits
  std::vector<float> none;
  const Status s = x->evaluate(toks.data(), n, 0, 0, &none, false, 4);
  CHECK(s.code == Code::AdapterNotFound);
}
