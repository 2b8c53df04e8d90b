// gemma2 / gemma3: hyperparameters read as llama.cpp reads them (window, layer pattern, soft-caps,
// Q pre-scale, local RoPE base), forward() against the double-precision forward_ref on prompts
// longer than the sliding window, batch invariance, load errors, and what synth writes.
// Parity with llama.cpp itself is test/parity/gemma.test.ts.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "model_test_util.h"

using namespace llmserve;
using namespace llmserve_test;

namespace {

// Small gemma models (head size 32, as a q8_0 KV cache needs; Q is 128 wide over a 64 stream) with a window of 8 (prompts of 40 tokens go well past it) and soft-caps small
// enough to bend the scores and logits of random weights (real models: 50 and 30).
SynthOptions gemma_opts(const std::string& arch, GgmlType type) {
  SynthOptions o;
  o.arch = arch, o.type = type, o.dim = 64, o.layers = 4, o.heads = 4, o.kv_heads = 2, o.head_dim = 32;
  o.ffn = 96;
  o.context = 256, o.vocab_size = 320, o.seed = 11, o.sliding_window = 8, o.final_softcap = 4.0f;
  if (arch == "gemma2") {
    o.attn_softcap = 1.5f;
  } else {
    o.swa_pattern = 3;  // layers 0, 1, 3 local; 2 global
    o.rope_freq_base = 1e6f, o.rope_freq_base_swa = 1e4f;
  }
  return o;
}

std::unique_ptr<Model> gemma(const std::string& arch, GgmlType type) {
  const std::string p = synth_to(gemma_opts(arch, type), arch + "_" + type_traits(type).name + ".gguf");
  return p.empty() ? nullptr : load_model(p);
}

}  // namespace

TEST(gemma_config_as_llama_cpp) {
  auto g2 = gemma("gemma2", GgmlType::F32);
  auto g3 = gemma("gemma3", GgmlType::F32);
  CHECK(g2 && g3);
  if (!g2 || !g3) return;
  const ModelConfig& a = g2->config();
  CHECK_EQ(a.rope_type, 2);
  CHECK(a.embd_scale && a.post_norms && a.geglu && a.tied_output && !a.has_qk_norm);
  CHECK_EQ(a.n_swa, int64_t(8));
  // Pattern 2 (gemma2's default): even layers local, odd layers global.
  CHECK(a.is_swa(0) && !a.is_swa(1) && a.is_swa(2) && !a.is_swa(3));
  CHECK_EQ(a.attn_softcap, 1.5f);
  CHECK_EQ(a.final_softcap, 4.0f);
  CHECK_EQ(a.q_scale, 1.0f / std::sqrt(32.0f));  // 1/sqrt(head_dim), not 1/sqrt(dim / heads)
  CHECK(!a.swa_rope_differs());
  CHECK(g2->weights().layers[3].attn_post_norm && g2->weights().layers[3].ffn_post_norm);
  CHECK(g2->weights().output.data == g2->weights().tok_embd.data);

  const ModelConfig& b = g3->config();
  CHECK(b.has_qk_norm && b.post_norms && b.geglu && b.embd_scale);
  CHECK(b.is_swa(0) && b.is_swa(1) && !b.is_swa(2) && b.is_swa(3));
  CHECK_EQ(b.attn_softcap, 0.0f);  // gemma3 never soft-caps attention
  CHECK_EQ(b.final_softcap, 4.0f);
  CHECK_EQ(b.rope_freq_base, 1e6f);
  CHECK_EQ(b.rope_freq_base_swa, 1e4f);
  CHECK(b.swa_rope_differs());

  // Defaults when the file says nothing: gemma2 window 4096 and caps 50 / 30; gemma3 no window,
  // no final cap, local base 10000.
  SynthOptions o = gemma_opts("gemma2", GgmlType::F32);
  o.sliding_window = 0, o.attn_softcap = 0, o.final_softcap = 0;
  auto d2 = load_model(synth_to(o, "gemma2_defaults.gguf"));
  CHECK(d2 && d2->config().n_swa == 4096 && d2->config().attn_softcap == 50.0f && d2->config().final_softcap == 30.0f);
  o = gemma_opts("gemma3", GgmlType::F32);
  o.sliding_window = 0, o.final_softcap = 0, o.rope_freq_base_swa = 0;
  auto d3 = load_model(synth_to(o, "gemma3_defaults.gguf"));
  CHECK(d3 && d3->config().n_swa == 0 && !d3->config().is_swa(0) && d3->config().final_softcap == 0.0f);
  CHECK(d3 && d3->config().rope_freq_base_swa == 10000.0f);
}

TEST(gemma_reference_past_the_window) {
  for (const char* arch : {"gemma2", "gemma3"}) {
    for (GgmlType t : {GgmlType::F32, GgmlType::Q8_0}) {
      auto m = gemma(arch, t);
      CHECK(m != nullptr);
      if (!m) continue;
      const auto toks = test_tokens(40, m->config().n_vocab);
      double scale = 0;
      for (double v : forward_ref(*m, toks)) scale = std::max(scale, std::fabs(v));
      const double d = max_ref_diff(*m, toks);
      // f32: float rounding and the f16 GELU table; q8_0 also rounds activations before matmuls.
      const double tol = (t == GgmlType::F32 ? 2e-2 : 6e-2) * std::max(1.0, scale);
      if (d > tol)
        std::fprintf(stderr, "  %s %s: max |dlogit| %.3g (scale %.3g)\n", arch, type_traits(t).name, d, scale);
      CHECK(d <= tol);
    }
  }
}

TEST(gemma_batch_invariance) {
  for (const char* arch : {"gemma2", "gemma3"}) {
    for (GgmlType t : {GgmlType::F32, GgmlType::Q4_0}) {
      auto m = gemma(arch, t);
      CHECK(m != nullptr);
      if (!m) continue;
      check_batch_invariance(*m);
    }
  }
}

TEST(gemma_load_errors) {
  const std::string base = synth_to(gemma_opts("gemma2", GgmlType::F32), "gemma2_err_base.gguf");
  auto code_of = [](const std::string& p) {
    Status st;
    auto m = load_model(p, &st);
    return st.code;
  };
  // gemma2 takes no output.weight (llama.cpp refuses the extra tensor too).
  const std::string with_output = rewrite(
      base, "gemma2_output.gguf", {},
      [](GgufWriter& w) {
        (void)w.add_tensor("output.weight", GgmlType::F32, {64, 320}, std::vector<uint8_t>(64 * 320 * 4, 0));
      },
      nullptr);
  CHECK(code_of(with_output) == Code::GgufCorrupt);
  // A per-layer pattern array is not the integer period llama.cpp reads for gemma2/3.
  const std::string arr = rewrite(
      base, "gemma2_pattern_arr.gguf", {},
      [](GgufWriter& w) {
        w.set_arr_i32("gemma2.attention.sliding_window_pattern", {1, 0, 1, 0});
      },
      nullptr);
  CHECK(code_of(arr) == Code::UnsupportedArch);
  // gemma2 divides by its caps: zero or negative caps are refused, naming the key.
  const std::string zero_cap = rewrite(
      base, "gemma2_zero_cap.gguf", {"gemma2.attn_logit_softcapping"},
      [](GgufWriter& w) { w.set_f32("gemma2.attn_logit_softcapping", 0.0f); }, nullptr);
  Status st;
  load_model(zero_cap, &st);
  CHECK(st.code == Code::BadShape && st.message.find("attn_logit_softcapping") != std::string::npos);
  // Missing post-norm.
  const std::string no_post = rewrite(base, "gemma2_no_post.gguf", {}, nullptr,
                                      [](const std::string& n, std::vector<int64_t>&, std::vector<uint8_t>&) {
                                        return n != "blk.1.post_ffw_norm.weight";
                                      });
  CHECK(code_of(no_post) == Code::MissingTensor);
}

TEST(gemma_synth_options) {
  SynthOptions o;
  o.arch = "qwen2", o.sliding_window = 8;
  CHECK(validate_synth_options(o).code == Code::InvalidArgument);  // no window key on a qwen2
  o = gemma_opts("gemma3", GgmlType::F32);
  o.attn_softcap = 2.0f;
  CHECK(validate_synth_options(o).code == Code::InvalidArgument);  // gemma3 has no attention cap
  // gemma2 never writes output.weight; gemma3 writes it unless tied.
  std::unique_ptr<GgufFile> f;
  CHECK(GgufFile::open(synth_to(gemma_opts("gemma2", GgmlType::F32), "g2_keys.gguf"), &f).is_ok());
  CHECK(f && f->find_tensor("output.weight") == nullptr && f->find("gemma2.attention.sliding_window"));
  CHECK(f && f->find("gemma2.attention.key_length") && f->find_tensor("blk.0.post_attention_norm.weight"));
  CHECK(GgufFile::open(synth_to(gemma_opts("gemma3", GgmlType::F32), "g3_keys.gguf"), &f).is_ok());
  CHECK(f && f->find_tensor("output.weight") != nullptr && f->find_tensor("blk.0.attn_q_norm.weight"));
  CHECK(f && f->find("gemma3.rope.freq_base_swa") && f->find("gemma3.attention.sliding_window_pattern"));
}
