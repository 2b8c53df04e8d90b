// BlockAllocator: see block_allocator.h for states, costs and the collision argument.
#include "block_allocator.h"

namespace llmserve {

namespace {

inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// MurmurHash3 x64 body step: a bijective scramble of the word, then a mix into the state, so
// every input bit reaches the state and word order matters.
inline uint64_t absorb(uint64_t h, uint64_t k) {
  k *= 0x87c37b91114253d5ULL;
  k = rotl64(k, 31);
  k *= 0x4cf5ad432745937fULL;
  h ^= k;
  h = rotl64(h, 27);
  return h * 5 + 0x52dce729ULL;
}

// MurmurHash3 fmix64: full avalanche, so nearby inputs give unrelated keys.
inline uint64_t fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

}  // namespace

BlockAllocator::BlockAllocator(int32_t n_blocks) : n_blocks_(n_blocks > 0 ? n_blocks : 0) {
  blocks_.resize(static_cast<size_t>(n_blocks_));
  free_.reserve(static_cast<size_t>(n_blocks_));
  // Pushed in reverse so a fresh allocator hands out 0, 1, 2, ... (deterministic, readable logs).
  for (int32_t b = n_blocks_ - 1; b >= 0; --b) free_.push_back(b);
  // Keys never exceed n_blocks (each registered block holds one), so no rehash after this.
  by_key_.reserve(static_cast<size_t>(n_blocks_));
}

BlockId BlockAllocator::allocate() {
  BlockId b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (lru_head_ >= 0) {
    b = lru_head_;
    lru_remove(b);
    drop_key(b);
    --n_cached_;
    ++stats_.evictions;
  } else {
    ++stats_.failed_allocations;
    return -1;
  }
  blocks_[b].rc = 1;
  ++n_used_;
  ++stats_.allocations;
  return b;
}

void BlockAllocator::ref(BlockId b) {
  if (!valid(b)) {
    ++misuse_;
    return;
  }
  Block& blk = blocks_[b];
  if (blk.rc > 0) {
    ++blk.rc;
    return;
  }
  // rc 0 without a key is a free block sitting in the free stack; taking it here would need an
  // O(n) removal, and its contents are meaningless anyway: callers must use allocate().
  if (!blk.has_key) {
    ++misuse_;
    return;
  }
  lru_remove(b);
  --n_cached_;
  blk.rc = 1;
  ++n_used_;
}

void BlockAllocator::unref(BlockId b) {
  if (!valid(b) || blocks_[b].rc <= 0) {
    ++misuse_;
    return;
  }
  Block& blk = blocks_[b];
  if (--blk.rc > 0) return;
  --n_used_;
  if (blk.has_key) {
    lru_push_back(b);
    ++n_cached_;
  } else {
    free_.push_back(b);
  }
}

int32_t BlockAllocator::refcount(BlockId b) const { return valid(b) ? blocks_[b].rc : 0; }

uint64_t BlockAllocator::hash_block(uint64_t parent, const int32_t* tokens, int32_t n, uint64_t adapter, bool tiled) {
  if (!tokens || n < 0) n = 0;
  uint64_t h = 0x9e3779b97f4a7c15ULL;  // arbitrary nonzero seed
  h = absorb(h, parent);
  h = absorb(h, adapter);
  // Decode-arithmetic blocks keep the keys they had before the prompt arithmetic existed.
  if (tiled) h = absorb(h, 0x7469'6c65'6400'0001ULL);
  h = absorb(h, static_cast<uint64_t>(static_cast<uint32_t>(n)));  // n first: no padding ambiguity
  int32_t i = 0;
  for (; i + 1 < n; i += 2) {
    uint64_t w = static_cast<uint64_t>(static_cast<uint32_t>(tokens[i])) |
                 (static_cast<uint64_t>(static_cast<uint32_t>(tokens[i + 1])) << 32);
    h = absorb(h, w);
  }
  if (i < n) h = absorb(h, static_cast<uint64_t>(static_cast<uint32_t>(tokens[i])));
  return fmix64(h ^ static_cast<uint64_t>(3 + (n + 1) / 2));  // total words, murmur-style
}

BlockId BlockAllocator::lookup(uint64_t key) {
  ++stats_.lookups;
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return -1;
  ++stats_.hits;
  return it->second;
}

bool BlockAllocator::register_block(BlockId b, uint64_t key) {
  if (!valid(b) || blocks_[b].rc <= 0) {
    ++misuse_;
    return false;
  }
  Block& blk = blocks_[b];
  if (blk.has_key) return false;
  // try_emplace leaves the map untouched when the key is already present.
  if (!by_key_.try_emplace(key, b).second) return false;
  blk.has_key = true;
  blk.key = key;
  return true;
}

bool BlockAllocator::registered(BlockId b) const { return valid(b) && blocks_[b].has_key; }

uint64_t BlockAllocator::key_of(BlockId b) const { return valid(b) && blocks_[b].has_key ? blocks_[b].key : 0; }

int32_t BlockAllocator::clear_cached() {
  int32_t dropped = 0;
  while (lru_head_ >= 0) {
    BlockId b = lru_head_;
    lru_remove(b);
    drop_key(b);
    free_.push_back(b);
    ++dropped;
  }
  n_cached_ = 0;
  return dropped;
}

void BlockAllocator::lru_push_back(BlockId b) {
  Block& blk = blocks_[b];
  blk.prev = lru_tail_;
  blk.next = -1;
  if (lru_tail_ >= 0) blocks_[lru_tail_].next = b;
  else lru_head_ = b;
  lru_tail_ = b;
}

void BlockAllocator::lru_remove(BlockId b) {
  Block& blk = blocks_[b];
  if (blk.prev >= 0) blocks_[blk.prev].next = blk.next;
  else lru_head_ = blk.next;
  if (blk.next >= 0) blocks_[blk.next].prev = blk.prev;
  else lru_tail_ = blk.prev;
  blk.prev = blk.next = -1;
}

void BlockAllocator::drop_key(BlockId b) {
  Block& blk = blocks_[b];
  by_key_.erase(blk.key);
  blk.has_key = false;
  blk.key = 0;
}

std::string BlockAllocator::check_invariants() const {
  auto fail = [](const std::string& what, int64_t b) { return what + " (block " + std::to_string(b) + ")"; };
  if (static_cast<int32_t>(blocks_.size()) != n_blocks_) return "blocks_ size != n_blocks";
  // 1 = seen on the free stack, 2 = seen on the LRU list.
  std::vector<uint8_t> seen(static_cast<size_t>(n_blocks_), 0);

  if (static_cast<int32_t>(free_.size()) > n_blocks_) return "free stack larger than n_blocks";
  for (BlockId b : free_) {
    if (!valid(b)) return fail("free stack holds out-of-range id", b);
    if (seen[b]) return fail("block twice on the free stack", b);
    seen[b] = 1;
    if (blocks_[b].rc != 0) return fail("free block with refcount != 0", b);
    if (blocks_[b].has_key) return fail("free block with a key", b);
  }

  int32_t lru_len = 0;
  BlockId prev = -1;
  for (BlockId b = lru_head_; b >= 0; b = blocks_[b].next) {
    if (!valid(b)) return fail("LRU link out of range", b);
    if (seen[b] == 1) return fail("block both free and on the LRU", b);
    if (seen[b] == 2) return fail("LRU cycle", b);
    seen[b] = 2;
    const Block& blk = blocks_[b];
    if (blk.prev != prev) return fail("LRU prev link mismatch", b);
    if (blk.rc != 0) return fail("cached block with refcount != 0", b);
    if (!blk.has_key) return fail("cached block without a key", b);
    prev = b;
    ++lru_len;
  }
  if (lru_tail_ != prev) return "LRU tail does not match the last block walked";
  if (lru_len != n_cached_)
    return "n_cached " + std::to_string(n_cached_) + " != LRU length " + std::to_string(lru_len);

  int32_t used = 0;
  size_t keyed = 0;
  for (BlockId b = 0; b < n_blocks_; ++b) {
    const Block& blk = blocks_[b];
    if (blk.rc < 0) return fail("negative refcount", b);
    if (blk.rc > 0) {
      if (seen[b]) return fail("used block on the free stack or LRU", b);
      ++used;
    } else if (!seen[b]) {
      return fail("unreferenced block on neither the free stack nor the LRU", b);
    }
    if (seen[b] != 2 && (blk.prev != -1 || blk.next != -1)) return fail("stale LRU links", b);
    if (blk.has_key) {
      ++keyed;
      auto it = by_key_.find(blk.key);
      if (it == by_key_.end() || it->second != b) return fail("block's key does not map back to it", b);
    }
  }
  if (used != n_used_) return "n_used " + std::to_string(n_used_) + " != counted " + std::to_string(used);
  if (keyed != by_key_.size()) return "hash map size != number of registered blocks";
  for (const auto& [key, b] : by_key_) {
    if (!valid(b)) return fail("hash map value out of range", b);
    if (!blocks_[b].has_key || blocks_[b].key != key) return fail("hash map entry disagrees with block", b);
  }
  if (n_free() + n_cached_ + n_used_ != n_blocks_) return "free + cached + used != n_blocks";
  if (stats_.hits > stats_.lookups) return "hits > lookups";
  return {};
}

}  // namespace llmserve
