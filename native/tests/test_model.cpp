// Model loading, forward pass and thread pool: parity with llama.cpp on the real fixture models,
// batch invariance (incremental == batched == chunked, any thread count), logits_all rows, a naive
// double-precision reference on synthetic llama / qwen2 models, and every load / forward error.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "forward_ref.h"
#include "gguf/gguf.h"
#include "kv/kv_cache.h"
#include "model/forward.h"
#include "model/model.h"
#include "model/ops.h"
#include "model_test_util.h"
#include "quant/quant.h"
#include "synth/synth.h"
#include "testing.h"
#include "threadpool/thread_pool.h"

using namespace llmserve;
using llmserve_test::load_model;
using llmserve_test::tmp_path;

namespace {

// ---------- helpers ----------

std::string fixtures_dir() {
  // <root>/native/tests/test_model.cpp -> <root>/../shared/fixtures (also tried from the cwd).
  std::string here = __FILE__;
  std::string root = here.substr(0, here.rfind("/native/tests/"));
  for (const std::string& d : {root + "/../shared/fixtures", std::string("../shared/fixtures")}) {
    if (access((d + "/models").c_str(), R_OK) == 0) return d;
  }
  return "";
}

void skip_no_fixtures() { std::printf("  skipped: fixture folder ../shared/fixtures not found\n"); }

std::unique_ptr<KvCache> make_kv(const Model& m, int64_t n_ctx, GgmlType kvt = GgmlType::F16) {
  std::unique_ptr<KvCache> kv;
  KvCacheOptions o;
  o.n_ctx = n_ctx;
  o.type = kvt;
  Status st = KvCache::create(kv_shape(m.config()), o, &kv);
  CHECK(st.is_ok());
  return kv;
}

bool same_bits(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * 4) == 0; }

int32_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return static_cast<int32_t>(best);
}

std::vector<double> softmax(const float* x, int64_t n) {
  double mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, double(x[i]));
  std::vector<double> p(n);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += (p[i] = std::exp(double(x[i]) - mx));
  for (auto& v : p) v /= s;
  return p;
}

// ---------- minimal JSON (numbers, strings without escapes, arrays, objects, literals) ----------

// (Members are a struct completed after Json, not std::pair<std::string, Json>: libstdc++'s pair
// rejects an incomplete Json under clang.)
struct JsonMember;
struct Json {
  double num = 0;
  std::vector<Json> arr;
  std::vector<JsonMember> obj;
  const Json* get(const std::string& k) const;
};
struct JsonMember {
  std::string first;
  Json second;
};
const Json* Json::get(const std::string& k) const {
  for (auto& kv : obj)
    if (kv.first == k) return &kv.second;
  return nullptr;
}

// Parses the value at p (advancing it); throws on malformed input.
Json parse_json(const char*& p, const char* end) {
  auto ws = [&] {
    while (p < end && std::strchr(" \t\r\n,:", *p)) ++p;
  };                // separators skipped
  auto str = [&] {  // escapes are skipped, not decoded (keys and ids need none)
    const char* q = p + 1;
    while (q < end && *q != '"') q += *q == '\\' ? 2 : 1;
    if (q >= end) throw std::runtime_error("json: unterminated string");
    std::string r(p + 1, q);
    p = q + 1;
    return r;
  };
  ws();
  if (p >= end) throw std::runtime_error("json: unexpected end");
  Json j;
  if (*p == '{' || *p == '[') {
    const char close = *p == '{' ? '}' : ']';
    const bool is_obj = *p++ == '{';
    for (ws(); p < end && *p != close; ws()) {
      if (is_obj) {
        std::string k = str();
        j.obj.push_back(JsonMember{k, parse_json(p, end)});
      } else {
        j.arr.push_back(parse_json(p, end));
      }
    }
    ++p;
  } else if (*p == '"') {
    str();
  } else if (std::isalpha(static_cast<unsigned char>(*p))) {
    while (p < end && std::isalpha(static_cast<unsigned char>(*p))) ++p;  // null/true/false
  } else {
    char* e = nullptr;
    j.num = std::strtod(p, &e);
    if (e == p) throw std::runtime_error("json: bad value");
    p = e;
  }
  return j;
}

bool read_json(const std::string& path, Json* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const char* p = s.data();
  try {
    *out = parse_json(p, s.data() + s.size());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "  %s: %s\n", path.c_str(), e.what());
    return false;
  }
  return true;
}

std::vector<int32_t> ints(const Json* j) {
  std::vector<int32_t> v;
  if (j)
    for (auto& x : j->arr) v.push_back(static_cast<int32_t>(x.num));
  return v;
}

// ---------- synthetic models ----------

SynthOptions synth_opts(const std::string& arch, GgmlType type) {
  SynthOptions o;
  o.arch = arch, o.type = type, o.layers = 2, o.heads = 4, o.kv_heads = 2, o.context = 256;
  o.vocab_size = 320, o.seed = 11;
  const bool k_quant = type == GgmlType::Q4_K || type == GgmlType::Q6_K;  // rows of 256
  o.dim = k_quant ? 256 : 64, o.ffn = k_quant ? 512 : 96;
  return o;
}

std::string synth_path(const SynthOptions& o) {
  const std::string p = tmp_path(o.arch + "_" + type_traits(o.type).name + "_" + std::to_string(o.dim) + ".gguf");
  if (access(p.c_str(), R_OK) == 0) return p;
  Status st = synth_model(o, p);
  if (!st.is_ok()) std::fprintf(stderr, "  synth_model: %s\n", st.message.c_str());
  return st.is_ok() ? p : "";
}

// Copies a GGUF, letting edit() change metadata/tensors through the writer calls it makes.
struct Edit {
  std::string set_arch;        // replaces general.architecture
  std::string drop_key;        // metadata key left out
  std::string drop_tensor;     // tensor left out
  std::string reshape_tensor;  // tensor written with ne[1] - 1 rows
  std::string retype_tensor;   // tensor written as MXFP4 (not supported)
  std::string int_key;         // metadata key replaced by int_value
  int64_t int_value = 0;
  std::vector<std::pair<std::string, std::string>> add_str;  // metadata added
  std::vector<std::pair<std::string, float>> add_f32;
  std::vector<float> rope_freqs;  // non-empty: adds rope_freqs.weight
};

std::string rewrite(const std::string& src, const Edit& e, const std::string& name) {
  std::unique_ptr<GgufFile> f;
  if (!GgufFile::open(src, &f).is_ok()) return "";
  GgufWriter w;
  for (auto& [k, v] : f->metadata()) {
    if (k == e.drop_key) continue;
    if (k == "general.architecture" && !e.set_arch.empty()) {
      w.set_str(k, e.set_arch);
    } else if (k == e.int_key) {
      w.set_u32(k, static_cast<uint32_t>(e.int_value));
    } else {
      w.set_value(k, v);
    }
  }
  for (auto& [k, v] : e.add_str) w.set_str(k, v);
  for (auto& [k, v] : e.add_f32) w.set_f32(k, v);
  if (!e.rope_freqs.empty()) {
    std::vector<uint8_t> d(e.rope_freqs.size() * 4);
    std::memcpy(d.data(), e.rope_freqs.data(), d.size());
    if (!w.add_tensor("rope_freqs.weight", GgmlType::F32, {int64_t(e.rope_freqs.size())}, d).is_ok()) return "";
  }
  for (auto& t : f->tensors()) {
    if (t.name == e.drop_tensor) continue;
    std::vector<int64_t> ne(t.ne, t.ne + std::max<uint32_t>(t.n_dims, 1));
    GgmlType type = t.type;
    if (t.name == e.reshape_tensor) ne[1] -= 1;
    if (t.name == e.retype_tensor) type = static_cast<GgmlType>(39);  // mxfp4
    int64_t rows = 1;
    for (size_t i = 1; i < ne.size(); ++i) rows *= ne[i];
    std::vector<uint8_t> data(row_size(type, ne[0]) * rows);
    std::memcpy(data.data(), t.data, std::min<size_t>(data.size(), t.nbytes ? t.nbytes : data.size()));
    if (!w.add_tensor(t.name, type, ne, std::move(data)).is_ok()) return "";
  }
  const std::string out = tmp_path(name);
  if (!w.write(out).is_ok()) return "";
  return out;
}

// Logits of every position of `toks`, computed in chunks of the given sizes (cycled).
std::vector<float> run_chunked(const Model& m, const std::vector<int32_t>& toks, const std::vector<int64_t>& chunks,
                               int threads, GgmlType kvt = GgmlType::F16) {
  ThreadPool pool(threads);
  auto kv = make_kv(m, 256, kvt);
  std::vector<float> all, lg;
  size_t pos = 0, ci = 0;
  while (pos < toks.size()) {
    const int64_t k = std::min<int64_t>(chunks[ci++ % chunks.size()], toks.size() - pos);
    Status st = forward(m, *kv, toks.data() + pos, k, true, &lg, pool);
    CHECK(st.is_ok());
    if (!st.is_ok()) return {};
    all.insert(all.end(), lg.begin(), lg.end());
    pos += k;
  }
  return all;
}

std::vector<int32_t> test_tokens(int64_t n, int64_t n_vocab) {
  std::vector<int32_t> t(n);
  uint32_t s = 12345;
  for (auto& v : t) {
    s = s * 1664525u + 1013904223u;
    v = static_cast<int32_t>((s >> 8) % n_vocab);
  }
  t[0] = 1;
  return t;
}

}  // namespace

// ---------- thread pool ----------

TEST(model_thread_pool_covers_every_index_once) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    CHECK_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 2, 3, 7, 100, 1001}) {
      // Value-initialized atomics are 0. Chunks running at the same time never share a slot.
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n)), slot_busy(threads);
      std::atomic<int> bad_slot{0};
      pool.parallel_for_chunked(n, [&](int64_t b, int64_t e, int s) {
        if (s < 0 || s >= threads) {
          bad_slot++;
          return;
        }
        if (slot_busy[s]++ != 0) bad_slot++;
        for (int64_t i = b; i < e; ++i) hits[i]++;
        slot_busy[s]--;
      });
      CHECK_EQ(bad_slot.load(), 0);
      for (auto& h : hits) CHECK_EQ(h.load(), 1);
    }
  }
  // grain: k = clamp(n / grain, 1, 4 * size()) chunks.
  ThreadPool pool(2);
  for (int64_t grain : {1, 3, 10, 1000}) {
    std::atomic<int> chunks{0};
    pool.parallel_for_chunked(
        20, [&](int64_t, int64_t, int) { chunks++; }, grain);
    CHECK_EQ(chunks.load(), static_cast<int>(std::clamp<int64_t>(20 / grain, 1, 8)));
  }
}

TEST(model_thread_pool_nested_and_exceptions) {
  ThreadPool pool(3);
  std::atomic<int64_t> sum{0};
  pool.parallel_for(6, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) pool.parallel_for(10, [&](int64_t b2, int64_t e2) { sum += (e2 - b2) * (i + 1); });
  });
  CHECK_EQ(sum.load(), int64_t(10 * 21));
  bool caught = false;
  try {
    pool.parallel_for(9, [&](int64_t b, int64_t) {
      if (b > 0) throw std::runtime_error("boom");
    });
  } catch (const std::runtime_error&) { caught = true; }
  CHECK(caught);
  // Still usable afterwards, many times in a row.
  std::atomic<int64_t> total{0};
  for (int r = 0; r < 2000; ++r) pool.parallel_for(3, [&](int64_t b, int64_t e) { total += e - b; });
  CHECK_EQ(total.load(), int64_t(6000));
}

// ---------- parity with llama.cpp on the real fixtures ----------

namespace {
// tol: per-probability tolerance. mean_tol: bound on the mean |p - p_ref| over all listed entries.
void check_reference(const std::string& name, double tol, double mean_tol) {
  const std::string dir = fixtures_dir();
  if (dir.empty()) return skip_no_fixtures();
  auto m = load_model(dir + "/models/" + name + ".gguf");
  Json ref;
  CHECK(m != nullptr);
  CHECK(read_json(dir + "/models/" + name + ".reference.json", &ref));
  if (!m || !ref.get("cases")) return;
  const int64_t V = m->config().n_vocab;
  ThreadPool pool(2);
  double max_diff = 0, sum_diff = 0;
  int steps = 0, greedy_ok = 0, n_diff = 0;
  for (const Json& cs : ref.get("cases")->arr) {
    const auto prompt = ints(cs.get("promptTokens"));
    const auto greedy = ints(cs.get("greedy"));
    const Json* top5 = cs.get("top5");
    CHECK(!prompt.empty() && !greedy.empty() && top5 && top5->arr.size() == greedy.size());
    if (prompt.empty() || !top5) continue;
    auto kv = make_kv(*m, static_cast<int64_t>(prompt.size() + greedy.size()));
    std::vector<float> lg;
    Status st = forward(*m, *kv, prompt.data(), prompt.size(), false, &lg, pool);
    CHECK(st.is_ok());
    for (size_t s = 0; s < greedy.size() && st.is_ok(); ++s) {
      const int32_t got = argmax(lg.data(), V);
      CHECK_EQ(got, greedy[s]);
      greedy_ok += got == greedy[s];
      auto p = softmax(lg.data(), V);
      for (const Json& pair : top5->arr[s].arr) {
        const int32_t id = static_cast<int32_t>(pair.arr[0].num);
        const double diff = std::fabs(p[id] - pair.arr[1].num);
        max_diff = std::max(max_diff, diff);
        sum_diff += diff;
        ++n_diff;
        CHECK_NEAR(p[id], pair.arr[1].num, tol);
      }
      ++steps;
      // Teacher forcing with the reference token keeps later steps comparable.
      st = forward(*m, *kv, &greedy[s], 1, false, &lg, pool);
      CHECK(st.is_ok());
    }
  }
  const double mean_diff = n_diff ? sum_diff / n_diff : 0.0;
  std::printf("  %s: %d/%d greedy tokens equal, top-5 |p - p_ref|: max %.2e, mean %.2e\n", name.c_str(), greedy_ok,
              steps, max_diff, mean_diff);
  CHECK(steps > 0);
  CHECK(mean_diff <= mean_tol);
}
}  // namespace

TEST(model_parity_aidreams260K) { check_reference("aidreams260K", 1e-3, 5e-5); }
// stories260K is unusually sensitive to rounding (f32 instead of f16 KV moves its probabilities by
// up to 5e-3). llama.cpp itself (node-llama-cpp 3.21.1, same defaults, on the machine this test
// was written on) differs from the stored reference by up to 9.0e-4 on this model, and we measured
// 1.0e-3 (AVX-512 kernels) / 1.07e-3 (scalar kernels): hence 2e-3 per entry plus a tight mean.
TEST(model_parity_stories260K_gqa) { check_reference("stories260K-ids", 2e-3, 2e-4); }

TEST(model_fixture_config) {
  const std::string dir = fixtures_dir();
  if (dir.empty()) return skip_no_fixtures();
  auto m = load_model(dir + "/models/stories260K-ids.gguf");
  CHECK(m != nullptr);
  if (!m) return;
  const ModelConfig& c = m->config();
  CHECK(c.arch == "llama" && c.rope_type == 0 && !c.has_qkv_bias);
  CHECK(c.tied_output);  // the fixtures have no output.weight: logits use token_embd
  CHECK(c.n_embd == 64 && c.n_layer == 5 && c.n_head == 8 && c.n_head_kv == 4 && c.head_dim == 8);
  CHECK(c.n_vocab == 512 && c.n_ff == 172 && c.n_ctx_train == 512 && c.n_rot == 8);
  CHECK_NEAR(c.rms_eps, 1e-5, 1e-9);
  CHECK_EQ(c.rope_freq_base, 10000.0f);
}

// ---------- batch invariance and logits_all (fixtures and synthetic models) ----------

namespace {
// The KV types a model can use: q8_0 needs heads of a multiple of 32.
std::vector<GgmlType> kv_types(const Model& m) {
  std::vector<GgmlType> v = {GgmlType::F32, GgmlType::F16};
  if (m.config().head_dim % 32 == 0) v.push_back(GgmlType::Q8_0);
  return v;
}

void check_invariance(const Model& m, GgmlType kvt) {
  const int64_t V = m.config().n_vocab;
  const auto toks = test_tokens(40, V);
  const auto batched = run_chunked(m, toks, {40}, 1, kvt);
  const auto incremental = run_chunked(m, toks, {1}, 1, kvt);
  const auto chunked = run_chunked(m, toks, {3, 1, 7, 5}, 2, kvt);
  const auto threaded = run_chunked(m, toks, {40}, 3, kvt);
  CHECK_EQ(batched.size(), toks.size() * V);
  CHECK(incremental.size() == batched.size() && same_bits(incremental.data(), batched.data(), batched.size()));
  CHECK(chunked.size() == batched.size() && same_bits(chunked.data(), batched.data(), batched.size()));
  CHECK(threaded.size() == batched.size() && same_bits(threaded.data(), batched.data(), batched.size()));

  // logits_all=false returns exactly the last row; prefixes (after truncate) match logits_all rows.
  ThreadPool pool(2);
  auto kv = make_kv(m, 64, kvt);
  std::vector<float> lg;
  for (int64_t k : {1, 2, 9, 40}) {
    kv->truncate(0);
    CHECK_EQ(kv->n_past(), int64_t(0));
    CHECK(forward(m, *kv, toks.data(), k, false, &lg, pool).is_ok());
    CHECK_EQ(lg.size(), size_t(V));
    CHECK(same_bits(lg.data(), batched.data() + (k - 1) * V, V));
    CHECK_EQ(kv->n_past(), k);
  }
  // Reuse of a common prefix: keep 9 positions, continue with the rest.
  kv->truncate(9);
  CHECK(forward(m, *kv, toks.data() + 9, 31, true, &lg, pool).is_ok());
  CHECK(lg.size() == 31 * size_t(V) && same_bits(lg.data(), batched.data() + 9 * V, 31 * V));
}
}  // namespace

TEST(model_batch_invariance_fixture) {
  const std::string dir = fixtures_dir();
  if (dir.empty()) return skip_no_fixtures();
  auto m = load_model(dir + "/models/stories260K-ids.gguf");
  CHECK(m != nullptr);
  if (!m) return;
  check_invariance(*m, GgmlType::F16);
  check_invariance(*m, GgmlType::F32);
}

TEST(model_batch_invariance_synthetic_all_types) {
  for (const char* arch : {"llama", "qwen2"}) {
    for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K,
                       GgmlType::Q6_K}) {
      const std::string p = synth_path(synth_opts(arch, t));
      CHECK(!p.empty());
      if (p.empty()) continue;
      auto m = load_model(p);
      CHECK(m != nullptr);
      if (!m) continue;
      CHECK(m->config().arch == arch);
      CHECK_EQ(m->config().rope_type, std::string(arch) == "qwen2" ? 2 : 0);
      CHECK_EQ(m->config().has_qkv_bias, std::string(arch) == "qwen2");
      const int before = lt::failures();
      for (GgmlType kvt : kv_types(*m)) {
        if (kvt == GgmlType::F32) continue;
        check_invariance(*m, kvt);
        if (lt::failures() != before)
          std::fprintf(stderr, "  (%s %s, %s KV)\n", arch, type_traits(t).name, type_traits(kvt).name);
      }
    }
  }
}

// ---------- structure: against the naive double-precision forward_ref ----------

TEST(model_matches_naive_reference) {
  for (const char* arch : {"llama", "qwen2"}) {
    for (GgmlType t : {GgmlType::F32, GgmlType::Q8_0, GgmlType::F16}) {
      SynthOptions o = synth_opts(arch, t);
      // f16 weights: a model with heads of 32, so the q8_0 KV cache is checked too.
      if (t == GgmlType::F16) o.dim = 128, o.ffn = 192;
      const std::string p = synth_path(o);
      auto m = p.empty() ? nullptr : load_model(p);
      CHECK(m != nullptr);
      if (!m) continue;
      const int64_t V = m->config().n_vocab;
      const auto toks = test_tokens(12, V);
      const auto ref = forward_ref(*m, toks);
      for (GgmlType kvt : kv_types(*m)) {
        ThreadPool pool(2);
        auto kv = make_kv(*m, 32, kvt);
        std::vector<float> lg;
        CHECK(forward(*m, *kv, toks.data(), toks.size(), false, &lg, pool).is_ok());
        std::vector<float> rf(ref.begin(), ref.end());
        auto pa = softmax(lg.data(), V), pb = softmax(rf.data(), V);
        double max_p = 0, max_l = 0, scale = 0;
        for (int64_t i = 0; i < V; ++i) {
          max_p = std::max(max_p, std::fabs(pa[i] - pb[i]));
          max_l = std::max(max_l, std::fabs(double(lg[i]) - ref[i]));
          scale = std::max(scale, std::fabs(ref[i]));
        }
        // Quantized activations (Q8_0) and f16 KV cost precision; structure errors cost far more.
        const double tol = (t == GgmlType::F32 && kvt == GgmlType::F32) ? 1e-4 : 2e-2;
        if (std::getenv("LLMSERVE_TEST_VERBOSE") || max_l > tol * std::max(1.0, scale))
          std::fprintf(stderr, "  %s %s %s KV: max |dlogit| %.3g (scale %.3g)\n", arch, type_traits(t).name,
                       type_traits(kvt).name, max_l, scale);
        CHECK(max_l <= tol * std::max(1.0, scale));
        CHECK(max_p <= 1e-2);
        CHECK_EQ(argmax(lg.data(), V), argmax(rf.data(), V));
      }
    }
  }
}

TEST(model_rope_scaling_and_freq_factors) {
  // Linear scaling (factor 2) plus llama-3 style per-frequency factors in rope_freqs.weight.
  const std::string p = synth_path(synth_opts("llama", GgmlType::F32));
  CHECK(!p.empty());
  if (p.empty()) return;
  Edit e;
  e.add_str = {{"llama.rope.scaling.type", "linear"}};
  e.add_f32 = {{"llama.rope.scaling.factor", 2.0f}};
  for (int i = 0; i < 8; ++i) e.rope_freqs.push_back(1.0f + 3.0f * i);  // n_rot = 16 -> 8 factors
  auto m = load_model(rewrite(p, e, "rope.gguf"));
  CHECK(m != nullptr);
  if (!m) return;
  CHECK(m->config().has_rope_freqs);
  CHECK_EQ(m->config().rope_freq_scale, 0.5f);
  const auto toks = test_tokens(20, m->config().n_vocab);
  const auto ref = forward_ref(*m, toks);
  ThreadPool pool(2);
  auto kv = make_kv(*m, 32, GgmlType::F32);
  std::vector<float> lg;
  CHECK(forward(*m, *kv, toks.data(), toks.size(), false, &lg, pool).is_ok());
  double max_l = 0;
  for (size_t i = 0; i < ref.size() && i < lg.size(); ++i) max_l = std::max(max_l, std::fabs(lg[i] - ref[i]));
  CHECK(max_l < 1e-3);
  // Without the factors the logits differ clearly (the test above is not vacuous).
  auto plain = load_model(p);
  std::vector<float> lg2;
  auto kv2 = make_kv(*plain, 32, GgmlType::F32);
  CHECK(forward(*plain, *kv2, toks.data(), toks.size(), false, &lg2, pool).is_ok());
  double diff = 0;
  for (size_t i = 0; i < lg.size(); ++i) diff = std::max(diff, double(std::fabs(lg[i] - lg2[i])));
  CHECK(diff > 1e-2);
  // "none" disables the factor; unknown types are refused.
  Edit none;
  none.add_str = {{"llama.rope.scaling.type", "none"}};
  none.add_f32 = {{"llama.rope.scaling.factor", 4.0f}};
  auto mn = load_model(rewrite(p, none, "rope_none.gguf"));
  CHECK(mn && mn->config().rope_freq_scale == 1.0f);
  Edit bad;
  bad.add_str = {{"llama.rope.scaling.type", "longrope"}};
  Status st;
  load_model(rewrite(p, bad, "rope_bad.gguf"), &st);
  CHECK(st.code == Code::UnsupportedArch && st.message.find("longrope") != std::string::npos);
}

// ---------- errors ----------

TEST(model_forward_errors) {
  const std::string p = synth_path(synth_opts("llama", GgmlType::F32));
  auto m = p.empty() ? nullptr : load_model(p);
  CHECK(m != nullptr);
  if (!m) return;
  ThreadPool pool(2);
  auto kv = make_kv(*m, 8);
  std::vector<float> lg;
  const int32_t ok[4] = {1, 2, 3, 4};
  // Bad token ids: nothing is appended.
  const int32_t bad1[2] = {1, -1};
  const int32_t bad2[2] = {1, static_cast<int32_t>(m->config().n_vocab)};
  Status st = forward(*m, *kv, bad1, 2, false, &lg, pool);
  CHECK(st.code == Code::InvalidArgument && st.message.find("-1") != std::string::npos);
  st = forward(*m, *kv, bad2, 2, false, &lg, pool);
  CHECK(st.code == Code::InvalidArgument);
  CHECK_EQ(kv->n_past(), int64_t(0));
  CHECK(forward(*m, *kv, ok, 0, false, &lg, pool).code == Code::InvalidArgument);
  CHECK(forward(*m, *kv, nullptr, 1, false, &lg, pool).code == Code::InvalidArgument);
  CHECK(forward(*m, *kv, ok, 1, false, nullptr, pool).code == Code::InvalidArgument);
  // Context overflow: 4 + 4 fits n_ctx 8; one more does not.
  CHECK(forward(*m, *kv, ok, 4, false, &lg, pool).is_ok());
  CHECK(forward(*m, *kv, ok, 4, false, &lg, pool).is_ok());
  st = forward(*m, *kv, ok, 1, false, &lg, pool);
  CHECK(st.code == Code::ContextOverflow);
  CHECK_EQ(kv->n_past(), int64_t(8));
  auto kv2 = make_kv(*m, 3);
  CHECK(forward(*m, *kv2, ok, 4, false, &lg, pool).code == Code::ContextOverflow);
  // KvCache options.
  std::unique_ptr<KvCache> bad_kv;
  KvCacheOptions o;
  o.n_ctx = 0;
  CHECK(KvCache::create(kv_shape(m->config()), o, &bad_kv).code == Code::InvalidArgument);
  o.n_ctx =
      int64_t(1) << 23;  // 2^23 positions x 2 layers x 32 x 2 B = 1 GiB per tensor: allocates lazily or fails cleanly
  Status big = KvCache::create(kv_shape(m->config()), o, &bad_kv);
  CHECK(big.is_ok() || big.code == Code::OutOfMemory);
}

TEST(model_load_errors) {
  const std::string p = synth_path(synth_opts("llama", GgmlType::F32));
  CHECK(!p.empty());
  if (p.empty()) return;
  struct Case {
    const char* name;
    Edit edit;
    Code code;
    const char* must_mention;
  };
  auto edit = [](std::function<void(Edit&)> f) {
    Edit e;
    f(e);
    return e;
  };
  const std::vector<Case> cases = {
      {"arch", edit([](Edit& e) { e.set_arch = "gpt2"; }), Code::UnsupportedArch,
       "architecture 'gpt2' is not supported; supported: llama, qwen2, qwen3"},
      {"missing", edit([](Edit& e) { e.drop_tensor = "blk.1.ffn_up.weight"; }), Code::MissingTensor,
       "blk.1.ffn_up.weight"},
      {"missing_norm", edit([](Edit& e) { e.drop_tensor = "output_norm.weight"; }), Code::MissingTensor,
       "output_norm.weight"},
      {"shape", edit([](Edit& e) { e.reshape_tensor = "blk.0.attn_k.weight"; }), Code::BadShape,
       "tensor 'blk.0.attn_k.weight' has shape [64, 31], expected [64, 32]"},
      {"type", edit([](Edit& e) { e.retype_tensor = "blk.0.attn_q.weight"; }), Code::UnsupportedType,
       "tensor 'blk.0.attn_q.weight' has type mxfp4 (id 39), which is not supported"},
      {"key", edit([](Edit& e) { e.drop_key = "llama.attention.layer_norm_rms_epsilon"; }), Code::GgufCorrupt,
       "llama.attention.layer_norm_rms_epsilon"},
      {"layers0", edit([](Edit& e) {
         e.int_key = "llama.block_count";
         e.int_value = 0;
       }),
       Code::BadShape, "llama.block_count"},
      {"gqa", edit([](Edit& e) {
         e.int_key = "llama.attention.head_count_kv";
         e.int_value = 3;
       }),
       Code::BadShape, "head_count_kv"},
      {"embd", edit([](Edit& e) {
         e.int_key = "llama.embedding_length";
         e.int_value = 65;
       }),
       Code::BadShape, "embedding_length"},
      // Files that used to load and then generate garbage (issue 9): each fails at load naming the key.
      {"block_count_small", edit([](Edit& e) {
         e.int_key = "llama.block_count";
         e.int_value = 1;
       }),
       Code::BadShape, "'llama.block_count' = 1 but the file has tensors of block 1"},
      {"yarn_nan_factor", edit([](Edit& e) {
         e.add_str = {{"llama.rope.scaling.type", "yarn"}};
         e.add_f32 = {{"llama.rope.scaling.factor", std::nanf("")}};
       }),
       Code::BadShape, "llama.rope.scaling.factor"},
      // llama.cpp ignores the YaRN beta / log-multiplier keys for llama (test_model_arch.cpp), but
      // reads rope.scaling.attn_factor for every architecture.
      {"rope_attn_factor_nan", edit([](Edit& e) {
         e.add_str = {{"llama.rope.scaling.type", "yarn"}};
         e.add_f32 = {{"llama.rope.scaling.factor", 4.0f}, {"llama.rope.scaling.attn_factor", std::nanf("")}};
       }),
       Code::BadShape, "llama.rope.scaling.attn_factor"},
      {"rope_scale_absurd", edit([](Edit& e) {
         e.add_f32 = {{"llama.rope.scaling.factor", 1e5f}};
       }),
       Code::BadShape, "llama.rope.scaling.factor"},
      {"rope_scale_linear_absurd", edit([](Edit& e) {
         e.add_f32 = {{"llama.rope.scale_linear", 1e-6f}};
       }),
       Code::BadShape, "llama.rope.scale_linear"},
      {"eos_float", edit([](Edit& e) {
         e.add_f32 = {{"tokenizer.ggml.eos_token_id", 2.0f}};
       }),
       Code::GgufCorrupt, "tokenizer.ggml.eos_token_id"},
      {"eos_out_of_vocab", edit([](Edit& e) {
         e.int_key = "tokenizer.ggml.eos_token_id";
         e.int_value = 320;
       }),
       Code::BadShape, "'tokenizer.ggml.eos_token_id' = 320 is outside the vocabulary [0, 320)"},
      {"bos_string", edit([](Edit& e) {
         e.add_str = {{"tokenizer.ggml.bos_token_id", "1"}};
       }),
       Code::GgufCorrupt, "tokenizer.ggml.bos_token_id"},
      {"gqa_group_too_large", edit([](Edit& e) {
         e.int_key = "llama.attention.head_count";
         e.int_value = 256;
       }),
       Code::BadShape, "128 query heads per KV head; at most 64"},
  };
  for (const Case& c : cases) {
    const std::string q = rewrite(p, c.edit, std::string("bad_") + c.name + ".gguf");
    CHECK(!q.empty());
    if (q.empty()) continue;
    Status st;
    auto m = load_model(q, &st);
    CHECK(m == nullptr);
    if (st.code != c.code || st.message.find(c.must_mention) == std::string::npos)
      std::fprintf(stderr, "  case %s: got %s '%s'\n", c.name, code_name(st.code), st.message.c_str());
    CHECK(st.code == c.code);
    CHECK(st.message.find(c.must_mention) != std::string::npos);
    std::remove(q.c_str());
  }
  // The untouched copy loads (the rewrite itself is sound), and tied output falls back to token_embd.
  Edit tie;
  tie.drop_tensor = "output.weight";
  const std::string q = rewrite(p, tie, "tied.gguf");
  auto m = load_model(q);
  CHECK(m != nullptr);
  if (m) {
    CHECK(m->config().tied_output);
    CHECK(m->weights().output.data == m->weights().tok_embd.data);
    ThreadPool pool(1);
    auto kv = make_kv(*m, 4);
    std::vector<float> lg;
    const int32_t t[2] = {1, 5};
    CHECK(forward(*m, *kv, t, 2, false, &lg, pool).is_ok());
  }
  std::remove(q.c_str());
  Status st = Model::load(nullptr, &m);
  CHECK(st.code == Code::InvalidArgument);
}
