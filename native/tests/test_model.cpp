// Model loading, forward pass and thread pool: parity with llama.cpp on the real fixture models,
// batch invariance (incremental == batched == chunked, any thread count), logits_all rows, a naive
// double-precision reference on synthetic llama / qwen2 models, and every load / forward error.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "quant/quant.h"
#include "synth/synth.h"
#include "testing.h"
#include "threadpool/thread_pool.h"

using namespace llmserve;

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

std::string tmp_path(const std::string& name) {
  return "/tmp/llmserve_test_model_" + std::to_string(static_cast<long>(::getpid())) + "_" + name;
}

std::unique_ptr<Model> load_model(const std::string& path, Status* st_out = nullptr) {
  std::unique_ptr<GgufFile> f;
  Status st = GgufFile::open(path, &f);
  std::unique_ptr<Model> m;
  if (st.is_ok()) st = Model::load(std::shared_ptr<GgufFile>(std::move(f)), &m);
  if (st_out) *st_out = st;
  else if (!st.is_ok()) std::fprintf(stderr, "  load %s: %s\n", path.c_str(), st.message.c_str());
  return m;
}

std::unique_ptr<KvCache> make_kv(const Model& m, int64_t n_ctx, bool f16 = true) {
  std::unique_ptr<KvCache> kv;
  KvCacheOptions o;
  o.n_ctx = n_ctx;
  o.f16 = f16;
  Status st = KvCache::create(m.config(), o, &kv);
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

// ---------- minimal JSON (enough for the fixture reference files) ----------

struct Json {
  enum Kind { Null, Bool, Num, Str, Arr, Obj } kind = Null;
  double num = 0;
  std::string str;
  std::vector<Json> arr;
  std::vector<std::pair<std::string, Json>> obj;
  const Json* get(const std::string& k) const {
    for (auto& kv : obj)
      if (kv.first == k) return &kv.second;
    return nullptr;
  }
};

struct JsonParser {
  const char* p;
  const char* end;
  void ws() { while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) ++p; }
  std::string string() {
    std::string s;
    ++p;  // opening quote
    while (p < end && *p != '"') {
      if (*p == '\\' && p + 1 < end) {
        ++p;
        if (*p == 'u') { s += '?'; p += 4; } else s += *p;  // escapes are not needed for ids
      } else {
        s += *p;
      }
      ++p;
    }
    ++p;
    return s;
  }
  Json value() {
    ws();
    Json j;
    if (p >= end) throw std::runtime_error("json: unexpected end");
    if (*p == '{') {
      j.kind = Json::Obj;
      ++p;
      ws();
      while (p < end && *p != '}') {
        ws();
        std::string k = string();
        ws();
        ++p;  // ':'
        j.obj.emplace_back(k, value());
        ws();
        if (*p == ',') ++p;
        ws();
      }
      ++p;
    } else if (*p == '[') {
      j.kind = Json::Arr;
      ++p;
      ws();
      while (p < end && *p != ']') {
        j.arr.push_back(value());
        ws();
        if (*p == ',') ++p;
        ws();
      }
      ++p;
    } else if (*p == '"') {
      j.kind = Json::Str;
      j.str = string();
    } else if (!std::strncmp(p, "null", 4)) {
      p += 4;
    } else if (!std::strncmp(p, "true", 4) || !std::strncmp(p, "false", 5)) {
      j.kind = Json::Bool;
      j.num = *p == 't';
      p += *p == 't' ? 4 : 5;
    } else {
      char* e = nullptr;
      j.kind = Json::Num;
      j.num = std::strtod(p, &e);
      if (e == p) throw std::runtime_error("json: bad value");
      p = e;
    }
    return j;
  }
};

bool read_json(const std::string& path, Json* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  JsonParser jp{s.data(), s.data() + s.size()};
  try {
    *out = jp.value();
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
  o.arch = arch;
  o.type = type;
  o.dim = 64;
  o.layers = 2;
  o.heads = 4;
  o.kv_heads = 2;
  o.ffn = 96;
  o.context = 256;
  o.vocab_size = 320;
  o.seed = 11;
  if (type == GgmlType::Q4_K || type == GgmlType::Q6_K) {  // k-quants need rows of 256
    o.dim = 256;
    o.ffn = 512;
  }
  return o;
}

std::string synth_path(const SynthOptions& o) {
  const std::string p = tmp_path(o.arch + "_" + type_traits(o.type).name + ".gguf");
  if (access(p.c_str(), R_OK) == 0) return p;
  Status st = synth_model(o, p);
  if (!st.is_ok()) {
    std::fprintf(stderr, "  synth_model: %s\n", st.message.c_str());
    return "";
  }
  return p;
}

// Copies a GGUF, letting edit() change metadata/tensors through the writer calls it makes.
struct Edit {
  std::string set_arch;                      // replaces general.architecture
  std::string drop_key;                      // metadata key left out
  std::string drop_tensor;                   // tensor left out
  std::string reshape_tensor;                // tensor written with ne[1] - 1 rows
  std::string retype_tensor;                 // tensor written as Q5_0 (not supported)
  std::string int_key;                       // metadata key replaced by int_value
  int64_t int_value = 0;
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
  for (auto& t : f->tensors()) {
    if (t.name == e.drop_tensor) continue;
    std::vector<int64_t> ne(t.ne, t.ne + std::max<uint32_t>(t.n_dims, 1));
    GgmlType type = t.type;
    if (t.name == e.reshape_tensor) ne[1] -= 1;
    if (t.name == e.retype_tensor) type = GgmlType::Q5_0;
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

// Naive double-precision forward of one sequence (dequantized weights, textbook formulas),
// returning the last token's logits. Independent of the kernels under test.
std::vector<double> naive_forward(const Model& m, const std::vector<int32_t>& toks) {
  const ModelConfig& c = m.config();
  const ModelWeights& W = m.weights();
  const int64_t E = c.n_embd, HD = c.head_dim, NQ = c.n_embd_q(), NKV = c.n_embd_kv();
  const int64_t T = static_cast<int64_t>(toks.size());
  auto deq = [](const MatrixView& mv, int64_t r) {
    std::vector<float> f(mv.n_in);
    dequantize_row(mv.type, mv.row(r), f.data(), mv.n_in);
    return std::vector<double>(f.begin(), f.end());
  };
  auto matvec = [&](const MatrixView& mv, const float* b, const std::vector<double>& x) {
    std::vector<double> y(mv.n_out);
    for (int64_t r = 0; r < mv.n_out; ++r) {
      auto w = deq(mv, r);
      double s = 0;
      for (int64_t i = 0; i < mv.n_in; ++i) s += w[i] * x[i];
      y[r] = s + (b ? b[r] : 0.0);
    }
    return y;
  };
  auto norm = [&](const std::vector<double>& x, const float* w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double sc = 1.0 / std::sqrt(ss / x.size() + c.rms_eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * sc * w[i];
    return y;
  };
  auto rope = [&](std::vector<double>& v, int64_t heads, int64_t pos) {
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < c.n_rot / 2; ++i) {
        const double th = pos * std::pow(double(c.rope_freq_base), -2.0 * i / c.n_rot);
        // NORM rotates (2i, 2i+1); NEOX rotates (i, i + n_rot/2).
        const int64_t a = c.rope_type == 2 ? i : 2 * i, b = c.rope_type == 2 ? i + c.n_rot / 2 : 2 * i + 1;
        double& x0 = v[h * HD + a];
        double& x1 = v[h * HD + b];
        const double n0 = x0 * std::cos(th) - x1 * std::sin(th), n1 = x0 * std::sin(th) + x1 * std::cos(th);
        x0 = n0;
        x1 = n1;
      }
  };
  std::vector<std::vector<double>> x(T);
  for (int64_t t = 0; t < T; ++t) x[t] = deq(W.tok_embd, toks[t]);
  for (const LayerWeights& L : W.layers) {
    std::vector<std::vector<double>> K(T), V(T), Q(T);
    for (int64_t t = 0; t < T; ++t) {
      auto xn = norm(x[t], L.attn_norm);
      Q[t] = matvec(L.wq, L.bq, xn);
      K[t] = matvec(L.wk, L.bk, xn);
      V[t] = matvec(L.wv, L.bv, xn);
      rope(Q[t], c.n_head, t);
      rope(K[t], c.n_head_kv, t);
    }
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> att(NQ, 0.0);
      for (int64_t h = 0; h < c.n_head; ++h) {
        const int64_t kh = h / (c.n_head / c.n_head_kv);
        std::vector<double> s(t + 1);
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j <= t; ++j) {
          double d = 0;
          for (int64_t i = 0; i < HD; ++i) d += Q[t][h * HD + i] * K[j][kh * HD + i];
          s[j] = d / std::sqrt(double(HD));
          mx = std::max(mx, s[j]);
        }
        for (auto& v : s) sum += (v = std::exp(v - mx));
        for (int64_t j = 0; j <= t; ++j)
          for (int64_t i = 0; i < HD; ++i) att[h * HD + i] += s[j] / sum * V[j][kh * HD + i];
      }
      auto o = matvec(L.wo, L.bo, att);
      for (int64_t i = 0; i < E; ++i) x[t][i] += o[i];
      auto xn = norm(x[t], L.ffn_norm);
      auto g = matvec(L.ffn_gate, L.ffn_gate_b, xn);
      auto u = matvec(L.ffn_up, L.ffn_up_b, xn);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      auto d = matvec(L.ffn_down, L.ffn_down_b, g);
      for (int64_t i = 0; i < E; ++i) x[t][i] += d[i];
    }
  }
  (void)NKV;
  return matvec(W.output, nullptr, norm(x[T - 1], W.output_norm));
}

// Logits of every position of `toks`, computed in chunks of the given sizes (cycled).
std::vector<float> run_chunked(const Model& m, const std::vector<int32_t>& toks,
                               const std::vector<int64_t>& chunks, int threads, bool f16 = true) {
  ThreadPool pool(threads);
  auto kv = make_kv(m, 256, f16);
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
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      for (auto& h : hits) h = 0;
      std::vector<std::atomic<int>> chunk_used(static_cast<size_t>(threads));
      for (auto& c : chunk_used) c = 0;
      pool.parallel_for_chunked(n, [&](int64_t b, int64_t e, int c) {
        CHECK(c >= 0 && c < threads);
        chunk_used[c]++;
        for (int64_t i = b; i < e; ++i) hits[i]++;
      });
      for (auto& h : hits) CHECK_EQ(h.load(), 1);
      for (auto& c : chunk_used) CHECK(c.load() <= 1);
    }
  }
}

TEST(model_thread_pool_nested_and_exceptions) {
  ThreadPool pool(3);
  std::atomic<int64_t> sum{0};
  pool.parallel_for(6, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      pool.parallel_for(10, [&](int64_t b2, int64_t e2) { sum += (e2 - b2) * (i + 1); });
  });
  CHECK_EQ(sum.load(), int64_t(10 * 21));
  bool caught = false;
  try {
    pool.parallel_for(9, [&](int64_t b, int64_t) {
      if (b > 0) throw std::runtime_error("boom");
    });
  } catch (const std::runtime_error&) {
    caught = true;
  }
  CHECK(caught);
  // Still usable afterwards, many times in a row.
  std::atomic<int64_t> total{0};
  for (int r = 0; r < 2000; ++r) pool.parallel_for(3, [&](int64_t b, int64_t e) { total += e - b; });
  CHECK_EQ(total.load(), int64_t(6000));
}

// ---------- parity with llama.cpp on the real fixtures ----------

namespace {
void check_reference(const std::string& name) {
  const std::string dir = fixtures_dir();
  if (dir.empty()) {
    std::printf("  skipped: fixture folder ../shared/fixtures not found\n");
    return;
  }
  auto m = load_model(dir + "/models/" + name + ".gguf");
  Json ref;
  CHECK(m != nullptr);
  CHECK(read_json(dir + "/models/" + name + ".reference.json", &ref));
  if (!m || !ref.get("cases")) return;
  const int64_t V = m->config().n_vocab;
  ThreadPool pool(2);
  double max_diff = 0;
  int steps = 0, greedy_ok = 0;
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
        CHECK_NEAR(p[id], pair.arr[1].num, 1e-3);
      }
      ++steps;
      // Teacher forcing with the reference token keeps later steps comparable.
      st = forward(*m, *kv, &greedy[s], 1, false, &lg, pool);
      CHECK(st.is_ok());
    }
  }
  std::printf("  %s: %d/%d greedy tokens equal, max |p - p_ref| over top-5 = %.2e\n", name.c_str(),
              greedy_ok, steps, max_diff);
}
}  // namespace

TEST(model_parity_aidreams260K) { check_reference("aidreams260K"); }
TEST(model_parity_stories260K_gqa) { check_reference("stories260K-ids"); }

TEST(model_fixture_config) {
  const std::string dir = fixtures_dir();
  if (dir.empty()) {
    std::printf("  skipped: fixture folder not found\n");
    return;
  }
  auto m = load_model(dir + "/models/stories260K-ids.gguf");
  CHECK(m != nullptr);
  if (!m) return;
  const ModelConfig& c = m->config();
  CHECK(c.arch == "llama");
  CHECK_EQ(c.n_embd, int64_t(64));
  CHECK_EQ(c.n_layer, int64_t(5));
  CHECK_EQ(c.n_head, int64_t(8));
  CHECK_EQ(c.n_head_kv, int64_t(4));
  CHECK_EQ(c.head_dim, int64_t(8));
  CHECK_EQ(c.n_vocab, int64_t(512));
  CHECK_EQ(c.rope_type, 0);
}

// ---------- batch invariance and logits_all (fixtures and synthetic models) ----------

namespace {
void check_invariance(const Model& m, bool f16) {
  const int64_t V = m.config().n_vocab;
  const auto toks = test_tokens(40, V);
  const auto batched = run_chunked(m, toks, {40}, 1, f16);
  const auto incremental = run_chunked(m, toks, {1}, 1, f16);
  const auto chunked = run_chunked(m, toks, {3, 1, 7, 5}, 2, f16);
  const auto threaded = run_chunked(m, toks, {40}, 3, f16);
  CHECK_EQ(batched.size(), toks.size() * V);
  CHECK(incremental.size() == batched.size() && same_bits(incremental.data(), batched.data(), batched.size()));
  CHECK(chunked.size() == batched.size() && same_bits(chunked.data(), batched.data(), batched.size()));
  CHECK(threaded.size() == batched.size() && same_bits(threaded.data(), batched.data(), batched.size()));

  // logits_all=false returns exactly the last row; prefixes (after truncate) match logits_all rows.
  ThreadPool pool(2);
  auto kv = make_kv(m, 64, f16);
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
  if (dir.empty()) {
    std::printf("  skipped: fixture folder not found\n");
    return;
  }
  auto m = load_model(dir + "/models/stories260K-ids.gguf");
  CHECK(m != nullptr);
  if (!m) return;
  check_invariance(*m, true);
  check_invariance(*m, false);
}

TEST(model_batch_invariance_synthetic_all_types) {
  for (const char* arch : {"llama", "qwen2"}) {
    for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0,
                       GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K}) {
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
      check_invariance(*m, true);
      if (lt::failures() != before) std::fprintf(stderr, "  (%s %s)\n", arch, type_traits(t).name);
    }
  }
}

// ---------- structure: against a naive double-precision forward ----------

TEST(model_matches_naive_reference) {
  for (const char* arch : {"llama", "qwen2"}) {
    for (GgmlType t : {GgmlType::F32, GgmlType::Q8_0}) {
      SynthOptions o = synth_opts(arch, t);
      const std::string p = synth_path(o);
      auto m = p.empty() ? nullptr : load_model(p);
      CHECK(m != nullptr);
      if (!m) continue;
      const int64_t V = m->config().n_vocab;
      const auto toks = test_tokens(12, V);
      const auto ref = naive_forward(*m, toks);
      for (bool f16 : {false, true}) {
        ThreadPool pool(2);
        auto kv = make_kv(*m, 32, f16);
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
        const double tol = (t == GgmlType::F32 && !f16) ? 1e-4 : 2e-2;
        if (max_l > tol * std::max(1.0, scale))
          std::fprintf(stderr, "  %s %s f16kv=%d: max |dlogit| %.3g (scale %.3g)\n", arch,
                       type_traits(t).name, f16, max_l, scale);
        CHECK(max_l <= tol * std::max(1.0, scale));
        CHECK(max_p <= 1e-2);
        CHECK_EQ(argmax(lg.data(), V), argmax(rf.data(), V));
      }
    }
  }
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
  CHECK(KvCache::create(m->config(), o, &bad_kv).code == Code::InvalidArgument);
  o.n_ctx = int64_t(1) << 23;  // 2^23 positions x 2 layers x 32 x 2 B = 1 GiB per tensor: allocates lazily or fails cleanly
  Status big = KvCache::create(m->config(), o, &bad_kv);
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
  std::vector<Case> cases;
  {
    Edit e; e.set_arch = "gpt2";
    cases.push_back({"arch", e, Code::UnsupportedArch, "architecture 'gpt2' is not supported; supported: llama, qwen2"});
  }
  {
    Edit e; e.drop_tensor = "blk.1.ffn_up.weight";
    cases.push_back({"missing", e, Code::MissingTensor, "blk.1.ffn_up.weight"});
  }
  {
    Edit e; e.drop_tensor = "output_norm.weight";
    cases.push_back({"missing_norm", e, Code::MissingTensor, "output_norm.weight"});
  }
  {
    Edit e; e.reshape_tensor = "blk.0.attn_k.weight";
    cases.push_back({"shape", e, Code::BadShape, "blk.0.attn_k.weight"});
  }
  {
    Edit e; e.retype_tensor = "blk.0.attn_q.weight";
    cases.push_back({"type", e, Code::UnsupportedType, "blk.0.attn_q.weight"});
  }
  {
    Edit e; e.drop_key = "llama.attention.layer_norm_rms_epsilon";
    cases.push_back({"key", e, Code::GgufCorrupt, "llama.attention.layer_norm_rms_epsilon"});
  }
  {
    Edit e; e.int_key = "llama.block_count"; e.int_value = 0;
    cases.push_back({"layers0", e, Code::BadShape, "llama.block_count"});
  }
  {
    Edit e; e.int_key = "llama.attention.head_count_kv"; e.int_value = 3;
    cases.push_back({"gqa", e, Code::BadShape, "head_count_kv"});
  }
  {
    Edit e; e.int_key = "llama.embedding_length"; e.int_value = 65;
    cases.push_back({"embd", e, Code::BadShape, ""});
  }
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
  Edit tie; tie.drop_tensor = "output.weight";
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
