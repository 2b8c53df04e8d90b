// Importance matrices: llama.cpp's llama-imatrix output, read for quantize (--imatrix). Both of
// its formats (common/imatrix-loader.cpp of the llama.cpp node-llama-cpp 3.21.1 bundles):
// - GGUF (current): per weight tensor NAME an F32 tensor NAME.in_sum2 (sum over tokens of the squared
//   activation entering each column; n_mat rows of ne0 for experts) and NAME.counts (n_mat tokens
//   counted), plus metadata imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size;
// - legacy .dat: int32 n_entries, then per entry int32 name length, the name, int32 ncall, int32
//   nval, nval floats (already averaged per token, times ncall); optionally int32 chunk count,
//   int32 dataset-name length and the name.
// The weights quantize uses are what llama-quantize computes from them: in_sum2 / count per matrix
// (1 where the count is 0) for GGUF, values / ncall for .dat (as is when ncall <= 0).
// The reader is hardened: every count is checked against the bytes left and a cap before anything
// is sized from it, and any malformed or non-finite content is a BadImatrix error naming the entry.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "../status.h"

namespace llmserve {

struct Imatrix {
  std::map<std::string, std::vector<float>> entries;  // tensor name -> per-column weights
  std::vector<std::string> datasets;                  // what it was computed on (may be empty)
  int64_t chunk_count = 0;                            // chunks of text it was computed on (0: unknown)
  bool legacy = false;                                // read from the .dat format
};

// Caps on what a file may ask the reader to hold (far above any real imatrix: a 405B model has a
// few thousand entries of at most ~10^5 columns).
struct ImatrixLimits {
  uint64_t max_entries = uint64_t(1) << 20;
  uint64_t max_name_bytes = uint64_t(64) << 10;
  uint64_t max_values = uint64_t(1) << 28;  // floats over all entries (1 GiB)
};

// Reads `path` (a GGUF file by its magic, else the legacy format). Errors: FileNotFound, Io,
// BadImatrix (truncated, over a cap, sums without counts or the other way round, a non-F32 tensor,
// a size that is not a whole number of matrices, NaN or infinite weights, a GGUF imatrix without
// its metadata, which llama-quantize refuses too).
Status load_imatrix(const std::string& path, Imatrix* out, const ImatrixLimits& limits = ImatrixLimits());

}  // namespace llmserve
