// synth(options, outPath, onProgress?) -> Promise<{notes}>: writes a random-weight model on a worker.
#include <napi.h>
#include <strings.h>

#include "errors.h"
#include "synth/synth.h"
#include "wrap_common.h"

namespace llmserve::napi {
namespace {

GgmlType parse_type(const std::string& s, bool* ok) {
  *ok = true;
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K})
    if (strcasecmp(s.c_str(), type_traits(t).name) == 0) return t;
  *ok = false;
  return GgmlType::F32;
}

class SynthWorker : public StatusWorker<Napi::AsyncProgressQueueWorker<double>> {
 public:
  SynthWorker(Napi::Env env, SynthOptions o, std::string out, Napi::Function progress)
      : StatusWorker(env), deferred_(Napi::Promise::Deferred::New(env)), opts_(std::move(o)), out_(std::move(out)) {
    if (!progress.IsEmpty()) progress_ = Napi::Persistent(progress);
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute(const ExecutionProgress& prog) override {
    double last = -1;
    Status s = synth_model(opts_, out_, [&](double f) {
      if (f - last >= 0.01 || f >= 1.0) { last = f; prog.Send(&f, 1); }
    }, &notes_);
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
    throw make_js_error(env, Code::InvalidArgument, "synth(options, outPath, onProgress?)");
  Napi::Object o = info[0].As<Napi::Object>();
  SynthOptions s;
  auto str = [&](const char* k, std::string d) { auto v = o.Get(k); return v.IsString() ? v.As<Napi::String>().Utf8Value() : d; };
  namespace L = limits;
  s.arch = str("arch", s.arch);
  s.dim = get_number<int64_t, L::kSynthDim>(o, s.dim);
  s.layers = get_number<int64_t, L::kSynthLayers>(o, s.layers);
  s.heads = get_number<int64_t, L::kSynthHeads>(o, s.heads);
  s.kv_heads = get_number<int64_t, L::kSynthKvHeads>(o, s.kv_heads);
  s.ffn = get_number<int64_t, L::kSynthFfn>(o, s.ffn);
  s.context = get_number<int64_t, L::kSynthContext>(o, s.context);
  s.vocab_from = str("vocabFrom", "");
  s.vocab_size = get_number<int64_t, L::kSynthVocabSize>(o, s.vocab_size);
  s.seed = get_number<uint64_t, L::kSynthSeed>(o, s.seed);
  s.tied_output = o.Get("tiedOutput").ToBoolean();
  bool ok = false;
  std::string type = str("type", "f32");
  s.type = parse_type(type, &ok);
  if (!ok) throw make_js_error(env, Code::InvalidArgument, "type must be one of f32, f16, bf16, q8_0, q4_0, q4_k, q6_k but received '" + type + "'");
  Napi::Function progress = info.Length() > 2 && info[2].IsFunction() ? info[2].As<Napi::Function>() : Napi::Function();
  auto* w = new SynthWorker(env, std::move(s), path_arg(env, info[1], "the synth output path"), progress);
  auto p = w->promise();
  w->Queue();
  return p;
}

}  // namespace

void init_synth(Napi::Env env, Napi::Object exports) {
  exports.Set("synth", Napi::Function::New(env, Synth, "synth"));
}

}  // namespace llmserve::napi
