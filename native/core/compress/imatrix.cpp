// load_imatrix: llama.cpp's two importance-matrix formats (imatrix.h), read defensively. The GGUF
// form goes through GgufFile (mmap, its own caps and truncation checks); the legacy form is read
// into memory and parsed with a cursor that checks every length against the bytes left.
#include "imatrix.h"

#include <cmath>
#include <cstring>
#include <memory>

#include "../gguf/gguf.h"
#include "../os/os.h"

namespace llmserve {
namespace {

// Largest legacy file read into memory (real ones are a few MiB; the caps bound the rest).
constexpr uint64_t kMaxLegacyBytes = uint64_t(2) << 30;

Status bad(const std::string& path, const std::string& what) {
  return make_error(Code::BadImatrix, "importance matrix '" + path + "': " + what +
                                          "; recompute it with llama.cpp's llama-imatrix for this model");
}

// Every weight finite (llama-quantize refuses a non-finite one too, at quantize time).
Status check_finite(const std::string& path, const std::string& name, const std::vector<float>& v) {
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      return bad(path, "entry '" + name + "' has a non-finite value (NaN or infinity) at column " + std::to_string(i));
  return Status::ok();
}

class Cursor {
 public:
  Cursor(const std::vector<uint8_t>& b) : b_(b) {}
  uint64_t left() const { return b_.size() - pos_; }
  bool i32(int32_t* v) { return bytes(v, 4); }
  bool bytes(void* dst, uint64_t n) {
    if (n > left()) return false;
    std::memcpy(dst, b_.data() + pos_, static_cast<size_t>(n));
    pos_ += n;
    return true;
  }

 private:
  const std::vector<uint8_t>& b_;
  uint64_t pos_ = 0;
};

Status load_legacy(const std::string& path, const std::vector<uint8_t>& buf, const ImatrixLimits& lim, Imatrix* out) {
  Cursor c(buf);
  int32_t n_entries = 0;
  if (!c.i32(&n_entries) || n_entries < 1) return bad(path, "no entries (is it an imatrix file?)");
  if (static_cast<uint64_t>(n_entries) > lim.max_entries)
    return bad(path, std::to_string(n_entries) + " entries, over the cap of " + std::to_string(lim.max_entries));
  uint64_t total = 0;
  for (int32_t i = 0; i < n_entries; ++i) {
    const std::string at = "entry " + std::to_string(i + 1) + " of " + std::to_string(n_entries);
    int32_t len = 0;
    if (!c.i32(&len)) return bad(path, "truncated at the name length of " + at);
    if (len < 0 || static_cast<uint64_t>(len) > lim.max_name_bytes)
      return bad(path, at + " has a name length of " + std::to_string(len) + " (cap " +
                           std::to_string(lim.max_name_bytes) + ")");
    std::string name(static_cast<size_t>(len), '\0');
    if (!c.bytes(name.data(), static_cast<uint64_t>(len))) return bad(path, "truncated in the name of " + at);
    // llama.cpp reads the name as a C string: it ends at a NUL.
    name.resize(std::strlen(name.c_str()));
    int32_t ncall = 0, nval = 0;
    if (!c.i32(&ncall) || !c.i32(&nval)) return bad(path, "truncated after the name of '" + name + "'");
    if (nval < 1) return bad(path, "entry '" + name + "' has " + std::to_string(nval) + " values");
    total += static_cast<uint64_t>(nval);
    if (total > lim.max_values)
      return bad(path, "more than " + std::to_string(lim.max_values) + " values in all (the cap)");
    if (static_cast<uint64_t>(nval) * 4 > c.left())
      return bad(path, "truncated: entry '" + name + "' promises " + std::to_string(nval) + " values");
    std::vector<float> v(static_cast<size_t>(nval));
    c.bytes(v.data(), static_cast<uint64_t>(nval) * 4);
    // llama-quantize: the file holds mean * ncall; divide (float by the int64 count) when positive.
    if (ncall > 0)
      for (float& x : v) x = x / static_cast<float>(static_cast<int64_t>(ncall));
    LLMS_RETURN_IF_ERROR(check_finite(path, name, v));
    out->entries[name] = std::move(v);  // a repeated name: the last one wins, as in llama.cpp
  }
  // Optional trailer: chunk count, then the dataset name (ignored when cut short, as llama.cpp does).
  int32_t chunks = 0;
  if (c.i32(&chunks)) {
    out->chunk_count = chunks;
    int32_t len = 0;
    if (c.i32(&len) && len > 0 && static_cast<uint64_t>(len) <= lim.max_name_bytes) {
      std::string ds(static_cast<size_t>(len), '\0');
      if (c.bytes(ds.data(), static_cast<uint64_t>(len)))
        out->datasets.push_back(ds.substr(0, std::strlen(ds.c_str())));
    }
  }
  out->legacy = true;
  return Status::ok();
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::vector<float> f32_values(const GgufTensorInfo& t) {
  std::vector<float> v(static_cast<size_t>(t.n_elements()));
  std::memcpy(v.data(), t.data, v.size() * sizeof(float));  // the mapping need not be 4-aligned
  return v;
}

Status load_gguf(const std::string& path, const ImatrixLimits& lim, Imatrix* out) {
  std::unique_ptr<GgufFile> f;
  Status st = GgufFile::open(path, &f);
  if (!st) return bad(path, "not a readable GGUF file (" + st.message + ")");
  const GgufValue* datasets = f->find("imatrix.datasets");
  const GgufValue* chunk_count = f->find("imatrix.chunk_count");
  if (!datasets || !chunk_count || !f->find("imatrix.chunk_size"))
    return bad(path,
               "a GGUF file without imatrix.datasets, imatrix.chunk_count and imatrix.chunk_size "
               "(llama-quantize refuses it too; is it an imatrix?)");
  if (datasets->type == GgufType::ARRAY && datasets->arr_type == GgufType::STRING)
    for (std::string_view s : datasets->arr_str) out->datasets.emplace_back(s);
  if (chunk_count->is_int()) out->chunk_count = chunk_count->as_int();
  // NAME -> (sums, counts)
  std::map<std::string, std::pair<const GgufTensorInfo*, const GgufTensorInfo*>> pairs;
  for (const GgufTensorInfo& t : f->tensors()) {
    if (ends_with(t.name, ".in_sum2")) pairs[t.name.substr(0, t.name.size() - 8)].first = &t;
    else if (ends_with(t.name, ".counts")) pairs[t.name.substr(0, t.name.size() - 7)].second = &t;
  }
  if (pairs.empty()) return bad(path, "no NAME.in_sum2 / NAME.counts tensors");
  if (pairs.size() > lim.max_entries)
    return bad(path, std::to_string(pairs.size()) + " entries, over the cap of " + std::to_string(lim.max_entries));
  uint64_t total = 0;
  for (const auto& [name, sc] : pairs) {
    const GgufTensorInfo* sums = sc.first;
    const GgufTensorInfo* counts = sc.second;
    if (!sums || !counts)
      return bad(path, "entry '" + name + "' has " + (sums ? "sums but no counts" : "counts but no sums"));
    if (sums->type != GgmlType::F32 || counts->type != GgmlType::F32)
      return bad(path, "entry '" + name + "': sums and counts must be F32 tensors");
    const int64_t nval = sums->n_elements(), ncounts = counts->n_elements();
    if (nval < 1 || ncounts < 1 || nval % ncounts != 0)
      return bad(path, "entry '" + name + "' has " + std::to_string(nval) + " sums for " + std::to_string(ncounts) +
                           " counts (expected a whole number of columns per count)");
    total += static_cast<uint64_t>(nval);
    if (total > lim.max_values)
      return bad(path, "more than " + std::to_string(lim.max_values) + " values in all (the cap)");
    const std::vector<float> s = f32_values(*sums), n = f32_values(*counts);
    const int64_t ne0 = nval / ncounts;
    std::vector<float> w(static_cast<size_t>(nval));
    for (int64_t j = 0; j < ncounts; ++j) {
      // llama.cpp rounds each count to an integer (lround) and divides by it as a float.
      if (!std::isfinite(n[j]) || n[j] < 0 || n[j] > 9.0e15f)
        return bad(path, "entry '" + name + "' has a token count of " + std::to_string(n[j]) +
                             " (expected a finite count from 0 to 9e15)");
      const float count = static_cast<float>(std::lround(n[j]));
      for (int64_t i = 0; i < ne0; ++i) w[j * ne0 + i] = count > 0.0f ? s[j * ne0 + i] / count : 1.0f;
    }
    LLMS_RETURN_IF_ERROR(check_finite(path, name, w));
    out->entries[name] = std::move(w);
  }
  return Status::ok();
}

}  // namespace

Status load_imatrix(const std::string& path, Imatrix* out, const ImatrixLimits& limits) {
  *out = Imatrix();
  os::MappedFile map;
  std::string why;
  switch (os::MappedFile::open(path, &map, &why)) {
    case os::OpenResult::Ok: break;
    case os::OpenResult::NotFound:
      return make_error(Code::FileNotFound, "importance matrix file not found: '" + path + "'");
    case os::OpenResult::NotRegular:
      return make_error(Code::Io, "importance matrix '" + path + "' is not a regular file");
    default: return make_error(Code::Io, "cannot open the importance matrix '" + path + "': " + why);
  }
  if (map.size() >= 4 && std::memcmp(map.data(), "GGUF", 4) == 0) return load_gguf(path, limits, out);
  if (static_cast<uint64_t>(map.size()) > kMaxLegacyBytes)
    return bad(path, "a legacy imatrix of " + std::to_string(map.size()) + " bytes, over the cap of " +
                         std::to_string(kMaxLegacyBytes));
  const std::vector<uint8_t> buf(map.data(), map.data() + map.size());
  return load_legacy(path, buf, limits, out);
}

}  // namespace llmserve
