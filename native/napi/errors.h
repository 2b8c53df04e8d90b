// Turns core Status into JS errors carrying `.code` (ERR_...), the only error path into JS.
#pragma once
#include <napi.h>

#include <cstring>
#include <exception>
#include <new>
#include <string>

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

// Every error code the addon can produce, in status.h order (exported as errorCodes() so the
// TypeScript list in lib/errors.ts is checked against this one source).
inline Napi::Array error_codes_to_js(Napi::Env env) {
  static const char* const kNames[] = {
#define LLMS_CODE_STR(e, s) s,
      LLMS_STATUS_CODES(LLMS_CODE_STR)
#undef LLMS_CODE_STR
  };
  Napi::Array a = Napi::Array::New(env);
  uint32_t k = 0;
  for (const char* n : kNames)
    if (std::strcmp(n, "OK") != 0) a.Set(k++, Napi::String::New(env, n));
  return a;
}

// A path argument: a JS string without NUL bytes (a NUL would silently cut the path short in the
// C file APIs). Throws ERR_INVALID_ARGUMENT naming `what`.
inline std::string path_arg(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!v.IsString()) throw make_js_error(env, Code::InvalidArgument, std::string("Expected a string for ") + what);
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos)
    throw make_js_error(env, Code::InvalidArgument,
                        std::string("Expected a path without NUL characters for ") + what +
                            " but the string contains \"\\0\"; pass the file path exactly.");
  return s;
}

// For Napi::AsyncWorker subclasses: remembers a Status and rejects with a coded error.
// No exception may escape OnOK/OnError (node-addon-api would rethrow it into JS outside any
// promise, which ends the process): subclasses build their result inside settle(), which turns a
// failure while creating JS values into a rejection of the promise with a coded error.
template <typename Base>
class StatusWorker : public Base {
 public:
  using Base::Base;

 protected:
  void fail(const Status& s) {
    status_ = s;
    this->SetError(s.message.empty() ? std::string(code_name(s.code)) : s.message);
  }
  // Runs fn (which resolves the promise); a Napi::Error or C++ exception thrown by it rejects the
  // promise instead, with `code` and a message prefixed by `what`.
  template <typename Fn>
  void settle(Code code, const std::string& what, Fn&& fn) {
    Napi::Env env = this->Env();
    Napi::HandleScope scope(env);
    Status failure;
    try {
      fn();
      return;
    } catch (const Napi::Error& e) {
      std::string m = e.Message();
      failure = Status{code, what + ": " + (m.empty() ? std::string("a JavaScript value could not be created") : m)};
    } catch (const std::bad_alloc&) {
      failure = Status{Code::OutOfMemory, what + ": out of memory"};
    } catch (const std::exception& e) { failure = Status{code, what + ": " + e.what()}; } catch (...) {
      failure = Status{code, what + ": unknown native exception"};
    }
    reject_safely(failure);
  }
  void OnError(const Napi::Error& err) override {
    Status s = status_;
    if (s.is_ok()) {
      // Execute threw (node-addon-api turned the C++ exception into SetError): never an empty
      // message or an "OK" code.
      std::string m;
      try {
        m = err.Message();
      } catch (...) {}
      if (m.empty()) m = "unknown failure";
      s = Status{m.find("bad_alloc") != std::string::npos ? Code::OutOfMemory : Code::Internal,
                 "native worker failed: " + m};
    }
    reject_safely(s);
  }
  virtual void reject(Napi::Value err) = 0;
  // A progress function for core work running in Execute: sends fractions to OnProgress at most
  // once per 1% (and always the final 1.0), so a long load does not flood the event loop.
  template <typename Progress>
  static auto throttled(const Progress& prog) {
    return [&prog, last = -1.0](double f) mutable {
      if (f - last >= 0.01 || f >= 1.0) {
        last = f;
        prog.Send(&f, 1);
      }
    };
  }
  // Calls a JS progress callback; if it throws, the exception is kept (not rethrown into the event
  // loop, which would end the process) and rejected_by_callback() makes OnOK reject with it.
  void call_progress(Napi::FunctionReference& cb, double value) {
    if (cb.IsEmpty() || !callback_error_.IsEmpty()) return;
    Napi::Env env = this->Env();
    Napi::HandleScope scope(env);
    try {
      cb.Call({Napi::Number::New(env, value)});
    } catch (const Napi::Error& e) { callback_error_ = Napi::Persistent(e.Value()); }
  }
  bool rejected_by_callback() {
    if (callback_error_.IsEmpty()) return false;
    Napi::HandleScope scope(this->Env());
    try {
      reject(callback_error_.Value());
    } catch (...) {}
    return true;
  }
  Status status_;
  Napi::ObjectReference callback_error_;

 private:
  void reject_safely(const Status& s) {
    Napi::Env env = this->Env();
    Napi::HandleScope scope(env);
    try {
      reject(make_js_error(env, s).Value());
    } catch (...) {
      // Creating the error itself failed (no memory): reject with a bare string rather than throw.
      try {
        reject(Napi::String::New(env, code_name(s.code)));
      } catch (...) {}
    }
  }
};

}  // namespace llmserve::napi
