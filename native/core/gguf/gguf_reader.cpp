// GGUF reader: mmap + a bounds-checked cursor. Every count/length read from the file is checked
// against the bytes that remain before it is used to size anything, so a corrupt or truncated
// file yields a Status instead of a huge allocation or an out-of-bounds read.

#include <cerrno>
#include <cstring>

#include "gguf.h"

namespace llmserve {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxDims = 4;

Status corrupt(const std::string& msg) {
  return make_error(Code::GgufCorrupt, "GGUF file is corrupt: " + msg + ". Re-download or re-convert the model.");
}

// ERR_GGUF_LIMIT: names what, its size, the limit and the knob that raises it.
Status limit(const std::string& what, uint64_t value, uint64_t max, const char* knob) {
  return make_error(Code::GgufLimit, what + " is " + std::to_string(value) + ", over the limit of " +
                                         std::to_string(max) + " (" + knob +
                                         "). No real model file comes near it, so the file is corrupt or "
                                         "crafted; if you trust it, raise the limit (readGguf option or GgufLimits).");
}

std::string quoted(std::string_view k) { return "'" + std::string(k) + "'"; }

class Cursor {
 public:
  Cursor(const uint8_t* p, size_t n) : base_(p), size_(n) {}
  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  Status need(uint64_t n, const std::string& what) const {
    if (n > remaining())
      return make_error(Code::GgufTruncated, "GGUF file is truncated: needed " + std::to_string(n) + " bytes for " +
                                                 what + " at offset " + std::to_string(pos_) + " but only " +
                                                 std::to_string(remaining()) +
                                                 " remain. The download may be incomplete; fetch the file again.");
    return Status::ok();
  }
  template <typename T>
  Status read(T* out, const char* what) {
    LLMS_RETURN_IF_ERROR(need(sizeof(T), what));
    std::memcpy(out, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::ok();
  }
  // A length-prefixed string: the length is checked against the bytes left (truncated), then
  // against max_len (limit; `knob` names it) before the view is made.
  Status read_string(std::string_view* out, const std::string& what, uint64_t max_len, const char* knob) {
    uint64_t len = 0;
    LLMS_RETURN_IF_ERROR(need(sizeof(len), "the length of " + what));
    std::memcpy(&len, base_ + pos_, sizeof(len));
    pos_ += sizeof(len);
    LLMS_RETURN_IF_ERROR(need(len, what));
    if (len > max_len) return limit("the length in bytes of " + what, len, max_len, knob);
    *out = std::string_view(reinterpret_cast<const char*>(base_ + pos_), len);
    pos_ += len;
    return Status::ok();
  }
  const uint8_t* here() const { return base_ + pos_; }
  void skip(size_t n) { pos_ += n; }

 private:
  const uint8_t* base_;
  size_t size_;
  size_t pos_ = 0;
};

// Parse state shared by all values of one file: the caps and what has been spent against them.
struct Budget {
  const GgufLimits& lim;
  uint64_t nested = 0;  // elements of arrays of arrays so far
  uint64_t bytes = 0;   // heap the parsed metadata holds so far
  Status spend(uint64_t n, const std::string& key) {
    bytes += n;
    if (bytes > lim.max_metadata_bytes)
      return limit("the memory the metadata needs (reached at key " + quoted(key) + ")", bytes, lim.max_metadata_bytes,
                   "max_metadata_bytes / readGguf maxMetadataBytes");
    return Status::ok();
  }
};

Status read_scalar(Cursor& c, GgufType type, GgufValue* v, const std::string& key, Budget& b) {
  v->type = type;
  switch (type) {
    case GgufType::UINT8: {
      uint8_t x;
      LLMS_RETURN_IF_ERROR(c.read(&x, "u8 value"));
      v->u = x;
      v->i = x;
      return Status::ok();
    }
    case GgufType::INT8: {
      int8_t x;
      LLMS_RETURN_IF_ERROR(c.read(&x, "i8 value"));
      v->i = x;
      v->u = (uint64_t)x;
      return Status::ok();
    }
    case GgufType::UINT16: {
      uint16_t x;
      LLMS_RETURN_IF_ERROR(c.read(&x, "u16 value"));
      v->u = x;
      v->i = x;
      return Status::ok();
    }
    case GgufType::INT16: {
      int16_t x;
      LLMS_RETURN_IF_ERROR(c.read(&x, "i16 value"));
      v->i = x;
      v->u = (uint64_t)x;
      return Status::ok();
    }
    case GgufType::UINT32: {
      uint32_t x;
      LLMS_RETURN_IF_ERROR(c.read(&x, "u32 value"));
      v->u = x;
      v->i = x;
      return Status::ok();
    }
    case GgufType::INT32: {
      int32_t x;
      LLMS_RETURN_IF_ERROR(c.read(&x, "i32 value"));
      v->i = x;
      v->u = (uint64_t)x;
      return Status::ok();
    }
    case GgufType::UINT64: {
      uint64_t x;
      LLMS_RETURN_IF_ERROR(c.read(&x, "u64 value"));
      v->u = x;
      v->i = (int64_t)x;
      return Status::ok();
    }
    case GgufType::INT64: {
      int64_t x;
      LLMS_RETURN_IF_ERROR(c.read(&x, "i64 value"));
      v->i = x;
      v->u = (uint64_t)x;
      return Status::ok();
    }
    case GgufType::FLOAT32: {
      float x;
      LLMS_RETURN_IF_ERROR(c.read(&x, "f32 value"));
      v->f = x;
      return Status::ok();
    }
    case GgufType::FLOAT64: {
      double x;
      LLMS_RETURN_IF_ERROR(c.read(&x, "f64 value"));
      v->f = x;
      return Status::ok();
    }
    case GgufType::BOOL: {
      uint8_t x;
      LLMS_RETURN_IF_ERROR(c.read(&x, "bool value"));
      if (x > 1) return corrupt("bool value " + std::to_string(x) + " of " + quoted(key) + " is neither 0 nor 1");
      v->u = x;
      v->i = x;
      return Status::ok();
    }
    case GgufType::STRING:
      return c.read_string(&v->s, "the string value of metadata " + quoted(key), b.lim.max_string_bytes,
                           "max_string_bytes / readGguf maxStringBytes");
    default: return corrupt("unknown value type " + std::to_string((uint32_t)type) + " in " + quoted(key));
  }
}

Status read_value(Cursor& c, GgufType type, GgufValue* v, int depth, const std::string& key, Budget& b) {
  if (type != GgufType::ARRAY) return read_scalar(c, type, v, key, b);
  if (depth >= b.lim.max_nesting)
    return limit("the array nesting depth of metadata " + quoted(key), (uint64_t)depth + 1, (uint64_t)b.lim.max_nesting,
                 "max_nesting");
  v->type = GgufType::ARRAY;
  uint32_t et = 0;
  LLMS_RETURN_IF_ERROR(c.read(&et, "array element type"));
  if (et > (uint32_t)GgufType::FLOAT64)
    return corrupt("array " + quoted(key) + " has unknown element type " + std::to_string(et));
  v->arr_type = (GgufType)et;
  LLMS_RETURN_IF_ERROR(c.read(&v->arr_len, "array length"));
  // Smallest encoding of one element: a scalar's size; a string's 8-byte length; a nested array's
  // 4-byte type + 8-byte length. The count is compared against what remains (overflow-safe:
  // count vs remaining / size, never count * size), then against the caps, before any allocation.
  size_t es = gguf_scalar_size(v->arr_type);
  size_t min_elem = es > 0 ? es : v->arr_type == GgufType::STRING ? 8 : 12;
  if (v->arr_len > c.remaining() / min_elem)
    return make_error(Code::GgufTruncated,
                      "GGUF file is truncated: array " + quoted(key) + " declares " + std::to_string(v->arr_len) +
                          " elements (at least " + std::to_string(min_elem) + " bytes each) but only " +
                          std::to_string(c.remaining()) + " bytes remain at offset " + std::to_string(c.pos()) +
                          ". The download may be incomplete; fetch the file again.");
  if (v->arr_len > b.lim.max_array_length)
    return limit("the length of metadata array " + quoted(key), v->arr_len, b.lim.max_array_length, "max_array_length");
  if (es > 0) {
    v->arr_data = c.here();
    c.skip(v->arr_len * es);
    if (v->arr_type == GgufType::BOOL)
      for (uint64_t k = 0; k < v->arr_len; ++k)
        if (v->arr_data[k] > 1) return corrupt("bool array " + quoted(key) + " holds a value other than 0/1");
    return Status::ok();
  }
  if (v->arr_type == GgufType::STRING) {
    LLMS_RETURN_IF_ERROR(b.spend(v->arr_len * sizeof(std::string_view), key));
    v->arr_str.reserve(v->arr_len);
    const std::string what = "an element of string array " + quoted(key);
    for (uint64_t k = 0; k < v->arr_len; ++k) {
      std::string_view s;
      LLMS_RETURN_IF_ERROR(
          c.read_string(&s, what, b.lim.max_string_bytes, "max_string_bytes / readGguf maxStringBytes"));
      v->arr_str.push_back(s);
    }
  } else {
    b.nested += v->arr_len;
    if (b.nested > b.lim.max_nested_elements)
      return limit("the number of nested-array elements (reached in metadata " + quoted(key) + ")", b.nested,
                   b.lim.max_nested_elements, "max_nested_elements");
    LLMS_RETURN_IF_ERROR(b.spend(v->arr_len * sizeof(GgufValue), key));
    v->arr_nested.resize(v->arr_len);
    for (uint64_t k = 0; k < v->arr_len; ++k)
      LLMS_RETURN_IF_ERROR(read_value(c, GgufType::ARRAY, &v->arr_nested[k], depth + 1, key, b));
  }
  return Status::ok();
}

}  // namespace

const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::UINT8: return "u8";
    case GgufType::INT8: return "i8";
    case GgufType::UINT16: return "u16";
    case GgufType::INT16: return "i16";
    case GgufType::UINT32: return "u32";
    case GgufType::INT32: return "i32";
    case GgufType::FLOAT32: return "f32";
    case GgufType::BOOL: return "bool";
    case GgufType::STRING: return "string";
    case GgufType::ARRAY: return "array";
    case GgufType::UINT64: return "u64";
    case GgufType::INT64: return "i64";
    case GgufType::FLOAT64: return "f64";
  }
  return "unknown";
}

size_t gguf_scalar_size(GgufType t) {
  switch (t) {
    case GgufType::UINT8:
    case GgufType::INT8:
    case GgufType::BOOL: return 1;
    case GgufType::UINT16:
    case GgufType::INT16: return 2;
    case GgufType::UINT32:
    case GgufType::INT32:
    case GgufType::FLOAT32: return 4;
    case GgufType::UINT64:
    case GgufType::INT64:
    case GgufType::FLOAT64: return 8;
    default: return 0;
  }
}

bool GgufValue::is_int() const {
  switch (type) {
    case GgufType::UINT8:
    case GgufType::INT8:
    case GgufType::UINT16:
    case GgufType::INT16:
    case GgufType::UINT32:
    case GgufType::INT32:
    case GgufType::UINT64:
    case GgufType::INT64:
    case GgufType::BOOL: return true;
    default: return false;
  }
}
// A double as int64, saturating (NaN -> 0): casting an out-of-range double is undefined behaviour
// (found by fuzz_gguf on a float array read with arr_int).
static int64_t saturating_int(double d) {
  if (!(d == d)) return 0;
  if (d >= 9223372036854775807.0) return INT64_MAX;
  if (d <= -9223372036854775808.0) return INT64_MIN;
  return (int64_t)d;
}
int64_t GgufValue::as_int() const { return is_float() ? saturating_int(f) : i; }
double GgufValue::as_double() const {
  if (is_float()) return f;
  if (type == GgufType::UINT64) return (double)u;
  return (double)i;
}

static double load_elem(GgufType t, const uint8_t* p, bool* is_float) {
  *is_float = false;
  switch (t) {
    case GgufType::UINT8:
    case GgufType::BOOL: return *p;
    case GgufType::INT8: return (int8_t)*p;
    case GgufType::UINT16: {
      uint16_t x;
      std::memcpy(&x, p, 2);
      return x;
    }
    case GgufType::INT16: {
      int16_t x;
      std::memcpy(&x, p, 2);
      return x;
    }
    case GgufType::UINT32: {
      uint32_t x;
      std::memcpy(&x, p, 4);
      return x;
    }
    case GgufType::INT32: {
      int32_t x;
      std::memcpy(&x, p, 4);
      return x;
    }
    case GgufType::UINT64: {
      uint64_t x;
      std::memcpy(&x, p, 8);
      return (double)x;
    }
    case GgufType::INT64: {
      int64_t x;
      std::memcpy(&x, p, 8);
      return (double)x;
    }
    case GgufType::FLOAT32: {
      float x;
      std::memcpy(&x, p, 4);
      *is_float = true;
      return x;
    }
    case GgufType::FLOAT64: {
      double x;
      std::memcpy(&x, p, 8);
      *is_float = true;
      return x;
    }
    default: return 0;
  }
}

double GgufValue::arr_double(uint64_t k) const {
  if (!arr_data || k >= arr_len) return 0;
  bool fl;
  return load_elem(arr_type, arr_data + k * gguf_scalar_size(arr_type), &fl);
}
int64_t GgufValue::arr_int(uint64_t k) const {
  if (!arr_data || k >= arr_len) return 0;
  const uint8_t* p = arr_data + k * gguf_scalar_size(arr_type);
  if (arr_type == GgufType::INT64) {
    int64_t x;
    std::memcpy(&x, p, 8);
    return x;
  }
  if (arr_type == GgufType::UINT64) {
    uint64_t x;
    std::memcpy(&x, p, 8);
    return (int64_t)x;
  }
  bool fl;
  return saturating_int(load_elem(arr_type, p, &fl));
}

GgufFile::~GgufFile() = default;

Status GgufFile::open(const std::string& path, std::unique_ptr<GgufFile>* out, const GgufLimits& limits) {
  if (path.find('\0') != std::string::npos)
    return make_error(Code::InvalidArgument, "the model path contains a NUL character; pass the file path exactly");
  std::unique_ptr<GgufFile> f(new GgufFile());
  std::string why;
  switch (os::MappedFile::open(path, &f->map_, &why)) {
    case os::OpenResult::Ok: break;
    case os::OpenResult::NotFound:
      return make_error(Code::FileNotFound, "Model file not found: '" + path +
                                                "'. Check the path (it is resolved from the current directory).");
    case os::OpenResult::NotRegular:
      return make_error(Code::Io, "'" + path + "' is not a regular file; pass the path of a .gguf model file.");
    default: return make_error(Code::Io, "Cannot open or map '" + path + "': " + why);
  }
  const size_t size = f->map_.size();
  if (size < 8) {
    return make_error(Code::NotGguf, "'" + path + "' is not a GGUF file (only " + std::to_string(size) +
                                         " bytes). llmserve loads llama.cpp GGUF models.");
  }
  f->base_ = f->map_.data();
  f->size_ = size;
  Status s = f->parse_all(limits);
  if (!s) {
    s.message = "'" + path + "': " + s.message;
    return s;
  }
  *out = std::move(f);
  return Status::ok();
}

void GgufFile::release_pages(const uint8_t* p, size_t n) const { map_.release(p, n); }

Status GgufFile::parse(const uint8_t* data, size_t size, std::unique_ptr<GgufFile>* out, const GgufLimits& limits) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->base_ = data;
  f->size_ = size;
  LLMS_RETURN_IF_ERROR(f->parse_all(limits));
  *out = std::move(f);
  return Status::ok();
}

Status GgufFile::parse_all(const GgufLimits& lim) {
  Cursor c(base_, size_);
  Budget budget{lim};
  uint32_t magic = 0;
  if (size_ < 4) return make_error(Code::NotGguf, "not a GGUF file (too small). llmserve loads llama.cpp GGUF models.");
  LLMS_RETURN_IF_ERROR(c.read(&magic, "magic"));
  if (magic != kMagic)
    return make_error(Code::NotGguf,
                      "not a GGUF file (bad magic). llmserve loads llama.cpp GGUF models; convert others with "
                      "llama.cpp's convert_hf_to_gguf.py.");
  LLMS_RETURN_IF_ERROR(c.read(&version_, "version"));
  if (version_ != 2 && version_ != 3)
    return make_error(Code::UnsupportedVersion,
                      "GGUF version " + std::to_string(version_) +
                          " is not supported (supported: 2, 3). Re-convert the model with a current llama.cpp.");
  uint64_t n_tensors = 0, n_kv = 0;
  LLMS_RETURN_IF_ERROR(c.read(&n_tensors, "tensor count"));
  LLMS_RETURN_IF_ERROR(c.read(&n_kv, "metadata count"));
  // A kv needs >= 8+4+1 bytes and a tensor info >= 8+4+8+4+8 bytes: reject counts the file cannot
  // hold (truncated), then counts over the caps (limit), before reserving anything.
  auto count_check = [&](uint64_t n, uint64_t min_bytes, uint64_t max, const char* what, const char* knob) -> Status {
    if (n > c.remaining() / min_bytes)
      return make_error(Code::GgufTruncated, std::string("GGUF file is truncated or corrupt: the header declares ") +
                                                 std::to_string(n) + " " + what + " (at least " +
                                                 std::to_string(min_bytes) + " bytes each) but the file has only " +
                                                 std::to_string(c.remaining()) +
                                                 " bytes after the header. Fetch the file again.");
    if (n > max) return limit(std::string("the number of ") + what + " in the header", n, max, knob);
    return Status::ok();
  };
  LLMS_RETURN_IF_ERROR(count_check(n_kv, 13, lim.max_kv, "metadata entries", "max_kv"));
  LLMS_RETURN_IF_ERROR(count_check(n_tensors, 32, lim.max_tensors, "tensor infos", "max_tensors"));
  // Both lists must fit together too.
  if (n_kv * 13 + n_tensors * 32 > c.remaining())
    return c.need(n_kv * 13 + n_tensors * 32,
                  std::to_string(n_kv) + " metadata entries and " + std::to_string(n_tensors) + " tensor infos");

  constexpr uint64_t kEntryOverhead = sizeof(std::pair<std::string, GgufValue>) + 64;  // + index node
  LLMS_RETURN_IF_ERROR(budget.spend(n_kv * kEntryOverhead, "(all)"));
  kv_.reserve(n_kv);
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string_view key;
    LLMS_RETURN_IF_ERROR(
        c.read_string(&key, "metadata key #" + std::to_string(k), lim.max_name_bytes, "max_name_bytes"));
    LLMS_RETURN_IF_ERROR(budget.spend(key.size(), std::string(key)));
    uint32_t t = 0;
    LLMS_RETURN_IF_ERROR(c.read(&t, "metadata value type"));
    if (t > (uint32_t)GgufType::FLOAT64)
      return corrupt("metadata '" + std::string(key) + "' has unknown type " + std::to_string(t));
    GgufValue v;
    LLMS_RETURN_IF_ERROR(read_value(c, (GgufType)t, &v, 0, std::string(key), budget));
    std::string ks(key);
    if (kv_index_.count(ks)) return corrupt("duplicate metadata key '" + ks + "'");
    kv_index_[ks] = kv_.size();
    kv_.emplace_back(std::move(ks), std::move(v));
  }

  metadata_bytes_ = budget.bytes;

  if (const GgufValue* a = find("general.alignment")) {
    if (!a->is_int() || a->as_int() <= 0 || (a->as_int() & (a->as_int() - 1)) != 0 || a->as_int() > (1 << 20))
      return corrupt("general.alignment must be a power of two");
    alignment_ = (uint64_t)a->as_int();
  }

  tensors_.reserve(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo ti;
    std::string_view name;
    LLMS_RETURN_IF_ERROR(
        c.read_string(&name, "the name of tensor #" + std::to_string(k), lim.max_name_bytes, "max_name_bytes"));
    ti.name = std::string(name);
    LLMS_RETURN_IF_ERROR(c.read(&ti.n_dims, "tensor dimension count"));
    if (ti.n_dims == 0 || ti.n_dims > kMaxDims)
      return corrupt("tensor '" + ti.name + "' has " + std::to_string(ti.n_dims) + " dimensions (1..4 allowed)");
    for (uint32_t d = 0; d < ti.n_dims; ++d) {
      LLMS_RETURN_IF_ERROR(c.read(&ti.ne[d], "tensor shape"));
      if (ti.ne[d] <= 0)
        return make_error(Code::BadShape,
                          "tensor '" + ti.name + "' has a non-positive dimension " + std::to_string(ti.ne[d]));
    }
    uint32_t type = 0;
    LLMS_RETURN_IF_ERROR(c.read(&type, "tensor type"));
    LLMS_RETURN_IF_ERROR(c.read(&ti.offset, "tensor offset"));
    if (type >= kGgmlTypeCount || !type_traits(type).known)
      return make_error(Code::UnsupportedType, "tensor '" + ti.name + "' has unknown type id " + std::to_string(type) +
                                                   "; the file is corrupt or from a newer llama.cpp");
    ti.type = (GgmlType)type;
    const TypeTraits& tt = type_traits(type);
    // Element count without overflow: each dim is > 0; cap the product at 2^50.
    long double ne_total = 1;
    for (int d = 0; d < 4; ++d) ne_total *= (long double)ti.ne[d];
    if (ne_total > (long double)(1ULL << 50))
      return make_error(Code::BadShape, "tensor '" + ti.name + "' has an absurd shape (more than 2^50 elements)");
    if (ti.ne[0] % tt.block_size != 0)
      return make_error(Code::BadShape, "tensor '" + ti.name + "' row length " + std::to_string(ti.ne[0]) +
                                            " is not a multiple of the " + tt.name + " block size " +
                                            std::to_string(tt.block_size));
    ti.nbytes = row_size(ti.type, ti.ne[0]) * (uint64_t)(ti.ne[1] * ti.ne[2] * ti.ne[3]);
    if (ti.offset % alignment_ != 0) return corrupt("tensor '" + ti.name + "' offset is not aligned");
    if (tensor_index_.count(ti.name)) return corrupt("duplicate tensor '" + ti.name + "'");
    tensor_index_[ti.name] = tensors_.size();
    tensors_.push_back(std::move(ti));
  }

  data_offset_ = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
  for (auto& ti : tensors_) {
    uint64_t start = data_offset_ + ti.offset;
    if (start < ti.offset || start > size_ || ti.nbytes > size_ - start)
      return make_error(Code::GgufTruncated, "tensor '" + ti.name + "' (" + std::to_string(ti.nbytes) +
                                                 " bytes at offset " + std::to_string(start) +
                                                 ") lies outside the file (" + std::to_string(size_) +
                                                 " bytes). The file is truncated; download it again.");
    ti.data = base_ + start;
  }
  return Status::ok();
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Status GgufFile::get_int(const std::string& key, int64_t* out, bool* found) const {
  const GgufValue* v = find(key);
  *found = v != nullptr;
  if (!v) return Status::ok();
  if (!v->is_int()) return corrupt("metadata '" + key + "' should be an integer but is " + gguf_type_name(v->type));
  *out = v->as_int();
  return Status::ok();
}

Status GgufFile::get_float(const std::string& key, double* out, bool* found) const {
  const GgufValue* v = find(key);
  *found = v != nullptr;
  if (!v) return Status::ok();
  if (!v->is_float() && !v->is_int())
    return corrupt("metadata '" + key + "' should be a number but is " + gguf_type_name(v->type));
  *out = v->as_double();
  return Status::ok();
}

Status GgufFile::get_string(const std::string& key, std::string* out, bool* found) const {
  const GgufValue* v = find(key);
  *found = v != nullptr;
  if (!v) return Status::ok();
  if (v->type != GgufType::STRING)
    return corrupt("metadata '" + key + "' should be a string but is " + gguf_type_name(v->type));
  *out = std::string(v->s);
  return Status::ok();
}

}  // namespace llmserve
