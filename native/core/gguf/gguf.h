// GGUF (llama.cpp model file) reader over mmap and writer. Versions 2 and 3.
// The reader bounds-checks every length and offset against the file size; a bad file
// yields a Status (ERR_NOT_GGUF / ERR_GGUF_TRUNCATED / ERR_GGUF_CORRUPT ...), never a crash.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "../os/os.h"
#include "../quant/quant.h"
#include "../status.h"

namespace llmserve {

enum class GgufType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};
const char* gguf_type_name(GgufType t);
size_t gguf_scalar_size(GgufType t);  // 0 for STRING/ARRAY/unknown

// A metadata value. Scalars are decoded; arrays keep their element type and either point at the
// raw little-endian elements inside the mapping (numeric/bool) or hold views (strings) or nested values.
struct GgufValue {
  GgufType type = GgufType::UINT8;
  uint64_t u = 0;      // unsigned ints and bool
  int64_t i = 0;       // signed ints
  double f = 0;        // floats
  std::string_view s;  // STRING (points into the mapping)
  GgufType arr_type = GgufType::UINT8;
  uint64_t arr_len = 0;
  const uint8_t* arr_data = nullptr;      // numeric arrays: arr_len * gguf_scalar_size(arr_type) bytes
  std::vector<std::string_view> arr_str;  // string arrays
  std::vector<GgufValue> arr_nested;      // arrays of arrays

  bool is_int() const;
  bool is_float() const { return type == GgufType::FLOAT32 || type == GgufType::FLOAT64; }
  int64_t as_int() const;    // any integer/bool type
  double as_double() const;  // any numeric type
  // Element k of a numeric array as double / int64.
  double arr_double(uint64_t k) const;
  int64_t arr_int(uint64_t k) const;
};

// What a file may ask the reader to hold. Every count and length read from a file is checked against
// the bytes that remain (ERR_GGUF_TRUNCATED) and against these caps (ERR_GGUF_LIMIT, naming the key
// and the limit) before anything is sized from it. The defaults are far above any real model file
// (largest real metadata strings: a few MiB of tokenizer JSON / chat template; arrays: ~256k tokens)
// and far below what would exhaust memory or V8 (max string length ~2^29 characters).
struct GgufLimits {
  uint64_t max_string_bytes = uint64_t(64) << 20;    // one metadata string value
  uint64_t max_name_bytes = uint64_t(64) << 10;      // a metadata key or tensor name
  uint64_t max_array_length = uint64_t(1) << 24;     // elements of one metadata array
  uint64_t max_kv = uint64_t(1) << 16;               // metadata entries
  uint64_t max_tensors = uint64_t(1) << 20;          // tensor infos
  uint64_t max_nested_elements = uint64_t(1) << 16;  // elements of arrays of arrays, whole file
  int max_nesting = 8;                               // array-of-array depth
  // Heap the parsed metadata may take (entries, string-array views, nested values): bounds the
  // memory a small file can make the reader allocate.
  uint64_t max_metadata_bytes = uint64_t(512) << 20;
};

struct GgufTensorInfo {
  std::string name;
  uint32_t n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};  // ne[0] is the contiguous (row) dimension
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;  // relative to the data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // inside the mapping
  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
};

class GgufFile {
 public:
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  // Maps and parses the file. Tensor data is not touched (pages load lazily).
  static Status open(const std::string& path, std::unique_ptr<GgufFile>* out, const GgufLimits& limits = GgufLimits());
  // Parses an in-memory image (tests); the buffer must outlive the GgufFile.
  static Status parse(const uint8_t* data, size_t size, std::unique_ptr<GgufFile>* out,
                      const GgufLimits& limits = GgufLimits());

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  size_t file_size() const { return size_; }
  // Heap bytes the parsed metadata holds (what GgufLimits::max_metadata_bytes bounds).
  uint64_t metadata_bytes() const { return metadata_bytes_; }

  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(const std::string& key) const;
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;

  // Typed getters: return false if absent; Status error if present with a wrong type.
  Status get_int(const std::string& key, int64_t* out, bool* found) const;
  Status get_float(const std::string& key, double* out, bool* found) const;
  Status get_string(const std::string& key, std::string* out, bool* found) const;

  // Tells the kernel the mapped pages inside [p, p + n) are not needed now (they are re-read from
  // the file if touched again): for weights a faster copy replaced. No-op for parsed buffers.
  void release_pages(const uint8_t* p, size_t n) const;

 private:
  GgufFile() = default;
  Status parse_all(const GgufLimits& limits);

  os::MappedFile map_;  // empty for parsed buffers
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  uint64_t metadata_bytes_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

// Builds a GGUF v3 file in memory and writes it. Used by synth and (later) quantize.
class GgufWriter {
 public:
  void set_u32(const std::string& key, uint32_t v);
  void set_i32(const std::string& key, int32_t v);
  void set_u64(const std::string& key, uint64_t v);
  void set_f32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_str(const std::string& key, const std::string& v);
  void set_arr_str(const std::string& key, const std::vector<std::string>& v);
  void set_arr_f32(const std::string& key, const std::vector<float>& v);
  void set_arr_i32(const std::string& key, const std::vector<int32_t>& v);
  // Copies a value read from another file (any type, arrays included).
  void set_value(const std::string& key, const GgufValue& v);
  // data: row_size(type, ne[0]) * ne[1] * ne[2] * ne[3] bytes.
  Status add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> ne, std::vector<uint8_t> data);
  // A tensor whose bytes are produced while the file is written (write's `fill`), so a converter
  // (quantize) never holds a whole model's output in memory. Same checks as add_tensor.
  Status add_tensor_info(const std::string& name, GgmlType type, std::vector<int64_t> ne);
  void set_alignment(uint32_t a) { alignment_ = a; }
  Status write(const std::string& path) const { return write(path, {}); }
  // Appends bytes to the file being written; false on a write error.
  using ByteSink = std::function<bool(const uint8_t* p, size_t n)>;
  // fill(i, put) produces the bytes of tensor i (index in add order) for tensors added with
  // add_tensor_info, in order, through put; it must put exactly the tensor's size (else Internal).
  // A non-ok Status from fill (Cancelled, ...) aborts the write: the temp file is removed and the
  // target is left as it was. Written as a temp file in the same folder, then renamed over path.
  using TensorFill = std::function<Status(size_t index, const ByteSink& put)>;
  Status write(const std::string& path, const TensorFill& fill) const;

 private:
  struct Entry {
    std::string key;
    std::vector<uint8_t> bytes;
  };  // bytes = type + value encoding
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    std::vector<uint8_t> data;
    uint64_t nbytes = 0;    // size of the tensor's data
    bool streamed = false;  // bytes come from write's fill
  };
  Status check_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& ne, uint64_t* nbytes) const;
  void put(const std::string& key, std::vector<uint8_t> encoded);
  std::vector<Entry> kv_;
  std::vector<Tensor> tensors_;
  uint32_t alignment_ = 32;
};

}  // namespace llmserve
