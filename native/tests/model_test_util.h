// What the model-level tests share: opening a GGUF file and loading its Model in one call; for the
// architecture tests (test_model_arch.cpp, test_model_gemma.cpp) temporary synth models, test
// tokens, chunked runs and the distance to forward_ref.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "forward_ref.h"
#include "gguf/gguf.h"
#include "kv/kv_cache.h"
#include "model/forward.h"
#include "model/model.h"
#include "synth/synth.h"
#include "testing.h"
#include "threadpool/thread_pool.h"
#include "tmp_files.h"

namespace llmserve_test {

// The model at path, or null: the status goes to st_out when given, else to stderr.
inline std::unique_ptr<llmserve::Model> load_model(const std::string& path, llmserve::Status* st_out = nullptr) {
  std::unique_ptr<llmserve::GgufFile> f;
  llmserve::Status st = llmserve::GgufFile::open(path, &f);
  std::unique_ptr<llmserve::Model> m;
  if (st.is_ok()) st = llmserve::Model::load(std::shared_ptr<llmserve::GgufFile>(std::move(f)), &m);
  if (st_out) *st_out = st;
  else if (!st.is_ok()) std::fprintf(stderr, "  load %s: %s\n", path.c_str(), st.message.c_str());
  return m;
}

using namespace llmserve;

inline std::string tmp_path(const std::string& name) { return group_tmp_path("model", name); }

inline std::unique_ptr<llmserve::KvCache> make_kv(const Model& m, int64_t n_ctx, GgmlType kvt) {
  std::unique_ptr<llmserve::KvCache> kv;
  llmserve::KvCacheOptions o;
  o.n_ctx = n_ctx;
  o.type = kvt;
  CHECK(llmserve::KvCache::create(kv_shape(m.config()), o, &kv).is_ok());
  return kv;
}

// The small model the compression tests transform: 2 layers, dim 64, 4 query heads over 2 KV heads,
// ffn 160 (rows a multiple of 4 and of 8: 2:4 pruning and low-rank take every matrix), context 64,
// vocabulary 320.
inline SynthOptions small_synth_options(GgmlType type, uint64_t seed) {
  SynthOptions so;
  so.dim = 64;
  so.layers = 2;
  so.heads = 4;
  so.kv_heads = 2;
  so.ffn = 160;
  so.context = 64;
  so.vocab_size = 320;
  so.type = type;
  so.seed = seed;
  return so;
}

inline std::string synth_to(const SynthOptions& o, const std::string& name) {
  const std::string p = tmp_path(name);
  Status st = synth_model(o, p);
  if (!st.is_ok()) std::fprintf(stderr, "  synth_model: %s\n", st.message.c_str());
  return st.is_ok() ? p : "";
}

inline std::vector<int32_t> test_tokens(int64_t n, int64_t n_vocab) {
  std::vector<int32_t> t(n);
  uint32_t s = 777;
  for (auto& v : t) {
    s = s * 1664525u + 1013904223u;
    v = static_cast<int32_t>((s >> 8) % n_vocab);
  }
  t[0] = 1;
  return t;
}

// Logits of every position, fed in chunks of the given sizes (cycled).
inline std::vector<float> run_chunked(const Model& m, const std::vector<int32_t>& toks,
                                      const std::vector<int64_t>& chunks, int threads, GgmlType kvt) {
  ThreadPool pool(threads);
  auto kv = make_kv(m, 128, kvt);
  std::vector<float> all, lg;
  size_t pos = 0, ci = 0;
  while (pos < toks.size()) {
    const int64_t k = std::min<int64_t>(chunks[ci++ % chunks.size()], static_cast<int64_t>(toks.size() - pos));
    if (!forward(m, *kv, toks.data() + pos, k, true, &lg, pool).is_ok()) return {};
    all.insert(all.end(), lg.begin(), lg.end());
    pos += static_cast<size_t>(k);
  }
  return all;
}

// One prompt of 40 tokens in one batch, token by token and in uneven chunks (1-3 threads), with an
// f16 and a q8_0 KV cache: the logits must be byte-identical (batch invariance).
inline void check_batch_invariance(const Model& m) {
  const auto toks = test_tokens(40, m.config().n_vocab);
  for (GgmlType kvt : {GgmlType::F16, GgmlType::Q8_0}) {
    const auto batched = run_chunked(m, toks, {40}, 1, kvt);
    const auto incremental = run_chunked(m, toks, {1}, 2, kvt);
    const auto chunked = run_chunked(m, toks, {3, 1, 7, 5}, 3, kvt);
    CHECK_EQ(batched.size(), toks.size() * static_cast<size_t>(m.config().n_vocab));
    CHECK(incremental.size() == batched.size() &&
          std::memcmp(incremental.data(), batched.data(), batched.size() * 4) == 0);
    CHECK(chunked.size() == batched.size() && std::memcmp(chunked.data(), batched.data(), batched.size() * 4) == 0);
  }
}

// max |logit - reference| over the vocabulary, for the last token of toks (f32 KV cache).
inline double max_ref_diff(const Model& m, const std::vector<int32_t>& toks) {
  const auto ref = forward_ref(m, toks);
  ThreadPool pool(2);
  auto kv = make_kv(m, 64, GgmlType::F32);
  std::vector<float> lg;
  CHECK(forward(m, *kv, toks.data(), static_cast<int64_t>(toks.size()), false, &lg, pool).is_ok());
  double d = 0;
  for (size_t i = 0; i < ref.size() && i < lg.size(); ++i) d = std::max(d, std::fabs(double(lg[i]) - ref[i]));
  return lg.size() == ref.size() ? d : INFINITY;
}

// Two models that should compute the same function up to f32 rounding (the same weights stored two
// ways): the logits of every token of toks (f32 KV cache, 2 threads) agree within
// 1e-3 * (max |reference logit| + 1), and every position's argmax is the same. A wrong stored value
// or index moves logits by O(1). what names the pair in the printed largest difference.
inline void check_same_function(const Model& reference, const Model& other, const std::vector<int32_t>& toks,
                                const std::string& what) {
  ThreadPool pool(2);
  auto kr = make_kv(reference, 32, GgmlType::F32);
  auto ko = make_kv(other, 32, GgmlType::F32);
  std::vector<float> lr, lo;
  CHECK(forward(reference, *kr, toks.data(), static_cast<int64_t>(toks.size()), true, &lr, pool).is_ok());
  CHECK(forward(other, *ko, toks.data(), static_cast<int64_t>(toks.size()), true, &lo, pool).is_ok());
  CHECK_EQ(lr.size(), lo.size());
  if (lr.size() != lo.size()) return;
  double max_diff = 0, max_abs = 0;
  for (size_t i = 0; i < lr.size(); ++i) {
    max_diff = std::max(max_diff, double(std::fabs(lr[i] - lo[i])));
    max_abs = std::max(max_abs, double(std::fabs(lr[i])));
  }
  std::fprintf(stderr, "  %s: max |diff| %.3g (max |logit| %.3g)\n", what.c_str(), max_diff, max_abs);
  CHECK(max_diff <= 1e-3 * (max_abs + 1));
  const int64_t V = reference.config().n_vocab;
  for (size_t t = 0; t < toks.size(); ++t) {
    const float* a = lr.data() + t * V;
    const float* b = lo.data() + t * V;
    CHECK_EQ(std::max_element(a, a + V) - a, std::max_element(b, b + V) - b);
  }
}

// A copy of a GGUF with metadata and tensors changed: meta(writer) adds keys (or tensors) after the
// copied keys (skip names keys left out); tensor(name, ne, data) may edit a tensor, false drops it.
inline std::string rewrite(
    const std::string& src, const std::string& name, const std::vector<std::string>& skip,
    const std::function<void(GgufWriter&)>& meta,
    const std::function<bool(const std::string&, std::vector<int64_t>&, std::vector<uint8_t>&)>& tensor) {
  std::unique_ptr<GgufFile> f;
  if (!GgufFile::open(src, &f).is_ok()) return "";
  GgufWriter w;
  for (auto& [k, v] : f->metadata())
    if (std::find(skip.begin(), skip.end(), k) == skip.end()) w.set_value(k, v);
  if (meta) meta(w);
  for (auto& t : f->tensors()) {
    std::vector<int64_t> ne(t.ne, t.ne + std::max<uint32_t>(t.n_dims, 1));
    std::vector<uint8_t> data(t.data, t.data + t.nbytes);
    if (tensor && !tensor(t.name, ne, data)) continue;
    if (!w.add_tensor(t.name, t.type, ne, std::move(data)).is_ok()) return "";
  }
  const std::string out = tmp_path(name);
  return w.write(out).is_ok() ? out : "";
}

inline std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

}  // namespace llmserve_test
