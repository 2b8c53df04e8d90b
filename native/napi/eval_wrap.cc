// NativeEvaluation: a perplexity / KL-divergence run over chunks (lib/eval.ts drives it).
//   createEvaluation(model, reference | null, batch) -> NativeEvaluation
//   evaluation.chunk(tokens: Int32Array) -> Promise<stats>   one chunk at a time; the engines
//       evaluate it and the scores are reduced on their threads (sched/eval_chunk.h): no logits
//       reach JS and nothing runs on the JS thread but copying the statistics out
//   evaluation.summary(perToken) -> Promise<stats with quantiles (and per-token values)>, computed
//       on a libuv worker (it sorts the per-token values)
// The models are held as JS references, not engines: disposing a model frees it even while an
// evaluation object lives (its next chunk is then ERR_DISPOSED).
#include <napi.h>

#include <atomic>
#include <cstring>

#include "errors.h"
#include "eval/perplexity.h"
#include "sched/eval_chunk.h"
#include "wrap_common.h"

namespace llmserve::napi {
namespace {
namespace L = limits;

Napi::Object quantiles_to_js(Napi::Env env, const Quantiles& q) {
  auto o = Napi::Object::New(env);
  o.Set("min", q.min);
  o.Set("p0_1", q.p0_1);
  o.Set("p1", q.p1);
  o.Set("p5", q.p5);
  o.Set("p10", q.p10);
  o.Set("p25", q.p25);
  o.Set("median", q.median);
  o.Set("p75", q.p75);
  o.Set("p90", q.p90);
  o.Set("p95", q.p95);
  o.Set("p99", q.p99);
  o.Set("p99_9", q.p99_9);
  o.Set("max", q.max);
  return o;
}

Napi::Object summary_to_js(Napi::Env env, const PerplexitySummary& s) {
  auto o = Napi::Object::New(env);
  o.Set("count", Napi::Number::New(env, (double)s.count));
  o.Set("nllMean", s.nll.mean);
  o.Set("nllError", s.nll.error);
  o.Set("ppl", s.ppl);
  o.Set("pplError", s.ppl_error);
  if (!s.has_reference) return o;
  o.Set("refNllMean", s.nll_ref.mean);
  o.Set("refNllError", s.nll_ref.error);
  o.Set("refPpl", s.ref_ppl);
  o.Set("refPplError", s.ref_ppl_error);
  o.Set("correlation", s.correlation);
  o.Set("logRatio", s.log_ratio);
  o.Set("logRatioError", s.log_ratio_error);
  o.Set("pplRatio", s.ppl_ratio);
  o.Set("pplRatioError", s.ppl_ratio_error);
  o.Set("pplDiff", s.ppl_diff);
  o.Set("pplDiffError", s.ppl_diff_error);
  o.Set("klMean", s.kl.mean);
  o.Set("klError", s.kl.error);
  o.Set("pDiffMean", s.p_diff.mean);
  o.Set("pDiffError", s.p_diff.error);
  o.Set("pDiffRms", s.p_diff_rms);
  o.Set("pDiffRmsError", s.p_diff_rms_error);
  o.Set("sameTop", s.same_top);
  o.Set("sameTopError", s.same_top_error);
  if (s.has_quantiles) {
    o.Set("klQuantiles", quantiles_to_js(env, s.kl_q));
    o.Set("pDiffQuantiles", quantiles_to_js(env, s.p_diff_q));
  }
  return o;
}

template <typename Array, typename T>
Array copy_array(Napi::Env env, const std::vector<T>& v) {
  auto a = Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(T));
  return a;
}

// Shared by the wrapper and the work in flight (which may outlive it).
struct EvalState {
  std::shared_ptr<PerplexityAccumulator> acc;
  std::atomic<bool> busy{false};  // a chunk or a summary is running: the accumulator is theirs
};

class SummaryWorker : public StatusWorker<Napi::AsyncWorker> {
 public:
  SummaryWorker(Napi::Env env, std::shared_ptr<EvalState> st, bool per_token)
      : StatusWorker(env), deferred_(Napi::Promise::Deferred::New(env)), st_(std::move(st)), per_token_(per_token) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override { summary_ = st_->acc->summary(); }
  void OnOK() override {
    settle(Code::Internal, "perplexity summary", [&] {
      Napi::Env env = Env();
      Napi::Object o = summary_to_js(env, summary_);
      if (per_token_) {
        const PerplexityAccumulator& a = *st_->acc;
        auto t = Napi::Object::New(env);
        t.Set("nll", copy_array<Napi::Float32Array>(env, a.nll_values()));
        if (a.with_reference()) {
          t.Set("kl", copy_array<Napi::Float32Array>(env, a.kl_values()));
          t.Set("pDiff", copy_array<Napi::Float32Array>(env, a.p_diff_values()));
          t.Set("sameTop", copy_array<Napi::Uint8Array>(env, a.same_top_values()));
        }
        o.Set("perToken", t);
      }
      st_->busy = false;
      deferred_.Resolve(o);
    });
    st_->busy = false;
  }
  void reject(Napi::Value err) override {
    st_->busy = false;
    deferred_.Reject(err);
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<EvalState> st_;
  bool per_token_;
  PerplexitySummary summary_;
};

class EvaluationWrap : public Napi::ObjectWrap<EvaluationWrap> {
 public:
  static Napi::FunctionReference* ctor;
  static void Init(Napi::Env env) {
    Napi::Function f = DefineClass(
        env, "NativeEvaluation",
        {InstanceMethod("chunk", &EvaluationWrap::Chunk), InstanceMethod("summary", &EvaluationWrap::Summary)});
    ctor = new Napi::FunctionReference(Napi::Persistent(f));
  }
  explicit EvaluationWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EvaluationWrap>(info) {}
  void setup(Napi::Object model, Napi::Value reference, int64_t batch) {
    model_ = Napi::Persistent(model);
    if (reference.IsObject()) reference_ = Napi::Persistent(reference.As<Napi::Object>());
    batch_ = batch;
    st_->acc = std::make_shared<PerplexityAccumulator>(reference.IsObject());
  }

 private:
  void claim(Napi::Env env) {
    bool expected = false;
    if (!st_->busy.compare_exchange_strong(expected, true))
      throw make_js_error(env, Code::InvalidArgument,
                          "An evaluation runs one chunk (or summary) at a time; await the previous call first.");
  }

  // chunk(tokens) -> Promise<stats so far>: tokens are one chunk of ctx tokens, BOS in place.
  Napi::Value Chunk(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw_invalid(env, false, "Expected an Int32Array of token ids for tokens but received " + js_describe(info[0]));
    auto a = info[0].As<Napi::Int32Array>();
    check_number<int64_t, L::kEvalCtx>(env, Napi::Number::New(env, (double)a.ElementLength()), "the chunk length");
    std::shared_ptr<Engine> model = model_engine(env, model_.Value(), "model");
    std::shared_ptr<Engine> reference;
    if (!reference_.IsEmpty()) reference = model_engine(env, reference_.Value(), "reference model");
    auto deferred = std::make_shared<Napi::Promise::Deferred>(env);
    auto noop = Napi::Function::New(env, [](const Napi::CallbackInfo&) {});
    auto tsfn = Napi::ThreadSafeFunction::New(env, noop, "llmserve.evalChunk", 0, 1);
    struct Result {
      Status s;
      PerplexitySummary stats;
    };
    EvalChunk c;
    c.tokens.assign(a.Data(), a.Data() + a.ElementLength());
    c.n_batch = batch_;
    c.acc = st_->acc;
    std::shared_ptr<EvalState> st = st_;
    c.on_done = [tsfn, deferred, st](Status s) mutable {
      auto* r = new Result{std::move(s), {}};
      if (r->s) r->stats = st->acc->running();
      st->busy = false;  // the accumulator is free again before JS hears about it
      napi_status ns = tsfn.NonBlockingCall(r, [deferred](Napi::Env env, Napi::Function, Result* data) {
        std::unique_ptr<Result> owned(data);
        if (env == nullptr) return;
        if (!owned->s) deferred->Reject(make_js_error(env, owned->s).Value());
        else deferred->Resolve(summary_to_js(env, owned->stats));
      });
      if (ns != napi_ok) delete r;
      tsfn.Release();
    };
    try {
      claim(env);
    } catch (...) {
      tsfn.Release();
      throw;
    }
    Status s = submit_eval_chunk(*model, std::move(reference), std::move(c));
    if (!s) {
      st_->busy = false;
      tsfn.Release();
      throw make_js_error(env, s);
    }
    return deferred->Promise();
  }

  // summary(perToken) -> Promise<all statistics, quantiles included>.
  Napi::Value Summary(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsBoolean())
      throw_invalid(env, false, "Expected true or false for perToken but received " + js_describe(info[0]));
    claim(env);
    auto* w = new SummaryWorker(env, st_, info[0].As<Napi::Boolean>().Value());
    auto p = w->promise();
    w->Queue();
    return p;
  }

  Napi::ObjectReference model_, reference_;
  int64_t batch_ = 0;
  std::shared_ptr<EvalState> st_ = std::make_shared<EvalState>();
};
Napi::FunctionReference* EvaluationWrap::ctor = nullptr;

// createEvaluation(model, reference | null, batch): both models must be live NativeModels.
Napi::Value CreateEvaluation(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  model_engine(env, info[0], "model");
  if (!info[1].IsNull()) model_engine(env, info[1], "reference model");
  const int64_t batch = check_number<int64_t, L::kEvalBatch>(env, info[2]);
  Napi::Object obj = EvaluationWrap::ctor->New({});
  EvaluationWrap::Unwrap(obj)->setup(info[0].As<Napi::Object>(), info[1], batch);
  return obj;
}

}  // namespace

void init_eval(Napi::Env env, Napi::Object exports) {
  EvaluationWrap::Init(env);
  exports.Set("createEvaluation", Napi::Function::New(env, CreateEvaluation, "createEvaluation"));
}

}  // namespace llmserve::napi
