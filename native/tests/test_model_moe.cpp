// Mixture of experts (model/moe.h): Mixtral (llama with experts) and qwen3moe against the naive
// double-precision forward_ref, several expert counts and top-k; batch invariance of the grouped
// expert GEMM; hostile expert metadata and tensor shapes; what synth writes; finetune and FFN
// LoRA adapters refused.
// Parity with llama.cpp itself is test/parity/moe.test.ts.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "forward_ref.h"
#include "gguf/gguf.h"
#include "lora/lora.h"
#include "model/forward.h"
#include "model/model.h"
#include "model_test_util.h"
#include "synth/synth.h"
#include "testing.h"
#include "threadpool/thread_pool.h"
#include "train/lora_train.h"

using namespace llmserve;
using namespace llmserve_test;

namespace {

SynthOptions moe_opts(const char* arch, int64_t experts, int64_t used, GgmlType type) {
  SynthOptions o;
  o.arch = arch, o.type = type, o.dim = 64, o.layers = 2, o.heads = 2, o.kv_heads = 1, o.ffn = 64;
  o.context = 256, o.vocab_size = 320, o.seed = 9, o.experts = experts, o.experts_used = used;
  return o;
}

std::string name_of(const SynthOptions& o, const char* tag) {
  return std::string("moe_") + tag + "_" + o.arch + "_" + std::to_string(o.experts) + "_" +
         std::to_string(o.experts_used) + "_" + type_traits(o.type).name + ".gguf";
}

// Last-token logits of toks through the engine's forward.
std::vector<float> last_logits(const Model& m, const std::vector<int32_t>& toks) {
  ThreadPool pool(2);
  auto kv = make_kv(m, 64, GgmlType::F32);
  std::vector<float> lg;
  CHECK(forward(m, *kv, toks.data(), static_cast<int64_t>(toks.size()), false, &lg, pool).is_ok());
  return lg;
}

}  // namespace

TEST(moe_config_and_reference) {
  struct Case {
    const char* arch;
    int64_t experts, used;
    GgmlType type;
  };
  const Case cases[] = {{"llama", 4, 2, GgmlType::F32},    {"llama", 8, 1, GgmlType::F32},
                        {"qwen3moe", 8, 2, GgmlType::F32}, {"qwen3moe", 4, 4, GgmlType::F32},
                        {"llama", 8, 2, GgmlType::Q8_0},   {"qwen3moe", 4, 2, GgmlType::Q4_0}};
  for (const Case& k : cases) {
    const SynthOptions o = moe_opts(k.arch, k.experts, k.used, k.type);
    const std::string p = synth_to(o, name_of(o, "ref"));
    auto m = p.empty() ? nullptr : load_model(p);
    CHECK(m != nullptr);
    if (!m) continue;
    const ModelConfig& c = m->config();
    CHECK(c.is_moe());
    CHECK_EQ(c.n_expert, k.experts);
    CHECK_EQ(c.n_expert_used, k.used);
    CHECK_EQ(c.n_ff_exp, int64_t(64));
    CHECK_EQ(c.has_qk_norm, std::string(k.arch) == "qwen3moe");
    const LayerWeights& L = m->weights().layers[1];
    CHECK_EQ(L.gate_exps.size(), static_cast<size_t>(k.experts));
    CHECK(L.ffn_gate.data == nullptr && L.ffn_gate_inp.n_out == k.experts);
    // Expert e is slice e of the 3-D tensor.
    CHECK(L.up_exps[1].data == L.up_exps[0].data + 64 * L.up_exps[0].row_bytes);

    const auto toks = test_tokens(12, c.n_vocab);
    double scale = 0;
    for (double v : forward_ref(*m, toks)) scale = std::max(scale, std::fabs(v));
    const double d = max_ref_diff(*m, toks);
    const double tol = (k.type == GgmlType::F32 ? 1e-4 : 5e-2) * std::max(1.0, scale);
    if (d > tol)
      std::fprintf(stderr, "  %s %lld/%lld %s: max |dlogit| %.3g (scale %.3g)\n", k.arch, (long long)k.experts,
                   (long long)k.used, type_traits(k.type).name, d, scale);
    CHECK(d <= tol);

    // Not vacuous: the expert mapping matters (swapping two experts' up matrices changes the logits).
    if (k.type == GgmlType::F32) {
      auto swapped = load_model(p);
      for (LayerWeights& S : swapped->mutable_weights().layers) std::swap(S.up_exps[0], S.up_exps[1]);
      const auto a = last_logits(*m, toks), b = last_logits(*swapped, toks);
      double diff = 0;
      for (size_t i = 0; i < a.size() && i < b.size(); ++i) diff = std::max(diff, double(std::fabs(a[i] - b[i])));
      CHECK(diff > 1e-2);
    }
  }
}

TEST(moe_batch_invariance) {
  for (GgmlType t : {GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_0}) {
    for (const char* arch : {"llama", "qwen3moe"}) {
      const SynthOptions o = moe_opts(arch, 8, 2, t);
      const std::string p = synth_to(o, name_of(o, "inv"));
      auto m = p.empty() ? nullptr : load_model(p);
      CHECK(m != nullptr);
      if (m) check_batch_invariance(*m);
    }
  }
}

TEST(moe_load_errors) {
  const std::string p = synth_to(moe_opts("llama", 4, 2, GgmlType::F32), "moe_err_base.gguf");
  const std::string q = synth_to(moe_opts("qwen3moe", 4, 2, GgmlType::F32), "moe_err_qbase.gguf");
  CHECK(!p.empty() && !q.empty());
  if (p.empty() || q.empty()) return;
  using TensorFn = std::function<bool(const std::string&, std::vector<int64_t>&, std::vector<uint8_t>&)>;
  struct Case {
    const char* name;
    bool qwen;
    std::vector<std::string> skip;
    std::function<void(GgufWriter&)> meta;
    TensorFn tensor;
    Code code;
    const char* must_mention;
  };
  const std::vector<Case> cases = {
      {"used_gt_count",
       false,
       {"llama.expert_used_count"},
       [](GgufWriter& w) { w.set_u32("llama.expert_used_count", 5); },
       nullptr,
       Code::BadShape,
       "'llama.expert_used_count' = 5 is out of range [1, 4]"},
      {"used_zero",
       false,
       {"llama.expert_used_count"},
       [](GgufWriter& w) { w.set_u32("llama.expert_used_count", 0); },
       nullptr,
       Code::BadShape,
       "'llama.expert_used_count' = 0 is out of range [1, 4]"},
      {"used_missing",
       false,
       {"llama.expert_used_count"},
       nullptr,
       nullptr,
       Code::GgufCorrupt,
       "missing hyperparameter 'llama.expert_used_count'"},
      {"too_many_experts",
       false,
       {"llama.expert_count"},
       [](GgufWriter& w) { w.set_u32("llama.expert_count", 100000); },
       nullptr,
       Code::BadShape,
       "'llama.expert_count' = 100000 is out of range [0, 512]"},
      {"count_string",
       false,
       {"llama.expert_count"},
       [](GgufWriter& w) { w.set_str("llama.expert_count", "4"); },
       nullptr,
       Code::GgufCorrupt,
       "'llama.expert_count' has type"},
      // A llama file with expert_used_count but no experts: corrupt, not silently dense.
      {"used_without_experts",
       false,
       {"llama.expert_count"},
       nullptr,
       nullptr,
       Code::BadShape,
       "but the model has no experts"},
      {"qwen3moe_zero_experts",
       true,
       {"qwen3moe.expert_count"},
       [](GgufWriter& w) { w.set_u32("qwen3moe.expert_count", 0); },
       nullptr,
       Code::BadShape,
       "'qwen3moe.expert_count' = 0 is out of range [1, 512]"},
      {"qwen3moe_no_experts",
       true,
       {"qwen3moe.expert_count"},
       nullptr,
       nullptr,
       Code::GgufCorrupt,
       "missing hyperparameter 'qwen3moe.expert_count'"},
      {"exps_one_short",
       false,
       {},
       nullptr,
       [](const std::string& n, std::vector<int64_t>& ne, std::vector<uint8_t>& d) {
         if (n == "blk.1.ffn_up_exps.weight") ne[2] = 3, d.resize(d.size() / 4 * 3);
         return true;
       },
       Code::BadShape,
       "tensor 'blk.1.ffn_up_exps.weight' has shape [64, 64, 3], expected [64, 64, 4]"},
      {"exps_2d",
       false,
       {},
       nullptr,
       [](const std::string& n, std::vector<int64_t>& ne, std::vector<uint8_t>&) {
         if (n == "blk.0.ffn_down_exps.weight") ne = {64, 256};
         return true;
       },
       Code::BadShape,
       "tensor 'blk.0.ffn_down_exps.weight' has shape [64, 256], expected [64, 64, 4]"},
      {"router_shape",
       true,
       {},
       nullptr,
       [](const std::string& n, std::vector<int64_t>& ne, std::vector<uint8_t>& d) {
         if (n == "blk.0.ffn_gate_inp.weight") ne[1] = 2, d.resize(d.size() / 2);
         return true;
       },
       Code::BadShape,
       "tensor 'blk.0.ffn_gate_inp.weight' has shape [64, 2], expected [64, 4]"},
      {"router_missing",
       false,
       {},
       nullptr,
       [](const std::string& n, std::vector<int64_t>&, std::vector<uint8_t>&) {
         return n != "blk.1.ffn_gate_inp.weight";
       },
       Code::MissingTensor,
       "missing tensor 'blk.1.ffn_gate_inp.weight'"},
  };
  for (const Case& c : cases) {
    const std::string r = rewrite(c.qwen ? q : p, std::string("moe_bad_") + c.name + ".gguf", c.skip, c.meta, c.tensor);
    Status st;
    auto m = r.empty() ? nullptr : load_model(r, &st);
    CHECK(m == nullptr);
    if (st.code != c.code || st.message.find(c.must_mention) == std::string::npos)
      std::fprintf(stderr, "  case %s: got %s\n", c.name, st.message.c_str());
    CHECK(st.code == c.code);
    CHECK(st.message.find(c.must_mention) != std::string::npos);
  }
}

TEST(moe_synth_options_and_keys) {
  SynthOptions o = moe_opts("qwen2", 4, 2, GgmlType::F32);
  CHECK(validate_synth_options(o).code == Code::InvalidArgument);  // experts only for llama / qwen3moe
  o = moe_opts("llama", 4, 5, GgmlType::F32);
  CHECK(validate_synth_options(o).code == Code::InvalidArgument);  // experts_used > experts
  o = moe_opts("qwen3moe", 0, 0, GgmlType::F32);
  CHECK(validate_synth_options(o).code == Code::InvalidArgument);  // qwen3moe needs experts
  o = moe_opts("llama", 0, 1, GgmlType::F32);
  CHECK(validate_synth_options(o).code == Code::InvalidArgument);  // experts_used without experts

  const SynthOptions q = moe_opts("qwen3moe", 8, 2, GgmlType::Q8_0);
  const std::string p = synth_to(q, "moe_keys.gguf");
  std::unique_ptr<GgufFile> f;
  CHECK(!p.empty() && GgufFile::open(p, &f).is_ok());
  if (!f) return;
  int64_t v = 0;
  bool found = false;
  CHECK(f->get_int("qwen3moe.expert_count", &v, &found).is_ok() && found && v == 8);
  CHECK(f->get_int("qwen3moe.expert_used_count", &v, &found).is_ok() && found && v == 2);
  CHECK(f->get_int("qwen3moe.expert_feed_forward_length", &v, &found).is_ok() && found && v == 64);
  const GgufTensorInfo* t = f->find_tensor("blk.0.ffn_down_exps.weight");
  CHECK(t && t->type == GgmlType::Q8_0 && t->ne[0] == 64 && t->ne[1] == 64 && t->ne[2] == 8);
  const GgufTensorInfo* r = f->find_tensor("blk.0.ffn_gate_inp.weight");
  CHECK(r && r->type == GgmlType::F32 && r->ne[1] == 8);
  CHECK(f->find_tensor("blk.0.ffn_gate.weight") == nullptr);
}

TEST(moe_finetune_refuses) {
  const std::string p = synth_to(moe_opts("llama", 4, 2, GgmlType::F32), "moe_train.gguf");
  auto m = p.empty() ? nullptr : load_model(p);
  CHECK(m != nullptr);
  if (!m) return;
  LoraSet<float> lora;
  const Status st = lora_zeros(m->config(), 4, 8.0, kAllBlockProjs, &lora);
  CHECK(st.code == Code::UnsupportedArch);
  CHECK(st.message.find("mixture-of-experts") != std::string::npos);
}

TEST(moe_lora_on_experts_refused) {
  const std::string p = synth_to(moe_opts("llama", 4, 2, GgmlType::F32), "moe_lora_base.gguf");
  auto m = p.empty() ? nullptr : load_model(p);
  CHECK(m != nullptr);
  if (!m) return;
  // An FFN adapter made over the dense model of the same shapes, loaded over the MoE one.
  const std::string dense = synth_to(moe_opts("llama", 0, 0, GgmlType::F32), "moe_lora_dense.gguf");
  SynthLoraOptions lo;
  lo.targets = {"ffn_up"};
  const std::string bad = tmp_path("moe_lora_ffn.gguf");
  CHECK(synth_lora(dense, lo, bad).is_ok());
  std::unique_ptr<LoraAdapter> a;
  Status st = LoraAdapter::load(bad, *m, 1.0f, &a);
  CHECK(st.code == Code::MissingTensor);
  CHECK(st.message.find("the model has no tensor 'blk.0.ffn_up.weight'") != std::string::npos);
  // Attention targets still apply.
  lo.targets = {"attn_q", "attn_v"};
  const std::string ok = tmp_path("moe_lora_attn.gguf");
  CHECK(synth_lora(p, lo, ok).is_ok());
  CHECK(LoraAdapter::load(ok, *m, 1.0f, &a).is_ok());
}
