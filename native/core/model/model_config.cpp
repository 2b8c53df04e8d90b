#include "model_config.h"

#include <cmath>
#include <cstdlib>

#include "../attention/attention.h"
#include "../gguf/gguf.h"

namespace llmserve {

namespace {

Status get_int_key(const GgufFile& f, const std::string& key, bool required, int64_t* out, bool* found) {
  *found = false;
  const GgufValue* v = f.find(key);
  if (!v) {
    if (required) return make_error(Code::GgufCorrupt, "missing hyperparameter '" + key + "'");
    return Status::ok();
  }
  if (!v->is_int() || v->type == GgufType::BOOL) {
    return make_error(Code::GgufCorrupt,
                      "hyperparameter '" + key + "' has type " + gguf_type_name(v->type) + ", expected an integer");
  }
  *out = v->as_int();
  *found = true;
  return Status::ok();
}

Status get_float_key(const GgufFile& f, const std::string& key, bool required, double* out, bool* found) {
  *found = false;
  const GgufValue* v = f.find(key);
  if (!v) {
    if (required) return make_error(Code::GgufCorrupt, "missing hyperparameter '" + key + "'");
    return Status::ok();
  }
  if (!v->is_float() && !(v->is_int() && v->type != GgufType::BOOL)) {
    return make_error(Code::GgufCorrupt,
                      "hyperparameter '" + key + "' has type " + gguf_type_name(v->type) + ", expected a number");
  }
  *out = v->as_double();
  *found = true;
  return Status::ok();
}

Status check_range(const std::string& key, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return make_error(Code::BadShape, "hyperparameter '" + key + "' = " + std::to_string(v) + " is out of range [" +
                                          std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return Status::ok();
}

Status check_float_range(const std::string& key, double v, double lo, double hi) {
  if (!std::isfinite(v) || v <= lo || v > hi) {
    return make_error(Code::BadShape, "hyperparameter '" + key + "' = " + std::to_string(v) + " is out of range (" +
                                          std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return Status::ok();
}

constexpr double kMinRopeFactor = 1.0 / 1024;
constexpr double kMaxRopeFactor = 1024;

// Every "blk.N." tensor must belong to a block below block_count: a smaller block_count would
// silently drop layers (and generate garbage). Missing blocks are reported by the weight binding.
Status check_block_count(const GgufFile& f, const std::string& key, int64_t n_layer) {
  int64_t max_block = -1;
  std::string example;
  for (const auto& t : f.tensors()) {
    if (t.name.compare(0, 4, "blk.") != 0) continue;
    const char* p = t.name.c_str() + 4;
    char* end = nullptr;
    long long n = std::strtoll(p, &end, 10);
    if (end == p || *end != '.' || n < 0) continue;
    if (n > max_block) {
      max_block = n;
      example = t.name;
    }
  }
  if (max_block >= n_layer) {
    return make_error(Code::BadShape, "hyperparameter '" + key + "' = " + std::to_string(n_layer) +
                                          " but the file has tensors of block " + std::to_string(max_block) +
                                          " (e.g. '" + example + "'); the block count and the tensors disagree");
  }
  return Status::ok();
}

// The Gemma keys, as llama.cpp's llama_model_gemma2 / llama_model_gemma3 load_arch_hparams read
// them. gemma2: a window always (default 4096), every 2nd layer global (pattern 2: layers with
// il % 2 == 0 are local), both soft-caps (defaults 50 / 30), local layers rotate with the file's
// scale and rope.freq_base_swa (default: the global base). gemma3: a window only when the file
// has attention.sliding_window > 0 (pattern 6: 5 local, then 1 global), no attention soft-cap,
// final soft-cap only if present, local base rope.freq_base_swa (default 10000) and scale 1.
// Both: Q scaled by 1/sqrt(head_dim) (27B shapes: 1/sqrt(n_embd / n_head)) instead of the scores.
Status read_gemma_config(const GgufFile& f, ModelConfig* cp) {
  ModelConfig& c = *cp;
  const std::string a = c.arch + ".";
  const bool g2 = c.arch == "gemma2";
  bool found = false;
  int64_t iv = 0;
  double fv = 0;
  c.embd_scale = c.post_norms = c.geglu = true;
  int64_t pattern = g2 ? 2 : 6;
  c.n_swa = g2 ? 4096 : 0;
  LLMS_RETURN_IF_ERROR(get_int_key(f, a + "attention.sliding_window", false, &iv, &found));
  if (found) {
    LLMS_RETURN_IF_ERROR(check_range(a + "attention.sliding_window", iv, 0, int64_t(1) << 24));
    c.n_swa = iv;
  }
  if (const GgufValue* v = f.find(a + "attention.sliding_window_pattern")) {
    if (v->type == GgufType::ARRAY) {
      return make_error(Code::UnsupportedArch, "hyperparameter '" + a +
                                                   "attention.sliding_window_pattern' is a per-layer array; only "
                                                   "the integer period is supported");
    }
    LLMS_RETURN_IF_ERROR(get_int_key(f, a + "attention.sliding_window_pattern", false, &pattern, &found));
    LLMS_RETURN_IF_ERROR(check_range(a + "attention.sliding_window_pattern", pattern, 0, 4096));
  }
  c.swa_layer.assign(static_cast<size_t>(c.n_layer), 0);
  for (int64_t il = 0; c.n_swa > 0 && il < c.n_layer; ++il) {
    // llama_hparams::set_swa_pattern: period 0 makes every layer local.
    c.swa_layer[static_cast<size_t>(il)] = pattern == 0 || il % pattern < pattern - 1;
  }
  c.rope_freq_base_swa = g2 ? c.rope_freq_base : 10000.0f;
  c.rope_freq_scale_swa = g2 ? c.rope_freq_scale : 1.0f;
  LLMS_RETURN_IF_ERROR(get_float_key(f, a + "rope.freq_base_swa", false, &fv, &found));
  if (found) {
    LLMS_RETURN_IF_ERROR(check_float_range(a + "rope.freq_base_swa", fv, 0.0, 1e12));
    c.rope_freq_base_swa = static_cast<float>(fv);
  }
  c.attn_softcap = g2 ? 50.0f : 0.0f;
  c.final_softcap = g2 ? 30.0f : 0.0f;
  for (const char* key : {"attn_logit_softcapping", "final_logit_softcapping"}) {
    const bool attn = key[0] == 'a';
    if (attn && !g2) continue;  // llama.cpp's gemma3 never soft-caps attention
    LLMS_RETURN_IF_ERROR(get_float_key(f, a + key, false, &fv, &found));
    if (!found) continue;
    // gemma3: 0 = off; gemma2 divides by the cap unconditionally, so it must be positive.
    if (!(g2 ? fv > 0 : fv >= 0) || !std::isfinite(fv) || fv > 1e6) {
      return make_error(Code::BadShape, "hyperparameter '" + a + key + "' = " + std::to_string(fv) +
                                            " is not a usable soft-cap (expected a positive finite value)");
    }
    (attn ? c.attn_softcap : c.final_softcap) = static_cast<float>(fv);
  }
  const bool big = c.n_layer == (g2 ? 46 : 62);  // llama.cpp's LLM_TYPE_27B
  c.q_scale = big ? 1.0f / std::sqrt(static_cast<float>(c.n_embd / c.n_head))
                  : 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  return Status::ok();
}

// Expert counts as llama.cpp's load_hparams reads and asserts them (an assert there, a typed error
// here). Mixtral is llama with expert_count > 0; qwen3moe needs experts; the others never read them.
Status read_expert_config(const GgufFile& f, ModelConfig* cp) {
  ModelConfig& c = *cp;
  const std::string a = c.arch + ".";
  const bool qwen3moe = c.arch == "qwen3moe";
  if (c.arch != "llama" && !qwen3moe) return Status::ok();
  bool found = false;
  LLMS_RETURN_IF_ERROR(get_int_key(f, a + "expert_count", qwen3moe, &c.n_expert, &found));
  LLMS_RETURN_IF_ERROR(check_range(a + "expert_count", c.n_expert, qwen3moe ? 1 : 0, kMaxExperts));
  LLMS_RETURN_IF_ERROR(get_int_key(f, a + "expert_used_count", c.n_expert > 0, &c.n_expert_used, &found));
  if (c.n_expert == 0) {
    if (c.n_expert_used != 0) {
      return make_error(Code::BadShape, "hyperparameter '" + a + "expert_used_count' = " +
                                            std::to_string(c.n_expert_used) + " but the model has no experts ('" + a +
                                            "expert_count' is 0 or absent); the file is corrupt, re-convert the model");
    }
    return Status::ok();
  }
  LLMS_RETURN_IF_ERROR(check_range(a + "expert_used_count", c.n_expert_used, 1, c.n_expert));
  c.n_ff_exp = qwen3moe ? c.n_ff / c.n_expert_used : c.n_ff;
  if (qwen3moe) {
    int64_t v = 0;
    LLMS_RETURN_IF_ERROR(get_int_key(f, a + "expert_feed_forward_length", false, &v, &found));
    if (found && v != 0) c.n_ff_exp = v;
  }
  return check_range(qwen3moe ? a + "expert_feed_forward_length" : a + "feed_forward_length", c.n_ff_exp, 1, 1 << 20);
}

}  // namespace

std::string supported_archs_list() {
  std::string s;
  for (const char* a : kSupportedArchs) s += (s.empty() ? "" : ", ") + std::string(a);
  return s;
}

Status validate_token_ids(const GgufFile& f, int64_t n_vocab) {
  static const char* const kKeys[] = {
      "tokenizer.ggml.bos_token_id",       "tokenizer.ggml.eos_token_id",     "tokenizer.ggml.eot_token_id",
      "tokenizer.ggml.eom_token_id",       "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
      "tokenizer.ggml.separator_token_id", "tokenizer.ggml.mask_token_id",    "tokenizer.ggml.prefix_token_id",
      "tokenizer.ggml.suffix_token_id",    "tokenizer.ggml.middle_token_id",  "tokenizer.ggml.fim_pre_token_id",
      "tokenizer.ggml.fim_suf_token_id",   "tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.fim_pad_token_id",
      "tokenizer.ggml.fim_rep_token_id",   "tokenizer.ggml.fim_sep_token_id",
  };
  for (const char* key : kKeys) {
    const GgufValue* v = f.find(key);
    if (!v) continue;
    if (!v->is_int() || v->type == GgufType::BOOL) {
      return make_error(Code::GgufCorrupt,
                        "metadata '" + std::string(key) + "' has type " + gguf_type_name(v->type) +
                            ", expected an integer token id; the file is corrupt, re-convert the model");
    }
  }
  // BOS and EOS drive every request: out of the vocabulary they are errors, not ignorable.
  for (const char* key : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"}) {
    const GgufValue* v = f.find(key);
    if (!v) continue;
    const bool neg = v->type == GgufType::INT8 || v->type == GgufType::INT16 || v->type == GgufType::INT32 ||
                             v->type == GgufType::INT64
                         ? v->i < 0
                         : false;
    if (neg || v->u >= (uint64_t)n_vocab) {
      return make_error(Code::BadShape, "metadata '" + std::string(key) +
                                            "' = " + (neg ? std::to_string(v->i) : std::to_string(v->u)) +
                                            " is outside the vocabulary [0, " + std::to_string(n_vocab) +
                                            "); the file is corrupt, re-convert the model");
    }
  }
  return Status::ok();
}

Status read_model_config(const GgufFile& f, ModelConfig* out) {
  ModelConfig c;
  const GgufValue* archv = f.find("general.architecture");
  if (!archv) return make_error(Code::GgufCorrupt, "missing metadata key 'general.architecture'");
  if (archv->type != GgufType::STRING) {
    return make_error(Code::GgufCorrupt, "metadata key 'general.architecture' is not a string");
  }
  c.arch = std::string(archv->s);
  bool known = false;
  for (const char* a : kSupportedArchs) known = known || c.arch == a;
  if (!known) {
    return make_error(Code::UnsupportedArch, "architecture '" + c.arch +
                                                 "' is not supported; supported: " + supported_archs_list() +
                                                 " (use a GGUF of one of these, or llama.cpp for this model)");
  }
  // llama.cpp's llama_model_rope_type: NORM for llama, NEOX for the qwen and gemma families.
  c.rope_type = c.arch == "llama" ? 0 : 2;
  c.has_qk_norm = c.arch == "qwen3" || c.arch == "qwen3moe" || c.arch == "gemma3";
  const std::string a = c.arch + ".";
  bool found = false;
  int64_t iv = 0;
  double fv = 0;

  LLMS_RETURN_IF_ERROR(get_int_key(f, a + "embedding_length", true, &c.n_embd, &found));
  LLMS_RETURN_IF_ERROR(check_range(a + "embedding_length", c.n_embd, 1, 1 << 17));
  LLMS_RETURN_IF_ERROR(get_int_key(f, a + "block_count", true, &c.n_layer, &found));
  LLMS_RETURN_IF_ERROR(check_range(a + "block_count", c.n_layer, 1, 4096));
  LLMS_RETURN_IF_ERROR(get_int_key(f, a + "feed_forward_length", true, &c.n_ff, &found));
  LLMS_RETURN_IF_ERROR(check_range(a + "feed_forward_length", c.n_ff, 1, 1 << 20));
  LLMS_RETURN_IF_ERROR(get_int_key(f, a + "context_length", true, &c.n_ctx_train, &found));
  LLMS_RETURN_IF_ERROR(check_range(a + "context_length", c.n_ctx_train, 1, int64_t(1) << 24));
  LLMS_RETURN_IF_ERROR(get_int_key(f, a + "attention.head_count", true, &c.n_head, &found));
  LLMS_RETURN_IF_ERROR(check_range(a + "attention.head_count", c.n_head, 1, 4096));
  c.n_head_kv = c.n_head;
  LLMS_RETURN_IF_ERROR(get_int_key(f, a + "attention.head_count_kv", false, &c.n_head_kv, &found));
  LLMS_RETURN_IF_ERROR(check_range(a + "attention.head_count_kv", c.n_head_kv, 1, c.n_head));
  if (c.n_head % c.n_head_kv != 0) {
    return make_error(Code::BadShape, "hyperparameter '" + a + "attention.head_count' = " + std::to_string(c.n_head) +
                                          " is not a multiple of '" + a +
                                          "attention.head_count_kv' = " + std::to_string(c.n_head_kv));
  }
  // The attention kernels process one KV head's query heads together in fixed-size scratch.
  if (c.n_head / c.n_head_kv > kMaxAttnGroup) {
    return make_error(Code::BadShape, "hyperparameters '" + a + "attention.head_count' = " + std::to_string(c.n_head) +
                                          " and '" + a + "attention.head_count_kv' = " + std::to_string(c.n_head_kv) +
                                          " give " + std::to_string(c.n_head / c.n_head_kv) +
                                          " query heads per KV head; at most " + std::to_string(kMaxAttnGroup) +
                                          " are supported");
  }
  LLMS_RETURN_IF_ERROR(check_block_count(f, a + "block_count", c.n_layer));

  // Head size: key_length/value_length when present, else n_embd / n_head.
  int64_t key_len = 0, value_len = 0;
  bool has_key_len = false, has_value_len = false;
  LLMS_RETURN_IF_ERROR(get_int_key(f, a + "attention.key_length", false, &key_len, &has_key_len));
  LLMS_RETURN_IF_ERROR(get_int_key(f, a + "attention.value_length", false, &value_len, &has_value_len));
  if (has_key_len) {
    LLMS_RETURN_IF_ERROR(check_range(a + "attention.key_length", key_len, 1, 1 << 14));
    c.head_dim = key_len;
  } else {
    if (c.n_embd % c.n_head != 0) {
      return make_error(Code::BadShape, "hyperparameter '" + a + "embedding_length' = " + std::to_string(c.n_embd) +
                                            " is not a multiple of '" + a +
                                            "attention.head_count' = " + std::to_string(c.n_head));
    }
    c.head_dim = c.n_embd / c.n_head;
  }
  if (has_value_len && value_len != c.head_dim) {
    return make_error(Code::BadShape,
                      "hyperparameter '" + a + "attention.value_length' = " + std::to_string(value_len) +
                          " differs from key length " + std::to_string(c.head_dim) + " (not supported)");
  }

  c.n_rot = c.head_dim;
  LLMS_RETURN_IF_ERROR(get_int_key(f, a + "rope.dimension_count", false, &c.n_rot, &found));
  LLMS_RETURN_IF_ERROR(check_range(a + "rope.dimension_count", c.n_rot, 2, c.head_dim));
  if (c.n_rot % 2 != 0) {
    return make_error(Code::BadShape,
                      "hyperparameter '" + a + "rope.dimension_count' = " + std::to_string(c.n_rot) + " is odd");
  }

  LLMS_RETURN_IF_ERROR(get_float_key(f, a + "attention.layer_norm_rms_epsilon", true, &fv, &found));
  LLMS_RETURN_IF_ERROR(check_float_range(a + "attention.layer_norm_rms_epsilon", fv, 0.0, 1.0));
  c.rms_eps = static_cast<float>(fv);

  LLMS_RETURN_IF_ERROR(get_float_key(f, a + "rope.freq_base", false, &fv, &found));
  if (found) {
    LLMS_RETURN_IF_ERROR(check_float_range(a + "rope.freq_base", fv, 0.0, 1e12));
    c.rope_freq_base = static_cast<float>(fv);
  }

  // RoPE scaling, as llama.cpp: the factor (new key, else the old scale_linear key) sets
  // freq_scale = 1/factor; type "none" disables it; "yarn" also enables YaRN extrapolation.
  std::string scaling = "linear";
  if (const GgufValue* v = f.find(a + "rope.scaling.type")) {
    if (v->type != GgufType::STRING) {
      return make_error(Code::GgufCorrupt, "hyperparameter '" + a + "rope.scaling.type' is not a string");
    }
    scaling = std::string(v->s);
  }
  if (scaling == "none") {
    c.rope_scaling = RopeScalingType::None;
  } else if (scaling == "linear") {
    c.rope_scaling = RopeScalingType::Linear;
  } else if (scaling == "yarn") {
    c.rope_scaling = RopeScalingType::Yarn;
  } else {
    return make_error(Code::UnsupportedArch, "rope scaling type '" + scaling + "' ('" + a +
                                                 "rope.scaling.type') is not supported; supported: none, linear, yarn");
  }
  double factor = 0;
  std::string factor_key = a + "rope.scaling.factor";
  LLMS_RETURN_IF_ERROR(get_float_key(f, factor_key, false, &factor, &found));
  if (!found) {
    factor_key = a + "rope.scale_linear";
    LLMS_RETURN_IF_ERROR(get_float_key(f, factor_key, false, &factor, &found));
  }
  // 0 means "not set" (llama.cpp); anything else must be a finite factor of sane size (real files:
  // 1..64). NaN compares unequal to 0, so it is rejected here.
  if (found && factor != 0.0) {
    if (!std::isfinite(factor) || factor < kMinRopeFactor || factor > kMaxRopeFactor) {
      return make_error(Code::BadShape, "hyperparameter '" + factor_key + "' = " + std::to_string(factor) +
                                            " is not a finite RoPE scaling factor in [" +
                                            std::to_string(kMinRopeFactor) + ", " + std::to_string(kMaxRopeFactor) +
                                            "]");
    }
  }
  const float ropescale = static_cast<float>(factor);
  c.rope_freq_scale = ropescale == 0.0f ? 1.0f : 1.0f / ropescale;
  if (c.rope_scaling == RopeScalingType::None) c.rope_freq_scale = 1.0f;

  c.rope_n_ctx_orig = c.n_ctx_train;
  LLMS_RETURN_IF_ERROR(get_int_key(f, a + "rope.scaling.original_context_length", false, &iv, &found));
  if (found && iv != 0) {
    LLMS_RETURN_IF_ERROR(check_range(a + "rope.scaling.original_context_length", iv, 1, int64_t(1) << 24));
    c.rope_n_ctx_orig = iv;
  }

  // llama.cpp (llama_context): with YaRN, attn_factor = mscale(factor) = 1 + 0.1 ln(factor), then
  // divided by ggml's own YaRN magnitude correction (1 + 0.1 ln factor), which rope re-applies;
  // beta_fast / beta_slow keep their defaults (32, 1) and no log multiplier is read for llama and
  // the qwen family (see model_config.h). Every type then multiplies in rope.scaling.attn_factor.
  if (c.rope_scaling == RopeScalingType::Yarn) {
    c.yarn_ext_factor = 1.0f;
    const float fac = 1.0f / c.rope_freq_scale;
    float attn = fac <= 1.0f ? 1.0f : 0.1f * logf(fac) + 1.0f;
    attn *= 1.0f / (1.0f + 0.1f * logf(fac));
    c.yarn_attn_factor = attn;
  }
  LLMS_RETURN_IF_ERROR(get_float_key(f, a + "rope.scaling.attn_factor", false, &fv, &found));
  if (found) {
    LLMS_RETURN_IF_ERROR(check_float_range(a + "rope.scaling.attn_factor", fv, 0.0, 1024.0));
    c.yarn_attn_factor *= static_cast<float>(fv);
  }
  if (!std::isfinite(c.rope_freq_scale) || c.rope_freq_scale <= 0.0f) {
    return make_error(Code::BadShape, "hyperparameter '" + factor_key + "' gives an unusable RoPE frequency scale");
  }

  if (c.arch == "gemma2" || c.arch == "gemma3") LLMS_RETURN_IF_ERROR(read_gemma_config(f, &c));
  LLMS_RETURN_IF_ERROR(read_expert_config(f, &c));
  // phi3 (llama_model_phi3): Q *= 1/sqrtf(head_dim) after RoPE, attention scale 1. Its
  // attention.sliding_window key is read and then disabled by llama.cpp ("Phi SWA is currently
  // disabled"), so every layer attends to the whole context here too.
  if (c.arch == "phi3") c.q_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  *out = std::move(c);
  return Status::ok();
}

}  // namespace llmserve
