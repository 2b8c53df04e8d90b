// compress(input, output, {prune, method, format, values, tensors, threads, ctx, checkOnly}, calibTokens | null,
// onProgress?) -> {promise, cancel()}: prunes a model on a libuv worker (compress/prune.h), after
// collecting calibration statistics (compress/calib.h) from calibTokens when the method is Wanda.
// prune: a ratio in (0, 1) or the string "2:4". checkOnly: only plan_prune's and the output path's checks (no file is
// written; the promise resolves to {tensors: [names]}), so lib/compress.ts can refuse bad
// arguments before it tokenizes the calibration text. Otherwise the promise resolves to
// {tensors: [{name, type, zeros, elements}], notes, inputBytes, outputBytes, calibTokens}.
// lowrank: null, or {rank, energy, sparse, aware} (prune then null): low-rank factorization
// (compress/factorize.h) instead of pruning, calibrated when aware; its tensors are
// [{name, factored, rank, nnz, denseBytes, bytes, relError, energy}].
#include <napi.h>

#include <atomic>
#include <cctype>
#include <cmath>
#include <memory>

#include "compress/calib.h"
#include "compress/factorize.h"
#include "compress/prune.h"
#include "compress/quantize.h"
#include "errors.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "wrap_common.h"

namespace llmserve::napi {
namespace {

std::string js_type_name(GgmlType t) {
  std::string n = type_traits(t).name;
  for (char& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return n;
}

class CompressWorker : public StatusWorker<Napi::AsyncProgressQueueWorker<double>> {
 public:
  CompressWorker(Napi::Env env, std::string in, std::string out, PruneOptions o, bool lowrank, LowRankOptions lo,
                 bool check_only, int64_t ctx, std::vector<int32_t> calib, Napi::Function progress,
                 std::shared_ptr<std::atomic<bool>> cancel)
      : StatusWorker(env),
        lowrank_(lowrank),
        lopts_(std::move(lo)),
        deferred_(Napi::Promise::Deferred::New(env)),
        in_(std::move(in)),
        out_(std::move(out)),
        opts_(std::move(o)),
        check_only_(check_only),
        ctx_(ctx),
        calib_(std::move(calib)),
        cancel_(std::move(cancel)) {
    if (!progress.IsEmpty()) progress_ = Napi::Persistent(progress);
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute(const ExecutionProgress& prog) override {
    Status s = run(prog);
    if (!s) fail(s);
  }
  void OnProgress(const double* data, size_t n) override {
    if (n > 0) call_progress(progress_, data[n - 1]);
  }
  void OnOK() override {
    if (rejected_by_callback()) return;
    settle(Code::Internal, "compress '" + out_ + "'", [&] {
      Napi::Env env = Env();
      auto r = Napi::Object::New(env);
      if (check_only_) {
        auto ts = Napi::Array::New(env, planned_.size());
        for (uint32_t k = 0; k < planned_.size(); ++k) ts.Set(k, planned_[k]);
        r.Set("tensors", ts);
        deferred_.Resolve(r);
        return;
      }
      if (lowrank_) {
        resolve_lowrank(env, r);
        return;
      }
      set_transform_result(env, r, result_, [&](const PrunedTensor& t) {
        auto o = Napi::Object::New(env);
        o.Set("name", t.name);
        o.Set("type", js_type_name(t.type));
        o.Set("zeros", Napi::Number::New(env, static_cast<double>(t.zeros)));
        o.Set("elements", Napi::Number::New(env, static_cast<double>(t.elements)));
        return o;
      });
      r.Set("calibTokens", Napi::Number::New(env, static_cast<double>(calib_tokens_)));
      deferred_.Resolve(r);
    });
  }
  void reject(Napi::Value err) override { deferred_.Reject(err); }

 private:
  void resolve_lowrank(Napi::Env env, Napi::Object r) {
    set_transform_result(env, r, lresult_, [&](const FactoredTensorInfo& t) {
      auto o = Napi::Object::New(env);
      o.Set("name", t.name);
      o.Set("factored", Napi::Boolean::New(env, t.factored));
      o.Set("rank", Napi::Number::New(env, static_cast<double>(t.rank)));
      o.Set("nnz", Napi::Number::New(env, static_cast<double>(t.nnz)));
      o.Set("denseBytes", Napi::Number::New(env, static_cast<double>(t.dense_bytes)));
      o.Set("bytes", Napi::Number::New(env, static_cast<double>(t.bytes)));
      o.Set("relError", Napi::Number::New(env, t.rel_error));
      o.Set("energy", Napi::Number::New(env, t.energy));
      return o;
    });
    r.Set("calibTokens", Napi::Number::New(env, static_cast<double>(calib_tokens_)));
    deferred_.Resolve(r);
  }

  Status plan() {
    LLMS_RETURN_IF_ERROR(lowrank_ ? plan_lowrank(in_, lopts_, &planned_) : plan_prune(in_, opts_, &planned_));
    return check_output_path(in_, out_);
  }

  Status run(const ExecutionProgress& prog) {
    if (check_only_) return plan();
    auto send = throttled(prog);
    ActivationStats stats;
    const bool wanda = lowrank_ ? lopts_.activation_aware : opts_.method == PruneMethod::Wanda;
    if (wanda) {
      // Every argument check first (plan), then the calibration pass, then the pruning.
      LLMS_RETURN_IF_ERROR(plan());
      std::unique_ptr<GgufFile> f;
      LLMS_RETURN_IF_ERROR(GgufFile::open(in_, &f));
      std::unique_ptr<Model> model;
      LLMS_RETURN_IF_ERROR(Model::load(std::shared_ptr<GgufFile>(std::move(f)), &model));
      LLMS_RETURN_IF_ERROR(collect_activation_stats(
          *model, calib_, ctx_, opts_.threads, [&](double x) { send(0.5 * x); }, cancel_.get(), &stats));
      calib_tokens_ = stats.tokens;
    }
    const auto scaled = [&](double x) { send(wanda ? 0.5 + 0.5 * x : x); };
    if (lowrank_) return lowrank_model(in_, out_, lopts_, wanda ? &stats : nullptr, scaled, cancel_.get(), &lresult_);
    return prune_model(in_, out_, opts_, wanda ? &stats : nullptr, scaled, cancel_.get(), &result_);
  }

  bool lowrank_;
  LowRankOptions lopts_;
  LowRankResult lresult_;
  Napi::Promise::Deferred deferred_;
  std::string in_, out_;
  PruneOptions opts_;
  bool check_only_;
  int64_t ctx_;
  std::vector<int32_t> calib_;
  std::shared_ptr<std::atomic<bool>> cancel_;
  Napi::FunctionReference progress_;
  PruneResult result_;
  std::vector<std::string> planned_;
  int64_t calib_tokens_ = 0;
};

Napi::Value Compress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[2].IsObject())
    throw_invalid(env, false,
                  "compress(input, output, options, calibTokens, onProgress?): expected two strings, an object and "
                  "an Int32Array or null");
  std::string in = path_arg(env, info[0], "the input model path");
  std::string out = path_arg(env, info[1], "the output path");
  Napi::Object o = info[2].As<Napi::Object>();
  // Every field is required (lib/compress.ts fills them).
  PruneOptions p;
  LowRankOptions lo;
  Napi::Value lowrank = o.Get("lowrank");
  const bool is_lowrank = lowrank.IsObject();
  if (is_lowrank) {
    // plan_lowrank checks the ranges.
    Napi::Object l = lowrank.As<Napi::Object>();
    const auto num = [&](const char* key) {
      Napi::Value v = l.Get(key);
      if (!v.IsNumber()) throw_invalid(env, false, std::string("Expected a number for lowrank.") + key);
      return v.As<Napi::Number>().DoubleValue();
    };
    const double rank = num("rank");
    if (!(rank >= 0 && rank <= 1e9) || rank != std::floor(rank))
      throw_invalid(env, false, "Expected an integer rank >= 0 for lowrank.rank");
    lo.rank = static_cast<int64_t>(rank);
    lo.energy = num("energy");
    lo.sparse = num("sparse");
    lo.activation_aware = l.Get("aware").ToBoolean().Value();
  } else if (!lowrank.IsNull() && !lowrank.IsUndefined()) {
    throw_invalid(env, false, "Expected an object or null for lowrank");
  }
  Napi::Value prune = o.Get("prune");
  if (is_lowrank) {
    // the prune fields are ignored
  } else if (prune.IsString() && prune.As<Napi::String>().Utf8Value() == "2:4") {
    p.two_four = true;
  } else if (prune.IsNumber()) {
    p.ratio = prune.As<Napi::Number>().DoubleValue();  // plan_prune checks the range
  } else {
    throw_invalid(env, false, "Expected a ratio in (0, 1) or \"2:4\" for prune but received " + js_describe(prune));
  }
  p.method = get_choice(o, "method", {"magnitude", "wanda"}) == "wanda" ? PruneMethod::Wanda : PruneMethod::Magnitude;
  const std::string format = get_choice(o, "format", {"dense", "sparse", "csr"});
  p.sparse_format = format == "sparse";  // plan_prune: sparse needs 2:4, csr a ratio
  p.csr_format = format == "csr";
  const std::string values = get_choice(o, "values", {"auto", "f16", "q8_0"});  // plan_prune: only with sparse
  p.values = values == "q8_0" ? Sparse24Values::Q8_0 : values == "f16" ? Sparse24Values::F16 : Sparse24Values::Auto;
  Napi::Value tensors = o.Get("tensors");
  if (!tensors.IsArray()) throw_invalid(env, false, "Expected an array of strings for tensors");
  Napi::Array ta = tensors.As<Napi::Array>();
  for (uint32_t k = 0; k < ta.Length(); ++k) {
    Napi::Value v = ta.Get(k);
    if (!v.IsString()) throw_invalid(env, false, "Expected an array of strings for tensors");
    p.patterns.push_back(v.As<Napi::String>().Utf8Value());
  }
  p.threads = get_number<int, limits::kThreads>(o);
  const int64_t ctx = get_number<int64_t, limits::kEvalCtx>(o);
  const bool check_only = get_bool(o, "checkOnly");
  lo.patterns = p.patterns;
  lo.threads = p.threads;
  std::vector<int32_t> calib;
  if (info[3].IsTypedArray() && info[3].As<Napi::TypedArray>().TypedArrayType() == napi_int32_array) {
    Napi::Int32Array a = info[3].As<Napi::Int32Array>();
    calib.assign(a.Data(), a.Data() + a.ElementLength());
  } else if (!info[3].IsNull()) {
    throw_invalid(env, false, "Expected an Int32Array or null for the calibration tokens");
  }
  Napi::Function progress = optional_function(info, 4);
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  auto* w = new CompressWorker(env, std::move(in), std::move(out), std::move(p), is_lowrank, std::move(lo), check_only,
                               ctx, std::move(calib), progress, cancel);
  return queue_cancellable(env, w, cancel);
}

}  // namespace

void init_compress(Napi::Env env, Napi::Object exports) {
  exports.Set("compress", Napi::Function::New(env, Compress, "compress"));
}

}  // namespace llmserve::napi
