// Calibration statistics for activation-aware compression (Wanda pruning): the model runs over a
// calibration text and, per weight matrix of every layer, the sum over tokens of the squared
// activation entering each input column (sum_t x_tj^2 = ||x_j||^2, what llama.cpp's imatrix holds).
// The statistics come through the forward pass's ProjectionDelta side channel (model/forward.h):
// a delta that adds nothing and only reads its input rows, so serving (no delta) pays one null
// check and the forward code has no calibration branch of its own.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "../model/model.h"
#include "../status.h"

namespace llmserve {

struct ActivationStats {
  // Tensor name ("blk.3.ffn_down.weight") -> [n_in] sums of squares, in double.
  std::map<std::string, std::vector<double>> sumsq;
  int64_t tokens = 0;  // tokens run through the model
};

// The GGUF role name of a layer projection ("attn_q", ..., "ffn_down"); the matrices pruning and
// calibration know, in Proj order (Output excluded).
const std::vector<std::string>& layer_projection_roles();

// The [n_in] column sums of squares of the matrix `name` with rows of n_in entries, into *out;
// InvalidArgument (asking whether the statistics came from this model) when there is no such entry.
Status column_sumsq(const ActivationStats& stats, const std::string& name, int64_t n_in,
                    const std::vector<double>** out);

// Runs tokens through `model` in chunks of `ctx` tokens (at most the training context; each chunk
// from an empty cache; a last partial chunk is run too) and fills *out. progress(f) after each chunk; cancel polled between
// chunks (Code::Cancelled). Errors: InvalidArgument (ctx < 1, no tokens, ids outside the
// vocabulary), OutOfMemory.
Status collect_activation_stats(const Model& model, const std::vector<int32_t>& tokens, int64_t ctx, int threads,
                                const std::function<void(double)>& progress, const std::atomic<bool>* cancel,
                                ActivationStats* out);

}  // namespace llmserve
