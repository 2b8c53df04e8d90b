// quantize: converts a GGUF model to another weight mix (llama-quantize's job): reads the input
// (F32/F16/BF16, or any type llmserve dequantizes: re-quantizing loses quality and is noted),
// picks each tensor's type by llama.cpp's recipe (recipe.h), converts rows on a thread pool with
// the reference quantizers (ggml's bytes) and writes a GGUF with every metadata key of the input
// (tokenizer included), general.file_type set to the mix's llama_ftype and
// general.quantization_version to 2.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "../gguf/gguf.h"
#include "../quant/quant.h"
#include "../status.h"
#include "recipe.h"

namespace llmserve {

struct QuantizeOptions {
  std::string type = "q8_0";  // a quant_mixes() name (or alias q3_k / q4_k / q5_k)
  int threads = 0;            // <= 0: hardware concurrency
  // llama.cpp importance matrix (imatrix.h; empty: none). Tensors with an entry are quantized with
  // its per-column weights (ggml's weighted quantizers); the recipe takes its has-imatrix rules.
  std::string imatrix;
  // llama-quantize's --pure, --output-tensor-type, --token-embedding-type, --tensor-type (recipe.h).
  RecipeOverrides overrides;
};

struct QuantizedTensor {
  std::string name;
  GgmlType from = GgmlType::F32;  // type in the input
  GgmlType to = GgmlType::F32;    // type written
};

struct QuantizeResult {
  int ftype = -1;                        // general.file_type written
  std::vector<QuantizedTensor> tensors;  // in file order
  std::vector<std::string> notes;        // fallbacks, re-quantization warnings
  uint64_t input_bytes = 0;              // file sizes
  uint64_t output_bytes = 0;
};

// InvalidArgument when out_path is empty, has a NUL, or is the input file (shared by every
// converter in compress/: none overwrites its input).
Status check_output_path(const std::string& in_path, const std::string& out_path);

// UnsupportedType when llmserve cannot dequantize tensor t's type ("...; <advice> the f16/f32
// original", advice: "quantize from", "prune", "factor"), shared by the same converters.
Status check_convertible(const GgufTensorInfo& t, const char* advice);

// Writes `out_path` (temp file in the same folder, renamed into place when complete; on any error
// or cancel the temp file is removed and out_path is untouched). progress(f), f in [0, 1], is called
// from the calling thread as tensors are converted (by elements done); cancel (optional) is polled
// between slabs of rows, and a set flag ends the work with Code::Cancelled.
// With an importance matrix, as llama-quantize: a tensor without an entry is quantized without one
// (listed in notes); an entry whose size is not the tensor's row length is BadImatrix, except for
// token_embd.weight (quantized without, noted); the output gets llama-quantize's
// quantize.imatrix.{file,dataset,entries_count,chunks_count} metadata.
// Errors: the reader's (FileNotFound, NotGguf, GgufTruncated, ...), load_imatrix's, InvalidArgument (unknown type,
// out_path is the input file, a split file, a non-finite weight), UnsupportedArch (not llama /
// qwen2, or experts), UnsupportedType (an input tensor type llmserve cannot dequantize), Io.
Status quantize_model(const std::string& in_path, const std::string& out_path, const QuantizeOptions& opt,
                      const std::function<void(double)>& progress, const std::atomic<bool>* cancel,
                      QuantizeResult* result);

}  // namespace llmserve
