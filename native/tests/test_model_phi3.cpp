// phi3: fused attn_qkv and gate-up ffn_up tensors viewed as Q/K/V and gate/up, Q pre-scaled by
// 1/sqrt(head_dim), LongRoPE factor sets chosen by the context size as llama.cpp chooses them, the
// file's sliding window ignored (llama.cpp disables it for phi3); forward() against forward_ref,
// batch invariance, load errors. Parity with llama.cpp itself is test/parity/arch.test.ts.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "lora/lora.h"
#include "model_test_util.h"

using namespace llmserve;
using namespace llmserve_test;

namespace {

SynthOptions phi3_opts(GgmlType type, bool long_rope) {
  SynthOptions o;
  o.arch = "phi3", o.type = type, o.dim = 64, o.layers = 2, o.heads = 2, o.kv_heads = 1, o.ffn = 96;
  o.context = 256, o.vocab_size = 320, o.seed = 13, o.sliding_window = 8, o.long_rope = long_rope;
  return o;
}

std::unique_ptr<Model> phi3(GgmlType type, bool long_rope) {
  const std::string p = synth_to(phi3_opts(type, long_rope),
                                 std::string("phi3_") + type_traits(type).name + (long_rope ? "_lr" : "") + ".gguf");
  return p.empty() ? nullptr : load_model(p);
}

}  // namespace

TEST(phi3_config_and_fused_views) {
  auto m = phi3(GgmlType::F32, true);
  CHECK(m != nullptr);
  if (!m) return;
  const ModelConfig& c = m->config();
  CHECK_EQ(c.rope_type, 2);
  CHECK_EQ(c.q_scale, 1.0f / std::sqrt(32.0f));
  CHECK_EQ(c.n_swa, int64_t(0));  // the file's window is ignored, as llama.cpp does for phi3
  CHECK(c.has_longrope && !c.has_rope_freqs);
  CHECK_EQ(c.rope_n_ctx_orig, int64_t(128));  // synth: context / 2
  const ModelWeights& W = m->weights();
  const LayerWeights& L = W.layers[1];
  // Q | K | V and gate | up are consecutive row blocks of one tensor each.
  CHECK(L.wk.data == L.wq.data + 64 * L.wq.row_bytes && L.wv.data == L.wk.data + 32 * L.wk.row_bytes);
  CHECK(L.ffn_up.data == L.ffn_gate.data + 96 * L.ffn_gate.row_bytes);
  CHECK(L.wq.n_out == 64 && L.wk.n_out == 32 && L.wv.n_out == 32 && L.ffn_gate.n_out == 96 && L.ffn_up.n_out == 96);
  // LongRoPE: short factors up to a (256-padded) context of 128, long beyond, as llama.cpp.
  CHECK(W.rope_freqs == W.rope_short);
  m->use_context_size(300);
  CHECK(W.rope_freqs == W.rope_long);
  m->use_context_size(100);  // llama.cpp pads it to 256 > 128: long too
  CHECK(W.rope_freqs == W.rope_long);
}

TEST(phi3_reference_and_batch_invariance) {
  for (GgmlType t : {GgmlType::F32, GgmlType::Q8_0}) {
    for (bool lr : {false, true}) {
      auto m = phi3(t, lr);
      CHECK(m != nullptr);
      if (!m) continue;
      if (lr) m->use_context_size(256);  // the long factors
      const auto toks = test_tokens(24, m->config().n_vocab);
      double scale = 0;
      for (double v : forward_ref(*m, toks)) scale = std::max(scale, std::fabs(v));
      const double d = max_ref_diff(*m, toks);
      const double tol = (t == GgmlType::F32 ? 1e-3 : 4e-2) * std::max(1.0, scale);
      if (d > tol)
        std::fprintf(stderr, "  phi3 %s lr=%d: max |dlogit| %.3g (scale %.3g)\n", type_traits(t).name, lr, d, scale);
      CHECK(d <= tol);
      const auto batched = run_chunked(*m, toks, {24}, 1, GgmlType::F16);
      const auto chunked = run_chunked(*m, toks, {3, 1, 7, 5}, 3, GgmlType::F16);
      CHECK(!batched.empty() && chunked.size() == batched.size() &&
            std::memcmp(chunked.data(), batched.data(), batched.size() * 4) == 0);
    }
  }
}

TEST(phi3_load_errors) {
  const std::string base = synth_to(phi3_opts(GgmlType::F32, true), "phi3_err_base.gguf");
  Status st;
  // One LongRoPE set without the other.
  load_model(rewrite(base, "phi3_no_long.gguf", {}, nullptr,
                     [](const std::string& n, std::vector<int64_t>&, std::vector<uint8_t>&) {
                       return n != "rope_factors_long.weight";
                     }),
             &st);
  CHECK(st.code == Code::MissingTensor && st.message.find("rope_factors_long") != std::string::npos);
  // A gate-up tensor that is not 2 * n_ff wide.
  load_model(rewrite(base, "phi3_bad_up.gguf", {}, nullptr,
                     [](const std::string& n, std::vector<int64_t>& ne, std::vector<uint8_t>& data) {
                       if (n == "blk.0.ffn_up.weight") ne[1] = 96, data.resize(64 * 96 * 4);
                       return true;
                     }),
             &st);
  CHECK(st.code == Code::BadShape && st.message.find("blk.0.ffn_up.weight") != std::string::npos);
  // No fused QKV and no separate Q/K/V.
  load_model(rewrite(base, "phi3_no_qkv.gguf", {}, nullptr,
                     [](const std::string& n, std::vector<int64_t>&, std::vector<uint8_t>&) {
                       return n != "blk.1.attn_qkv.weight";
                     }),
             &st);
  CHECK(st.code == Code::MissingTensor && st.message.find("blk.1.attn_q.weight") != std::string::npos);
  // synth: long_rope is phi3's.
  SynthOptions o;
  o.long_rope = true;
  CHECK(validate_synth_options(o).code == Code::InvalidArgument);
}

TEST(phi3_lora_on_fused_gate_up_refused) {
  const std::string base = synth_to(phi3_opts(GgmlType::F32, false), "phi3_lora_base.gguf");
  auto m = load_model(base);
  CHECK(m != nullptr);
  if (!m) return;
  SynthLoraOptions lo;
  lo.targets = {"ffn_up"};
  const std::string up = tmp_path("phi3_lora_up.gguf");
  CHECK(synth_lora(base, lo, up).is_ok());
  std::unique_ptr<LoraAdapter> a;
  const Status st = LoraAdapter::load(up, *m, 1.0f, &a);
  CHECK(st.code == Code::InvalidArgument && st.message.find("fused gate-up") != std::string::npos);
  // The unfused projections still take adapters.
  lo.targets = {"attn_output", "ffn_down"};
  const std::string ok = tmp_path("phi3_lora_ok.gguf");
  CHECK(synth_lora(base, lo, ok).is_ok());
  CHECK(LoraAdapter::load(ok, *m, 1.0f, &a).is_ok());
}
