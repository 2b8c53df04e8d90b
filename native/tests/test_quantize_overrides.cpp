// llama-quantize's overrides (--pure, --output-tensor-type, --token-embedding-type, --tensor-type):
// whole files against node-llama-cpp's llama_model_quantize given the same
// llama_model_quantize_params fields (pure, output_tensor_type, token_embedding_type, tt_overrides),
// and the refusals (bad pattern, unknown type, a type whose block does not fit).
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "compress/quantize.h"
#include "compress/recipe.h"
#include "gguf/gguf.h"
#include "llama_oracle.h"
#include "synth/synth.h"
#include "testing.h"

using namespace llmserve;

namespace {

using T = GgmlType;

std::string tmp_path(const std::string& name) {
  return "/tmp/llmserve_test_overrides_" + std::to_string(static_cast<long>(::getpid())) + "_" + name;
}

std::string synth_f32(const std::string& name, const std::string& arch, bool tied, int64_t dim) {
  SynthOptions o;
  o.arch = arch;
  o.dim = dim;
  o.layers = 8;
  o.heads = 8;
  o.kv_heads = 2;
  o.ffn = 512;
  o.context = 256;
  o.vocab_size = 320;
  o.tied_output = tied;
  o.seed = 33;
  const std::string p = tmp_path(name);
  CHECK(synth_model(o, p).is_ok());
  return p;
}

struct Case {
  const char* label;
  const char* mix;
  const char* arch;
  bool tied;
  bool pure;
  int out_type;   // -1: none
  int embd_type;  // -1: none
  std::vector<std::pair<std::string, T>> rules;
};

RecipeOverrides overrides_of(const Case& c) {
  RecipeOverrides ov;
  ov.pure = c.pure;
  if (c.out_type >= 0) {
    ov.has_output_type = true;
    ov.output_type = static_cast<T>(c.out_type);
  }
  if (c.embd_type >= 0) {
    ov.has_token_embd_type = true;
    ov.token_embd_type = static_cast<T>(c.embd_type);
  }
  for (const auto& [p, t] : c.rules) ov.tensor_types.push_back({p, t});
  return ov;
}

}  // namespace

TEST(quantize_overrides_equal_llama_model_quantize) {
  const auto& L = oracle::libs();
  if (!L.model_quantize || !L.default_params) {
    std::printf("  (skipped: libllama with llama_model_quantize not found)\n");
    return;
  }
  const int Q8 = static_cast<int>(T::Q8_0), Q6K = static_cast<int>(T::Q6_K), Q4_0 = static_cast<int>(T::Q4_0);
  const std::vector<Case> cases = {
      {"pure", "q4_k_m", "llama", false, true, -1, -1, {}},
      {"pure tied", "q3_k_m", "qwen2", true, true, -1, -1, {}},
      {"output + embd", "q4_k_m", "llama", false, false, Q8, Q6K, {}},
      {"output, tied", "q5_k_s", "qwen2", true, false, Q4_0, -1, {}},
      // attn_v's override shifts llama.cpp's attn_v count for no layer (all manual); ffn_down's
      // skips layers 0-3 of the count, so the bumped layers move (use_more_bits on i - 4).
      {"rules",
       "q4_k_m",
       "llama",
       false,
       false,
       -1,
       -1,
       {{"attn_v", T::Q8_0}, {"blk\\.[0-3]\\.ffn_down", T::Q5_K}, {"ffn_up", T::IQ4_XS}, {"attn_v|ffn_gate", T::Q2_K}}},
      {"rules + pure", "q2_k", "llama", false, true, -1, -1, {{"attn_output", T::Q6_K}}},
      {"float mix ignores rules", "f16", "llama", false, false, Q8, -1, {{"attn", T::Q4_0}}},
  };
  for (const Case& c : cases) {
    const std::string in = synth_f32(std::string("in_") + c.arch + (c.tied ? "_tied" : ""), c.arch, c.tied, 256);
    const std::string ours = tmp_path("ours"), theirs = tmp_path("theirs");
    QuantizeOptions o;
    o.type = c.mix;
    o.threads = 2;
    o.overrides = overrides_of(c);
    Status st = quantize_model(in, ours, o, {}, nullptr, nullptr);
    if (!st.is_ok()) std::fprintf(stderr, "  %s: %s\n", c.label, st.message.c_str());
    CHECK(st.is_ok());
    oracle::QuantizeParams p = L.default_params();
    p.nthread = 2;
    p.ftype = find_quant_mix(c.mix)->ftype;
    p.pure = c.pure;
    if (c.out_type >= 0) p.output_tensor_type = c.out_type;
    if (c.embd_type >= 0) p.token_embedding_type = c.embd_type;
    std::vector<oracle::TensorOverride> tt;
    for (const auto& [pat, t] : c.rules) tt.push_back({pat.c_str(), static_cast<int32_t>(t)});
    tt.push_back({nullptr, 40});  // terminator (GGML_TYPE_COUNT)
    if (!c.rules.empty()) p.tt_overrides = tt.data();
    CHECK_EQ(L.model_quantize(in.c_str(), theirs.c_str(), &p), 0u);
    std::unique_ptr<GgufFile> a, b;
    CHECK(GgufFile::open(ours, &a).is_ok());
    CHECK(GgufFile::open(theirs, &b).is_ok());
    if (!a || !b) continue;
    int bad = 0;
    for (const GgufTensorInfo& t : a->tensors()) {
      const GgufTensorInfo* u = b->find_tensor(t.name);
      if (!u || u->type != t.type || u->nbytes != t.nbytes || std::memcmp(u->data, t.data, t.nbytes) != 0) {
        if (bad++ < 4)
          std::fprintf(stderr, "  %s %s: ours %s, llama.cpp %s\n", c.label, t.name.c_str(), type_traits(t.type).name,
                       u ? type_traits(u->type).name : "(absent)");
      }
    }
    CHECK_EQ(bad, 0);
    std::remove(ours.c_str());
    std::remove(theirs.c_str());
    std::remove(in.c_str());
  }
}

TEST(quantize_overrides_refusals) {
  TensorTypeRule r;
  CHECK(parse_tensor_type_rule("ATTN_V=Q8_0", &r).is_ok());
  CHECK(r.pattern == "attn_v" && r.type == T::Q8_0);
  CHECK(parse_tensor_type_rule("ffn_down=q4_K", &r).is_ok() && r.type == T::Q4_K);
  for (const char* bad : {"attn_v", "=q8_0", "attn_v=", "attn_v=q7_k", "attn_v=q8_1", "(unclosed=q8_0", "a[=q4_0"}) {
    Status st = parse_tensor_type_rule(bad, &r);
    if (st.code != Code::InvalidArgument) std::fprintf(stderr, "  accepted '%s'\n", bad);
    CHECK(st.code == Code::InvalidArgument);
  }
  CHECK(parse_tensor_type_rule(std::string(2000, 'a') + "=q8_0", &r).code == Code::InvalidArgument);
  GgmlType t;
  Status st = parse_override_type("q3_k_m", &t);
  CHECK(st.code == Code::InvalidArgument && st.message.find("iq4_xs") != std::string::npos);
  // An output type whose block does not divide the rows (dim 96): refused, no file.
  const std::string in = synth_f32("narrow", "llama", false, 96);
  QuantizeOptions o;
  o.type = "q8_0";
  o.overrides.has_output_type = true;
  o.overrides.output_type = T::Q4_K;
  const std::string out = tmp_path("narrow_out");
  st = quantize_model(in, out, o, {}, nullptr, nullptr);
  CHECK(st.code == Code::InvalidArgument);
  CHECK(st.message.find("'output.weight' has rows of 96") != std::string::npos);
  CHECK(::access(out.c_str(), F_OK) != 0);
  // A rule's type that does not fit takes llama.cpp's fallback instead (q4_K -> q5_0).
  o.overrides = RecipeOverrides();
  o.overrides.tensor_types.push_back({"attn_q", T::Q4_K});
  QuantizeResult res;
  CHECK(quantize_model(in, out, o, {}, nullptr, &res).is_ok());
  for (const QuantizedTensor& q : res.tensors)
    if (q.name.find("attn_q") != std::string::npos) CHECK(q.to == T::Q5_0);
  std::remove(out.c_str());
  std::remove(in.c_str());
}
