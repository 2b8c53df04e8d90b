// The per-tensor recipe of llama.cpp's llama-quantize, rewritten from its rules (src/llama-quant.cpp
// of the llama.cpp that node-llama-cpp 3.21.1 bundles: tensor_allows_quantization,
// llama_tensor_get_type, llama_tensor_get_type_impl, tensor_type_fallback), for the mixes in
// quant_mixes() on dense llama / qwen2 models. Rules taken:
// - Only tensors with at least 2 dimensions (ggml_n_dims: trailing 1s do not count) whose name
//   ends in "weight" and is not a norm ("_norm.weight") or "ffn_gate_inp.weight" are converted;
//   every other tensor keeps its input type (biases, norms, rope_freqs stay as they are).
// - F32 / F16 / BF16 mixes: every converted tensor gets that type (no per-tensor rules).
// - Quantized mixes: output.weight (and token_embd.weight when the model has no output.weight, i.e.
//   tied embeddings) gets Q6_K, or Q8_0 when its rows do not fit the mix's block or the mix is
//   Q8_0. attn_v.weight: Q2_K -> Q4_K if n_head / n_head_kv >= 4 else Q3_K; Q3_K_M -> Q5_K for the
//   first two, then Q4_K; Q3_K_L -> Q5_K; IQ4_NL / IQ4_XS -> Q5_K if GQA >= 4; Q4_K_M / Q5_K_M ->
//   Q6_K where use_more_bits; Q4_K_S -> Q5_K for the first four; a 70B model's Q3_K / Q4_K -> Q5_K.
//   ffn_down: Q2_K -> Q3_K; Q3_K_M -> Q5_K below n_layer/16 else Q4_K; Q3_K_L -> Q5_K; Q4_K_M ->
//   Q6_K where use_more_bits; IQ4_NL / IQ4_XS without imatrix -> Q5_K below n_layer/8; Q5_K_M ->
//   Q6_K where use_more_bits; Q4_K_S -> Q5_K below n_layer/8; Q4_0 / Q5_0 with an imatrix -> Q4_1 /
//   Q5_1 below n_layer/8. attn_output: Q2_K -> Q3_K, Q3_K_M -> Q4_K, Q3_K_L -> Q5_K.
//   use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2.
// - The layer index of attn_v is llama.cpp's running count of attn_v tensors and that of ffn_down
//   the running count of ffn_down tensors, both in llama.cpp's tensor order (by layer number, then
//   name), so we walk the tensors in that order too.
// - Then the block fallback (fallback_type) for rows that do not fit the chosen type.
// - User overrides (RecipeOverrides, recipe.h): llama_tensor_get_type's outer wrapper.
// Left out (not reachable for these models and mixes): Falcon, MoE (n_expert) and the IQ1/IQ2/IQ3
// and TQ mixes' rules.
#include "recipe.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <numeric>
#include <regex>

namespace llmserve {
namespace {

enum class Category { Output, TokenEmbd, AttnV, AttnK, AttnQ, AttnOutput, FfnUp, FfnGate, FfnDown, Other };

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }
bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// llama.cpp's tensor_get_category (the attn_qkv / attn_kv_b fused forms count as attn_v there).
Category category_of(const std::string& name) {
  if (name == "output.weight") return Category::Output;
  if (name == "token_embd.weight") return Category::TokenEmbd;
  if (contains(name, "attn_qkv.weight") || contains(name, "attn_kv_b.weight") || contains(name, "attn_v.weight"))
    return Category::AttnV;
  if (contains(name, "attn_k.weight")) return Category::AttnK;
  if (contains(name, "attn_q.weight")) return Category::AttnQ;
  if (contains(name, "attn_output.weight")) return Category::AttnOutput;
  if (contains(name, "ffn_up")) return Category::FfnUp;
  if (contains(name, "ffn_gate")) return Category::FfnGate;
  if (contains(name, "ffn_down")) return Category::FfnDown;
  return Category::Other;
}

int n_dims(const RecipeTensor& t) {
  for (int i = 3; i >= 1; --i)
    if (t.ne[i] > 1) return i + 1;
  return 1;
}

bool allows_quantization(const RecipeTensor& t) {
  if (n_dims(t) < 2) return false;
  return ends_with(t.name, "weight") && !contains(t.name, "_norm.weight") && !contains(t.name, "ffn_gate_inp.weight");
}

bool is_float_type(GgmlType t) { return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16; }

// sscanf(name, "blk.%d.") as llama.cpp's weight_name_comparer: -1 for tensors outside blocks.
int layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  const char* p = name.c_str() + 4;
  char* end = nullptr;
  const long v = std::strtol(p, &end, 10);
  return end == p ? -1 : static_cast<int>(v);
}

bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

int64_t block_of(GgmlType t) { return type_traits(t).block_size; }

struct Counters {
  int n_attn_v = 0, i_attn_v = 0, n_ffn_down = 0, i_ffn_down = 0;
};

// llama_tensor_get_type_impl for our mixes.
GgmlType mix_rule(const QuantMix& mix, const RecipeModel& m, const RecipeTensor& t, Category cat, bool tied,
                  Counters& c, const RecipeOverrides& ov) {
  using T = GgmlType;
  const int f = mix.ftype;
  enum : int { Q4_0 = 2, Q5_0 = 8, Q2_K = 10, Q3_K_M = 12, Q3_K_L = 13, Q4_K_S = 14, Q4_K_M = 15 };
  enum : int { Q5_K_M = 17, IQ4_NL = 25, IQ4_XS = 30 };
  const int64_t gqa = m.n_head_kv > 0 ? m.n_head / m.n_head_kv : 1;
  T nt = mix.default_type;
  if (cat == Category::Output || (tied && cat == Category::TokenEmbd)) {
    if (ov.has_output_type) nt = ov.output_type;  // tied token_embd (output.weight returned earlier)
    else if (t.ne[0] % block_of(nt) != 0) nt = T::Q8_0;
    else if (nt != T::Q8_0) nt = T::Q6_K;
  } else if (cat == Category::TokenEmbd) {
    // no rule for these mixes: the default type
  } else if (cat == Category::AttnV) {
    if (f == Q2_K) nt = gqa >= 4 ? T::Q4_K : T::Q3_K;
    else if (f == Q3_K_M) nt = c.i_attn_v < 2 ? T::Q5_K : T::Q4_K;
    else if (f == Q3_K_L) nt = T::Q5_K;
    else if ((f == IQ4_NL || f == IQ4_XS) && gqa >= 4) nt = T::Q5_K;
    else if ((f == Q4_K_M || f == Q5_K_M) && use_more_bits(c.i_attn_v, c.n_attn_v)) nt = T::Q6_K;
    else if (f == Q4_K_S && c.i_attn_v < 4) nt = T::Q5_K;
    if (m.is_70b && (nt == T::Q3_K || nt == T::Q4_K)) nt = T::Q5_K;
    ++c.i_attn_v;
  } else if (cat == Category::FfnDown) {
    const int i = c.i_ffn_down, n = c.n_ffn_down;
    if (f == Q2_K) nt = T::Q3_K;
    else if (f == Q3_K_M) nt = i < n / 16 ? T::Q5_K : T::Q4_K;
    else if (f == Q3_K_L) nt = T::Q5_K;
    else if (f == Q4_K_M) {
      if (use_more_bits(i, n)) nt = T::Q6_K;
    } else if (i < n / 8 && (f == IQ4_NL || f == IQ4_XS) && !m.has_imatrix) nt = T::Q5_K;
    else if (f == Q5_K_M && use_more_bits(i, n)) nt = T::Q6_K;
    else if (f == Q4_K_S && i < n / 8) nt = T::Q5_K;
    else if ((f == Q4_0 || f == Q5_0) && m.has_imatrix && i < n / 8) nt = f == Q4_0 ? T::Q4_1 : T::Q5_1;
    ++c.i_ffn_down;
  } else if (cat == Category::AttnOutput) {
    if (f == Q2_K) nt = T::Q3_K;
    else if (f == Q3_K_M) nt = T::Q4_K;
    else if (f == Q3_K_L) nt = T::Q5_K;
  }
  return nt;
}

}  // namespace

const std::vector<QuantMix>& quant_mixes() {
  using T = GgmlType;
  static const std::vector<QuantMix> mixes = {
      {"q8_0", 7, T::Q8_0},    {"q4_0", 2, T::Q4_0},    {"q4_1", 3, T::Q4_1},      {"q5_0", 8, T::Q5_0},
      {"q5_1", 9, T::Q5_1},    {"q2_k", 10, T::Q2_K},   {"q3_k_s", 11, T::Q3_K},   {"q3_k_m", 12, T::Q3_K},
      {"q3_k_l", 13, T::Q3_K}, {"q4_k_s", 14, T::Q4_K}, {"q4_k_m", 15, T::Q4_K},   {"q5_k_s", 16, T::Q5_K},
      {"q5_k_m", 17, T::Q5_K}, {"q6_k", 18, T::Q6_K},   {"iq4_nl", 25, T::IQ4_NL}, {"iq4_xs", 30, T::IQ4_XS},
      {"f16", 1, T::F16},      {"bf16", 32, T::BF16},   {"f32", 0, T::F32},
  };
  return mixes;
}

const QuantMix* find_quant_mix(const std::string& name) {
  std::string n = name;
  if (n == "q3_k" || n == "q4_k" || n == "q5_k") n += "_m";  // llama-quantize's aliases
  for (const QuantMix& m : quant_mixes())
    if (n == m.name) return &m;
  return nullptr;
}

std::string quant_mix_names() {
  std::string s;
  for (const QuantMix& m : quant_mixes()) s += std::string(s.empty() ? "" : ", ") + m.name;
  return s;
}

GgmlType fallback_type(GgmlType want, int64_t ne0) {
  using T = GgmlType;
  if (ne0 % block_of(want) == 0) return want;
  T r = want;
  switch (want) {
    case T::IQ4_XS: r = T::IQ4_NL; break;
    case T::Q2_K:
    case T::Q3_K: r = T::Q4_0; break;
    case T::Q4_K: r = T::Q5_0; break;
    case T::Q5_K: r = T::Q5_1; break;
    case T::Q6_K: r = T::Q8_0; break;
    default: break;  // a 32-block type has no smaller block: F16 below
  }
  return ne0 % block_of(r) == 0 ? r : T::F16;
}

namespace {

// The types an override may name: what quantize writes.
constexpr GgmlType kOverrideTypes[] = {GgmlType::F32,  GgmlType::F16,    GgmlType::BF16,  GgmlType::Q8_0,
                                       GgmlType::Q4_0, GgmlType::Q4_1,   GgmlType::Q5_0,  GgmlType::Q5_1,
                                       GgmlType::Q2_K, GgmlType::Q3_K,   GgmlType::Q4_K,  GgmlType::Q5_K,
                                       GgmlType::Q6_K, GgmlType::IQ4_NL, GgmlType::IQ4_XS};
constexpr size_t kMaxPatternBytes = 1024;

std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

Status compile_pattern(const std::string& pattern, std::regex* out) {
  try {
    *out = std::regex(pattern);
  } catch (const std::regex_error& e) {
    return make_error(Code::InvalidArgument,
                      "the tensor-type pattern '" + pattern + "' is not a valid regular expression (" + e.what() + ")");
  }
  return Status::ok();
}

}  // namespace

Status parse_override_type(const std::string& name, GgmlType* out) {
  std::string list;
  for (GgmlType t : kOverrideTypes) {
    if (lower(name) == lower(type_traits(t).name)) {
      *out = t;
      return Status::ok();
    }
    list += std::string(list.empty() ? "" : ", ") + lower(type_traits(t).name);
  }
  return make_error(Code::InvalidArgument,
                    "unknown tensor type '" + name + "' in an override; expected one of " + list);
}

Status parse_tensor_type_rule(const std::string& spec, TensorTypeRule* out) {
  const size_t eq = spec.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
    return make_error(Code::InvalidArgument,
                      "a tensor-type override is PATTERN=TYPE (e.g. 'attn_v=q8_0'); got '" + spec + "'");
  if (eq > kMaxPatternBytes)
    return make_error(Code::InvalidArgument,
                      "a tensor-type pattern is longer than " + std::to_string(kMaxPatternBytes) + " bytes");
  out->pattern = lower(spec.substr(0, eq));
  std::regex re;
  LLMS_RETURN_IF_ERROR(compile_pattern(out->pattern, &re));
  return parse_override_type(spec.substr(eq + 1), &out->type);
}

std::vector<GgmlType> plan_tensor_types(const QuantMix& mix, const RecipeModel& model,
                                        const std::vector<RecipeTensor>& tensors, std::vector<std::string>* notes,
                                        const RecipeOverrides& ov) {
  std::vector<std::pair<std::regex, GgmlType>> rules;
  for (const TensorTypeRule& r : ov.tensor_types) {
    std::regex re;
    if (compile_pattern(r.pattern, &re)) rules.emplace_back(std::move(re), r.type);
  }
  std::vector<GgmlType> out(tensors.size());
  bool tied = true;
  Counters c;
  for (const RecipeTensor& t : tensors) {
    const Category cat = category_of(t.name);
    if (cat == Category::AttnV) ++c.n_attn_v;
    if (cat == Category::Output) tied = false;
  }
  c.n_ffn_down = static_cast<int>(model.n_layer);
  // llama.cpp's order: by layer number (tensors outside blocks first), then by name.
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const int la = layer_of(tensors[a].name), lb = layer_of(tensors[b].name);
    return la != lb ? la < lb : tensors[a].name < tensors[b].name;
  });
  for (size_t k : order) {
    const RecipeTensor& t = tensors[k];
    if (!allows_quantization(t)) {
      out[k] = t.type;
      continue;
    }
    const Category cat = category_of(t.name);
    if (ov.has_token_embd_type && cat == Category::TokenEmbd) {
      out[k] = ov.token_embd_type;
      continue;
    }
    if (ov.has_output_type && cat == Category::Output) {
      out[k] = ov.output_type;
      continue;
    }
    GgmlType nt = mix.default_type;
    if (!is_float_type(nt)) {
      bool manual = false;
      GgmlType want = nt;
      for (const auto& [re, type] : rules) {
        if (std::regex_search(t.name, re)) {
          want = type;
          manual = true;
          break;
        }
      }
      if (!manual && !ov.pure) want = mix_rule(mix, model, t, cat, tied, c, ov);
      nt = fallback_type(want, t.ne[0]);
      if (nt != want && notes) {
        notes->push_back(t.name + ": " + type_traits(want).name + " needs rows of a multiple of " +
                         std::to_string(block_of(want)) + " (ne[0]=" + std::to_string(t.ne[0]) + "), using " +
                         type_traits(nt).name);
      }
    }
    out[k] = nt;
  }
  return out;
}

}  // namespace llmserve
