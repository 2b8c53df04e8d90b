#include "safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

#include "json.h"

namespace llmserve {

namespace {

// Element sizes of the dtypes of the safetensors format (safetensors/src/tensor.rs Dtype).
size_t dtype_bytes(const std::string& d) {
  static const std::pair<const char*, size_t> kTypes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
      {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},     {"F64", 8},     {"I64", 8}, {"U64", 8},
  };
  for (auto& [n, b] : kTypes)
    if (d == n) return b;
  return 0;
}

}  // namespace

SafetensorsFile::~SafetensorsFile() = default;

Status SafetensorsFile::open(const std::string& path, std::unique_ptr<SafetensorsFile>* out) {
  if (path.find('\0') != std::string::npos)
    return make_error(Code::InvalidArgument, "the adapter path contains a NUL character; pass the file path exactly");
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  std::string why;
  switch (os::MappedFile::open(path, &f->map_, &why)) {
    case os::OpenResult::Ok: break;
    case os::OpenResult::NotFound: return make_error(Code::FileNotFound, "Adapter weights not found: '" + path + "'.");
    case os::OpenResult::NotRegular:
      return make_error(Code::Io, "'" + path + "' is not a regular file; pass a .safetensors file.");
    default: return make_error(Code::Io, "Cannot open or map '" + path + "': " + why);
  }
  f->base_ = f->map_.data();
  f->size_ = f->map_.size();
  LLMS_RETURN_IF_ERROR(f->parse_all(path));
  *out = std::move(f);
  return Status::ok();
}

Status SafetensorsFile::parse(const uint8_t* data, size_t size, const std::string& name,
                              std::unique_ptr<SafetensorsFile>* out) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->base_ = data;
  f->size_ = size;
  LLMS_RETURN_IF_ERROR(f->parse_all(name));
  *out = std::move(f);
  return Status::ok();
}

Status SafetensorsFile::parse_all(const std::string& name) {
  const std::string where = "safetensors file '" + name + "'";
  auto corrupt = [&](const std::string& why) {
    return make_error(Code::InvalidArgument,
                      where + " is corrupt: " + why + ". Download it again or re-save it with safetensors' save_file.");
  };
  if (size_ < 8) return corrupt("it has " + std::to_string(size_) + " bytes, fewer than the 8-byte header length");
  uint64_t n = 0;
  std::memcpy(&n, base_, 8);  // little-endian, as every platform llmserve builds for
  if (n > size_ - 8)
    return corrupt("the header length is " + std::to_string(n) + " bytes but only " + std::to_string(size_ - 8) +
                   " bytes follow it (truncated, or not a safetensors file)");
  if (n > kMaxHeaderBytes)
    return corrupt("the header length is " + std::to_string(n) + " bytes, over llmserve's limit of " +
                   std::to_string(kMaxHeaderBytes));
  if (n < 2 || base_[8] != '{') return corrupt("the header is not a JSON object");
  JsonValue h;
  LLMS_RETURN_IF_ERROR(parse_json(std::string_view(reinterpret_cast<const char*>(base_ + 8), static_cast<size_t>(n)),
                                  where + "'s header", &h));
  if (h.kind != JsonValue::Kind::Object) return corrupt("the header is not a JSON object");
  const uint8_t* data = base_ + 8 + n;
  const uint64_t data_size = size_ - 8 - n;

  tensors_.reserve(h.members.size());
  for (const auto& [key, v] : h.members) {
    if (key == "__metadata__") {
      if (v.kind != JsonValue::Kind::Object) return corrupt("__metadata__ is " + std::string(v.kind_name()));
      for (const auto& [mk, mv] : v.members) {
        if (mv.kind != JsonValue::Kind::String)
          return corrupt("__metadata__ value '" + mk + "' is " + mv.kind_name() + ", not a string");
        metadata_.emplace_back(mk, mv.str);
      }
      continue;
    }
    const std::string tn = "tensor '" + key + "'";
    if (v.kind != JsonValue::Kind::Object) return corrupt(tn + " is " + std::string(v.kind_name()) + ", not an object");
    const JsonValue* dt = v.get("dtype");
    const JsonValue* sh = v.get("shape");
    const JsonValue* off = v.get("data_offsets");
    if (!dt || dt->kind != JsonValue::Kind::String) return corrupt(tn + " has no string dtype");
    if (!sh || sh->kind != JsonValue::Kind::Array) return corrupt(tn + " has no shape array");
    if (!off || off->kind != JsonValue::Kind::Array || off->items.size() != 2 || !off->items[0].is_uint ||
        !off->items[1].is_uint)
      return corrupt(tn + " has no data_offsets [begin, end] of two non-negative integers");
    SafetensorsTensor t;
    t.name = key;
    t.dtype = dt->str;
    t.elem_bytes = dtype_bytes(t.dtype);
    if (t.elem_bytes == 0)
      return make_error(Code::UnsupportedType, where + ": tensor '" + key + "' has dtype '" + t.dtype +
                                                   "', which llmserve does not read (LoRA weights: F32, F16, BF16)");
    if (sh->items.size() > kMaxDims)
      return corrupt(tn + " has " + std::to_string(sh->items.size()) + " dimensions (at most " +
                     std::to_string(kMaxDims) + ")");
    // Element count with overflow checks: no product may pass the data section's size.
    uint64_t count = 1;
    for (const JsonValue& d : sh->items) {
      if (!d.is_uint) return corrupt(tn + " has a shape entry that is not a non-negative integer");
      if (d.uint > data_size || (d.uint != 0 && count > data_size / d.uint))
        return corrupt(tn + "'s shape holds more elements than the file has bytes");
      count *= d.uint;
      t.shape.push_back(static_cast<int64_t>(d.uint));
    }
    t.begin = off->items[0].uint;
    t.end = off->items[1].uint;
    if (t.end < t.begin || t.end > data_size)
      return corrupt(tn + " has data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                     "] outside the data section of " + std::to_string(data_size) + " bytes");
    if (count > data_size / t.elem_bytes || count * t.elem_bytes != t.end - t.begin)
      return corrupt(tn + " has " + std::to_string(t.end - t.begin) + " bytes of data but its shape and dtype " +
                     t.dtype + " need " + std::to_string(count) + " x " + std::to_string(t.elem_bytes));
    t.data = data + t.begin;
    tensors_.push_back(std::move(t));
  }
  // The byte ranges must tile the data section exactly (safetensors' own validation): no tensor
  // shares bytes with another, and no bytes are unaccounted for.
  std::vector<const SafetensorsTensor*> order;
  order.reserve(tensors_.size());
  for (const auto& t : tensors_) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const SafetensorsTensor* a, const SafetensorsTensor* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t at = 0;
  for (const SafetensorsTensor* t : order) {
    if (t->begin != at)
      return corrupt("tensor '" + t->name + "' starts at byte " + std::to_string(t->begin) + " of the data section, " +
                     (t->begin < at ? "overlapping the tensor before it" : "leaving a gap") + " (expected " +
                     std::to_string(at) + ")");
    at = t->end;
  }
  if (at != data_size)
    return corrupt("the tensors cover " + std::to_string(at) + " bytes of a data section of " +
                   std::to_string(data_size) + " bytes");
  return Status::ok();
}

}  // namespace llmserve
