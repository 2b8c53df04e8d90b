// synth(options, outPath, onProgress?) -> Promise<{notes}>: writes a random-weight model on a worker.
#include <napi.h>

#include <cctype>

#include "errors.h"
#include "synth/synth.h"
#include "wrap_common.h"

namespace llmserve::napi {
namespace {

// The JS name of a weight type: type_traits' name lowercased ("q4_K" -> "q4_k", as SYNTH_TYPES).
std::string js_type_name(GgmlType t) {
  std::string n = type_traits(t).name;
  for (char& c : n) c = (char)std::tolower((unsigned char)c);
  return n;
}

// o.type: the JS name of one of synth_types() (lib/synth.ts SYNTH_TYPES order: the messages list
// them, and a test compares the addon's message with the TypeScript one), exactly; TypeError /
// RangeError otherwise.
GgmlType get_type(Napi::Object o) {
  Napi::Value v = o.Get("type");
  if (v.IsString()) {
    const std::string s = v.As<Napi::String>().Utf8Value();
    for (GgmlType t : synth_types())
      if (s == js_type_name(t)) return t;
  }
  std::string list;
  for (GgmlType t : synth_types()) list += std::string(list.empty() ? "" : ", ") + "\"" + js_type_name(t) + "\"";
  throw_invalid(o.Env(), v.IsString(), "Expected one of " + list + " for type but received " + js_describe(v));
}

class SynthWorker : public StatusWorker<Napi::AsyncProgressQueueWorker<double>> {
 public:
  SynthWorker(Napi::Env env, SynthOptions o, std::string out, Napi::Function progress)
      : StatusWorker(env), deferred_(Napi::Promise::Deferred::New(env)), opts_(std::move(o)), out_(std::move(out)) {
    if (!progress.IsEmpty()) progress_ = Napi::Persistent(progress);
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute(const ExecutionProgress& prog) override {
    Status s = synth_model(opts_, out_, throttled(prog), &notes_);
    if (!s) fail(s);
  }
  void OnProgress(const double* data, size_t n) override {
    if (n > 0) call_progress(progress_, data[n - 1]);  // a throw rejects the promise (OnOK)
  }
  void OnOK() override {
    if (rejected_by_callback()) return;
    settle(Code::Internal, "synth '" + out_ + "'", [&] {
      Napi::Env env = Env();
      auto r = Napi::Object::New(env);
      auto a = Napi::Array::New(env, notes_.size());
      for (uint32_t k = 0; k < notes_.size(); ++k) a.Set(k, notes_[k]);
      r.Set("notes", a);
      deferred_.Resolve(r);
    });
  }
  void reject(Napi::Value err) override { deferred_.Reject(err); }

 private:
  Napi::Promise::Deferred deferred_;
  SynthOptions opts_;
  std::string out_;
  Napi::FunctionReference progress_;
  std::vector<std::string> notes_;
};

Napi::Value Synth(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsString())
    throw_invalid(env, false, "synth(options, outPath, onProgress?): expected an object and a string");
  std::string out_path = path_arg(env, info[1], "the synth output path");
  Napi::Object o = info[0].As<Napi::Object>();
  // Every field is required (lib/synth.ts fills them from lib/defaults.ts).
  SynthOptions s;
  namespace L = limits;
  s.arch = get_choice_in(o, "arch", kSynthArchs);
  s.dim = get_number<int64_t, L::kSynthDim>(o);
  s.layers = get_number<int64_t, L::kSynthLayers>(o);
  s.heads = get_number<int64_t, L::kSynthHeads>(o);
  s.kv_heads = get_number<int64_t, L::kSynthKvHeads>(o);
  s.ffn = get_number<int64_t, L::kSynthFfn>(o);
  s.context = get_number<int64_t, L::kSynthContext>(o);
  s.vocab_from = get_string(o, "vocabFrom");
  s.vocab_size = get_number<int64_t, L::kSynthVocabSize>(o);
  s.seed = get_number<uint64_t, L::kSynthSeed>(o);
  s.tied_output = get_bool(o, "tiedOutput");
  s.head_dim = get_number<int64_t, L::kSynthHeadDim>(o);
  s.rope_freqs = get_bool(o, "ropeFreqs");
  s.rope_scaling = get_choice_in(o, "ropeScaling", kSynthRopeScalings);
  s.rope_scale = get_number<float, L::kSynthRopeScale>(o);
  s.sliding_window = get_number<int64_t, L::kSynthSlidingWindow>(o);
  s.swa_pattern = get_number<int64_t, L::kSynthSwaPattern>(o);
  s.attn_softcap = get_number<float, L::kSynthAttnSoftcap>(o);
  s.final_softcap = get_number<float, L::kSynthFinalSoftcap>(o);
  s.rope_freq_base_swa = get_number<float, L::kSynthRopeFreqBaseSwa>(o);
  s.long_rope = get_bool(o, "longRope");
  s.experts = get_number<int64_t, L::kSynthExperts>(o);
  s.experts_used = get_number<int64_t, L::kSynthExpertsUsed>(o);
  s.type = get_type(o);
  Napi::Function progress = optional_function(info, 2);
  auto* w = new SynthWorker(env, std::move(s), std::move(out_path), progress);
  auto p = w->promise();
  w->Queue();
  return p;
}

class SynthLoraWorker : public StatusWorker<Napi::AsyncWorker> {
 public:
  SynthLoraWorker(Napi::Env env, std::string base, SynthLoraOptions o, std::string out)
      : StatusWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        base_(std::move(base)),
        opts_(std::move(o)),
        out_(std::move(out)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    Status s = synth_lora(base_, opts_, out_);
    if (!s) fail(s);
  }
  void OnOK() override {
    settle(Code::Internal, "synthLora '" + out_ + "'", [&] { deferred_.Resolve(Env().Undefined()); });
  }
  void reject(Napi::Value err) override { deferred_.Reject(err); }

 private:
  Napi::Promise::Deferred deferred_;
  std::string base_;
  SynthLoraOptions opts_;
  std::string out_;
};

constexpr const char* kLoraTargets[] = {"attn_q",   "attn_k", "attn_v",   "attn_output",
                                        "ffn_gate", "ffn_up", "ffn_down", "output"};

// synthLora(basePath, {rank, targets, seed, alpha, type, stdB}, outPath) -> Promise<void>: a random
// LoRA adapter for the base model, in llama.cpp's GGUF adapter format.
Napi::Value SynthLora(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsObject() || !info[2].IsString())
    throw_invalid(env, false, "synthLora(basePath, options, outPath): expected a string, an object and a string");
  std::string base = path_arg(env, info[0], "the base model path");
  std::string out = path_arg(env, info[2], "the adapter output path");
  Napi::Object o = info[1].As<Napi::Object>();
  namespace L = limits;
  // Every field is required (lib/synth.ts fills them from lib/defaults.ts).
  SynthLoraOptions s;
  s.rank = get_number<int64_t, L::kLoraRank>(o);
  s.seed = get_number<uint64_t, L::kLoraSeed>(o);
  s.alpha = get_number<float, L::kLoraAlpha>(o);
  s.std_b = get_number<float, L::kLoraStdB>(o);
  const std::string type = get_choice(o, "type", {"f32", "f16", "bf16", "q8_0", "q4_0"});
  s.type = type == "f16"    ? GgmlType::F16
           : type == "bf16" ? GgmlType::BF16
           : type == "q8_0" ? GgmlType::Q8_0
           : type == "q4_0" ? GgmlType::Q4_0
                            : GgmlType::F32;
  Napi::Value tv = o.Get("targets");
  if (!tv.IsArray())
    throw_invalid(env, false, "Expected an array of target names for targets but received " + js_describe(tv));
  auto ta = tv.As<Napi::Array>();
  if (ta.Length() < 1 || ta.Length() > 8)
    throw_invalid(env, true, "Expected 1 to 8 targets but received " + std::to_string(ta.Length()));
  s.targets.clear();
  for (uint32_t k = 0; k < ta.Length(); ++k) {
    Napi::Value v = ta.Get(k);
    std::string t = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
    bool ok = false;
    for (const char* a : kLoraTargets) ok = ok || t == a;
    if (!ok) {
      std::string list;
      for (const char* a : kLoraTargets) list += std::string(list.empty() ? "" : ", ") + "\"" + a + "\"";
      throw_invalid(
          env, v.IsString(),
          "Expected one of " + list + " for targets[" + std::to_string(k) + "] but received " + js_describe(v));
    }
    s.targets.push_back(t);
  }
  auto* w = new SynthLoraWorker(env, std::move(base), std::move(s), std::move(out));
  auto p = w->promise();
  w->Queue();
  return p;
}

}  // namespace

void init_synth(Napi::Env env, Napi::Object exports) {
  const SynthOptions s;
  Napi::Object d = defaults_group(env, exports, "synth");
  d.Set("arch", s.arch);
  d.Set("dim", Napi::Number::New(env, (double)s.dim));
  d.Set("layers", Napi::Number::New(env, (double)s.layers));
  d.Set("heads", Napi::Number::New(env, (double)s.heads));
  d.Set("kvHeads", Napi::Number::New(env, (double)s.kv_heads));
  d.Set("ffn", Napi::Number::New(env, (double)s.ffn));
  d.Set("context", Napi::Number::New(env, (double)s.context));
  d.Set("vocabFrom", s.vocab_from);
  d.Set("vocabSize", Napi::Number::New(env, (double)s.vocab_size));
  d.Set("type", js_type_name(s.type));
  d.Set("seed", Napi::Number::New(env, (double)s.seed));
  d.Set("tiedOutput", s.tied_output);
  d.Set("headDim", Napi::Number::New(env, (double)s.head_dim));
  d.Set("ropeFreqs", s.rope_freqs);
  d.Set("ropeScaling", s.rope_scaling);
  d.Set("ropeScale", Napi::Number::New(env, (double)s.rope_scale));
  d.Set("slidingWindow", Napi::Number::New(env, (double)s.sliding_window));
  d.Set("swaPattern", Napi::Number::New(env, (double)s.swa_pattern));
  d.Set("attnSoftcap", Napi::Number::New(env, (double)s.attn_softcap));
  d.Set("finalSoftcap", Napi::Number::New(env, (double)s.final_softcap));
  d.Set("ropeFreqBaseSwa", Napi::Number::New(env, (double)s.rope_freq_base_swa));
  d.Set("longRope", s.long_rope);
  d.Set("experts", Napi::Number::New(env, (double)s.experts));
  d.Set("expertsUsed", Napi::Number::New(env, (double)s.experts_used));
  exports.Set("synth", Napi::Function::New(env, Synth, "synth"));
  const SynthLoraOptions l;
  Napi::Object dl = defaults_group(env, exports, "synthLora");
  dl.Set("rank", Napi::Number::New(env, (double)l.rank));
  auto targets = Napi::Array::New(env, l.targets.size());
  for (uint32_t k = 0; k < l.targets.size(); ++k) targets.Set(k, l.targets[k]);
  dl.Set("targets", targets);
  dl.Set("seed", Napi::Number::New(env, (double)l.seed));
  dl.Set("alpha", l.alpha);
  dl.Set("type", js_type_name(l.type));
  dl.Set("stdB", l.std_b);
  exports.Set("synthLora", Napi::Function::New(env, SynthLora, "synthLora"));
}

}  // namespace llmserve::napi
