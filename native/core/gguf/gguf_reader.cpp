// GGUF reader: mmap + a bounds-checked cursor. Every count/length read from the file is checked
// against the bytes that remain before it is used to size anything, so a corrupt or truncated
// file yields a Status instead of a huge allocation or an out-of-bounds read.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "gguf.h"

namespace llmserve {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxDims = 4;
constexpr int kMaxNesting = 8;

class Cursor {
 public:
  Cursor(const uint8_t* p, size_t n) : base_(p), size_(n) {}
  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  Status need(size_t n, const char* what) const {
    if (n > remaining())
      return make_error(Code::GgufTruncated,
                        std::string("GGUF file is truncated: needed ") + std::to_string(n) +
                            " bytes for " + what + " at offset " + std::to_string(pos_) +
                            " but only " + std::to_string(remaining()) +
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
  Status read_string(std::string_view* out, const char* what) {
    uint64_t len = 0;
    LLMS_RETURN_IF_ERROR(read(&len, what));
    LLMS_RETURN_IF_ERROR(need(len, what));
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

Status corrupt(const std::string& msg) {
  return make_error(Code::GgufCorrupt, "GGUF file is corrupt: " + msg +
                                           ". Re-download or re-convert the model.");
}

Status read_value(Cursor& c, GgufType type, GgufValue* v, int depth, const std::string& key);

Status read_scalar(Cursor& c, GgufType type, GgufValue* v) {
  v->type = type;
  switch (type) {
    case GgufType::UINT8: { uint8_t x; LLMS_RETURN_IF_ERROR(c.read(&x, "u8 value")); v->u = x; v->i = x; return Status::ok(); }
    case GgufType::INT8: { int8_t x; LLMS_RETURN_IF_ERROR(c.read(&x, "i8 value")); v->i = x; v->u = (uint64_t)x; return Status::ok(); }
    case GgufType::UINT16: { uint16_t x; LLMS_RETURN_IF_ERROR(c.read(&x, "u16 value")); v->u = x; v->i = x; return Status::ok(); }
    case GgufType::INT16: { int16_t x; LLMS_RETURN_IF_ERROR(c.read(&x, "i16 value")); v->i = x; v->u = (uint64_t)x; return Status::ok(); }
    case GgufType::UINT32: { uint32_t x; LLMS_RETURN_IF_ERROR(c.read(&x, "u32 value")); v->u = x; v->i = x; return Status::ok(); }
    case GgufType::INT32: { int32_t x; LLMS_RETURN_IF_ERROR(c.read(&x, "i32 value")); v->i = x; v->u = (uint64_t)x; return Status::ok(); }
    case GgufType::UINT64: { uint64_t x; LLMS_RETURN_IF_ERROR(c.read(&x, "u64 value")); v->u = x; v->i = (int64_t)x; return Status::ok(); }
    case GgufType::INT64: { int64_t x; LLMS_RETURN_IF_ERROR(c.read(&x, "i64 value")); v->i = x; v->u = (uint64_t)x; return Status::ok(); }
    case GgufType::FLOAT32: { float x; LLMS_RETURN_IF_ERROR(c.read(&x, "f32 value")); v->f = x; return Status::ok(); }
    case GgufType::FLOAT64: { double x; LLMS_RETURN_IF_ERROR(c.read(&x, "f64 value")); v->f = x; return Status::ok(); }
    case GgufType::BOOL: {
      uint8_t x; LLMS_RETURN_IF_ERROR(c.read(&x, "bool value"));
      if (x > 1) return corrupt("bool value " + std::to_string(x) + " is neither 0 nor 1");
      v->u = x; v->i = x; return Status::ok();
    }
    case GgufType::STRING: return c.read_string(&v->s, "string value");
    default: return corrupt("unknown value type " + std::to_string((uint32_t)type));
  }
}

Status read_value(Cursor& c, GgufType type, GgufValue* v, int depth, const std::string& key) {
  if (type != GgufType::ARRAY) return read_scalar(c, type, v);
  if (depth >= kMaxNesting) return corrupt("arrays nested too deeply in '" + key + "'");
  v->type = GgufType::ARRAY;
  uint32_t et = 0;
  LLMS_RETURN_IF_ERROR(c.read(&et, "array element type"));
  if (et > (uint32_t)GgufType::FLOAT64) return corrupt("array '" + key + "' has unknown element type " + std::to_string(et));
  v->arr_type = (GgufType)et;
  LLMS_RETURN_IF_ERROR(c.read(&v->arr_len, "array length"));
  size_t es = gguf_scalar_size(v->arr_type);
  if (es > 0) {
    // Overflow-safe: compare the count against what remains, not count * size.
    if (v->arr_len > c.remaining() / es) return c.need(c.remaining() + 1, ("array '" + key + "'").c_str());
    v->arr_data = c.here();
    c.skip(v->arr_len * es);
    if (v->arr_type == GgufType::BOOL)
      for (uint64_t k = 0; k < v->arr_len; ++k)
        if (v->arr_data[k] > 1) return corrupt("bool array '" + key + "' holds a value other than 0/1");
    return Status::ok();
  }
  // Each string needs at least 8 bytes (its length), each nested array at least 12.
  size_t min_elem = v->arr_type == GgufType::STRING ? 8 : 12;
  if (v->arr_len > c.remaining() / min_elem) return c.need(c.remaining() + 1, ("array '" + key + "'").c_str());
  if (v->arr_type == GgufType::STRING) {
    v->arr_str.reserve(v->arr_len);
    for (uint64_t k = 0; k < v->arr_len; ++k) {
      std::string_view s;
      LLMS_RETURN_IF_ERROR(c.read_string(&s, "string array element"));
      v->arr_str.push_back(s);
    }
  } else {
    v->arr_nested.resize(v->arr_len);
    for (uint64_t k = 0; k < v->arr_len; ++k)
      LLMS_RETURN_IF_ERROR(read_value(c, GgufType::ARRAY, &v->arr_nested[k], depth + 1, key));
  }
  return Status::ok();
}

}  // namespace

const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::UINT8: return "u8"; case GgufType::INT8: return "i8";
    case GgufType::UINT16: return "u16"; case GgufType::INT16: return "i16";
    case GgufType::UINT32: return "u32"; case GgufType::INT32: return "i32";
    case GgufType::FLOAT32: return "f32"; case GgufType::BOOL: return "bool";
    case GgufType::STRING: return "string"; case GgufType::ARRAY: return "array";
    case GgufType::UINT64: return "u64"; case GgufType::INT64: return "i64";
    case GgufType::FLOAT64: return "f64";
  }
  return "unknown";
}

size_t gguf_scalar_size(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::BOOL: return 1;
    case GgufType::UINT16: case GgufType::INT16: return 2;
    case GgufType::UINT32: case GgufType::INT32: case GgufType::FLOAT32: return 4;
    case GgufType::UINT64: case GgufType::INT64: case GgufType::FLOAT64: return 8;
    default: return 0;
  }
}

bool GgufValue::is_int() const {
  switch (type) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::UINT16: case GgufType::INT16:
    case GgufType::UINT32: case GgufType::INT32: case GgufType::UINT64: case GgufType::INT64:
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
    case GgufType::UINT8: case GgufType::BOOL: return *p;
    case GgufType::INT8: return (int8_t)*p;
    case GgufType::UINT16: { uint16_t x; std::memcpy(&x, p, 2); return x; }
    case GgufType::INT16: { int16_t x; std::memcpy(&x, p, 2); return x; }
    case GgufType::UINT32: { uint32_t x; std::memcpy(&x, p, 4); return x; }
    case GgufType::INT32: { int32_t x; std::memcpy(&x, p, 4); return x; }
    case GgufType::UINT64: { uint64_t x; std::memcpy(&x, p, 8); return (double)x; }
    case GgufType::INT64: { int64_t x; std::memcpy(&x, p, 8); return (double)x; }
    case GgufType::FLOAT32: { float x; std::memcpy(&x, p, 4); *is_float = true; return x; }
    case GgufType::FLOAT64: { double x; std::memcpy(&x, p, 8); *is_float = true; return x; }
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
  if (arr_type == GgufType::INT64) { int64_t x; std::memcpy(&x, p, 8); return x; }
  if (arr_type == GgufType::UINT64) { uint64_t x; std::memcpy(&x, p, 8); return (int64_t)x; }
  bool fl;
  return saturating_int(load_elem(arr_type, p, &fl));
}

GgufFile::~GgufFile() {
  if (mapped_ && base_) munmap(const_cast<uint8_t*>(base_), size_);
}

Status GgufFile::open(const std::string& path, std::unique_ptr<GgufFile>* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT)
      return make_error(Code::FileNotFound, "Model file not found: '" + path + "'. Check the path (it is resolved from the current directory).");
    return make_error(Code::Io, "Cannot open '" + path + "': " + std::strerror(e));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return make_error(Code::Io, "'" + path + "' is not a regular file; pass the path of a .gguf model file.");
  }
  size_t size = (size_t)st.st_size;
  if (size < 8) {
    ::close(fd);
    return make_error(Code::NotGguf, "'" + path + "' is not a GGUF file (only " + std::to_string(size) + " bytes). llmserve loads llama.cpp GGUF models.");
  }
  void* p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return make_error(Code::Io, "Cannot map '" + path + "' into memory: " + std::strerror(errno));
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->base_ = static_cast<const uint8_t*>(p);
  f->size_ = size;
  f->mapped_ = true;
  Status s = f->parse_all();
  if (!s) {
    s.message = "'" + path + "': " + s.message;
    return s;
  }
  *out = std::move(f);
  return Status::ok();
}

void GgufFile::release_pages(const uint8_t* p, size_t n) const {
  if (!mapped_ || p < base_ || p + n > base_ + size_) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + page - 1) & ~(page - 1);
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + n) & ~(page - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

Status GgufFile::parse(const uint8_t* data, size_t size, std::unique_ptr<GgufFile>* out) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->base_ = data;
  f->size_ = size;
  LLMS_RETURN_IF_ERROR(f->parse_all());
  *out = std::move(f);
  return Status::ok();
}

Status GgufFile::parse_all() {
  Cursor c(base_, size_);
  uint32_t magic = 0;
  if (size_ < 4) return make_error(Code::NotGguf, "not a GGUF file (too small). llmserve loads llama.cpp GGUF models.");
  LLMS_RETURN_IF_ERROR(c.read(&magic, "magic"));
  if (magic != kMagic)
    return make_error(Code::NotGguf, "not a GGUF file (bad magic). llmserve loads llama.cpp GGUF models; convert others with llama.cpp's convert_hf_to_gguf.py.");
  LLMS_RETURN_IF_ERROR(c.read(&version_, "version"));
  if (version_ != 2 && version_ != 3)
    return make_error(Code::UnsupportedVersion, "GGUF version " + std::to_string(version_) +
                                                    " is not supported (supported: 2, 3). Re-convert the model with a current llama.cpp.");
  uint64_t n_tensors = 0, n_kv = 0;
  LLMS_RETURN_IF_ERROR(c.read(&n_tensors, "tensor count"));
  LLMS_RETURN_IF_ERROR(c.read(&n_kv, "metadata count"));
  // A kv needs >= 8+4+1 bytes and a tensor info >= 8+4+4+8 bytes: reject counts the file cannot hold.
  if (n_kv > c.remaining() / 13) return c.need(c.remaining() + 1, "metadata entries");
  if (n_tensors > c.remaining() / 24) return c.need(c.remaining() + 1, "tensor infos");

  kv_.reserve(n_kv);
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string_view key;
    LLMS_RETURN_IF_ERROR(c.read_string(&key, "metadata key"));
    uint32_t t = 0;
    LLMS_RETURN_IF_ERROR(c.read(&t, "metadata value type"));
    if (t > (uint32_t)GgufType::FLOAT64) return corrupt("metadata '" + std::string(key) + "' has unknown type " + std::to_string(t));
    GgufValue v;
    LLMS_RETURN_IF_ERROR(read_value(c, (GgufType)t, &v, 0, std::string(key)));
    std::string ks(key);
    if (kv_index_.count(ks)) return corrupt("duplicate metadata key '" + ks + "'");
    kv_index_[ks] = kv_.size();
    kv_.emplace_back(std::move(ks), std::move(v));
  }

  if (const GgufValue* a = find("general.alignment")) {
    if (!a->is_int() || a->as_int() <= 0 || (a->as_int() & (a->as_int() - 1)) != 0 || a->as_int() > (1 << 20))
      return corrupt("general.alignment must be a power of two");
    alignment_ = (uint64_t)a->as_int();
  }

  tensors_.reserve(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo ti;
    std::string_view name;
    LLMS_RETURN_IF_ERROR(c.read_string(&name, "tensor name"));
    ti.name = std::string(name);
    LLMS_RETURN_IF_ERROR(c.read(&ti.n_dims, "tensor dimension count"));
    if (ti.n_dims == 0 || ti.n_dims > kMaxDims)
      return corrupt("tensor '" + ti.name + "' has " + std::to_string(ti.n_dims) + " dimensions (1..4 allowed)");
    for (uint32_t d = 0; d < ti.n_dims; ++d) {
      LLMS_RETURN_IF_ERROR(c.read(&ti.ne[d], "tensor shape"));
      if (ti.ne[d] <= 0) return make_error(Code::BadShape, "tensor '" + ti.name + "' has a non-positive dimension " + std::to_string(ti.ne[d]));
    }
    uint32_t type = 0;
    LLMS_RETURN_IF_ERROR(c.read(&type, "tensor type"));
    LLMS_RETURN_IF_ERROR(c.read(&ti.offset, "tensor offset"));
    if (type >= kGgmlTypeCount || !type_traits(type).known)
      return make_error(Code::UnsupportedType, "tensor '" + ti.name + "' has unknown type id " + std::to_string(type) + "; the file is corrupt or from a newer llama.cpp");
    ti.type = (GgmlType)type;
    const TypeTraits& tt = type_traits(type);
    // Element count without overflow: each dim is > 0; cap the product at 2^50.
    long double ne_total = 1;
    for (int d = 0; d < 4; ++d) ne_total *= (long double)ti.ne[d];
    if (ne_total > (long double)(1ULL << 50))
      return make_error(Code::BadShape, "tensor '" + ti.name + "' has an absurd shape (more than 2^50 elements)");
    if (ti.ne[0] % tt.block_size != 0)
      return make_error(Code::BadShape, "tensor '" + ti.name + "' row length " + std::to_string(ti.ne[0]) +
                                            " is not a multiple of the " + tt.name + " block size " + std::to_string(tt.block_size));
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
      return make_error(Code::GgufTruncated,
                        "tensor '" + ti.name + "' (" + std::to_string(ti.nbytes) + " bytes at offset " + std::to_string(start) +
                            ") lies outside the file (" + std::to_string(size_) + " bytes). The file is truncated; download it again.");
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
  if (!v->is_float() && !v->is_int()) return corrupt("metadata '" + key + "' should be a number but is " + gguf_type_name(v->type));
  *out = v->as_double();
  return Status::ok();
}

Status GgufFile::get_string(const std::string& key, std::string* out, bool* found) const {
  const GgufValue* v = find(key);
  *found = v != nullptr;
  if (!v) return Status::ok();
  if (v->type != GgufType::STRING) return corrupt("metadata '" + key + "' should be a string but is " + gguf_type_name(v->type));
  *out = std::string(v->s);
  return Status::ok();
}

}  // namespace llmserve
