// Embedding pooling: one vector per text from the final hidden states of its tokens (after
// output_norm, what Executor::evaluate returns with hidden = true). llama.cpp's pooling types:
// MEAN averages every token's row, LAST takes the last token's (what llama.cpp returns for a
// generative model, whose GGUF names no pooling type), CLS the first token's. normalize divides by
// the Euclidean norm (llama.cpp's common_embd_normalize with embd_norm 2, llama-server's default).
#pragma once
#include <cstdint>
#include <vector>

#include "../status.h"

namespace llmserve {

enum class Pooling : int { Mean = 0, Last = 1, Cls = 2 };

// The first hidden-state row a pooling needs of n tokens (only rows [first, n) are computed).
int64_t pooling_first_row(Pooling p, int64_t n);

// rows: [n_rows, n_embd], the hidden states of tokens [pooling_first_row(p, n), n) -> out [n_embd].
// Sums in double, so the mean does not depend on how many tokens there are beyond rounding once.
// Errors: InvalidArgument (no rows, a row count that does not fit the pooling, n_embd < 1).
Status pool_hidden(Pooling p, const float* rows, int64_t n_rows, int64_t n_embd, bool normalize,
                   std::vector<float>* out);

}  // namespace llmserve
