// Declarations of each wrapper's init function (called from addon.cc) and the checked reads of
// numbers from JS that every wrapper uses: no double reaches a C++ integer or float cast unless it
// is finite and inside the option's Limit (limits.h), which is checked at compile time to fit the
// target type. Errors carry code ERR_INVALID_ARGUMENT and say the option and its allowed range,
// in the same words as lib/validate.ts: "Expected an integer in [0, 2147483647] for topK but
// received 1e+300".
#pragma once
#include <napi.h>

#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <memory>
#include <string>

#include "limits.h"
#include "status.h"

namespace llmserve {
class Engine;
}

namespace llmserve::napi {
void init_gguf(Napi::Env env, Napi::Object exports);
void init_model(Napi::Env env, Napi::Object exports);
void init_synth(Napi::Env env, Napi::Object exports);
void init_eval(Napi::Env env, Napi::Object exports);
void init_quantize(Napi::Env env, Napi::Object exports);
void init_train(Napi::Env env, Napi::Object exports);
void init_compress(Napi::Env env, Napi::Object exports);
void init_machine(Napi::Env env, Napi::Object exports);

// The engine of a NativeModel object (model_wrap.cc): a TypeError (ERR_INVALID_ARGUMENT) naming
// `what` when v is not one, ERR_DISPOSED when it has been disposed.
std::shared_ptr<Engine> model_engine(Napi::Env env, Napi::Value v, const char* what);

// A double as JavaScript's Number.prototype.toString writes it (shortest round-trip digits;
// exponent form below 1e-6 and from 1e21), so native and TypeScript messages read the same.
inline std::string js_number_string(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  if (v == 0) return "0";  // -0 too, as String(-0)
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, std::fabs(v), std::chars_format::scientific);
  std::string s(buf, r.ptr);  // "d[.ddd]e[+-]x"
  const size_t e = s.find('e');
  std::string digits;
  for (size_t i = 0; i < e; ++i)
    if (s[i] != '.') digits += s[i];
  const int k = (int)digits.size();
  const int n = std::stoi(s.substr(e + 1)) + 1;  // the decimal point sits after n digits
  std::string out = v < 0 ? "-" : "";
  if (k <= n && n <= 21) return out + digits + std::string(n - k, '0');
  if (0 < n && n <= 21) return out + digits.substr(0, n) + "." + digits.substr(n);
  if (-6 < n && n <= 0) return out + "0." + std::string(-n, '0') + digits;
  out += digits.substr(0, 1);
  if (k > 1) out += "." + digits.substr(1);
  return out + "e" + (n - 1 >= 0 ? "+" : "-") + std::to_string(std::abs(n - 1));
}

// A received value in a message, as lib/validate.ts describe() writes it.
inline std::string js_describe(Napi::Value v) {
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return v.As<Napi::Boolean>().Value() ? "true" : "false";
    case napi_number: return js_number_string(v.As<Napi::Number>().DoubleValue());
    case napi_string: {
      std::string s = v.As<Napi::String>().Utf8Value(), q = "\"";
      for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
          q += '\\';
          q += (char)c;
        } else if (c == '\n') q += "\\n";
        else if (c == '\r') q += "\\r";
        else if (c == '\t') q += "\\t";
        else if (c == '\b') q += "\\b";
        else if (c == '\f') q += "\\f";
        else if (c < 0x20) {
          char u[8];
          std::snprintf(u, sizeof u, "\\u%04x", c);
          q += u;
        } else q += (char)c;
      }
      return q + "\"";
    }
    case napi_bigint: return "bigint";
    case napi_symbol: return "symbol";
    case napi_function: return "function";
    default: return v.IsArray() ? "an array" : "object";
  }
}

// "an integer in [0, 20]", "a number in (0, 1]"
inline std::string describe_limit(const Limit& l) {
  return std::string(l.integer ? "an integer in " : "a number in ") + (l.min_exclusive ? "(" : "[") +
         js_number_string(l.min) + ", " + js_number_string(l.max) + "]";
}

// True when every value the Limit admits converts to T exactly or by rounding (never UB).
template <typename T>
consteval bool limit_fits(const Limit& l) {
  if (!(l.min <= l.max)) return false;
  if (l.integer) {
    if (l.min < -9007199254740991.0 || l.max > 9007199254740991.0) return false;  // exact in a double
    if (!std::numeric_limits<T>::is_integer) return false;
  }
  return l.min >= (double)std::numeric_limits<T>::lowest() && l.max <= (double)std::numeric_limits<T>::max();
}

[[noreturn]] inline void throw_invalid(Napi::Env env, bool range, const std::string& msg) {
  Napi::Error e = range ? (Napi::Error)Napi::RangeError::New(env, msg) : (Napi::Error)Napi::TypeError::New(env, msg);
  e.Set("code", Napi::String::New(env, code_name(Code::InvalidArgument)));
  throw e;
}

// v as T, or a RangeError (TypeError when v is not a number) with code ERR_INVALID_ARGUMENT.
// `name` overrides L.name in the message (array elements: "stopTokens[3]").
template <typename T, const Limit& L>
T check_number(Napi::Env env, Napi::Value v, const char* name = nullptr) {
  static_assert(limit_fits<T>(L), "the Limit admits values outside the target type");
  auto fail = [&](bool range) {
    throw_invalid(
        env, range,
        "Expected " + describe_limit(L) + " for " + (name ? name : L.name) + " but received " + js_describe(v));
  };
  if (!v.IsNumber()) fail(false);
  const double d = v.As<Napi::Number>().DoubleValue();
  const bool above_min = L.min_exclusive ? d > L.min : d >= L.min;
  // NaN fails every comparison; +-Infinity fails a bound; trunc tells fractions apart.
  if (!(above_min && d <= L.max) || (L.integer && std::trunc(d) != d)) fail(true);
  return static_cast<T>(d);
}

// o[L.name] as T. Every field is required: the addon has no defaults of its own (the TypeScript
// layer applies them, lib/defaults.ts), so an absent or undefined field is a TypeError like any
// other non-number.
template <typename T, const Limit& L>
T get_number(Napi::Object o) {
  return check_number<T, L>(o.Env(), o.Get(L.name));
}

// o[name] as a bool: true or false, nothing else (no truthiness). TypeError otherwise.
inline bool get_bool(Napi::Object o, const char* name) {
  Napi::Value v = o.Get(name);
  if (!v.IsBoolean())
    throw_invalid(o.Env(), false,
                  std::string("Expected true or false for ") + name + " but received " + js_describe(v));
  return v.As<Napi::Boolean>().Value();
}

// o[name] as a string. TypeError otherwise.
inline std::string get_string(Napi::Object o, const char* name) {
  Napi::Value v = o.Get(name);
  if (!v.IsString())
    throw_invalid(o.Env(), false, std::string("Expected a string for ") + name + " but received " + js_describe(v));
  return v.As<Napi::String>().Utf8Value();
}

// o[name]: one of `allowed`, in lib/validate.ts checkString's words (`Expected one of "f16", "f32"
// for kvType but received "x"`): a TypeError for a non-string, a RangeError for another string.
inline std::string get_choice(Napi::Object o, const char* name, std::initializer_list<const char*> allowed) {
  Napi::Value v = o.Get(name);
  if (v.IsString()) {
    std::string s = v.As<Napi::String>().Utf8Value();
    for (const char* a : allowed)
      if (s == a) return s;
  }
  std::string list;
  for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + "\"" + a + "\"";
  throw_invalid(o.Env(), v.IsString(), "Expected one of " + list + " for " + name + " but received " + js_describe(v));
}

// The same for a core table of allowed values (one source for the list: e.g. kSynthArchs).
template <size_t N>
std::string get_choice_in(Napi::Object o, const char* name, const char* const (&allowed)[N]) {
  Napi::Value v = o.Get(name);
  if (v.IsString()) {
    std::string s = v.As<Napi::String>().Utf8Value();
    for (const char* a : allowed)
      if (s == a) return s;
  }
  std::string list;
  for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + "\"" + a + "\"";
  throw_invalid(o.Env(), v.IsString(), "Expected one of " + list + " for " + name + " but received " + js_describe(v));
}

// exports.defaults[group], created on first use: the core's own defaults (its struct initializers),
// exported so a test can check them against lib/defaults.ts; the wrappers never read them.
inline Napi::Object defaults_group(Napi::Env env, Napi::Object exports, const char* group) {
  Napi::Value d = exports.Get("defaults");
  Napi::Object all = d.IsObject() ? d.As<Napi::Object>() : Napi::Object::New(env);
  exports.Set("defaults", all);
  Napi::Object g = Napi::Object::New(env);
  all.Set(group, g);
  return g;
}

// The optional callback argument at index i (progress, onStep), or an empty Function.
inline Napi::Function optional_function(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && info[i].IsFunction() ? info[i].As<Napi::Function>() : Napi::Function();
}

// Queues a promise-returning AsyncWorker for a long file job (quantize, compress, finetune) and
// returns the job object lib/ expects: { promise, cancel() }, cancel() setting the worker's flag.
template <typename Worker>
Napi::Object queue_cancellable(Napi::Env env, Worker* w, std::shared_ptr<std::atomic<bool>> cancel) {
  auto job = Napi::Object::New(env);
  job.Set("promise", w->promise());
  job.Set("cancel", Napi::Function::New(
                        env, [cancel](const Napi::CallbackInfo&) { cancel->store(true); }, "cancel"));
  w->Queue();
  return job;
}

// The fields the offline transforms' results share (quantize and compress, as lib/native.ts
// declares them): tensors (each made by tensor_js), notes, inputBytes, outputBytes, set on r in
// that order after whatever the caller set first.
template <typename Result, typename TensorJs>
void set_transform_result(Napi::Env env, Napi::Object r, const Result& res, const TensorJs& tensor_js) {
  auto ts = Napi::Array::New(env, res.tensors.size());
  for (uint32_t k = 0; k < res.tensors.size(); ++k) ts.Set(k, tensor_js(res.tensors[k]));
  r.Set("tensors", ts);
  auto notes = Napi::Array::New(env, res.notes.size());
  for (uint32_t k = 0; k < res.notes.size(); ++k) notes.Set(k, res.notes[k]);
  r.Set("notes", notes);
  r.Set("inputBytes", Napi::Number::New(env, static_cast<double>(res.input_bytes)));
  r.Set("outputBytes", Napi::Number::New(env, static_cast<double>(res.output_bytes)));
}

}  // namespace llmserve::napi
