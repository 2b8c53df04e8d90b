// quantize(input, output, {type, threads, imatrix?, pure?, outputTensorType?, tokenEmbeddingType?,
// tensorTypes?}, onProgress?) -> {promise, cancel()}: converts a model on
// a libuv worker (compress/quantize.h). promise resolves to {ftype, tensors: [{name, from, to}],
// notes, inputBytes, outputBytes}; cancel() makes the worker stop at its next slab of rows, remove
// its temp file and reject with ERR_CANCELLED.
#include <napi.h>

#include <atomic>
#include <cctype>
#include <memory>

#include "compress/quantize.h"
#include "compress/recipe.h"
#include "errors.h"
#include "wrap_common.h"

namespace llmserve::napi {
namespace {

std::string js_type_name(GgmlType t) {
  std::string n = type_traits(t).name;
  for (char& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return n;
}

// o.type: exactly one of quant_mixes()'s names (lib/quantize.ts QUANTIZE_TYPES, same order and
// message as its check).
std::string get_mix(Napi::Object o) {
  Napi::Value v = o.Get("type");
  if (v.IsString()) {
    const std::string s = v.As<Napi::String>().Utf8Value();
    for (const QuantMix& m : quant_mixes())
      if (s == m.name) return s;
  }
  std::string list;
  for (const QuantMix& m : quant_mixes()) list += std::string(list.empty() ? "" : ", ") + "\"" + m.name + "\"";
  throw_invalid(o.Env(), v.IsString(), "Expected one of " + list + " for type but received " + js_describe(v));
}

// Optional llama-quantize overrides: pure (bool), outputTensorType / tokenEmbeddingType (a type
// name), tensorTypes (["PATTERN=TYPE", ...]). Types and patterns are checked by recipe.cpp (one list).
void get_overrides(Napi::Object o, RecipeOverrides* ov) {
  Napi::Env env = o.Env();
  auto check = [&](const Status& st) {
    if (!st) throw make_js_error(env, st);
  };
  if (!o.Get("pure").IsUndefined()) ov->pure = get_bool(o, "pure");
  if (!o.Get("outputTensorType").IsUndefined()) {
    check(parse_override_type(get_string(o, "outputTensorType"), &ov->output_type));
    ov->has_output_type = true;
  }
  if (!o.Get("tokenEmbeddingType").IsUndefined()) {
    check(parse_override_type(get_string(o, "tokenEmbeddingType"), &ov->token_embd_type));
    ov->has_token_embd_type = true;
  }
  Napi::Value tt = o.Get("tensorTypes");
  if (tt.IsUndefined()) return;
  if (!tt.IsArray()) throw_invalid(env, false, "Expected an array of \"PATTERN=TYPE\" strings for tensorTypes");
  Napi::Array a = tt.As<Napi::Array>();
  if (a.Length() > 1024) throw_invalid(env, true, "Expected at most 1024 tensorTypes rules");
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value v = a.Get(i);
    if (!v.IsString()) throw_invalid(env, false, "Expected a \"PATTERN=TYPE\" string in tensorTypes");
    TensorTypeRule r;
    check(parse_tensor_type_rule(v.As<Napi::String>().Utf8Value(), &r));
    ov->tensor_types.push_back(std::move(r));
  }
}

class QuantizeWorker : public StatusWorker<Napi::AsyncProgressQueueWorker<double>> {
 public:
  QuantizeWorker(Napi::Env env, std::string in, std::string out, QuantizeOptions o, Napi::Function progress,
                 std::shared_ptr<std::atomic<bool>> cancel)
      : StatusWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        in_(std::move(in)),
        out_(std::move(out)),
        opts_(std::move(o)),
        cancel_(std::move(cancel)) {
    if (!progress.IsEmpty()) progress_ = Napi::Persistent(progress);
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute(const ExecutionProgress& prog) override {
    Status s = quantize_model(in_, out_, opts_, throttled(prog), cancel_.get(), &result_);
    if (!s) fail(s);
  }
  void OnProgress(const double* data, size_t n) override {
    if (n > 0) call_progress(progress_, data[n - 1]);  // a throw rejects the promise (OnOK)
  }
  void OnOK() override {
    if (rejected_by_callback()) return;
    settle(Code::Internal, "quantize '" + out_ + "'", [&] {
      Napi::Env env = Env();
      auto r = Napi::Object::New(env);
      r.Set("ftype", Napi::Number::New(env, result_.ftype));
      set_transform_result(env, r, result_, [&](const QuantizedTensor& t) {
        auto o = Napi::Object::New(env);
        o.Set("name", t.name);
        o.Set("from", js_type_name(t.from));
        o.Set("to", js_type_name(t.to));
        return o;
      });
      deferred_.Resolve(r);
    });
  }
  void reject(Napi::Value err) override { deferred_.Reject(err); }

 private:
  Napi::Promise::Deferred deferred_;
  std::string in_, out_;
  QuantizeOptions opts_;
  std::shared_ptr<std::atomic<bool>> cancel_;
  Napi::FunctionReference progress_;
  QuantizeResult result_;
};

Napi::Value Quantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[2].IsObject())
    throw_invalid(env, false, "quantize(input, output, options, onProgress?): expected two strings and an object");
  std::string in = path_arg(env, info[0], "the input model path");
  std::string out = path_arg(env, info[1], "the output path");
  Napi::Object o = info[2].As<Napi::Object>();
  // Every field is required (lib/quantize.ts fills them).
  QuantizeOptions q;
  q.type = get_mix(o);
  q.threads = get_number<int, limits::kThreads>(o);
  // Optional: an importance-matrix path (lib/quantize.ts passes it only when the user gave one).
  if (!o.Get("imatrix").IsUndefined()) q.imatrix = path_arg(env, o.Get("imatrix"), "imatrix");
  get_overrides(o, &q.overrides);
  Napi::Function progress = optional_function(info, 3);
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  auto* w = new QuantizeWorker(env, std::move(in), std::move(out), std::move(q), progress, cancel);
  return queue_cancellable(env, w, cancel);
}

}  // namespace

void init_quantize(Napi::Env env, Napi::Object exports) {
  exports.Set("quantize", Napi::Function::New(env, Quantize, "quantize"));
  auto types = Napi::Array::New(env, quant_mixes().size());
  for (uint32_t k = 0; k < quant_mixes().size(); ++k) types.Set(k, quant_mixes()[k].name);
  exports.Set("quantizeTypes", types);
}

}  // namespace llmserve::napi
