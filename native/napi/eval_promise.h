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

// Submits reqs together (Engine::submit_evals: they share forward passes) and returns a promise of
// an array of their rows (Float32Array each, after `post` on the engine thread), settled once the
// last one is done; the first error rejects it.
inline Napi::Value eval_batch_promise(Napi::Env env, Engine* e, std::vector<std::shared_ptr<EvalRequest>> reqs,
                                      std::function<Status(std::vector<float>&)> post) {
  auto deferred = std::make_shared<Napi::Promise::Deferred>(env);
  if (reqs.empty()) {
    deferred->Resolve(Napi::Array::New(env, 0));
    return deferred->Promise();
  }
  auto noop = Napi::Function::New(env, [](const Napi::CallbackInfo&) {});
  auto tsfn = Napi::ThreadSafeFunction::New(env, noop, "llmserve.evaluate", 0, 1);
  // Filled on the engine thread (one request at a time, in any order), read once all are done.
  struct Results {
    std::vector<Status> s;
    std::vector<std::vector<float>> rows;
    size_t left = 0;
  };
  auto all = std::make_shared<Results>();
  all->s.resize(reqs.size());
  all->rows.resize(reqs.size());
  all->left = reqs.size();
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i]->on_done = [tsfn, deferred, post, all, i](Status s, std::vector<float>&& rows) mutable {
      if (s && post) s = post(rows);
      all->s[i] = std::move(s);
      all->rows[i] = std::move(rows);
      if (--all->left != 0) return;  // on_done runs on the engine thread only: no race on left
      napi_status st = tsfn.NonBlockingCall(all.get(), [deferred, all](Napi::Env env, Napi::Function, Results*) {
        if (env == nullptr) return;
        for (const Status& si : all->s) {
          if (!si) {
            deferred->Reject(make_js_error(env, si).Value());
            return;
          }
        }
        auto arr = Napi::Array::New(env, all->rows.size());
        for (size_t k = 0; k < all->rows.size(); ++k) {
          auto v = Napi::Float32Array::New(env, all->rows[k].size());
          std::memcpy(v.Data(), all->rows[k].data(), all->rows[k].size() * sizeof(float));
          arr.Set(static_cast<uint32_t>(k), v);
        }
        deferred->Resolve(arr);
      });
      (void)st;
      tsfn.Release();
    };
  }
  Status s = e->submit_evals(std::move(reqs));
  if (!s) {
    tsfn.Release();
    deferred->Reject(make_js_error(env, s).Value());
  }
  return deferred->Promise();
}

}  // namespace llmserve::napi
