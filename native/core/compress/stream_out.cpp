#include "stream_out.h"

#include <algorithm>

#include "../os/os.h"

namespace llmserve {
namespace {

constexpr size_t kCopyBytes = size_t(64) << 20;  // bytes per put when a tensor is copied unchanged

}  // namespace

bool cancelled(const std::atomic<bool>* cancel) { return cancel && cancel->load(std::memory_order_relaxed); }

Status cancelled_error(const char* what) {
  return make_error(Code::Cancelled, std::string(what) + " was cancelled; no output file was written");
}

Status write_error(const std::string& out_path) { return make_error(Code::Io, "writing '" + out_path + "' failed"); }

Status copy_tensor_bytes(const GgufTensorInfo& t, const GgufWriter::ByteSink& put, const std::atomic<bool>* cancel,
                         const char* what, const std::string& out_path) {
  for (uint64_t off = 0; off < t.nbytes; off += kCopyBytes) {
    if (cancelled(cancel)) return cancelled_error(what);
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kCopyBytes, t.nbytes - off));
    if (!put(t.data + off, n)) return write_error(out_path);
  }
  return Status::ok();
}

void ElementProgress::add(int64_t n) {
  done_ += n;
  if (progress_) progress_(total_ > 0 ? std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_)) : 1.0);
}

Status write_output(const GgufWriter& w, const std::string& out_path, const GgufWriter::TensorFill& fill,
                    const GgufFile& in, const std::function<void(double)>& progress, uint64_t* input_bytes,
                    uint64_t* output_bytes) {
  LLMS_RETURN_IF_ERROR(w.write(out_path, fill));
  *input_bytes = in.file_size();
  const int64_t out_size = os::file_size(out_path);
  *output_bytes = out_size > 0 ? static_cast<uint64_t>(out_size) : 0;
  if (progress) progress(1.0);
  return Status::ok();
}

}  // namespace llmserve
