// The promise side of an evaluation on the engine thread (Model.evaluate, Model.embed): submits
// the request and settles a promise with its rows through a thread-safe function, so the JS
// thread never waits for the forward pass.
#pragma once
#include <napi.h>

#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "errors.h"
#include "sched/engine.h"

namespace llmserve::napi {

// Submits req and returns a promise of its rows (a Float32Array), after `post` (on the engine
// thread; may be null) has transformed them.
inline Napi::Value eval_promise(Napi::Env env, Engine* e, std::shared_ptr<EvalRequest> req,
                                std::function<Status(std::vector<float>&)> post) {
  auto deferred = std::make_shared<Napi::Promise::Deferred>(env);
  auto noop = Napi::Function::New(env, [](const Napi::CallbackInfo&) {});
  auto tsfn = Napi::ThreadSafeFunction::New(env, noop, "llmserve.evaluate", 0, 1);
  struct Result {
    Status s;
    std::vector<float> logits;
  };
  req->on_done = [tsfn, deferred, post](Status s, std::vector<float>&& logits) mutable {
    if (s && post) s = post(logits);
    auto* r = new Result{std::move(s), std::move(logits)};
    napi_status st = tsfn.NonBlockingCall(r, [deferred](Napi::Env env, Napi::Function, Result* data) {
      std::unique_ptr<Result> owned(data);
      if (env == nullptr) return;
      if (!owned->s) {
        deferred->Reject(make_js_error(env, owned->s).Value());
        return;
      }
      auto arr = Napi::Float32Array::New(env, owned->logits.size());
      std::memcpy(arr.Data(), owned->logits.data(), owned->logits.size() * sizeof(float));
      deferred->Resolve(arr);
    });
    if (st != napi_ok) delete r;
    tsfn.Release();
  };
  Status s = e->submit_eval(req);
  if (!s) {
    tsfn.Release();
    deferred->Reject(make_js_error(env, s).Value());
  }
  return deferred->Promise();
}

}  // namespace llmserve::napi
