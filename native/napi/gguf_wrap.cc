// readGguf(path, maxArrayLength?) -> Promise<{version, alignment, dataOffset, fileSize, metadata, tensors}>
// Parsing runs on a libuv worker; the JS thread only converts the result.
#include <napi.h>

#include <limits>

#include "errors.h"
#include "gguf/gguf.h"
#include "wrap_common.h"

namespace llmserve::napi {
namespace {

Napi::Value scalar_to_js(Napi::Env env, const GgufValue& v) {
  switch (v.type) {
    case GgufType::BOOL: return Napi::Boolean::New(env, v.u != 0);
    case GgufType::STRING: return Napi::String::New(env, v.s.data(), v.s.size());
    case GgufType::FLOAT32: case GgufType::FLOAT64: return Napi::Number::New(env, v.f);
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

class ReadGgufWorker : public StatusWorker<Napi::AsyncWorker> {
 public:
  ReadGgufWorker(Napi::Env env, std::string path, uint64_t max_array)
      : StatusWorker(env), deferred_(Napi::Promise::Deferred::New(env)), path_(std::move(path)), max_array_(max_array) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    Status s = GgufFile::open(path_, &file_);
    if (!s) fail(s);
  }
  void OnOK() override {
    Napi::Env env = Env();
    auto r = Napi::Object::New(env);
    r.Set("version", file_->version());
    r.Set("alignment", Napi::Number::New(env, (double)file_->alignment()));
    r.Set("dataOffset", Napi::Number::New(env, (double)file_->data_offset()));
    r.Set("fileSize", Napi::Number::New(env, (double)file_->file_size()));
    auto md = Napi::Object::New(env);
    for (auto& [k, v] : file_->metadata()) md.Set(k, value_to_js(env, v, max_array_));
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
  }
  void reject(Napi::Value err) override { deferred_.Reject(err); }

 private:
  Napi::Promise::Deferred deferred_;
  std::string path_;
  uint64_t max_array_;
  std::unique_ptr<GgufFile> file_;
};

Napi::Value ReadGguf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString())
    throw make_js_error(env, Code::InvalidArgument, "readGguf expects a file path string");
  uint64_t max_array = std::numeric_limits<uint64_t>::max();
  if (info.Length() > 1 && !info[1].IsUndefined()) max_array = check_number<uint64_t, limits::kMaxArrayLength>(env, info[1]);
  auto* w = new ReadGgufWorker(env, info[0].As<Napi::String>(), max_array);
  auto p = w->promise();
  w->Queue();
  return p;
}

}  // namespace

void init_gguf(Napi::Env env, Napi::Object exports) {
  exports.Set("readGguf", Napi::Function::New(env, ReadGguf, "readGguf"));
}

}  // namespace llmserve::napi
