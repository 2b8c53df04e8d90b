// Turns core Status into JS errors carrying `.code` (ERR_...), the only error path into JS.
#pragma once
#include <napi.h>

#include "status.h"

namespace llmserve::napi {

inline Napi::Error make_js_error(Napi::Env env, const Status& s) {
  Napi::Error e = Napi::Error::New(env, s.message);
  e.Set("code", Napi::String::New(env, code_name(s.code)));
  return e;
}

inline Napi::Error make_js_error(Napi::Env env, Code code, const std::string& msg) {
  return make_js_error(env, Status{code, msg});
}

// For Napi::AsyncWorker subclasses: remembers a Status and rejects with a coded error.
template <typename Base>
class StatusWorker : public Base {
 public:
  using Base::Base;
 protected:
  void fail(const Status& s) {
    status_ = s;
    this->SetError(s.message);
  }
  void OnError(const Napi::Error&) override {
    Napi::Env env = this->Env();
    Napi::HandleScope scope(env);
    reject(make_js_error(env, status_).Value());
  }
  virtual void reject(Napi::Value err) = 0;
  Status status_;
};

}  // namespace llmserve::napi
