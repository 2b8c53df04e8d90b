// Admission: waiting requests join the running batch (priority, then FCFS), adopting a session's
// KV or reusing prefix-cached blocks; full blocks are registered in the prefix cache as they fill.
#include <algorithm>

#include "chunked_prefill.h"
#include "sequence.h"

namespace llmserve {

// Admission (priority, then FCFS) while the step's budget, sequence slots and memory allow.
// Static batching (a benchmark baseline) forms its whole batch at once, up to max_sequences, even
// past this step's token budget; later prompt chunks run in the following steps. Fixed batching
// forms its batch the same way but runs every prompt whole in this step (fixed_batch.cpp pads them).
void Engine::admit_waiting(StepPlan& plan) {
  const bool may_admit = !batch_only() || running_.empty();
  const bool batch_running = !running_.empty();
  while (may_admit && (plan.budget > 0 || batch_only()) && plan.prefill_left > 0 && !waiting_.empty() &&
         (int64_t)running_.size() < opts_.max_sequences) {
    Sequence& s = *waiting_.front();
    admit(s);
    const int64_t pending = (int64_t)s.tokens.size() - s.n_computed;
    const int64_t chunk = opts_.fixed_batching ? pending : chunk_size(pending, plan.budget, plan.prefill_left);
    std::vector<Sequence*> none;
    if (!ensure_blocks(s, chunk, none, 0)) {
      release_blocks(s);  // head-of-line waits for memory (FCFS)
      if (running_.empty() && plan.picks.empty()) {
        // Nothing runs and nothing can be evicted: only pinned prefixes hold the memory.
        finish(s, FinishReason::None,
               make_error(Code::KvExhausted,
                          "The KV cache is full: pinned prefixes hold " + std::to_string(alloc_->n_used()) + " of " +
                              std::to_string(alloc_->n_blocks()) +
                              " blocks. Release pinned prefixes or load the model with a larger kvCacheTokens."));
        waiting_.pop_front();
        continue;
      }
      break;
    }
    if (s.t_first_step < 0) s.t_first_step = plan.now, s.tm.queue_ms = plan.now - s.t_submit;
    if (batch_running) ++st_.joined_running;
    if (chunk > 0) plan.picks.push_back({&s, chunk, chunk == pending});
    plan.budget -= chunk;
    if (pending > 1 && plan.prefill_left != INT64_MAX) plan.prefill_left -= chunk;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
  running_.remove_if([](const std::unique_ptr<Sequence>& s) { return s->done; });
  if (opts_.fixed_batching && may_admit && !batch_running && !running_.empty()) start_fixed_batch();
}

void Engine::admit(Sequence& s) {
  const int64_t bs = kv_.block_size;
  const uint64_t adapter = s.req->adapter;
  // A session's previous turn: adopt its KV if this prompt extends what it holds.
  if (s.req->session != 0) {
    auto it = sessions_.find(s.req->session);
    if (it != sessions_.end()) {
      Session& ss = *it->second;
      // KV computed under another adapter (or the base model) is not this turn's: recompute.
      const bool extends = ss.adapter == adapter && (int64_t)s.tokens.size() > ss.n_computed &&
                           std::equal(ss.tokens.begin(), ss.tokens.begin() + ss.n_computed, s.tokens.begin());
      // KV computed with the other arithmetic (kv/batch.h) is not this turn's either: the turn
      // whose prompt first reaches kPromptTiledMinTokens recomputes the conversation once.
      if (extends && ss.tiled == s.tiled) {
        s.blocks = std::move(ss.blocks);
        s.lblocks = std::move(ss.lblocks);  // trimmed to the window before n_computed: all a turn needs
        s.n_computed = ss.n_computed;
        s.n_registered = ss.n_registered;
        s.last_key = ss.last_key;
      } else {
        drop_tables(ss.blocks, ss.lblocks);
      }
      sessions_.erase(it);
    }
  }
  // Prefix cache: reuse every leading full block already computed by anyone (refcount, no copy).
  // The block holding the last token is never reused: its logits are needed.
  if (opts_.prefix_cache && s.blocks.empty()) {
    const int64_t max_full = ((int64_t)s.tokens.size() - 1) / bs;
    uint64_t key = 0;
    std::vector<uint64_t> keys;
    for (int64_t i = 0; i < max_full; ++i) {
      key = BlockAllocator::hash_block(key, s.tokens.data() + i * bs, (int32_t)bs, adapter, s.tiled);
      const int32_t b = alloc_->lookup(key);
      if (b < 0) break;
      alloc_->ref(b);
      s.blocks.push_back(b);
      keys.push_back(key);
    }
    // Split KV: local layers need the window before the reuse point; reuse less when it is gone.
    int64_t k = (int64_t)s.blocks.size();
    if (lalloc_ && k > 0) {
      k = adopt_local_window(keys, k, &s.lblocks);
      if (k < (int64_t)s.blocks.size()) ++st_.prefix_window_misses;
      for (int64_t i = (int64_t)s.blocks.size() - 1; i >= k; --i) alloc_->unref(s.blocks[(size_t)i]);
      s.blocks.resize((size_t)k);
    }
    s.n_computed = k * bs;
    s.n_registered = k;
    s.last_key = k > 0 ? keys[(size_t)k - 1] : 0;
  }
  // The partial last block of a kept sequence (a pinned prefix or an idle session) that this prompt
  // extends: copy it (copy-on-write) rather than recompute up to block_size - 1 tokens. Its full
  // blocks were matched above; identical tokens give bit-identical K/V (batch invariance).
  if (opts_.prefix_cache && s.n_computed % bs == 0) {
    for (auto& [sid, ssp] : sessions_) {
      const Session& ss = *ssp;
      const int64_t full = ss.n_computed / bs;
      if (ss.adapter != adapter || full * bs != s.n_computed || ss.n_computed == s.n_computed ||
          ss.n_computed >= (int64_t)s.tokens.size() || ss.tiled != s.tiled)
        continue;
      if (!std::equal(ss.tokens.begin(), ss.tokens.begin() + ss.n_computed, s.tokens.begin())) continue;
      const int32_t b = alloc_->allocate();
      if (b < 0) break;
      if (lalloc_) {
        // The session's last block is inside its window (its last position is), so it is held.
        const int32_t lb = lalloc_->allocate();
        if (lb < 0 || ss.lblocks[(size_t)full] < 0) {
          alloc_->unref(b);
          if (lb >= 0) lalloc_->unref(lb);
          break;
        }
        executor_->copy_local_block(ss.lblocks[(size_t)full], lb, ss.n_computed - full * bs);
        s.lblocks.push_back(lb);
      }
      executor_->copy_block(ss.blocks[(size_t)full], b, ss.n_computed - full * bs);
      s.blocks.push_back(b);
      s.n_computed = ss.n_computed;
      break;
    }
  }
  s.tm.reused_tokens = std::max(s.tm.reused_tokens, s.n_computed);
}

int64_t Engine::adopt_local_window(const std::vector<uint64_t>& keys, int64_t k, std::vector<int32_t>* lblocks) {
  const int64_t bs = kv_.block_size;
  // Block m missing rules out every k' whose window [first(k'), k') contains m: try k' = m next.
  // Each block is looked up at most once per candidate, and candidates only shrink.
  std::vector<int32_t> found((size_t)k, -1);
  while (k > 0) {
    const int64_t first = std::max<int64_t>(0, k * bs - window_ + 1) / bs;
    int64_t missing = -1;
    for (int64_t j = k - 1; j >= first; --j) {
      if (found[(size_t)j] < 0) found[(size_t)j] = lalloc_->lookup(keys[(size_t)j]);
      if (found[(size_t)j] < 0) {
        missing = j;
        break;
      }
    }
    if (missing < 0) {
      lblocks->assign((size_t)k, -1);
      for (int64_t j = first; j < k; ++j) {
        lalloc_->ref(found[(size_t)j]);
        (*lblocks)[(size_t)j] = found[(size_t)j];
      }
      return k;
    }
    k = missing;
  }
  lblocks->clear();
  return 0;
}

void Engine::register_full_blocks(Sequence& s) {
  if (!opts_.prefix_cache) return;
  const int64_t bs = kv_.block_size;
  while ((s.n_registered + 1) * bs <= s.n_computed) {
    const int64_t i = s.n_registered;
    const uint64_t key =
        BlockAllocator::hash_block(s.last_key, s.tokens.data() + i * bs, (int32_t)bs, s.req->adapter, s.tiled);
    const int32_t b = s.blocks[(size_t)i];
    if (!alloc_->registered(b)) alloc_->register_block(b, key);  // false if another block holds it: fine
    // The local block under the same key: a later prompt with this prefix may reuse the window.
    if (lalloc_ && s.lblocks[(size_t)i] >= 0 && !lalloc_->registered(s.lblocks[(size_t)i]))
      lalloc_->register_block(s.lblocks[(size_t)i], key);
    s.last_key = key;
    s.n_registered = i + 1;
  }
}

}  // namespace llmserve
