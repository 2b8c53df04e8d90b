// finetune(base, data, evalData, out, options, onStep) -> {promise, cancel()}: trains a LoRA adapter
// on a libuv worker (train/trainer.h) and writes it to `out` (temp file + rename). data / evalData:
// {tokens: Int32Array, labels: Int32Array, offsets: Float64Array} (evalData may be null). onStep
// receives one {step, steps, loss, lr, gradNorm, tokens, seconds} per step, on the JS thread.
// options.teacher (a path or null), distill, temperature: knowledge distillation (train/distill.h).
// options.adaptiveRank, targetRank: adaptive rank (train/adaptive_rank.h); the promise's ranks then
// maps each adapted tensor's base name to its final rank (null otherwise).
// promise resolves to {evalLossBefore, evalLossAfter, evalKlBefore, evalKlAfter} (NaN without
// evalData; the KLs to the teacher NaN without a teacher); cancel() stops at
// the next sequence and rejects with ERR_CANCELLED, leaving no output file.
#include <napi.h>

#include <atomic>
#include <cmath>
#include <memory>

#include "errors.h"
#include "gguf/gguf.h"
#include "train/trainer.h"
#include "wrap_common.h"

namespace llmserve::napi {
namespace {

constexpr const char* kTargetNames[kLoraProjs] = {"q", "k", "v", "o", "gate", "up", "down"};

// {tokens, labels, offsets} -> TrainData (shapes are checked again by the trainer).
TrainData get_data(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsObject()) throw_invalid(env, false, std::string("Expected an object for ") + what);
  Napi::Object o = v.As<Napi::Object>();
  auto i32 = [&](const char* name) {
    Napi::Value a = o.Get(name);
    if (!a.IsTypedArray() || a.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw_invalid(env, false, std::string("Expected an Int32Array for ") + what + "." + name);
    Napi::Int32Array t = a.As<Napi::Int32Array>();
    return std::vector<int32_t>(t.Data(), t.Data() + t.ElementLength());
  };
  TrainData d;
  d.tokens = i32("tokens");
  d.labels = i32("labels");
  Napi::Value off = o.Get("offsets");
  if (!off.IsTypedArray() || off.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    throw_invalid(env, false, std::string("Expected a Float64Array for ") + what + ".offsets");
  Napi::Float64Array f = off.As<Napi::Float64Array>();
  for (size_t i = 0; i < f.ElementLength(); ++i) {
    const double x = f[i];
    if (!(x >= 0 && x <= static_cast<double>(d.tokens.size())) || std::trunc(x) != x)
      throw_invalid(env, true, std::string(what) + ".offsets must be token indexes");
    d.offsets.push_back(static_cast<int64_t>(x));
  }
  return d;
}

class FinetuneWorker : public StatusWorker<Napi::AsyncProgressQueueWorker<StepEvent>> {
 public:
  FinetuneWorker(Napi::Env env, std::string base, TrainData data, std::unique_ptr<TrainData> eval, std::string out,
                 TrainOptions o, std::string teacher, int threads, Napi::Function on_step,
                 std::shared_ptr<std::atomic<bool>> cancel)
      : StatusWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        base_(std::move(base)),
        data_(std::move(data)),
        eval_(std::move(eval)),
        out_(std::move(out)),
        opts_(o),
        teacher_path_(std::move(teacher)),
        threads_(threads),
        cancel_(std::move(cancel)) {
    if (!on_step.IsEmpty()) on_step_ = Napi::Persistent(on_step);
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute(const ExecutionProgress& prog) override {
    Status s = run(prog);
    if (!s) fail(s);
  }
  void OnProgress(const StepEvent* ev, size_t n) override {
    if (on_step_.IsEmpty() || !callback_error_.IsEmpty()) return;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    for (size_t i = 0; i < n; ++i) {
      try {
        auto o = Napi::Object::New(env);
        o.Set("step", Napi::Number::New(env, static_cast<double>(ev[i].step)));
        o.Set("steps", Napi::Number::New(env, static_cast<double>(ev[i].steps)));
        o.Set("loss", Napi::Number::New(env, ev[i].loss));
        o.Set("lr", Napi::Number::New(env, ev[i].lr));
        o.Set("gradNorm", Napi::Number::New(env, ev[i].grad_norm));
        o.Set("tokens", Napi::Number::New(env, static_cast<double>(ev[i].tokens)));
        o.Set("seconds", Napi::Number::New(env, ev[i].seconds));
        o.Set("ce", Napi::Number::New(env, ev[i].ce));
        o.Set("kl", Napi::Number::New(env, ev[i].kl));
        o.Set("orth", Napi::Number::New(env, ev[i].orth));
        o.Set("keptRank", Napi::Number::New(env, static_cast<double>(ev[i].kept_rank)));
        o.Set("recomputed", Napi::Number::New(env, static_cast<double>(ev[i].recomputed)));
        on_step_.Call({o});
      } catch (const Napi::Error& e) {
        callback_error_ = Napi::Persistent(e.Value());  // OnOK rejects with it; training goes on to the end
        cancel_->store(true);
        return;
      }
    }
  }
  void OnOK() override {
    if (rejected_by_callback()) return;
    settle(Code::Internal, "finetune '" + out_ + "'", [&] {
      Napi::Env env = Env();
      auto r = Napi::Object::New(env);
      r.Set("evalLossBefore", Napi::Number::New(env, loss_before_));
      r.Set("evalLossAfter", Napi::Number::New(env, loss_after_));
      r.Set("evalKlBefore", Napi::Number::New(env, kl_before_));
      r.Set("evalKlAfter", Napi::Number::New(env, kl_after_));
      if (opts_.adaptive) {  // adapter tensor base name -> its final rank (0: pruned away, not written)
        auto ranks = Napi::Object::New(env);
        for (size_t i = 0; i < mask_.keep.size(); ++i)
          if (!mask_.keep[i].empty())
            ranks.Set(lora_tensor_base(static_cast<int64_t>(i) / kLoraProjs, static_cast<int>(i) % kLoraProjs),
                      Napi::Number::New(env, static_cast<double>(mask_.rank(i))));
        r.Set("ranks", ranks);
      } else {
        r.Set("ranks", env.Null());
      }
      deferred_.Resolve(r);
    });
  }
  void reject(Napi::Value err) override { deferred_.Reject(err); }

 private:
  Status run(const ExecutionProgress& prog) {
    std::unique_ptr<GgufFile> f;
    LLMS_RETURN_IF_ERROR(GgufFile::open(base_, &f));
    std::unique_ptr<Model> model;
    LLMS_RETURN_IF_ERROR(Model::load(std::shared_ptr<GgufFile>(std::move(f)), &model));
    std::unique_ptr<Model> teacher;
    if (!teacher_path_.empty()) {
      std::unique_ptr<GgufFile> tf;
      LLMS_RETURN_IF_ERROR(GgufFile::open(teacher_path_, &tf));
      LLMS_RETURN_IF_ERROR(Model::load(std::shared_ptr<GgufFile>(std::move(tf)), &teacher));
      opts_.teacher = teacher.get();
    }
    ThreadPool pool(threads_);
    LoraSet<float> lora;
    if (eval_) {
      LLMS_RETURN_IF_ERROR(lora_zeros(model->config(), opts_.rank, opts_.alpha, opts_.targets, &lora));
      LLMS_RETURN_IF_ERROR(lora_eval_loss(*model, lora, *eval_, pool, &loss_before_, teacher.get(), &kl_before_));
    }
    LLMS_RETURN_IF_ERROR(train_lora(
        *model, data_, opts_, pool, [&](const StepEvent& e) { prog.Send(&e, 1); }, cancel_.get(), &lora, &mask_));
    if (eval_)
      LLMS_RETURN_IF_ERROR(lora_eval_loss(*model, lora, *eval_, pool, &loss_after_, teacher.get(), &kl_after_));
    if (cancel_->load()) return make_error(Code::Cancelled, "finetune was cancelled");
    return write_lora_gguf(*model, lora, opts_.alpha, out_, opts_.adaptive ? &mask_ : nullptr);
  }

  Napi::Promise::Deferred deferred_;
  std::string base_;
  TrainData data_;
  std::unique_ptr<TrainData> eval_;
  std::string out_;
  TrainOptions opts_;
  std::string teacher_path_;  // empty: no teacher
  int threads_;
  std::shared_ptr<std::atomic<bool>> cancel_;
  Napi::FunctionReference on_step_;
  double loss_before_ = NAN, loss_after_ = NAN, kl_before_ = NAN, kl_after_ = NAN;
  RankMask mask_;  // adaptive rank: the kept components
};

Napi::Value Finetune(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[4].IsObject())
    throw_invalid(env, false,
                  "finetune(base, data, evalData, out, options, onStep?): expected a path, data, data or null, a path "
                  "and an object");
  std::string base = path_arg(env, info[0], "the base model path");
  TrainData data = get_data(env, info[1], "data");
  std::unique_ptr<TrainData> eval;
  if (!info[2].IsNull() && !info[2].IsUndefined())
    eval = std::make_unique<TrainData>(get_data(env, info[2], "evalData"));
  std::string out = path_arg(env, info[3], "the adapter output path");
  Napi::Object o = info[4].As<Napi::Object>();
  // Every field is required (lib/train fills them from lib/defaults.ts).
  namespace L = limits;
  TrainOptions t;
  t.rank = get_number<int64_t, L::kTrainRank>(o);
  t.alpha = get_number<double, L::kTrainAlpha>(o);
  t.lr = get_number<double, L::kTrainLr>(o);
  t.min_lr = get_number<double, L::kTrainMinLr>(o);
  t.warmup = get_number<int64_t, L::kTrainWarmup>(o);
  t.batch = get_number<int64_t, L::kTrainBatch>(o);
  t.steps = get_number<int64_t, L::kTrainSteps>(o);
  t.clip = get_number<double, L::kTrainClip>(o);
  t.seed = get_number<uint64_t, L::kTrainSeed>(o);
  t.optim.weight_decay = get_number<double, L::kTrainWeightDecay>(o);
  t.optim.momentum = get_number<double, L::kTrainMomentum>(o);
  t.optim.lars_eta = get_number<double, L::kTrainLarsEta>(o);
  t.distill = get_number<double, L::kTrainDistill>(o);
  t.temperature = get_number<double, L::kTrainTemperature>(o);
  t.adaptive = get_bool(o, "adaptiveRank");
  // 0 without adaptive rank (lib/train refuses a target rank alone; the trainer checks it again).
  if (t.adaptive) t.ada.target_rank = get_number<int64_t, L::kTrainTargetRank>(o);
  t.recompute_above = static_cast<double>(get_number<int64_t, L::kTrainRecomputeMb>(o)) * 1024.0 * 1024.0;
  Napi::Value tp = o.Get("teacher");
  const std::string teacher = tp.IsNull() || tp.IsUndefined() ? "" : path_arg(env, tp, "the teacher model path");
  t.optim.kind = get_choice(o, "optimizer", {"adamw", "lars"}) == "lars" ? OptimKind::Lars : OptimKind::AdamW;
  const int threads = get_number<int, L::kThreads>(o);
  Napi::Value tv = o.Get("targets");
  if (!tv.IsArray()) throw_invalid(env, false, "Expected an array of q, k, v, o, gate, up, down for targets");
  Napi::Array ta = tv.As<Napi::Array>();
  t.targets = 0;
  for (uint32_t i = 0; i < ta.Length(); ++i) {
    Napi::Value e = ta.Get(i);
    const std::string s = e.IsString() ? e.As<Napi::String>().Utf8Value() : "";
    int p = 0;
    while (p < kLoraProjs && s != kTargetNames[p]) ++p;
    if (p == kLoraProjs)
      throw_invalid(env, true, "Expected q, k, v, o, gate, up or down in targets but received " + js_describe(e));
    t.targets |= 1u << p;
  }
  Napi::Function on_step = optional_function(info, 5);
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  auto* w = new FinetuneWorker(env, std::move(base), std::move(data), std::move(eval), std::move(out), t, teacher,
                               threads, on_step, cancel);
  return queue_cancellable(env, w, cancel);
}

}  // namespace

void init_train(Napi::Env env, Napi::Object exports) {
  exports.Set("finetune", Napi::Function::New(env, Finetune, "finetune"));
}

}  // namespace llmserve::napi
