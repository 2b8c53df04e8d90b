// Chunked prefill: a prompt runs in chunks that fit the step's token budget, so one long prompt
// never stalls the decode tokens of the sequences already generating. Two limits per step:
// max_batch_tokens (every token), and prefill_chunk (prompt tokens while something is generating:
// a long prompt then arrives in smaller chunks and inter-token latency stays low).
#pragma once
#include <algorithm>
#include <cstdint>

namespace llmserve {

// Prompt tokens a step may take: prefill_chunk while any sequence is generating (has at most one
// token to compute), else unlimited (INT64_MAX); prefill_chunk 0 or static batching: unlimited.
// generating: whether some running sequence is decoding.
inline int64_t prefill_allowance(int64_t prefill_chunk, bool static_batching, bool generating) {
  if (prefill_chunk > 0 && !static_batching && generating) return prefill_chunk;
  return INT64_MAX;
}

// Tokens of a sequence with `pending` uncomputed tokens that run this step: a decode token
// (pending <= 1) needs only the budget; a prompt chunk also counts against prefill_left.
inline int64_t chunk_size(int64_t pending, int64_t budget, int64_t prefill_left) {
  return pending > 1 ? std::min({pending, budget, prefill_left}) : std::min(pending, budget);
}

}  // namespace llmserve
