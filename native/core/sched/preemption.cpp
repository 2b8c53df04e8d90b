// Memory for a step: KV blocks are allocated per sequence; when none are free, idle sessions are
// evicted (least recently used, never pinned ones), then the lowest-ranked running sequences are
// preempted (their KV dropped; they are recomputed later and their users only wait).
#include <algorithm>

#include "sequence.h"

namespace llmserve {

void Engine::release_blocks(Sequence& s) {
  for (int32_t b : s.blocks) alloc_->unref(b);
  s.blocks.clear();
  s.n_computed = 0;
  s.n_registered = 0;
  s.last_key = 0;
}

bool Engine::evict_one_session() {
  auto victim = sessions_.end();
  for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
    if (it->second->pinned) continue;
    if (victim == sessions_.end() || it->second->last_used < victim->second->last_used) victim = it;
  }
  if (victim == sessions_.end()) return false;
  for (int32_t b : victim->second->blocks) alloc_->unref(b);
  sessions_.erase(victim);
  ++st_.session_evictions;
  return true;
}

void Engine::preempt(Sequence& s) {
  // Recompute later: the sequence keeps its tokens (prompt + what it generated so far) and its
  // sampler state; only its KV goes. Its user just waits.
  release_blocks(s);
  ++st_.preemptions;
  for (auto it = running_.begin(); it != running_.end(); ++it) {
    if (it->get() != &s) continue;
    std::unique_ptr<Sequence> owned = std::move(*it);
    running_.erase(it);
    auto pos = std::upper_bound(
        waiting_.begin(), waiting_.end(), owned,
        [](const std::unique_ptr<Sequence>& a, const std::unique_ptr<Sequence>& b) { return ranks_before(*a, *b); });
    waiting_.insert(pos, std::move(owned));
    return;
  }
}

// Grows s's block table to hold n_tokens more positions. Frees memory by evicting idle sessions,
// then by preempting the lowest-ranked running sequences after s in `order` (never one already in
// this step's batch). Returns false if s cannot run this step.
bool Engine::ensure_blocks(Sequence& s, int64_t n_tokens, std::vector<Sequence*>& order, size_t self_index) {
  const int64_t bs = kv_.block_size;
  const int64_t need = (s.n_computed + n_tokens + bs - 1) / bs - (int64_t)s.blocks.size();
  for (int64_t k = 0; k < need; ++k) {
    int32_t b = alloc_->allocate();
    while (b < 0) {
      if (evict_one_session()) {
      } else if (order.size() > self_index + 1) {
        Sequence* victim = order.back();
        order.pop_back();
        preempt(*victim);
      } else {
        return false;
      }
      b = alloc_->allocate();
    }
    s.blocks.push_back(b);
  }
  return true;
}

}  // namespace llmserve
