#include "executor.h"

namespace llmserve {

// The fallback for executors without packed evaluation: one evaluate() per sequence, one pass each.
Status Executor::evaluate_batch(const EvalSeq* seqs, int64_t n_seqs, bool hidden, int64_t max_pass_tokens,
                                std::vector<float>* rows, int64_t* passes) {
  (void)max_pass_tokens;
  rows->clear();
  *passes = 0;
  std::vector<float> part;
  for (int64_t i = 0; i < n_seqs; ++i) {
    const EvalSeq& s = seqs[i];
    LLMS_RETURN_IF_ERROR(evaluate(s.tokens, s.n, s.all_rows ? 0 : s.n - 1, 0, &part, hidden, 0));
    rows->insert(rows->end(), part.begin(), part.end());
    ++*passes;
  }
  return Status::ok();
}

}  // namespace llmserve
