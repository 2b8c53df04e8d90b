// readGguf(path, maxArrayLength?) -> Promise<{version, alignment, dataOffset, fileSize, metadata, tensors}>
// Parsing runs on a libuv worker; the JS thread only converts the result.
#include <napi.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "errors.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "wrap_common.h"

namespace llmserve::napi {
namespace {

Napi::Value scalar_to_js(Napi::Env env, const GgufValue& v) {
  switch (v.type) {
    case GgufType::BOOL: return Napi::Boolean::New(env, v.u != 0);
    case GgufType::STRING: return Napi::String::New(env, v.s.data(), v.s.size());
    case GgufType::FLOAT32:
    case GgufType::FLOAT64: return Napi::Number::New(env, v.f);
    case GgufType::UINT64:
      if (v.u > (1ULL << 53)) return Napi::BigInt::New(env, (uint64_t)v.u);
      return Napi::Number::New(env, (double)v.u);
    case GgufType::INT64:
      if (v.i > (1LL << 53) || v.i < -(1LL << 53)) return Napi::BigInt::New(env, (int64_t)v.i);
      return Napi::Number::New(env, (double)v.i);
    default: return Napi::Number::New(env, (double)v.i);
  }
}

template <typename T>
Napi::Value typed_copy(Napi::Env env, const GgufValue& v) {
  // Copy: the mapping is released after this call; element data may be unaligned.
  auto buf = Napi::ArrayBuffer::New(env, v.arr_len * sizeof(T));
  if (v.arr_len) std::memcpy(buf.Data(), v.arr_data, v.arr_len * sizeof(T));
  return Napi::TypedArrayOf<T>::New(env, v.arr_len, buf, 0);
}

// What a metadata value costs once it is a JS value (V8 headers included, roughly): what the
// JS-side metadata budget counts before anything is created.
uint64_t js_cost(const GgufValue& v, uint64_t max_array) {
  if (v.type == GgufType::STRING) return 32 + v.s.size();
  if (v.type != GgufType::ARRAY) return 16;
  if (v.arr_len > max_array) return 128;
  size_t es = gguf_scalar_size(v.arr_type);
  if (v.arr_type == GgufType::BOOL) return 64 + 8 * v.arr_len;
  if (es > 0) return 128 + es * v.arr_len;
  uint64_t total = 64 + 8 * v.arr_len;
  if (v.arr_type == GgufType::STRING) {
    for (const auto& s : v.arr_str) total += 32 + s.size();
  } else {
    for (const auto& e : v.arr_nested) total += js_cost(e, max_array);
  }
  return total;
}

Napi::Value value_to_js(Napi::Env env, const GgufValue& v, uint64_t max_array) {
  if (v.type != GgufType::ARRAY) return scalar_to_js(env, v);
  if (v.arr_len > max_array) {
    auto o = Napi::Object::New(env);
    o.Set("type", "array");
    o.Set("elementType", gguf_type_name(v.arr_type));
    o.Set("length", Napi::Number::New(env, (double)v.arr_len));
    return o;
  }
  switch (v.arr_type) {
    case GgufType::UINT8: return typed_copy<uint8_t>(env, v);
    case GgufType::INT8: return typed_copy<int8_t>(env, v);
    case GgufType::UINT16: return typed_copy<uint16_t>(env, v);
    case GgufType::INT16: return typed_copy<int16_t>(env, v);
    case GgufType::UINT32: return typed_copy<uint32_t>(env, v);
    case GgufType::INT32: return typed_copy<int32_t>(env, v);
    case GgufType::FLOAT32: return typed_copy<float>(env, v);
    case GgufType::FLOAT64: return typed_copy<double>(env, v);
    case GgufType::UINT64: return typed_copy<uint64_t>(env, v);
    case GgufType::INT64: return typed_copy<int64_t>(env, v);
    case GgufType::BOOL: {
      auto a = Napi::Array::New(env, v.arr_len);
      for (uint64_t k = 0; k < v.arr_len; ++k) a.Set((uint32_t)k, Napi::Boolean::New(env, v.arr_data[k] != 0));
      return a;
    }
    case GgufType::STRING: {
      auto a = Napi::Array::New(env, v.arr_len);
      for (uint64_t k = 0; k < v.arr_len; ++k)
        a.Set((uint32_t)k, Napi::String::New(env, v.arr_str[k].data(), v.arr_str[k].size()));
      return a;
    }
    default: {
      auto a = Napi::Array::New(env, v.arr_len);
      for (uint64_t k = 0; k < v.arr_len; ++k) a.Set((uint32_t)k, value_to_js(env, v.arr_nested[k], max_array));
      return a;
    }
  }
}

struct ReadOptions {
  uint64_t max_array = std::numeric_limits<uint64_t>::max();
  std::vector<std::string> prefixes;  // empty: every key
  GgufLimits limits;
};

bool wanted(const std::string& key, const std::vector<std::string>& prefixes) {
  if (prefixes.empty()) return true;
  for (const auto& p : prefixes)
    if (key.compare(0, p.size(), p) == 0) return true;
  return false;
}

class ReadGgufWorker : public StatusWorker<Napi::AsyncWorker> {
 public:
  ReadGgufWorker(Napi::Env env, std::string path, ReadOptions opts)
      : StatusWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        path_(std::move(path)),
        opts_(std::move(opts)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    Status s = GgufFile::open(path_, &file_, opts_.limits);
    if (!s) return fail(s);
    // The JS copy of the selected metadata must fit the metadata budget too (checked here, off
    // the JS thread, before any JS value exists).
    uint64_t total = 0;
    for (auto& [k, v] : file_->metadata()) {
      if (!wanted(k, opts_.prefixes)) continue;
      total += 64 + k.size() + js_cost(v, opts_.max_array);
      if (total > opts_.limits.max_metadata_bytes) {
        // Build the message before releasing the file: `k` refers into its metadata.
        Status over = make_error(Code::GgufLimit,
                                 "'" + path_ + "': the metadata selected for JavaScript needs about " +
                                     std::to_string(total) + " bytes by key '" + k + "', over the limit of " +
                                     std::to_string(opts_.limits.max_metadata_bytes) +
                                     " bytes (readGguf maxMetadataBytes). Select fewer keys (keyPrefix), summarise "
                                     "arrays (maxArrayLength), or raise the limit if you trust the file.");
        file_.reset();
        return fail(over);
      }
    }
  }
  void OnOK() override {
    settle(Code::GgufLimit, "'" + path_ + "'", [&] {
      Napi::Env env = Env();
      auto r = Napi::Object::New(env);
      r.Set("version", file_->version());
      r.Set("alignment", Napi::Number::New(env, (double)file_->alignment()));
      r.Set("dataOffset", Napi::Number::New(env, (double)file_->data_offset()));
      r.Set("fileSize", Napi::Number::New(env, (double)file_->file_size()));
      auto md = Napi::Object::New(env);
      for (auto& [k, v] : file_->metadata()) {
        if (!wanted(k, opts_.prefixes)) continue;
        try {
          md.Set(k, value_to_js(env, v, opts_.max_array));
        } catch (const Napi::Error& e) {
          throw std::runtime_error(
              "metadata '" + k + "' (" + gguf_type_name(v.type) +
              (v.type == GgufType::STRING ? ", " + std::to_string(v.s.size()) + " bytes" : std::string()) +
              ") cannot be made into a JavaScript value (" + e.Message() +
              "; V8 strings hold at most 2^29-24 characters). Lower maxStringBytes or skip the key with keyPrefix.");
        }
      }
      r.Set("metadata", md);
      auto ts = Napi::Array::New(env, file_->tensors().size());
      uint32_t i = 0;
      for (auto& t : file_->tensors()) {
        auto o = Napi::Object::New(env);
        o.Set("name", t.name);
        auto shape = Napi::Array::New(env, t.n_dims);
        for (uint32_t d = 0; d < t.n_dims; ++d) shape.Set(d, Napi::Number::New(env, (double)t.ne[d]));
        o.Set("shape", shape);
        o.Set("type", type_traits(t.type).name);
        o.Set("offset", Napi::Number::New(env, (double)t.offset));
        o.Set("nbytes", Napi::Number::New(env, (double)t.nbytes));
        ts.Set(i++, o);
      }
      r.Set("tensors", ts);
      file_.reset();
      deferred_.Resolve(r);
    });
    file_.reset();
  }
  void reject(Napi::Value err) override { deferred_.Reject(err); }

 private:
  Napi::Promise::Deferred deferred_;
  std::string path_;
  ReadOptions opts_;
  std::unique_ptr<GgufFile> file_;
};

// readGguf(path, maxArrayLength, {keyPrefixes, maxStringBytes, maxMetadataBytes}): every argument
// and field required (lib/gguf.ts fills them from lib/defaults.ts).
Napi::Value ReadGguf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = path_arg(env, info[0], "the GGUF path");
  ReadOptions o;
  o.max_array = check_number<uint64_t, limits::kMaxArrayLength>(env, info[1]);
  if (!info[2].IsObject())
    throw_invalid(env, false, "Expected an options object for readGguf options but received " + js_describe(info[2]));
  Napi::Object opts = info[2].As<Napi::Object>();
  Napi::Value p = opts.Get("keyPrefixes");
  if (!p.IsArray())
    throw_invalid(env, false, "Expected an array of strings for keyPrefixes but received " + js_describe(p));
  Napi::Array a = p.As<Napi::Array>();
  for (uint32_t k = 0; k < a.Length(); ++k) {
    Napi::Value e = a.Get(k);
    if (!e.IsString())
      throw_invalid(env, false,
                    "Expected an array of strings for keyPrefixes but received " + js_describe(e) + " at index " +
                        std::to_string(k));
    o.prefixes.push_back(e.As<Napi::String>().Utf8Value());
  }
  o.limits.max_string_bytes = get_number<uint64_t, limits::kMaxStringBytes>(opts);
  o.limits.max_metadata_bytes = get_number<uint64_t, limits::kMaxMetadataBytes>(opts);
  auto* w = new ReadGgufWorker(env, std::move(path), std::move(o));
  auto pr = w->promise();
  w->Queue();
  return pr;
}

// checkModel(path) -> Promise<{arch}>: whether llmserve can run the file, without loading it: the
// header, hyperparameters and every tensor's presence, shape and type are checked exactly as
// Model::load checks them (the weights stay unread in the mapping). Rejects with that coded error.
class CheckModelWorker : public StatusWorker<Napi::AsyncWorker> {
 public:
  CheckModelWorker(Napi::Env env, std::string path)
      : StatusWorker(env), deferred_(Napi::Promise::Deferred::New(env)), path_(std::move(path)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    std::unique_ptr<GgufFile> f;
    Status s = GgufFile::open(path_, &f);
    if (!s) return fail(s);
    std::unique_ptr<Model> m;
    s = Model::load(std::shared_ptr<GgufFile>(std::move(f)), &m);
    if (!s) return fail(s);
    arch_ = m->config().arch;
  }
  void OnOK() override {
    settle(Code::Internal, "checkModel '" + path_ + "'", [&] {
      auto r = Napi::Object::New(Env());
      r.Set("arch", arch_);
      deferred_.Resolve(r);
    });
  }
  void reject(Napi::Value err) override { deferred_.Reject(err); }

 private:
  Napi::Promise::Deferred deferred_;
  std::string path_;
  std::string arch_;
};

Napi::Value CheckModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = path_arg(env, info[0], "the model path");
  auto* w = new CheckModelWorker(env, std::move(path));
  auto pr = w->promise();
  w->Queue();
  return pr;
}

Napi::Value ErrorCodes(const Napi::CallbackInfo& info) { return error_codes_to_js(info.Env()); }

}  // namespace

void init_gguf(Napi::Env env, Napi::Object exports) {
  const GgufLimits g;
  Napi::Object d = defaults_group(env, exports, "gguf");
  d.Set("maxStringBytes", Napi::Number::New(env, (double)g.max_string_bytes));
  d.Set("maxMetadataBytes", Napi::Number::New(env, (double)g.max_metadata_bytes));
  exports.Set("readGguf", Napi::Function::New(env, ReadGguf, "readGguf"));
  exports.Set("errorCodes", Napi::Function::New(env, ErrorCodes, "errorCodes"));
  exports.Set("checkModel", Napi::Function::New(env, CheckModel, "checkModel"));
}

}  // namespace llmserve::napi
