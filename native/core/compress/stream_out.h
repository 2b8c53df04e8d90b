// What the offline transforms that stream a GGUF through GgufWriter::write's fill share
// (quantize_model, prune_model, lowrank_model): the cancel flag, copying an unchanged tensor,
// progress by input elements, and writing the file with both sizes recorded. One place, so the
// three report cancels, write failures and sizes the same way.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "../gguf/gguf.h"
#include "../status.h"

namespace llmserve {

// True once the caller's cancel flag (optional) is set.
bool cancelled(const std::atomic<bool>* cancel);

// Code::Cancelled "<what> was cancelled; no output file was written" (what: "quantize", "compress").
Status cancelled_error(const char* what);

// Code::Io "writing '<out_path>' failed": a ByteSink refused bytes.
Status write_error(const std::string& out_path);

// Copies tensor t's bytes unchanged through put, 64 MiB per call (cancel checked before each, so a
// large copied tensor still answers a cancel between calls).
Status copy_tensor_bytes(const GgufTensorInfo& t, const GgufWriter::ByteSink& put, const std::atomic<bool>* cancel,
                         const char* what, const std::string& out_path);

// progress(done / total) as elements of the input are converted (clamped to 1; 1 when total is 0).
class ElementProgress {
 public:
  ElementProgress(int64_t total, const std::function<void(double)>& progress) : total_(total), progress_(progress) {}
  void add(int64_t n);

 private:
  int64_t total_, done_ = 0;
  const std::function<void(double)>& progress_;
};

// w.write(out_path, fill); then *input_bytes = in's size, *output_bytes = the written file's, and
// progress(1.0) (progress optional).
Status write_output(const GgufWriter& w, const std::string& out_path, const GgufWriter::TensorFill& fill,
                    const GgufFile& in, const std::function<void(double)>& progress, uint64_t* input_bytes,
                    uint64_t* output_bytes);

}  // namespace llmserve
