// Shared by the LoRA tests (test_lora.cpp, test_lora_store.cpp): temp files removed at exit, a small
// synthesized f32 base (dims multiples of 32), synth adapters, the merged-weights reference model
// (W + scale·B·A in double), and logits over a token list.
#pragma once
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "kv/kv_cache.h"
#include "lora/lora.h"
#include "model/forward.h"
#include "model/model.h"
#include "quant/quant.h"
#include "synth/synth.h"
#include "testing.h"
#include "threadpool/thread_pool.h"
#include "tmp_files.h"

namespace lora_test {

using namespace llmserve;

inline std::string tmp_path(const std::string& name) { return llmserve_test::group_tmp_path("lora", name); }

inline std::string base_path(const std::string& arch) {
  const std::string p = tmp_path("base_" + arch + ".gguf");
  if (access(p.c_str(), R_OK) == 0) return p;
  SynthOptions o;
  o.arch = arch, o.type = GgmlType::F32, o.layers = 2, o.heads = 4, o.kv_heads = 2, o.context = 256;
  o.vocab_size = 320, o.seed = 11, o.dim = 64, o.ffn = 96;
  Status st = synth_model(o, p);
  if (!st) std::fprintf(stderr, "  synth_model: %s\n", st.message.c_str());
  return p;
}

inline std::unique_ptr<Model> load_model(const std::string& path) {
  std::unique_ptr<GgufFile> f;
  if (!GgufFile::open(path, &f)) return nullptr;
  std::unique_ptr<Model> m;
  if (!Model::load(std::shared_ptr<GgufFile>(std::move(f)), &m)) return nullptr;
  return m;
}

inline std::string adapter_path(const std::string& base, const std::string& name, SynthLoraOptions o) {
  const std::string p = tmp_path(name + ".gguf");
  Status st = synth_lora(base, o, p);
  if (!st) std::fprintf(stderr, "  synth_lora: %s\n", st.message.c_str());
  CHECK(st.is_ok());
  return p;
}

inline const std::vector<std::string> kAllTargets = {"attn_q",   "attn_k", "attn_v",   "attn_output",
                                                     "ffn_gate", "ffn_up", "ffn_down", "output"};

// The base model with every adapted matrix replaced by W + scale·B·A (computed in double, stored
// f32): the reference a LoRA forward must match.
inline std::string merged_path(const std::string& base, const LoraAdapter& ad, const Model& m,
                               const std::string& name) {
  std::unique_ptr<GgufFile> f;
  CHECK(GgufFile::open(base, &f).is_ok());
  GgufWriter w;
  for (auto& [k, v] : f->metadata()) w.set_value(k, v);
  std::vector<float> arow, brow;
  for (const GgufTensorInfo& t : f->tensors()) {
    std::vector<uint8_t> data(t.data, t.data + t.nbytes);
    const LoraPair* pr = nullptr;
    if (t.name == "output.weight") pr = ad.pair(-1, Proj::Output);
    for (int64_t il = 0; il < m.config().n_layer && !pr; ++il) {
      const std::string p = "blk." + std::to_string(il) + ".";
      const std::pair<const char*, Proj> kinds[] = {{"attn_q.weight", Proj::Q},      {"attn_k.weight", Proj::K},
                                                    {"attn_v.weight", Proj::V},      {"attn_output.weight", Proj::O},
                                                    {"ffn_gate.weight", Proj::Gate}, {"ffn_up.weight", Proj::Up},
                                                    {"ffn_down.weight", Proj::Down}};
      for (auto& [k, proj] : kinds)
        if (t.name == p + k) pr = ad.pair(il, proj);
    }
    if (pr) {
      CHECK(t.type == GgmlType::F32);
      const int64_t n_in = t.ne[0], n_out = t.ne[1], r = pr->a.n_out;
      std::vector<float> A(static_cast<size_t>(r * n_in)), B(static_cast<size_t>(n_out * r));
      for (int64_t k = 0; k < r; ++k) dequantize_row(pr->a.type, pr->a.row(k), A.data() + k * n_in, n_in);
      for (int64_t o = 0; o < n_out; ++o) dequantize_row(pr->b.type, pr->b.row(o), B.data() + o * r, r);
      float* W = reinterpret_cast<float*>(data.data());
      for (int64_t o = 0; o < n_out; ++o)
        for (int64_t i = 0; i < n_in; ++i) {
          double d = 0;
          for (int64_t k = 0; k < r; ++k) d += static_cast<double>(B[o * r + k]) * A[k * n_in + i];
          W[o * n_in + i] = static_cast<float>(W[o * n_in + i] + static_cast<double>(pr->scale) * d);
        }
    }
    std::vector<int64_t> ne(t.ne, t.ne + t.n_dims);
    CHECK(w.add_tensor(t.name, t.type, ne, std::move(data)).is_ok());
  }
  const std::string p = tmp_path(name + "_merged.gguf");
  CHECK(w.write(p).is_ok());
  return p;
}

inline std::vector<int32_t> test_tokens(int64_t n, int64_t n_vocab, int seed) {
  std::vector<int32_t> t;
  for (int64_t i = 0; i < n; ++i) t.push_back(static_cast<int32_t>((i * 37 + seed * 101 + 5) % n_vocab));
  return t;
}

// Logits of every token of toks from position 0 (one forward call).
inline std::vector<float> logits_all(const Model& m, const std::vector<int32_t>& toks, const ProjectionDelta* d,
                                     GgmlType kvt = GgmlType::F32) {
  ThreadPool pool(2);
  std::unique_ptr<KvCache> kv;
  KvCacheOptions o;
  o.n_ctx = 64;
  o.type = kvt;
  CHECK(KvCache::create(kv_shape(m.config()), o, &kv).is_ok());
  std::vector<float> lg;
  CHECK(forward(m, *kv, toks.data(), static_cast<int64_t>(toks.size()), true, &lg, pool, nullptr, d).is_ok());
  return lg;
}

inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = a.size() == b.size() ? 0 : 1e30;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));
  return d;
}

}  // namespace lora_test
