// GgufWriter: builds a GGUF v3 image in memory and writes it through a temp file + rename.
//
// Layout (all little-endian), exactly what ggml's gguf.cpp reads back:
//   "GGUF" | u32 version=3 | u64 n_tensors | u64 n_kv
//   n_kv x   { u64 key_len, key bytes, u32 value type, value }
//            value: scalar bytes | string (u64 len + bytes) |
//                   array (u32 elem type, u64 count, elements; nested arrays repeat this body)
//   n_tensors x { u64 name_len, name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset }
//   zero padding up to a multiple of the alignment
//   tensor data, each tensor starting at its offset (relative to the data section) and padded to
//   the alignment; offsets are the running sum of padded sizes, as ggml requires.
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <atomic>

#include "gguf.h"

namespace llmserve {
namespace {

constexpr uint32_t kGgufVersion = 3;
constexpr uint32_t kInvalidTypeMarker = 0xFFFFFFFFu;  // Entry.bytes of a value we cannot encode
constexpr size_t kMaxTensorName = 63;                 // ggml: GGML_MAX_NAME (64) incl. NUL
constexpr const char* kAlignmentKey = "general.alignment";

bool valid_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::FLOAT64); }

template <typename T>
void put_raw(std::vector<uint8_t>& out, T v) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // hosts we build for are little-endian, as GGUF is
  out.insert(out.end(), b, b + sizeof(T));
}

void put_string(std::vector<uint8_t>& out, std::string_view s) {
  put_raw<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

// Encodes the scalar held by v (type v.type) into out. Returns false for non-scalar types.
bool put_scalar(std::vector<uint8_t>& out, const GgufValue& v) {
  switch (v.type) {
    case GgufType::UINT8: put_raw<uint8_t>(out, static_cast<uint8_t>(v.u)); return true;
    case GgufType::INT8: put_raw<int8_t>(out, static_cast<int8_t>(v.i)); return true;
    case GgufType::UINT16: put_raw<uint16_t>(out, static_cast<uint16_t>(v.u)); return true;
    case GgufType::INT16: put_raw<int16_t>(out, static_cast<int16_t>(v.i)); return true;
    case GgufType::UINT32: put_raw<uint32_t>(out, static_cast<uint32_t>(v.u)); return true;
    case GgufType::INT32: put_raw<int32_t>(out, static_cast<int32_t>(v.i)); return true;
    case GgufType::FLOAT32: put_raw<float>(out, static_cast<float>(v.f)); return true;
    case GgufType::BOOL: put_raw<uint8_t>(out, v.u ? 1 : 0); return true;
    case GgufType::UINT64: put_raw<uint64_t>(out, v.u); return true;
    case GgufType::INT64: put_raw<int64_t>(out, v.i); return true;
    case GgufType::FLOAT64: put_raw<double>(out, v.f); return true;
    default: return false;
  }
}

// Array body: u32 element type, u64 count, elements. v's arr_* fields describe the array.
bool put_array_body(std::vector<uint8_t>& out, const GgufValue& v, int depth) {
  if (depth > 16 || !valid_type(static_cast<uint32_t>(v.arr_type))) return false;
  put_raw<uint32_t>(out, static_cast<uint32_t>(v.arr_type));
  if (v.arr_type == GgufType::STRING) {
    put_raw<uint64_t>(out, v.arr_str.size());
    for (const auto& s : v.arr_str) put_string(out, s);
    return true;
  }
  if (v.arr_type == GgufType::ARRAY) {
    put_raw<uint64_t>(out, v.arr_nested.size());
    for (const auto& e : v.arr_nested) {
      if (!put_array_body(out, e, depth + 1)) return false;
    }
    return true;
  }
  const size_t es = gguf_scalar_size(v.arr_type);
  if (v.arr_len > 0 && v.arr_data == nullptr) return false;
  if (es != 0 && v.arr_len > (SIZE_MAX / es)) return false;
  put_raw<uint64_t>(out, v.arr_len);
  const size_t n = static_cast<size_t>(v.arr_len) * es;
  if (v.arr_type == GgufType::BOOL) {
    for (size_t k = 0; k < n; ++k) out.push_back(v.arr_data[k] ? 1 : 0);
  } else if (n) {
    out.insert(out.end(), v.arr_data, v.arr_data + n);
  }
  return true;
}

std::vector<uint8_t> invalid_entry() {
  std::vector<uint8_t> b;
  put_raw<uint32_t>(b, kInvalidTypeMarker);
  return b;
}

uint64_t pad_to(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

bool is_pow2(uint64_t a) { return a != 0 && (a & (a - 1)) == 0; }

std::string errno_text(int e) { return std::strerror(e); }

struct FileCloser {
  FILE* f = nullptr;
  ~FileCloser() {
    if (f) std::fclose(f);
  }
};

}  // namespace

void GgufWriter::put(const std::string& key, std::vector<uint8_t> encoded) {
  for (auto& e : kv_) {
    if (e.key == key) {  // setting a key twice replaces it in place (GGUF forbids duplicates)
      e.bytes = std::move(encoded);
      return;
    }
  }
  kv_.push_back(Entry{key, std::move(encoded)});
}

void GgufWriter::set_u32(const std::string& key, uint32_t v) {
  std::vector<uint8_t> b;
  put_raw<uint32_t>(b, static_cast<uint32_t>(GgufType::UINT32));
  put_raw<uint32_t>(b, v);
  put(key, std::move(b));
}

void GgufWriter::set_i32(const std::string& key, int32_t v) {
  std::vector<uint8_t> b;
  put_raw<uint32_t>(b, static_cast<uint32_t>(GgufType::INT32));
  put_raw<int32_t>(b, v);
  put(key, std::move(b));
}

void GgufWriter::set_u64(const std::string& key, uint64_t v) {
  std::vector<uint8_t> b;
  put_raw<uint32_t>(b, static_cast<uint32_t>(GgufType::UINT64));
  put_raw<uint64_t>(b, v);
  put(key, std::move(b));
}

void GgufWriter::set_f32(const std::string& key, float v) {
  std::vector<uint8_t> b;
  put_raw<uint32_t>(b, static_cast<uint32_t>(GgufType::FLOAT32));
  put_raw<float>(b, v);
  put(key, std::move(b));
}

void GgufWriter::set_bool(const std::string& key, bool v) {
  std::vector<uint8_t> b;
  put_raw<uint32_t>(b, static_cast<uint32_t>(GgufType::BOOL));
  put_raw<uint8_t>(b, v ? 1 : 0);
  put(key, std::move(b));
}

void GgufWriter::set_str(const std::string& key, const std::string& v) {
  std::vector<uint8_t> b;
  put_raw<uint32_t>(b, static_cast<uint32_t>(GgufType::STRING));
  put_string(b, v);
  put(key, std::move(b));
}

void GgufWriter::set_arr_str(const std::string& key, const std::vector<std::string>& v) {
  std::vector<uint8_t> b;
  size_t total = 4 + 4 + 8;
  for (const auto& s : v) total += 8 + s.size();
  b.reserve(total);
  put_raw<uint32_t>(b, static_cast<uint32_t>(GgufType::ARRAY));
  put_raw<uint32_t>(b, static_cast<uint32_t>(GgufType::STRING));
  put_raw<uint64_t>(b, v.size());
  for (const auto& s : v) put_string(b, s);
  put(key, std::move(b));
}

void GgufWriter::set_arr_f32(const std::string& key, const std::vector<float>& v) {
  std::vector<uint8_t> b;
  b.reserve(16 + v.size() * 4);
  put_raw<uint32_t>(b, static_cast<uint32_t>(GgufType::ARRAY));
  put_raw<uint32_t>(b, static_cast<uint32_t>(GgufType::FLOAT32));
  put_raw<uint64_t>(b, v.size());
  for (float x : v) put_raw<float>(b, x);
  put(key, std::move(b));
}

void GgufWriter::set_arr_i32(const std::string& key, const std::vector<int32_t>& v) {
  std::vector<uint8_t> b;
  b.reserve(16 + v.size() * 4);
  put_raw<uint32_t>(b, static_cast<uint32_t>(GgufType::ARRAY));
  put_raw<uint32_t>(b, static_cast<uint32_t>(GgufType::INT32));
  put_raw<uint64_t>(b, v.size());
  for (int32_t x : v) put_raw<int32_t>(b, x);
  put(key, std::move(b));
}

void GgufWriter::set_value(const std::string& key, const GgufValue& v) {
  std::vector<uint8_t> b;
  if (!valid_type(static_cast<uint32_t>(v.type))) {
    put(key, invalid_entry());
    return;
  }
  put_raw<uint32_t>(b, static_cast<uint32_t>(v.type));
  bool ok;
  if (v.type == GgufType::STRING) {
    put_string(b, v.s);
    ok = true;
  } else if (v.type == GgufType::ARRAY) {
    ok = put_array_body(b, v, 0);
  } else {
    ok = put_scalar(b, v);
  }
  put(key, ok ? std::move(b) : invalid_entry());
}

Status GgufWriter::check_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& ne,
                                uint64_t* nbytes) const {
  if (name.empty() || name.size() > kMaxTensorName) {
    return make_error(Code::InvalidArgument,
                      "tensor name '" + name + "' must be 1.." + std::to_string(kMaxTensorName) + " bytes long");
  }
  for (const auto& t : tensors_) {
    if (t.name == name) return make_error(Code::InvalidArgument, "duplicate tensor name '" + name + "'");
  }
  if (ne.empty() || ne.size() > 4) {
    return make_error(Code::BadShape,
                      "tensor '" + name + "' has " + std::to_string(ne.size()) + " dimensions; expected 1..4");
  }
  const uint32_t tid = static_cast<uint32_t>(type);
  if (tid >= kGgmlTypeCount || !type_traits(type).known || type_traits(type).block_size <= 0) {
    return make_error(Code::UnsupportedType, "tensor '" + name + "' has unknown ggml type " + std::to_string(tid));
  }
  const TypeTraits& tt = type_traits(type);
  uint64_t rest = 1;
  for (size_t d = 0; d < ne.size(); ++d) {
    if (ne[d] < 0) {
      return make_error(Code::BadShape, "tensor '" + name + "' dimension " + std::to_string(d) + " is negative (" +
                                            std::to_string(ne[d]) + ")");
    }
    if (d > 0) {
      if (ne[d] != 0 && rest > (uint64_t(1) << 62) / static_cast<uint64_t>(ne[d])) {
        return make_error(Code::BadShape, "tensor '" + name + "' is too large");
      }
      rest *= static_cast<uint64_t>(ne[d]);
    }
  }
  if (ne[0] % tt.block_size != 0) {
    return make_error(Code::BadShape, "tensor '" + name + "' of type " + tt.name +
                                          " has ne[0]=" + std::to_string(ne[0]) + ", not a multiple of block size " +
                                          std::to_string(tt.block_size));
  }
  const uint64_t rs = row_size(type, ne[0]);
  if (rest != 0 && rs > (uint64_t(1) << 62) / rest) {
    return make_error(Code::BadShape, "tensor '" + name + "' is too large");
  }
  *nbytes = rs * rest;
  return Status::ok();
}

Status GgufWriter::add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> ne,
                              std::vector<uint8_t> data) {
  uint64_t expected = 0;
  LLMS_RETURN_IF_ERROR(check_tensor(name, type, ne, &expected));
  if (data.size() != expected) {
    return make_error(Code::BadShape, "tensor '" + name + "' data is " + std::to_string(data.size()) +
                                          " bytes; shape and type " + type_traits(type).name + " need " +
                                          std::to_string(expected));
  }
  tensors_.push_back(Tensor{name, type, std::move(ne), std::move(data), expected, false});
  return Status::ok();
}

Status GgufWriter::add_tensor_info(const std::string& name, GgmlType type, std::vector<int64_t> ne) {
  uint64_t nbytes = 0;
  LLMS_RETURN_IF_ERROR(check_tensor(name, type, ne, &nbytes));
  tensors_.push_back(Tensor{name, type, std::move(ne), {}, nbytes, true});
  return Status::ok();
}

Status GgufWriter::write(const std::string& path, const TensorFill& fill) const {
  // Effective alignment: the general.alignment key when present (must be u32, as ggml requires),
  // otherwise alignment_, written as a key when it differs from GGUF's default of 32.
  uint64_t align = alignment_;
  bool have_key = false;
  for (const auto& e : kv_) {
    if (e.key != kAlignmentKey) continue;
    uint32_t t = kInvalidTypeMarker, v = 0;
    if (e.bytes.size() >= 4) std::memcpy(&t, e.bytes.data(), 4);
    if (t != static_cast<uint32_t>(GgufType::UINT32) || e.bytes.size() != 8) {
      return make_error(Code::InvalidArgument, "general.alignment must be a uint32 value");
    }
    std::memcpy(&v, e.bytes.data() + 4, 4);
    align = v;
    have_key = true;
  }
  if (!is_pow2(align)) {
    return make_error(Code::InvalidArgument, "alignment " + std::to_string(align) + " is not a power of two");
  }
  for (const auto& e : kv_) {
    uint32_t t = kInvalidTypeMarker;
    if (e.bytes.size() >= 4) std::memcpy(&t, e.bytes.data(), 4);
    if (t == kInvalidTypeMarker || e.key.empty()) {
      return make_error(Code::InvalidArgument, "metadata key '" + e.key + "' holds a value that cannot be encoded");
    }
  }

  // Header, metadata and tensor infos.
  std::vector<uint8_t> head;
  head.insert(head.end(), {'G', 'G', 'U', 'F'});
  put_raw<uint32_t>(head, kGgufVersion);
  put_raw<uint64_t>(head, tensors_.size());
  const bool add_align_key = !have_key && align != 32;
  put_raw<uint64_t>(head, kv_.size() + (add_align_key ? 1 : 0));
  for (const auto& e : kv_) {
    put_string(head, e.key);
    head.insert(head.end(), e.bytes.begin(), e.bytes.end());
  }
  if (add_align_key) {
    put_string(head, kAlignmentKey);
    put_raw<uint32_t>(head, static_cast<uint32_t>(GgufType::UINT32));
    put_raw<uint32_t>(head, static_cast<uint32_t>(align));
  }
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    put_string(head, t.name);
    put_raw<uint32_t>(head, static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) put_raw<int64_t>(head, d);
    put_raw<uint32_t>(head, static_cast<uint32_t>(t.type));
    put_raw<uint64_t>(head, offset);
    offset += pad_to(t.nbytes, align);
  }
  head.resize(pad_to(head.size(), align), 0);

  // Write to a sibling temp file, then rename over the target.
  static std::atomic<uint64_t> counter{0};
  const std::string tmp =
      path + ".tmp-" + std::to_string(os::process_id()) + "-" + std::to_string(counter.fetch_add(1));
  FileCloser fc;
  fc.f = os::fopen_utf8(tmp, "wb");
  if (!fc.f) {
    const int e = errno;
    return make_error(Code::Io, "cannot create '" + tmp + "' (writing '" + path + "'): " + errno_text(e));
  }
  auto fclose_and_remove = [&] {
    if (fc.f) {
      std::fclose(fc.f);
      fc.f = nullptr;
    }
    os::remove_file(tmp);
  };
  auto fail = [&](const std::string& what, int e) {
    fclose_and_remove();
    return make_error(Code::Io, what + " '" + path + "': " + errno_text(e));
  };
  auto put_bytes = [&](const uint8_t* p, size_t n) {
    while (n > 0) {
      const size_t chunk = n < (size_t(64) << 20) ? n : (size_t(64) << 20);
      if (std::fwrite(p, 1, chunk, fc.f) != chunk) return false;
      p += chunk;
      n -= chunk;
    }
    return true;
  };
  static const uint8_t zeros[256] = {};
  auto put_zeros = [&](size_t n) {
    while (n > 0) {
      const size_t chunk = n < sizeof(zeros) ? n : sizeof(zeros);
      if (std::fwrite(zeros, 1, chunk, fc.f) != chunk) return false;
      n -= chunk;
    }
    return true;
  };
  if (!put_bytes(head.data(), head.size())) return fail("write failed for", errno);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Tensor& t = tensors_[i];
    if (t.streamed) {
      if (!fill) {
        fclose_and_remove();
        return make_error(Code::InvalidArgument, "tensor '" + t.name + "' has no data and write was given no fill");
      }
      uint64_t put_n = 0;
      int write_errno = 0;
      const ByteSink put = [&](const uint8_t* p, size_t n) {
        put_n += n;
        if (put_n > t.nbytes) return false;  // never write past the tensor's slot
        if (!put_bytes(p, n)) {
          write_errno = errno;
          return false;
        }
        return true;
      };
      Status s = fill(i, put);
      if (write_errno != 0) return fail("write failed for", write_errno);
      if (!s) {
        fclose_and_remove();
        return s;
      }
      if (put_n != t.nbytes) {
        fclose_and_remove();
        return make_error(Code::Internal, "tensor '" + t.name + "': " + std::to_string(put_n) + " bytes produced, " +
                                              std::to_string(t.nbytes) + " expected");
      }
    } else if (!put_bytes(t.data.data(), t.data.size())) {
      return fail("write failed for", errno);
    }
    if (!put_zeros(pad_to(t.nbytes, align) - t.nbytes)) return fail("write failed for", errno);
  }
  if (const int e = os::flush_to_disk(fc.f); e != 0) return fail("write or sync failed for", e);
  const int rc = std::fclose(fc.f);
  fc.f = nullptr;
  if (rc != 0) return fail("close failed for", errno);
  if (const int e = os::replace_file(tmp, path); e != 0) return fail("cannot rename temp file to", e);
  return Status::ok();
}

}  // namespace llmserve
