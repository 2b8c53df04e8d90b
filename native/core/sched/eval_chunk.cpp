#include "eval_chunk.h"

#include <new>
#include <string>
#include <utility>

namespace llmserve {
namespace {

// Scores the chunk's rows [first, n - 1) into its accumulator and reports.
void reduce(EvalChunk& c, const float* model, const float* ref, int64_t n_vocab) {
  const int64_t n = static_cast<int64_t>(c.tokens.size());
  const int64_t first = first_scored_row(n);
  Status s;
  try {
    s = c.acc->add(model, ref, c.tokens.data() + first + 1, scored_per_chunk(n), n_vocab);
  } catch (const std::bad_alloc&) { s = make_error(Code::OutOfMemory, "perplexity: out of memory for the scores"); }
  c.on_done(s);
}

std::shared_ptr<EvalRequest> eval_request(const EvalChunk& c) {
  auto r = std::make_shared<EvalRequest>();
  r->tokens = c.tokens;
  r->logits_from = first_scored_row(static_cast<int64_t>(c.tokens.size()));
  r->n_batch = c.n_batch;
  return r;
}

}  // namespace

Status submit_eval_chunk(Engine& model, std::shared_ptr<Engine> reference, EvalChunk chunk) {
  const int64_t n = static_cast<int64_t>(chunk.tokens.size());
  if (n < kMinEvalChunk)
    return make_error(Code::InvalidArgument, "A perplexity chunk needs at least " + std::to_string(kMinEvalChunk) +
                                                 " tokens (it scores its second half) but received " +
                                                 std::to_string(n));
  if (!chunk.acc || !chunk.on_done || chunk.n_batch < 0)
    return make_error(Code::InvalidArgument, "perplexity: a chunk needs an accumulator, a callback and n_batch >= 0");
  if (chunk.acc->with_reference() != (reference != nullptr))
    return make_error(Code::InvalidArgument, "perplexity: the accumulator and the reference model disagree");
  const int64_t n_vocab = model.config().n_vocab;
  if (reference && reference->config().n_vocab != n_vocab)
    return make_error(Code::InvalidArgument, "The reference model has " + std::to_string(reference->config().n_vocab) +
                                                 " tokens in its vocabulary and the model " + std::to_string(n_vocab) +
                                                 "; KL divergence needs the same vocabulary.");
  // KL of a model against itself: the second stage runs on the same engine, which is alive while
  // its own thread runs the first stage's callback (no owning pointer to it from its own thread).
  Engine* const self = &model;
  const bool self_reference = reference.get() == self;
  if (self_reference) reference.reset();
  const bool with_ref = chunk.acc->with_reference();
  auto c = std::make_shared<EvalChunk>(std::move(chunk));
  auto first = eval_request(*c);
  first->on_done = [c, reference, self, self_reference, with_ref, n_vocab](Status s, std::vector<float>&& logits) {
    if (!s) return c->on_done(s);
    if (!with_ref) return reduce(*c, logits.data(), nullptr, n_vocab);
    try {
      auto model_logits = std::make_shared<std::vector<float>>(std::move(logits));
      auto second = eval_request(*c);
      second->on_done = [c, model_logits, n_vocab](Status s2, std::vector<float>&& ref_logits) {
        if (!s2) return c->on_done(s2);
        reduce(*c, model_logits->data(), ref_logits.data(), n_vocab);
      };
      Engine* ref = self_reference ? self : reference.get();
      Status st = ref->submit_eval(second);
      if (!st) c->on_done(st);
    } catch (const std::bad_alloc&) {
      c->on_done(make_error(Code::OutOfMemory, "perplexity: out of memory for the model's logits"));
    }
  };
  return model.submit_eval(first);
}

}  // namespace llmserve
