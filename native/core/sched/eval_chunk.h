// One chunk of a perplexity / KL-divergence evaluation (llama-perplexity's loop body): the chunk is
// evaluated from scratch on the model's engine (its private eval cache, never the serving pool),
// then, with a reference, on the reference's engine, and the two logit sets are reduced into the
// evaluation's PerplexityAccumulator (eval/perplexity.h) on the engine thread that finished last.
// No logits leave native code; the caller (the N-API layer) is told when the accumulator holds
// the chunk. Rows from the chunk's middle on get an output head (first_scored_row), the first half
// only fills the cache.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "../eval/perplexity.h"
#include "engine.h"

namespace llmserve {

struct EvalChunk {
  // The chunk's n_ctx tokens as evaluated (llama-perplexity puts BOS in place of the first one when
  // the vocabulary adds BOS); the targets are tokens[first + 1 ..] of this same array.
  std::vector<int32_t> tokens;
  int64_t n_batch = 0;  // most tokens per forward pass (0: the whole chunk at once)
  std::shared_ptr<PerplexityAccumulator> acc;
  // Called once, on an engine thread, after acc has taken the chunk (or with the error that stopped
  // it: nothing was added then).
  std::function<void(Status)> on_done;
};

// Queues the chunk on `model` (then `reference`, which may be null or the model itself).
// Errors before anything is queued (on_done is not called then): InvalidArgument (fewer than
// kMinEvalChunk tokens, a reference with another vocabulary size, acc made with(out) a reference
// when there is none (one)), and submit_eval's (Disposed, ContextOverflow, token ids). Errors
// later (the reference disposed meanwhile, out of memory) arrive through on_done.
// Ownership: the reference is held until its evaluation is queued; the model must outlive the
// call (its engine thread runs the first stage).
Status submit_eval_chunk(Engine& model, std::shared_ptr<Engine> reference, EvalChunk chunk);

}  // namespace llmserve
