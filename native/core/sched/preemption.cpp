// Memory for a step: KV blocks are allocated per sequence; when none are free, idle sessions are
// evicted (least recently used, never pinned ones), then the lowest-ranked running sequences are
// preempted (their KV dropped; they are recomputed later and their users only wait).
#include <algorithm>

#include "sequence.h"

namespace llmserve {

void Engine::drop_tables(std::vector<int32_t>& blocks, std::vector<int32_t>& lblocks) {
  for (int32_t b : blocks) alloc_->unref(b);
  for (int32_t b : lblocks)
    if (b >= 0) lalloc_->unref(b);
  blocks.clear();
  lblocks.clear();
}

void Engine::trim_local(std::vector<int32_t>& lblocks, int64_t n_computed) {
  if (!lalloc_) return;
  const int64_t dead =
      std::min<int64_t>(std::max<int64_t>(0, n_computed - window_ + 1) / kv_.block_size, (int64_t)lblocks.size());
  // Freed entries form a leading run: walk back from the last dead block until one is already freed.
  for (int64_t j = dead - 1; j >= 0 && lblocks[(size_t)j] >= 0; --j) {
    lalloc_->unref(lblocks[(size_t)j]);
    lblocks[(size_t)j] = -1;
  }
}

void Engine::release_blocks(Sequence& s) {
  drop_tables(s.blocks, s.lblocks);
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
  drop_tables(victim->second->blocks, victim->second->lblocks);
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
// then fixed batching's pad blocks (padding never takes memory from real work), then by preempting the lowest-ranked running sequences after s in `order` (never one already in
// this step's batch). Returns false if s cannot run this step.
bool Engine::ensure_blocks(Sequence& s, int64_t n_tokens, std::vector<Sequence*>& order, size_t self_index) {
  const int64_t bs = kv_.block_size;
  const int64_t need = (s.n_computed + n_tokens + bs - 1) / bs - (int64_t)s.blocks.size();
  for (int64_t k = 0; k < need; ++k) {
    // A global block and, with a split pool, a local one for the same positions.
    int32_t b = alloc_->allocate(), lb = lalloc_ ? lalloc_->allocate() : 0;
    while (b < 0 || lb < 0) {
      if (evict_one_session() || drop_one_pad()) {
      } else if (order.size() > self_index + 1) {
        Sequence* victim = order.back();
        order.pop_back();
        preempt(*victim);
      } else {
        if (b >= 0) alloc_->unref(b);
        if (lb >= 0 && lalloc_) lalloc_->unref(lb);
        return false;
      }
      if (b < 0) b = alloc_->allocate();
      if (lb < 0) lb = lalloc_->allocate();
    }
    s.blocks.push_back(b);
    if (lalloc_) s.lblocks.push_back(lb);
  }
  return true;
}

}  // namespace llmserve
