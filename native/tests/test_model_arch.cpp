// Architectures beyond the llama / qwen2 basics (test_model.cpp): qwen3 (per-head Q/K RMSNorm,
// head size apart from dim / heads, no biases) against the naive double-precision forward_ref,
// batch invariance, load errors; RoPE keys read as llama.cpp reads them for these architectures;
// and what synth writes for them (qwen3, head_dim, rope_freqs, rope scaling keys).
// Parity with llama.cpp itself is test/parity/arch.test.ts.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "forward_ref.h"
#include "gguf/gguf.h"
#include "kv/kv_cache.h"
#include "model/forward.h"
#include "model/model.h"
#include "model_test_util.h"
#include "synth/synth.h"
#include "testing.h"
#include "threadpool/thread_pool.h"

using namespace llmserve;
using namespace llmserve_test;

namespace {

// A small qwen3 whose head size (32) is not dim / heads (16): Q and the attention output are 128
// wide while the residual stream is 64.
SynthOptions qwen3_opts(GgmlType type) {
  SynthOptions o;
  o.arch = "qwen3", o.type = type, o.dim = 64, o.layers = 2, o.heads = 4, o.kv_heads = 2, o.head_dim = 32;
  o.ffn = 96, o.context = 256, o.vocab_size = 320, o.seed = 5;
  return o;
}

}  // namespace

// ---------- qwen3 ----------

TEST(arch_qwen3_config_and_reference) {
  for (GgmlType t : {GgmlType::F32, GgmlType::Q8_0}) {
    const std::string p = synth_to(qwen3_opts(t), std::string("qwen3_") + type_traits(t).name + ".gguf");
    auto m = p.empty() ? nullptr : load_model(p);
    CHECK(m != nullptr);
    if (!m) continue;
    const ModelConfig& c = m->config();
    CHECK(c.arch == "qwen3");
    CHECK_EQ(c.rope_type, 2);  // NEOX, as llama.cpp's llama_model_rope_type for qwen3
    CHECK(c.has_qk_norm);
    CHECK(!c.has_qkv_bias);
    CHECK_EQ(c.head_dim, int64_t(32));
    CHECK_EQ(c.n_embd_q(), int64_t(128));
    CHECK_EQ(c.n_rot, int64_t(32));
    CHECK(m->weights().layers[1].attn_q_norm != nullptr && m->weights().layers[1].attn_k_norm != nullptr);

    const auto toks = test_tokens(12, c.n_vocab);
    double scale = 0;
    for (double v : forward_ref(*m, toks)) scale = std::max(scale, std::fabs(v));
    const double d = max_ref_diff(*m, toks);
    // f32: only float rounding; q8_0 rounds activations before every matmul.
    const double tol = (t == GgmlType::F32 ? 1e-4 : 2e-2) * std::max(1.0, scale);
    if (d > tol) std::fprintf(stderr, "  qwen3 %s: max |dlogit| %.3g (scale %.3g)\n", type_traits(t).name, d, scale);
    CHECK(d <= tol);

    // Not vacuous: without the per-head norms the same weights give clearly different logits.
    if (t == GgmlType::F32) {
      auto plain = load_model(p);
      for (LayerWeights& L : plain->mutable_weights().layers) L.attn_q_norm = L.attn_k_norm = nullptr;
      ThreadPool pool(1);
      auto kv_a = make_kv(*m, 64, GgmlType::F32), kv_b = make_kv(*plain, 64, GgmlType::F32);
      std::vector<float> a, b;
      CHECK(forward(*m, *kv_a, toks.data(), 12, false, &a, pool).is_ok());
      CHECK(forward(*plain, *kv_b, toks.data(), 12, false, &b, pool).is_ok());
      double diff = 0;
      for (size_t i = 0; i < a.size() && i < b.size(); ++i) diff = std::max(diff, double(std::fabs(a[i] - b[i])));
      CHECK(diff > 1e-1);
    }
  }
}

TEST(arch_qwen3_batch_invariance) {
  for (GgmlType t : {GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_0}) {
    const std::string p = synth_to(qwen3_opts(t), std::string("qwen3_inv_") + type_traits(t).name + ".gguf");
    auto m = p.empty() ? nullptr : load_model(p);
    CHECK(m != nullptr);
    if (!m) continue;
    check_batch_invariance(*m);
  }
}

TEST(arch_qwen3_load_errors) {
  const std::string p = synth_to(qwen3_opts(GgmlType::F32), "qwen3_err_base.gguf");
  CHECK(!p.empty());
  if (p.empty()) return;
  struct Case {
    const char* name;
    std::function<void(GgufWriter&)> meta;
    std::function<bool(const std::string&, std::vector<int64_t>&, std::vector<uint8_t>&)> tensor;
    Code code;
    const char* must_mention;
  };
  const std::vector<Case> cases = {
      {"missing_k_norm", nullptr,
       [](const std::string& n, std::vector<int64_t>&, std::vector<uint8_t>&) {
         return n != "blk.1.attn_k_norm.weight";
       },
       Code::MissingTensor, "missing tensor 'blk.1.attn_k_norm.weight'"},
      {"q_norm_shape", nullptr,
       [](const std::string& n, std::vector<int64_t>& ne, std::vector<uint8_t>& d) {
         if (n == "blk.0.attn_q_norm.weight") ne[0] = 16, d.resize(16 * 4);
         return true;
       },
       Code::BadShape, "tensor 'blk.0.attn_q_norm.weight' has shape [16], expected [32]"},
      // llama.cpp's qwen3 graph passes no RoPE factors and its loader refuses the extra tensor.
      {"rope_freqs",
       [](GgufWriter& w) {
         (void)w.add_tensor("rope_freqs.weight", GgmlType::F32, {16}, f32_bytes(std::vector<float>(16, 2.0f)));
       },
       nullptr, Code::GgufCorrupt, "'rope_freqs.weight' is not used by architecture 'qwen3'"},
  };
  for (const Case& c : cases) {
    const std::string q = rewrite(p, std::string("bad_") + c.name + ".gguf", {}, c.meta, c.tensor);
    CHECK(!q.empty());
    Status st;
    auto m = load_model(q, &st);
    CHECK(m == nullptr);
    if (st.code != c.code || st.message.find(c.must_mention) == std::string::npos)
      std::fprintf(stderr, "  case %s: got %s '%s'\n", c.name, code_name(st.code), st.message.c_str());
    CHECK(st.code == c.code);
    CHECK(st.message.find(c.must_mention) != std::string::npos);
  }
  // Optional Q/K/V biases load (llama.cpp: TENSOR_NOT_REQUIRED) and are used.
  const std::string biased = rewrite(
      p, "qwen3_biased.gguf", {},
      [](GgufWriter& w) {
        for (int il = 0; il < 2; ++il) {
          const std::string b = "blk." + std::to_string(il) + ".attn_";
          (void)w.add_tensor(b + "q.bias", GgmlType::F32, {128}, f32_bytes(std::vector<float>(128, 0.25f)));
          (void)w.add_tensor(b + "k.bias", GgmlType::F32, {64}, f32_bytes(std::vector<float>(64, -0.5f)));
          (void)w.add_tensor(b + "v.bias", GgmlType::F32, {64}, f32_bytes(std::vector<float>(64, 0.1f)));
        }
      },
      nullptr);
  auto mb = load_model(biased);
  CHECK(mb != nullptr);
  if (mb) {
    CHECK(mb->config().has_qkv_bias);
    const auto toks = test_tokens(8, mb->config().n_vocab);
    CHECK(max_ref_diff(*mb, toks) < 1e-3);
  }
}

// ---------- RoPE keys, as llama.cpp reads them for llama / qwen2 / qwen3 ----------

TEST(arch_rope_keys_as_llama_cpp) {
  SynthOptions o;
  o.arch = "llama", o.dim = 64, o.layers = 1, o.heads = 4, o.kv_heads = 2, o.ffn = 96, o.context = 128;
  o.vocab_size = 320, o.rope_scaling = "yarn", o.rope_scale = 4.0f;
  const std::string p = synth_to(o, "yarn.gguf");
  auto m = p.empty() ? nullptr : load_model(p);
  CHECK(m != nullptr);
  if (!m) return;
  const ModelConfig c = m->config();
  CHECK(c.rope_scaling == RopeScalingType::Yarn);
  CHECK_EQ(c.rope_freq_scale, 0.25f);
  CHECK_EQ(c.yarn_ext_factor, 1.0f);
  CHECK_EQ(c.rope_n_ctx_orig, int64_t(128));
  // llama_context: mscale(4) / (1 + 0.1 ln 4), in float, as llama.cpp computes it.
  const float fac = 4.0f;
  CHECK_EQ(c.yarn_attn_factor, (0.1f * logf(fac) + 1.0f) * (1.0f / (1.0f + 0.1f * logf(fac))));
  CHECK_EQ(c.yarn_beta_fast, 32.0f);
  CHECK_EQ(c.yarn_beta_slow, 1.0f);

  // The YaRN beta and log-multiplier keys are read by llama.cpp only for other architectures
  // (deepseek2, grok, mistral3...): a llama file carrying them computes exactly as without them.
  const std::string q = rewrite(
      p, "yarn_keys.gguf", {},
      [](GgufWriter& w) {
        w.set_f32("llama.rope.scaling.yarn_beta_fast", 8.0f);
        w.set_f32("llama.rope.scaling.yarn_beta_slow", 2.0f);
        w.set_f32("llama.rope.scaling.yarn_log_multiplier", 0.5f);
      },
      nullptr);
  auto mq = load_model(q);
  CHECK(mq != nullptr);
  if (mq) {
    CHECK_EQ(mq->config().yarn_beta_fast, 32.0f);
    CHECK_EQ(mq->config().yarn_beta_slow, 1.0f);
    CHECK_EQ(mq->config().yarn_attn_factor, c.yarn_attn_factor);
  }
  // rope.scaling.attn_factor multiplies in, whatever the type (llama_context: *= rope_attn_factor).
  const std::string r = rewrite(
      p, "attn_factor.gguf", {}, [](GgufWriter& w) { w.set_f32("llama.rope.scaling.attn_factor", 2.0f); }, nullptr);
  auto mr = load_model(r);
  CHECK(mr != nullptr);
  if (mr) CHECK_EQ(mr->config().yarn_attn_factor, c.yarn_attn_factor * 2.0f);
}

// ---------- synth ----------

TEST(arch_synth_writes_each_architecture) {
  // qwen3: head size keys, per-head norms, no biases.
  const std::string p = synth_to(qwen3_opts(GgmlType::F32), "synth_qwen3.gguf");
  std::unique_ptr<GgufFile> f;
  CHECK(!p.empty() && GgufFile::open(p, &f).is_ok());
  if (!f) return;
  int64_t v = 0;
  bool found = false;
  CHECK(f->get_int("qwen3.attention.key_length", &v, &found).is_ok() && found && v == 32);
  CHECK(f->get_int("qwen3.attention.value_length", &v, &found).is_ok() && found && v == 32);
  CHECK(f->find_tensor("blk.0.attn_q_norm.weight") && f->find_tensor("blk.1.attn_k_norm.weight"));
  CHECK(!f->find_tensor("blk.0.attn_q.bias"));
  const GgufTensorInfo* wq = f->find_tensor("blk.0.attn_q.weight");
  const GgufTensorInfo* wo = f->find_tensor("blk.0.attn_output.weight");
  CHECK(wq && wq->ne[0] == 64 && wq->ne[1] == 128);
  CHECK(wo && wo->ne[0] == 128 && wo->ne[1] == 64);

  // llama + rope_freqs + linear scaling: Llama 3's factors (1 for short wavelengths, 8 for long
  // ones, smooth between) and the scaling keys.
  SynthOptions o;
  o.arch = "llama", o.dim = 256, o.layers = 1, o.heads = 4, o.kv_heads = 2, o.ffn = 96, o.context = 512;
  o.vocab_size = 320, o.rope_freqs = true, o.rope_scaling = "linear", o.rope_scale = 2.0f;
  const std::string q = synth_to(o, "synth_llama3.gguf");
  std::unique_ptr<GgufFile> g;
  CHECK(!q.empty() && GgufFile::open(q, &g).is_ok());
  if (!g) return;
  const GgufTensorInfo* rf = g->find_tensor("rope_freqs.weight");
  CHECK(rf && rf->type == GgmlType::F32 && rf->ne[0] == 32);
  if (rf) {
    const float* ff = reinterpret_cast<const float*>(rf->data);
    CHECK_EQ(ff[0], 1.0f);
    CHECK_EQ(ff[31], 8.0f);
    int smooth = 0;
    for (int i = 1; i < 32; ++i) {
      CHECK(ff[i] >= ff[i - 1]);
      smooth += ff[i] > 1.0f && ff[i] < 8.0f;
    }
    CHECK(smooth > 0);
  }
  std::string s;
  CHECK(g->get_string("llama.rope.scaling.type", &s, &found).is_ok() && found && s == "linear");
  const GgufValue* fac = g->find("llama.rope.scaling.factor");
  CHECK(fac && fac->as_double() == 2.0);
  auto m = load_model(q);
  CHECK(m && m->config().has_rope_freqs && m->config().rope_freq_scale == 0.5f);

  // Refused: rope_freqs off llama, odd or absent head sizes, unknown scaling types, bad factors.
  auto refused = [](SynthOptions x, const char* mention) {
    Status st = validate_synth_options(x);
    if (st.code != Code::InvalidArgument || st.message.find(mention) == std::string::npos)
      std::fprintf(stderr, "  got %s '%s', expected mention of '%s'\n", code_name(st.code), st.message.c_str(),
                   mention);
    CHECK(st.code == Code::InvalidArgument);
    CHECK(st.message.find(mention) != std::string::npos);
  };
  SynthOptions x = qwen3_opts(GgmlType::F32);
  x.rope_freqs = true;
  refused(x, "rope_freqs");
  x = qwen3_opts(GgmlType::F32);
  x.head_dim = 33;
  refused(x, "even head_dim");
  x = qwen3_opts(GgmlType::F32);
  x.head_dim = 0, x.dim = 66;
  refused(x, "heads to divide dim");
  x = qwen3_opts(GgmlType::F32);
  x.rope_scaling = "longrope";
  refused(x, "rope_scaling");
  x = qwen3_opts(GgmlType::F32);
  x.rope_scale = 0.0f;
  refused(x, "rope_scale");
  x = qwen3_opts(GgmlType::F32);
  x.arch = "phi4";
  refused(x, "'phi3'");
  // An explicit head size lifts the dim % heads rule.
  x = qwen3_opts(GgmlType::F32);
  x.dim = 66;
  CHECK(validate_synth_options(x).is_ok());
}
