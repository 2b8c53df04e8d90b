// BlockAllocator: ownership of paged-KV blocks (ids into KvPool) with reference counts, a prefix
// cache keyed by chained block hashes, and LRU eviction of released prefix blocks.
//
// Every block is in exactly one state:
//   free   - refcount 0, no key; on the free stack (LIFO, so recently freed blocks are reused
//            while still warm in cache).
//   cached - refcount 0 but registered under a prefix key; on the LRU list, evictable. It keeps
//            its K/V contents so a later request with the same prefix can ref it instead of
//            recomputing.
//   used   - refcount > 0 (registered or not). Shared prefix blocks have refcount > 1.
//
// Prefix keys chain: key(block i) = hash_block(key(block i-1), tokens of block i, n, adapter, tiled),
// with parent 0 for the first block, so a key identifies the whole prefix up to and including
// the block, not just its own tokens. Register a block only once all of its slots are written.
//
// Collisions: keys are 64-bit and the allocator does not store tokens, so two different prefixes
// with the same key would alias. With a good mix the chance of any collision among N live keys
// is about N^2 / 2^65 (N = 1e6 -> ~3e-8), which we accept, as vLLM and SGLang do. A caller that
// needs certainty can keep the tokens per block and compare them after lookup().
//
// Cost: every operation is O(1) (hash map operations amortized); the only allocation after
// construction is the hash map's node on register_block (buckets are reserved for n_blocks).
// check_invariants() and clear_cached() are O(n_blocks) and meant for tests and resets.
//
// Misuse never crashes: an out-of-range id, unref at refcount 0, ref of a free block (use
// allocate()), or register of an unreferenced block is a no-op that bumps misuse_count().
// Not thread-safe: the engine thread owns it.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace llmserve {

using BlockId = int32_t;

struct BlockAllocatorStats {
  int64_t allocations = 0;         // successful allocate() calls
  int64_t evictions = 0;           // allocate() calls that had to drop a cached block
  int64_t lookups = 0;             // lookup() calls
  int64_t hits = 0;                // lookup() calls that found a block
  int64_t failed_allocations = 0;  // allocate() calls that returned -1 (nothing available)
};

class BlockAllocator {
 public:
  // n_blocks < 0 is treated as 0 (an allocator that never hands out a block).
  explicit BlockAllocator(int32_t n_blocks);

  int32_t n_blocks() const { return n_blocks_; }
  int32_t n_free() const { return static_cast<int32_t>(free_.size()); }  // rc 0, no key
  int32_t n_cached() const { return n_cached_; }                         // rc 0, registered (evictable, LRU)
  int32_t n_used() const { return n_used_; }                             // rc > 0
  int32_t n_available() const { return n_free() + n_cached_; }

  // A block with refcount 1 and no key. Takes a free block first; otherwise evicts the least
  // recently released cached block (dropping its key). Returns -1 when nothing is available.
  BlockId allocate();
  // refcount++. A cached block (rc 0) leaves the LRU and becomes used. Free or out of range: misuse.
  void ref(BlockId b);
  // refcount--. At 0: registered -> cached (most recently used end of the LRU), else -> free.
  // rc already 0 or out of range: misuse.
  void unref(BlockId b);
  // 0 for free / cached / out-of-range blocks.
  int32_t refcount(BlockId b) const;

  // Chained prefix key of one full block (see top of file). tokens: [n]; null or n < 0 counts as
  // no tokens. tiled: computed with the prompt arithmetic (kv/batch.h). Deterministic across runs, builds and platforms (no std::hash, no pointer values).
  static uint64_t hash_block(uint64_t parent, const int32_t* tokens, int32_t n, uint64_t adapter, bool tiled = false);

  // The block holding `key` (cached or used), or -1. Counts lookups / hits. Does not ref: ref the
  // result before the next allocate(), which may evict it.
  BlockId lookup(uint64_t key);
  // b (rc > 0, unregistered) now holds `key`. False and no change if `key` already maps to a
  // block (another sequence registered the same prefix first: keep using b privately, or switch
  // to lookup(key)) or b already has a key. False + misuse for out of range or rc 0.
  bool register_block(BlockId b, uint64_t key);
  bool registered(BlockId b) const;
  uint64_t key_of(BlockId b) const;  // 0 when unregistered or out of range

  // Drops every cached block's key, making it free (e.g. after unloading an adapter, or to reset
  // the prefix cache). Used registered blocks keep their keys. Returns how many were dropped.
  int32_t clear_cached();

  const BlockAllocatorStats& stats() const { return stats_; }
  int64_t misuse_count() const { return misuse_; }

  // Full O(n_blocks) consistency check: every block in exactly one of free / cached / used, the
  // free stack, LRU links and hash map agree with per-block state, counts add up. Empty if OK.
  std::string check_invariants() const;

 private:
  struct Block {
    int32_t rc = 0;
    int32_t prev = -1;  // LRU links; -1 = none (only meaningful while cached)
    int32_t next = -1;
    bool has_key = false;
    uint64_t key = 0;
  };

  bool valid(BlockId b) const { return b >= 0 && b < n_blocks_; }
  void lru_push_back(BlockId b);  // most recently used end
  void lru_remove(BlockId b);
  void drop_key(BlockId b);

  int32_t n_blocks_ = 0;
  std::vector<Block> blocks_;
  std::vector<BlockId> free_;  // stack; capacity n_blocks reserved, so push never allocates
  int32_t lru_head_ = -1;      // least recently released cached block (evicted first)
  int32_t lru_tail_ = -1;      // most recently released
  int32_t n_cached_ = 0;
  int32_t n_used_ = 0;
  std::unordered_map<uint64_t, BlockId> by_key_;
  BlockAllocatorStats stats_;
  int64_t misuse_ = 0;
};

}  // namespace llmserve
