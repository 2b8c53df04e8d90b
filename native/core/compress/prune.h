// prune: zeroes weights of a GGUF model's layer matrices (attn_q/k/v/output, ffn_gate/up/down) by
// a criterion, per output row (a GGUF row: ne[0] input columns):
//   magnitude  score_ij = |W_ij|
//   wanda      score_ij = |W_ij| * ||x_j||  (x_j: the calibration activations entering column j,
//              calib.h; Sun et al. 2023, "A Simple and Effective Pruning Approach for LLMs")
// at a ratio (unstructured: the ratio * ne0 lowest-scored entries of each row become 0) or 2:4
// (semi-structured: in every group of 4 consecutive columns the 2 lowest-scored become 0).
// Dense output keeps every tensor's type with the zeros written into it: llama.cpp loads it, and it
// runs no faster than the input; it is the reference the sparse format must reproduce. 2:4 can
// instead be written in llmserve's 2:4 sparse format (model/sparse24.h: f16 or q8_0 kept values + 2-bit
// positions, NAME.s24v / NAME.s24i in place of NAME), which llmserve runs faster and llama.cpp
// cannot load (the file says so in its llmserve.sparse24 key). An unstructured ratio can instead be
// written as CSR (model/csr.h: NAME.sp_ptr / sp_col / sp_val in place of NAME, every row holding its
// n_in - floor(ratio * n_in) kept entries; key llmserve.csr), which llmserve runs faster at high
// sparsity and llama.cpp cannot load.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "../gguf/gguf.h"
#include "../quant/quant.h"
#include "../status.h"
#include "calib.h"

namespace llmserve {

enum class PruneMethod { Magnitude, Wanda };
// The 2:4 sparse format's value type: Auto is Q8_0 for a quantized input matrix (int8 with one f16
// scale per 32 kept values; rows of a multiple of 64) and F16 for an f16/bf16/f32 one.
enum class Sparse24Values { Auto, F16, Q8_0 };

struct PruneOptions {
  double ratio = 0.5;  // unstructured: fraction of each row zeroed, in (0, 1); ignored for 2:4
  bool two_four = false;
  bool sparse_format = false;                    // 2:4 only: write the pruned tensors in the 2:4 sparse format
  Sparse24Values values = Sparse24Values::Auto;  // the sparse format's values (only with it)
  bool csr_format = false;                       // unstructured only: write the pruned tensors as CSR (model/csr.h)
  PruneMethod method = PruneMethod::Magnitude;
  std::vector<std::string> patterns;  // globs over tensor names or roles ("ffn_*"); empty: every layer matrix
  int threads = 0;                    // <= 0: hardware concurrency
};

struct PrunedTensor {
  std::string name;
  GgmlType type = GgmlType::F32;  // its type, or the values' type (f16 / q8_0 / f32) in a sparse format
  int64_t zeros = 0;              // zero entries in the output
  int64_t elements = 0;           // entries
};

struct PruneResult {
  std::vector<PrunedTensor> tensors;  // the pruned ones, in file order
  std::vector<std::string> notes;
  uint64_t input_bytes = 0;
  uint64_t output_bytes = 0;
};

// "ffn_down" for "blk.12.ffn_down.weight"; empty when the name is not a layer matrix (the ones
// pruning and low-rank factorization select from).
std::string layer_role(const std::string& name);

// '*' any run of characters, '?' one character; the whole name must match.
bool glob_match(const std::string& pattern, const std::string& name);

// The names of the layer matrices of f (2-D, layer_role not empty) that patterns select (globs over
// names or roles; all of them when patterns is empty), in file order. check refuses a selected
// tensor the technique cannot handle. verb ("prune", "factor") words the errors for a pattern that
// matches no layer matrix and for a model with none (InvalidArgument).
Status select_layer_matrices(const GgufFile& f, const std::vector<std::string>& patterns,
                             const std::function<Status(const GgufTensorInfo&)>& check, const char* verb,
                             std::vector<std::string>* out);

// Scores of one row of n weights: |w| (col_sumsq null) or |w| * sqrt(col_sumsq).
void prune_scores(const float* w, const double* col_sumsq, int64_t n, float* score);
// Zeroes the k lowest-scored entries of w[n] (ties: the lower column index is zeroed first, so the
// result is deterministic). idx: scratch.
void prune_row_unstructured(float* w, const float* score, int64_t n, int64_t k, std::vector<int32_t>& idx);
// In each group of 4 consecutive entries zeroes the 2 lowest-scored (ties: the lower index); n % 4 == 0.
void prune_row_2_4(float* w, const float* score, int64_t n);

// The tensors of the file at in_path that opt selects, checked: every pattern matches some layer
// matrix, 2:4 rows divisible by 4 (64 for q8_0 values), ratio in (0, 1), types llmserve converts,
// the sparse format (and a value type) only with 2:4, CSR only with a ratio (and under 2^31 entries per matrix). No work is done.
// Errors: the reader's, InvalidArgument (with what to do), UnsupportedType.
Status plan_prune(const std::string& in_path, const PruneOptions& opt, std::vector<std::string>* selected);

// Writes out_path (atomically, as quantize_model: temp file renamed into place; nothing on error or
// cancel) with the selected tensors pruned and every other tensor and metadata key copied, plus
// llmserve.prune.* keys saying what was done. stats: required for Wanda (InvalidArgument without),
// ignored for magnitude. Refuses out_path == in_path. A quantized input is dequantized, pruned and
// re-encoded in its own type (a note says so: the kept values get re-rounded).
Status prune_model(const std::string& in_path, const std::string& out_path, const PruneOptions& opt,
                   const ActivationStats* stats, const std::function<void(double)>& progress,
                   const std::atomic<bool>* cancel, PruneResult* result);

}  // namespace llmserve
