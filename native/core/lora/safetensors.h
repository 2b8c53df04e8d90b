// safetensors (Hugging Face) reader over mmap: an 8-byte little-endian header length N, N bytes of
// JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}},
// then the data section, offsets relative to its start.
//
// Hardened like the GGUF reader (a bad file is a Status, never a crash or a huge allocation): the
// header length is checked against the file and a cap before it is read; the JSON is parsed with
// depth / value / string caps (json.h); every shape is checked for overflow and must match its
// dtype's byte size exactly; and, as the reference implementation requires, the tensors' byte ranges
// must tile the data section: sorted by offset, no overlap, no hole, ending at the end of the file.
// Errors: InvalidArgument "safetensors file '<path>' is corrupt: ..." for a malformed or hostile
// file; UnsupportedType for a dtype this reader does not know (naming the tensor).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../os/os.h"
#include "../status.h"

namespace llmserve {

struct SafetensorsTensor {
  std::string name;
  std::string dtype;            // as written: "F32", "F16", "BF16", "I64", ...
  size_t elem_bytes = 0;        // bytes per element of dtype
  std::vector<int64_t> shape;   // outermost first (row-major: the last dimension is contiguous)
  uint64_t begin = 0, end = 0;  // byte range inside the data section
  const uint8_t* data = nullptr;
  uint64_t nbytes() const { return end - begin; }
};

class SafetensorsFile {
 public:
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // Header caps: far above any adapter (a 7B all-linear rank-64 adapter's header is ~100 KiB).
  static constexpr uint64_t kMaxHeaderBytes = uint64_t(16) << 20;
  static constexpr size_t kMaxDims = 8;

  // Maps and validates the file (tensor data is not touched). FileNotFound / Io / the errors above.
  static Status open(const std::string& path, std::unique_ptr<SafetensorsFile>* out);
  // Validates an in-memory image (tests, fuzzing); the buffer must outlive the object.
  static Status parse(const uint8_t* data, size_t size, const std::string& name, std::unique_ptr<SafetensorsFile>* out);

  // In file order of the header.
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }
  size_t size() const { return size_; }

 private:
  SafetensorsFile() = default;
  Status parse_all(const std::string& name);

  os::MappedFile map_;  // empty for parsed buffers
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  std::vector<std::pair<std::string, std::string>> metadata_;
};

}  // namespace llmserve
