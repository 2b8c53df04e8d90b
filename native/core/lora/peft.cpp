// Hugging Face PEFT LoRA adapters -> LoraAdapter (the pair layout is in lora.h).
//
// One place for each rule:
// - The HF -> GGUF name map (kLayerModules, kOutputModule): PEFT's save_pretrained writes
//   "base_model.model.<module>.lora_{A,B}.weight" with <module> the transformers module name:
//   model.layers.N.self_attn.{q,k,v,o}_proj -> blk.N.attn_{q,k,v,output}, model.layers.N.mlp.
//   {gate,up,down}_proj -> blk.N.ffn_{gate,up,down}, lm_head -> output. PEFT can also target
//   model.embed_tokens; llmserve cannot apply that (refused).
// - The q/k row permutation: llama.cpp's convert_hf_to_gguf.py (LlamaModel.modify_tensors) reorders
//   the rows of q_proj / k_proj (permute(w, n_head, n_head) / permute(w, n_head, n_head_kv)) from
//   HF's rotate-half RoPE layout to the adjacent pairs of GGUF's "llama" arch, and
//   convert_lora_to_gguf.py pushes the same reshape through a LoRA pair, where it moves only
//   lora_B's (output) rows. So for a llama base, lora_B of q_proj / k_proj is permuted here:
//   GGUF row h*hd + 2i + j = HF row h*hd + j*hd/2 + i (head h, i < hd/2, j in {0, 1}). qwen2's
//   converter (Qwen2Model, rope type NEOX = the HF layout) does not permute.
// - Config semantics are PEFT's (tuners/lora/model.py _create_and_replace, tuners_utils.
//   check_target_module_exists, utils/other.get_pattern_key): target_modules as a list selects a
//   module whose name equals an entry or ends with "." + entry; as a string, a full regex match
//   ("all-linear": every linear layer but the output); exclude_modules removes the same way;
//   layers_to_transform keeps the listed layers. A module's r / alpha come from the first
//   rank_pattern / alpha_pattern key (file order) for which "(.*\.)?(key)" matches the whole name,
//   else r / lora_alpha; scale = user scale × alpha / r, or × alpha / sqrt(r) with use_rslora
//   (LoraLayer.update_layer). (convert_lora_to_gguf.py ignores rank_pattern, alpha_pattern and
//   use_rslora; llmserve applies them as PEFT does.)
// - Nothing is silently ignored: every tensor must be the lora_A / lora_B weight of a module the
//   config targets, its rank must be the config's, and options that change what a LoRA layer
//   computes (DoRA, LoRA biases, trained base biases, modules_to_save, other LoRA variants) are
//   refused, saying what to do instead.

#include <cerrno>
#include <cmath>
#include <cstring>
#include <map>
#include <new>

#include "../os/os.h"
#include "json.h"
#include "lora.h"
#include "pattern.h"
#include "safetensors.h"

namespace llmserve {

namespace {

constexpr const char* kStatePrefix = "base_model.model.";
constexpr const char* kLayerPrefix = "model.layers.";
constexpr const char* kOutputModule = "lm_head";
constexpr const char* kEmbedModule = "model.embed_tokens";
constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kWeightsFile = "adapter_model.safetensors";
constexpr size_t kMaxConfigBytes = size_t(4) << 20;  // real configs are ~1-20 KiB
constexpr int64_t kMaxRank = 65536;

struct LayerModule {
  const char* name;  // after "model.layers.N."
  Proj proj;
};
constexpr LayerModule kLayerModules[] = {
    {"self_attn.q_proj", Proj::Q}, {"self_attn.k_proj", Proj::K}, {"self_attn.v_proj", Proj::V},
    {"self_attn.o_proj", Proj::O}, {"mlp.gate_proj", Proj::Gate}, {"mlp.up_proj", Proj::Up},
    {"mlp.down_proj", Proj::Down},
};
const char* const kSupportedModules =
    "model.layers.N.self_attn.{q,k,v,o}_proj, model.layers.N.mlp.{gate,up,down}_proj, lm_head";

const std::string kMergeAdvice =
    " llmserve applies plain LoRA (W + scale·B·A). Merge the adapter into its base with PEFT's "
    "merge_and_unload() and convert the merged model with llama.cpp's convert_hf_to_gguf.py instead.";

bool ends_with(const std::string& s, const std::string& t) {
  return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
}

// "model.layers.N.<module>" -> (N, proj) with *layered; "lm_head" -> Output. False otherwise.
bool parse_module(const std::string& m, int64_t* il, Proj* p) {
  if (m == kOutputModule) {
    *il = -1, *p = Proj::Output;
    return true;
  }
  const std::string pre = kLayerPrefix;
  if (m.compare(0, pre.size(), pre) != 0) return false;
  size_t j = pre.size();
  while (j < m.size() && m[j] >= '0' && m[j] <= '9') ++j;
  if (j == pre.size() || j - pre.size() > 9 || j >= m.size() || m[j] != '.') return false;
  const std::string rest = m.substr(j + 1);
  for (const LayerModule& lm : kLayerModules) {
    if (rest == lm.name) {
      *il = std::stoll(m.substr(pre.size(), j - pre.size())), *p = lm.proj;
      return true;
    }
  }
  return false;
}

std::string module_name(int64_t il, const LayerModule& lm) { return kLayerPrefix + std::to_string(il) + "." + lm.name; }

// target_modules / exclude_modules.
struct Selector {
  bool set = false, regex = false;
  Pattern re;
  std::vector<std::string> names;
  bool matches(const std::string& m) const {
    if (regex) return re.full_match(m);
    for (const std::string& n : names)
      if (m == n || ends_with(m, "." + n)) return true;
    return false;
  }
};

struct PatternValue {
  std::string key;
  Pattern re;
  double value = 0;
};

struct PeftConfig {
  int64_t r = 8;  // PEFT's LoraConfig defaults, for keys a config leaves out
  double alpha = 8;
  bool rslora = false;
  Selector target, exclude;
  bool has_layers = false;
  std::vector<int64_t> layers;
  std::vector<PatternValue> rank_pattern, alpha_pattern;

  bool targets(const std::string& m, int64_t il) const {
    if (exclude.set && exclude.matches(m)) return false;
    if (!target.matches(m)) return false;
    if (has_layers && !target.regex) {
      if (il < 0) return false;
      bool in = false;
      for (int64_t l : layers) in = in || l == il;
      return in;
    }
    return true;
  }
  static double lookup(const std::vector<PatternValue>& pv, const std::string& m, double dflt) {
    for (const PatternValue& v : pv)
      if (v.re.full_match(m)) return v.value;
    return dflt;
  }
};

bool is_set(const JsonValue* v) {
  if (!v) return false;
  switch (v->kind) {
    case JsonValue::Kind::Null: return false;
    case JsonValue::Kind::Bool: return v->boolean;
    case JsonValue::Kind::String: return !v->str.empty();
    case JsonValue::Kind::Array: return !v->items.empty();
    case JsonValue::Kind::Object: return !v->members.empty();
    default: return true;
  }
}

Status read_selector(const JsonValue* v, const std::string& key, const std::string& where, Selector* s) {
  if (!v || v->kind == JsonValue::Kind::Null) return Status::ok();
  s->set = true;
  if (v->kind == JsonValue::Kind::String) {
    std::string lower = v->str;
    for (char& ch : lower) ch = static_cast<char>(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    if (key == "target_modules" && lower == "all-linear") {  // PEFT compares it lowercased
      // PEFT expands it to the last name part of every linear layer except the output layer.
      for (const LayerModule& lm : kLayerModules) s->names.push_back(std::strchr(lm.name, '.') + 1);
      return Status::ok();
    }
    s->regex = true;
    return Pattern::compile(v->str, where + ": " + key, &s->re);
  }
  if (v->kind != JsonValue::Kind::Array)
    return make_error(Code::InvalidArgument, where + ": " + key + " is " + v->kind_name() +
                                                 "; expected a list of module names or a regex string");
  for (const JsonValue& e : v->items) {
    if (e.kind != JsonValue::Kind::String)
      return make_error(Code::InvalidArgument,
                        where + ": " + key + " has an entry that is " + e.kind_name() + "; expected module names");
    s->names.push_back(e.str);
  }
  return Status::ok();
}

Status read_patterns(const JsonValue* v, const std::string& key, bool integer, const std::string& where,
                     std::vector<PatternValue>* out) {
  if (!v || v->kind == JsonValue::Kind::Null) return Status::ok();
  if (v->kind != JsonValue::Kind::Object)
    return make_error(Code::InvalidArgument, where + ": " + key + " is " + v->kind_name() + "; expected an object");
  for (const auto& [k, val] : v->members) {
    PatternValue pv;
    pv.key = k;
    const bool ok = val.kind == JsonValue::Kind::Number &&
                    (integer ? val.is_uint && val.uint >= 1 && val.uint <= static_cast<uint64_t>(kMaxRank) : true);
    if (!ok)
      return make_error(Code::InvalidArgument, where + ": " + key + "[\"" + k + "\"] is not " +
                                                   (integer ? "a rank in [1, 65536]" : "a number"));
    pv.value = val.number;
    // get_pattern_key: re.match(rf"(.*\.)?({key})$", name) == a full match of "(.*\.)?(key)".
    LLMS_RETURN_IF_ERROR(
        Pattern::compile("(?:.*\\.)?(?:" + k + ")", where + ": " + key + " key \"" + k + "\"", &pv.re));
    out->push_back(std::move(pv));
  }
  return Status::ok();
}

Status refuse(const std::string& where, const std::string& what) {
  return make_error(Code::InvalidArgument, where + ": " + what + " is not supported." + kMergeAdvice);
}

Status parse_config(const std::string& text, const std::string& where, PeftConfig* c) {
  JsonValue j;
  LLMS_RETURN_IF_ERROR(parse_json(text, where + "/" + kConfigFile, &j));
  if (j.kind != JsonValue::Kind::Object)
    return make_error(Code::InvalidArgument, where + ": " + kConfigFile + " is not a JSON object");
  const JsonValue* v = j.get("peft_type");
  if (v && (v->kind != JsonValue::Kind::String || v->str != "LORA"))
    return make_error(Code::InvalidArgument,
                      where + ": peft_type is " +
                          (v->kind == JsonValue::Kind::String ? "'" + v->str + "'" : v->kind_name()) +
                          "; llmserve loads LoRA adapters (peft_type LORA) only");
  // Options whose non-default values change what a LoRA layer computes.
  static const std::pair<const char*, const char*> kRefused[] = {
      {"use_dora", "DoRA (use_dora)"},
      {"lora_bias", "a bias on lora_B (lora_bias)"},
      {"modules_to_save", "whole modules saved with the adapter (modules_to_save)"},
      {"fan_in_fan_out", "transposed Conv1D weights (fan_in_fan_out)"},
      {"layer_replication", "layer replication (layer_replication)"},
      {"trainable_token_indices", "trained token embeddings (trainable_token_indices)"},
      {"target_parameters", "LoRA on parameters (target_parameters)"},
      {"alora_invocation_tokens", "Activated LoRA (alora_invocation_tokens)"},
      {"use_qalora", "QALoRA (use_qalora)"},
      {"use_bdlora", "the LoRA variant use_bdlora"},
      {"velora_config", "the LoRA variant velora_config"},
      {"monteclora_config", "the LoRA variant monteclora_config"},
      {"arrow_config", "the LoRA variant arrow_config"},
      {"kasa_config", "the LoRA variant kasa_config"},
  };
  for (auto& [key, what] : kRefused)
    if (is_set(j.get(key))) return refuse(where, what);
  v = j.get("bias");
  if (v && v->kind != JsonValue::Kind::Null && (v->kind != JsonValue::Kind::String || v->str != "none"))
    return refuse(where, "training the base model's biases (bias: " +
                             (v->kind == JsonValue::Kind::String ? "'" + v->str + "'" : std::string(v->kind_name())) +
                             ")");
  v = j.get("init_lora_weights");
  if (v && v->kind == JsonValue::Kind::String) {
    for (const char* p : {"pissa", "olora", "loftq", "corda", "mica"})
      if (v->str.rfind(p, 0) == 0)
        return make_error(Code::InvalidArgument,
                          where + ": init_lora_weights '" + v->str +
                              "' changes the base weights (or the layer) along with the adapter, so the adapter "
                              "alone does not fit the original base. Save it as a plain LoRA (PEFT save_pretrained "
                              "with path_initial_model_for_weight_conversion) or merge it (merge_and_unload).");
  }

  v = j.get("r");
  if (v && v->kind != JsonValue::Kind::Null) {
    if (!v->is_uint || v->uint < 1 || v->uint > static_cast<uint64_t>(kMaxRank))
      return make_error(Code::InvalidArgument, where + ": r is not a rank in [1, 65536]");
    c->r = static_cast<int64_t>(v->uint);
  }
  v = j.get("lora_alpha");
  if (v && v->kind != JsonValue::Kind::Null) {
    if (v->kind != JsonValue::Kind::Number)
      return make_error(Code::InvalidArgument, where + ": lora_alpha is not a number");
    c->alpha = v->number;
  }
  v = j.get("use_rslora");
  if (v && v->kind != JsonValue::Kind::Null) {
    if (v->kind != JsonValue::Kind::Bool)
      return make_error(Code::InvalidArgument, where + ": use_rslora is not a boolean");
    c->rslora = v->boolean;
  }
  LLMS_RETURN_IF_ERROR(read_selector(j.get("target_modules"), "target_modules", where, &c->target));
  if (!c->target.set)
    return make_error(Code::InvalidArgument, where + ": " + kConfigFile +
                                                 " has no target_modules, so it cannot say which modules the weights "
                                                 "adapt (PEFT's save_pretrained always writes it)");
  LLMS_RETURN_IF_ERROR(read_selector(j.get("exclude_modules"), "exclude_modules", where, &c->exclude));
  v = j.get("layers_to_transform");
  if (v && v->kind != JsonValue::Kind::Null) {
    c->has_layers = true;
    const std::vector<JsonValue> one = {*v};
    for (const JsonValue& e : v->kind == JsonValue::Kind::Array ? v->items : one) {
      if (!e.is_uint || e.uint > (uint64_t(1) << 30))
        return make_error(Code::InvalidArgument,
                          where + ": layers_to_transform is not a layer index or a list of them");
      c->layers.push_back(static_cast<int64_t>(e.uint));
    }
  }
  LLMS_RETURN_IF_ERROR(read_patterns(j.get("rank_pattern"), "rank_pattern", true, where, &c->rank_pattern));
  LLMS_RETURN_IF_ERROR(read_patterns(j.get("alpha_pattern"), "alpha_pattern", false, where, &c->alpha_pattern));
  return Status::ok();
}

// Reads a small file whole (adapter_config.json).
Status read_small_file(const std::string& path, const std::string& missing_hint, std::string* out) {
  std::string why;
  switch (os::read_small_file(path, kMaxConfigBytes, out, &why)) {
    case os::OpenResult::Ok: return Status::ok();
    case os::OpenResult::NotFound: return make_error(Code::FileNotFound, "'" + path + "' not found: " + missing_hint);
    case os::OpenResult::NotRegular:
    case os::OpenResult::TooLarge:
      return make_error(Code::InvalidArgument, "'" + path + "' is not a regular file of at most " +
                                                   std::to_string(kMaxConfigBytes) + " bytes");
    default: return make_error(Code::Io, "Cannot read '" + path + "': " + why);
  }
}

GgmlType lora_type(const std::string& dtype, bool* ok) {
  *ok = true;
  if (dtype == "F32") return GgmlType::F32;
  if (dtype == "F16") return GgmlType::F16;
  if (dtype == "BF16") return GgmlType::BF16;
  *ok = false;
  return GgmlType::F32;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace

Status LoraAdapter::load_peft(const std::string& path, bool is_dir, const Model& base, float user_scale,
                              std::unique_ptr<LoraAdapter>* out) {
  const size_t slash = path.find_last_of(os::kPathSeparators);
  const std::string dir = is_dir ? path : slash == std::string::npos ? "." : path.substr(0, slash + (slash == 0));
  const std::string sep = !dir.empty() && std::strchr(os::kPathSeparators, dir.back()) ? "" : "/";
  const std::string weights = is_dir ? dir + sep + kWeightsFile : path;
  if (is_dir && os::file_size(weights) < 0 && os::file_size(dir + sep + "adapter_model.bin") >= 0)
    return make_error(
        Code::InvalidArgument,
        "PEFT adapter folder '" + path +
            "' holds adapter_model.bin (a PyTorch pickle, which can run code when read); llmserve reads "
            "adapter_model.safetensors: re-save the adapter with save_pretrained(safe_serialization=True)");
  std::unique_ptr<SafetensorsFile> w;
  LLMS_RETURN_IF_ERROR(SafetensorsFile::open(weights, &w));
  std::string config;
  LLMS_RETURN_IF_ERROR(
      read_small_file(dir + sep + kConfigFile,
                      std::string("a PEFT adapter folder holds ") + kConfigFile + " next to " + kWeightsFile, &config));
  return from_peft(std::shared_ptr<const SafetensorsFile>(std::move(w)), config, "PEFT adapter '" + path + "'", base,
                   user_scale, out);
}

Status LoraAdapter::from_peft(std::shared_ptr<const SafetensorsFile> weights, const std::string& config_json,
                              const std::string& where, const Model& base, float user_scale,
                              std::unique_ptr<LoraAdapter>* out) try {
  if (!weights || !out) return make_error(Code::InvalidArgument, "LoraAdapter: null weights or output");
  if (!std::isfinite(user_scale))
    return make_error(Code::InvalidArgument, "Expected a finite LoRA scale but received " + std::to_string(user_scale));
  const ModelConfig& mc = base.config();
  if (mc.arch != "llama" && mc.arch != "qwen2" && mc.arch != "qwen3")
    return make_error(Code::UnsupportedArch, where + ": PEFT adapters load over llama, qwen2 and qwen3 bases, not '" +
                                                 mc.arch + "'; convert the adapter with convert_lora_to_gguf.py");
  // See the header: only LlamaModel's converter permutes (Qwen3Model extends Qwen2Model, which does not).
  const bool permute_qk = mc.arch == "llama";
  PeftConfig cfg;
  LLMS_RETURN_IF_ERROR(parse_config(config_json, where, &cfg));

  // The config must select something llmserve can apply, and nothing it cannot.
  if (cfg.targets(kEmbedModule, -1))
    return make_error(Code::InvalidArgument, where + ": target_modules selects " + kEmbedModule +
                                                 " (the token embeddings), which llmserve cannot adapt (supported: " +
                                                 kSupportedModules + ")." + kMergeAdvice);
  bool any = cfg.targets(kOutputModule, -1);
  for (int64_t il = 0; il < mc.n_layer && !any; ++il)
    for (const LayerModule& lm : kLayerModules) any = any || cfg.targets(module_name(il, lm), il);
  if (!any)
    return make_error(Code::InvalidArgument, where +
                                                 ": target_modules selects none of the modules llmserve can adapt (" +
                                                 kSupportedModules + ") in this " + std::to_string(mc.n_layer) +
                                                 "-layer model; is the adapter for another architecture?");

  // Pair up the halves by module (ordered, so errors name the same tensor every time).
  const std::string pre = kStatePrefix, sa = ".lora_A.weight", sb = ".lora_B.weight";
  std::map<std::string, std::pair<const SafetensorsTensor*, const SafetensorsTensor*>> halves;
  for (const SafetensorsTensor& t : weights->tensors()) {
    const std::string tn = where + ": tensor '" + t.name + "'";
    if (t.name.find("lora_embedding_") != std::string::npos)
      return make_error(Code::InvalidArgument,
                        tn + " is a LoRA on token embeddings, which llmserve cannot apply." + kMergeAdvice);
    if (t.name.find("lora_magnitude_vector") != std::string::npos) return refuse(tn, "DoRA's magnitude vector");
    if (ends_with(t.name, ".lora_B.bias")) return refuse(tn, "a bias on lora_B");
    const bool a = ends_with(t.name, sa), b = ends_with(t.name, sb);
    if (t.name.compare(0, pre.size(), pre) != 0 || (!a && !b) || t.name.size() <= pre.size() + sa.size())
      return make_error(Code::InvalidArgument,
                        tn + " is not a LoRA weight: expected '" + pre +
                            "<module>.lora_A.weight' / '.lora_B.weight'"
                            " (PEFT's save_pretrained), and nothing else (modules_to_save, biases, ...)");
    const std::string module = t.name.substr(pre.size(), t.name.size() - pre.size() - sa.size());
    (a ? halves[module].first : halves[module].second) = &t;
  }
  if (halves.empty()) return make_error(Code::InvalidArgument, where + ": " + kWeightsFile + " holds no LoRA tensors");

  std::unique_ptr<LoraAdapter> ad(new LoraAdapter());
  ad->file_ = weights;
  ad->alpha_ = static_cast<float>(cfg.alpha);
  ad->layers_.resize(static_cast<size_t>(mc.n_layer));

  // A view of t (shape [rows, cols], row-major) as a MatrixView cols -> rows; rows permuted per the
  // converter when perm_heads > 0. Copied (owned by the adapter) when permuted or misaligned.
  auto view = [&](const SafetensorsTensor& t, GgmlType type, int64_t perm_heads, MatrixView* m) {
    m->type = type;
    m->n_out = t.shape[0];
    m->n_in = t.shape[1];
    m->row_bytes = static_cast<size_t>(m->n_in) * t.elem_bytes;
    m->data = t.data;
    const bool misaligned = reinterpret_cast<uintptr_t>(t.data) % t.elem_bytes != 0;
    if (perm_heads == 0 && !misaligned) return;
    std::unique_ptr<uint8_t[]> buf(new uint8_t[t.nbytes()]);
    if (perm_heads == 0) {
      std::memcpy(buf.get(), t.data, t.nbytes());
    } else {
      const int64_t hd = m->n_out / perm_heads, half = hd / 2;
      for (int64_t h = 0; h < perm_heads; ++h)
        for (int64_t i = 0; i < half; ++i)
          for (int64_t k = 0; k < 2; ++k)
            std::memcpy(buf.get() + static_cast<size_t>(h * hd + 2 * i + k) * m->row_bytes,
                        t.data + static_cast<size_t>(h * hd + k * half + i) * m->row_bytes, m->row_bytes);
    }
    m->data = buf.get();
    ad->owned_.push_back(std::move(buf));
  };

  for (const auto& [module, ab] : halves) {
    const SafetensorsTensor* A = ab.first;
    const SafetensorsTensor* B = ab.second;
    const std::string an = pre + module + sa, bn = pre + module + sb;
    const std::string tn = where + ": tensor '" + (A ? an : bn) + "'";
    if (module == kEmbedModule)
      return make_error(Code::InvalidArgument,
                        tn + " adapts the token embeddings, which llmserve cannot apply." + kMergeAdvice);
    int64_t il = -1;
    Proj p = Proj::Q;
    if (!parse_module(module, &il, &p))
      return make_error(Code::InvalidArgument,
                        tn + " adapts module '" + module +
                            "', which llmserve cannot map to a GGUF tensor (supported: " + kSupportedModules + ")");
    if (il >= mc.n_layer)
      return make_error(Code::InvalidArgument, tn + " is for layer " + std::to_string(il) + " but the model has " +
                                                   std::to_string(mc.n_layer) + " layers (0.." +
                                                   std::to_string(mc.n_layer - 1) + "): is it for another base model?");
    if (!cfg.targets(module, il))
      return make_error(Code::InvalidArgument, tn + " adapts '" + module +
                                                   "', which the config's target_modules (with exclude_modules / "
                                                   "layers_to_transform) does not select: the config and the "
                                                   "weights disagree");
    if (!A || !B)
      return make_error(Code::MissingTensor, where + ": tensor '" + (A ? bn : an) + "' is missing (its " +
                                                 (A ? "lora_A" : "lora_B") + " is present)");
    const MatrixView& W = base_matrix(base, il, p);
    if (p == Proj::Output && W.data == base.weights().tok_embd.data)
      return make_error(Code::MissingTensor, tn + ": the model's output is tied to token_embd (no lm_head to adapt)");
    for (const SafetensorsTensor* t : {A, B}) {
      bool ok = false;
      lora_type(t->dtype, &ok);
      if (!ok)
        return make_error(Code::UnsupportedType,
                          where + ": tensor '" + t->name + "' has dtype " + t->dtype + "; supported: F32, F16, BF16");
      if (t->shape.size() != 2 || t->shape[0] < 1 || t->shape[1] < 1)
        return make_error(Code::BadShape,
                          where + ": tensor '" + t->name + "' should be 2-D but has shape " + shape_str(t->shape));
    }
    const int64_t r = A->shape[0];
    if (A->shape[1] != W.n_in || B->shape[0] != W.n_out || B->shape[1] != r)
      return make_error(Code::BadShape, where + ": LoRA pair of '" + module + "' has lora_A " + shape_str(A->shape) +
                                            " and lora_B " + shape_str(B->shape) + " but the model's matrix maps " +
                                            std::to_string(W.n_in) + " -> " + std::to_string(W.n_out) +
                                            " (expected lora_A [r, " + std::to_string(W.n_in) + "], lora_B [" +
                                            std::to_string(W.n_out) + ", r])");
    const double r_cfg = PeftConfig::lookup(cfg.rank_pattern, module, static_cast<double>(cfg.r));
    if (static_cast<double>(r) != r_cfg)
      return make_error(Code::BadShape,
                        where + ": tensor '" + an + "' has rank " + std::to_string(r) + " but the config gives '" +
                            module + "' r = " + std::to_string(static_cast<int64_t>(r_cfg)) + " (r / rank_pattern)");
    int64_t heads = 0;
    if (permute_qk && (p == Proj::Q || p == Proj::K)) {
      heads = p == Proj::Q ? mc.n_head : mc.n_head_kv;
      if (heads < 1 || W.n_out % heads != 0 || (W.n_out / heads) % 2 != 0)
        return make_error(Code::BadShape, tn + ": cannot apply the q/k row permutation (" + std::to_string(W.n_out) +
                                              " rows over " + std::to_string(heads) + " heads)");
    }
    bool ok = false;
    LoraPair pr;
    view(*A, lora_type(A->dtype, &ok), 0, &pr.a);
    view(*B, lora_type(B->dtype, &ok), heads, &pr.b);
    const double alpha = PeftConfig::lookup(cfg.alpha_pattern, module, cfg.alpha);
    const double s = static_cast<double>(user_scale) * alpha / (cfg.rslora ? std::sqrt(r_cfg) : r_cfg);
    pr.scale = static_cast<float>(s);
    if (!std::isfinite(pr.scale))
      return make_error(Code::InvalidArgument, where + ": the LoRA scale of '" + module + "' is not finite");
    (p == Proj::Output ? ad->output_ : ad->layers_[static_cast<size_t>(il)][static_cast<size_t>(p)]) = pr;
    ++ad->n_pairs_;
    ad->bytes_ += static_cast<size_t>(A->nbytes() + B->nbytes());
  }
  ad->prepare_low_rank();
  *out = std::move(ad);
  return Status::ok();
} catch (const std::bad_alloc&) {
  return make_error(Code::OutOfMemory, where + ": out of memory while loading the adapter");
}

}  // namespace llmserve
