// Fixed-length batching (EngineOptions::fixed_batching): the classic baseline that pads every
// prompt of a batch to one length and keeps the batch's shape until it drains. Its waste is made
// real compute here, not simulated: each member has a pad sequence (PadSeq) of pad tokens with KV
// blocks of its own, run in the same forward passes as the batch with no logits row —
//   first step:  P − len(member) tokens per member, P = the longest prompt (rounded up to a
//                multiple of fixed_bucket), so the step computes members × P prompt tokens;
//   later steps: one token per member that has finished, as its slot in the padded batch still
//                costs a decode row until the batch ends.
// A pad sequence attends only to its own positions, so no member's output changes (the kernels
// are batch-invariant). Pad blocks never take memory from real work: when the pool cannot hold a
// pad's tokens, that pad work is skipped and counted (pad_skipped_tokens), and ensure_blocks frees
// pad blocks before it preempts anyone.
#include <algorithm>

#include "sequence.h"

namespace llmserve {

void Engine::start_fixed_batch() {
  end_fixed_batch();
  int64_t longest = 0;
  for (auto& s : running_) longest = std::max<int64_t>(longest, (int64_t)s->tokens.size());
  int64_t padded = longest;
  if (opts_.fixed_bucket > 0) padded = (longest + opts_.fixed_bucket - 1) / opts_.fixed_bucket * opts_.fixed_bucket;
  // A bucket past the context pads only to what a prompt may hold (n_ctx − 1 tokens).
  padded = std::max(longest, std::min(padded, opts_.n_ctx - 1));
  for (auto& s : running_) {
    PadSeq p;
    p.member = s->id;
    p.pending = padded - (int64_t)s->tokens.size();
    pads_.push_back(std::move(p));
  }
}

void Engine::plan_padding(StepPlan& plan) {
  for (PadSeq& p : pads_) {
    bool member_running = false;
    for (auto& s : running_) member_running = member_running || (s->id == p.member && !s->done);
    const int64_t n = p.pending > 0 ? p.pending : member_running ? 0 : 1;
    p.pending = 0;  // prompt padding runs in the batch's first step or not at all
    if (n == 0) continue;
    if (!pad_blocks(p, n)) {
      st_.pad_skipped_tokens += n;
      continue;
    }
    plan.pads.push_back({&p, n});
  }
}

// Grows p's tables to hold n more positions from the free pool only (no eviction, no preemption).
bool Engine::pad_blocks(PadSeq& p, int64_t n) {
  if (p.n_computed + n > opts_.n_ctx) return false;
  const int64_t bs = kv_.block_size;
  const int64_t need = (p.n_computed + n + bs - 1) / bs - (int64_t)p.blocks.size();
  for (int64_t k = 0; k < need; ++k) {
    const int32_t b = alloc_->allocate();
    const int32_t lb = lalloc_ ? lalloc_->allocate() : 0;
    if (b < 0 || lb < 0) {
      if (b >= 0) alloc_->unref(b);
      if (lb >= 0 && lalloc_) lalloc_->unref(lb);
      return false;  // blocks taken so far stay in p's tables for its next work
    }
    p.blocks.push_back(b);
    if (lalloc_) p.lblocks.push_back(lb);
  }
  return true;
}

bool Engine::drop_one_pad() {
  for (PadSeq& p : pads_) {
    if (p.blocks.empty()) continue;
    // Its later pad tokens restart from position 0: only their cost matters, not what they attend to.
    drop_tables(p.blocks, p.lblocks);
    p.n_computed = 0;
    return true;
  }
  return false;
}

void Engine::end_fixed_batch() {
  for (PadSeq& p : pads_) drop_tables(p.blocks, p.lblocks);
  pads_.clear();
}

}  // namespace llmserve
