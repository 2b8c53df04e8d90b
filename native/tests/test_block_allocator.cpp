// Tests for native/core/kv/block_allocator: exhaustion, free/cached/used transitions, prefix reuse,
// LRU eviction order, register conflicts, misuse as no-ops, hash_block inputs, and a randomized
// comparison against a naive model with check_invariants() after every operation.
#include <array>
#include <climits>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kv/block_allocator.h"
#include "testing.h"

using namespace llmserve;

namespace {

// check_invariants() must return "", printing the description when it does not.
#define CHECK_INVARIANTS(alloc)                                                                 \
  do {                                                                                          \
    const std::string _inv = (alloc).check_invariants();                                        \
    if (!_inv.empty()) std::fprintf(stderr, "  %s:%d: %s\n", __FILE__, __LINE__, _inv.c_str()); \
    CHECK(_inv.empty());                                                                        \
  } while (0)

uint64_t key_for(int32_t i) { return BlockAllocator::hash_block(0, &i, 1, 0); }

// Allocates N blocks, then registers the i-th (0-based) under key_for(i + 1).
template <size_t N>
std::array<BlockId, N> allocate_registered(BlockAllocator& a) {
  std::array<BlockId, N> blocks;
  for (BlockId& b : blocks) b = a.allocate();
  for (size_t i = 0; i < N; ++i) CHECK(a.register_block(blocks[i], key_for(static_cast<int32_t>(i + 1))));
  return blocks;
}

}  // namespace

TEST(block_allocator_exhaustion_returns_minus_one) {
  BlockAllocator a(4);
  CHECK_EQ(a.n_blocks(), 4);
  CHECK_EQ(a.n_free(), 4);
  std::set<BlockId> got;
  for (int i = 0; i < 4; ++i) {
    BlockId b = a.allocate();
    CHECK(b >= 0 && b < 4);
    CHECK_EQ(a.refcount(b), 1);
    got.insert(b);
  }
  CHECK_EQ(got.size(), size_t{4});  // all distinct
  CHECK_EQ(a.allocate(), -1);
  CHECK_EQ(a.allocate(), -1);
  CHECK_EQ(a.n_used(), 4);
  CHECK_EQ(a.n_available(), 0);
  CHECK_EQ(a.stats().allocations, int64_t{4});
  CHECK_EQ(a.stats().failed_allocations, int64_t{2});
  CHECK_EQ(a.stats().evictions, int64_t{0});
  CHECK_INVARIANTS(a);

  BlockAllocator empty(0);
  CHECK_EQ(empty.allocate(), -1);
  BlockAllocator negative(-5);
  CHECK_EQ(negative.n_blocks(), 0);
  CHECK_EQ(negative.allocate(), -1);
  CHECK_INVARIANTS(negative);
}

TEST(block_allocator_unref_to_free) {
  BlockAllocator a(2);
  BlockId b = a.allocate();
  a.ref(b);
  CHECK_EQ(a.refcount(b), 2);
  a.unref(b);
  CHECK_EQ(a.refcount(b), 1);
  CHECK_EQ(a.n_used(), 1);
  CHECK_EQ(a.n_free(), 1);
  a.unref(b);
  CHECK_EQ(a.refcount(b), 0);
  CHECK_EQ(a.n_used(), 0);
  CHECK_EQ(a.n_free(), 2);
  CHECK_EQ(a.n_cached(), 0);  // unregistered -> free, not cached
  CHECK_EQ(a.misuse_count(), int64_t{0});
  // The freed block is reused (LIFO) and comes back with refcount 1.
  CHECK_EQ(a.allocate(), b);
  CHECK_EQ(a.refcount(b), 1);
  CHECK_INVARIANTS(a);
}

TEST(block_allocator_registered_block_cached_and_reused) {
  BlockAllocator a(3);
  const int32_t toks[4] = {11, 12, 13, 14};
  const uint64_t key = BlockAllocator::hash_block(0, toks, 4, 0);
  BlockId b = a.allocate();
  CHECK(!a.registered(b));
  CHECK(a.register_block(b, key));
  CHECK(a.registered(b));
  CHECK_EQ(a.key_of(b), key);
  CHECK_EQ(a.lookup(key), b);  // used blocks resolve too (sharing between live sequences)
  a.unref(b);
  CHECK_EQ(a.n_cached(), 1);
  CHECK_EQ(a.n_free(), 2);
  CHECK_EQ(a.n_available(), 3);
  CHECK_EQ(a.refcount(b), 0);
  CHECK(a.registered(b));

  // A new request with the same prefix finds it and takes a reference.
  BlockId hit = a.lookup(key);
  CHECK_EQ(hit, b);
  a.ref(hit);
  CHECK_EQ(a.refcount(b), 1);
  CHECK_EQ(a.n_cached(), 0);
  CHECK_EQ(a.n_used(), 1);
  CHECK_EQ(a.lookup(key + 1), -1);
  CHECK_EQ(a.stats().lookups, int64_t{3});
  CHECK_EQ(a.stats().hits, int64_t{2});
  // Free blocks are taken before the cached one: the other two allocations leave b alone.
  a.unref(b);
  BlockId x = a.allocate(), y = a.allocate();
  CHECK(x != b && y != b);
  CHECK_EQ(a.lookup(key), b);
  CHECK_EQ(a.stats().evictions, int64_t{0});
  CHECK_INVARIANTS(a);
}

TEST(block_allocator_lru_eviction_order) {
  BlockAllocator a(3);
  const auto [A, B, C] = allocate_registered<3>(a);
  a.unref(A);
  a.unref(B);
  a.unref(C);
  CHECK_EQ(a.n_cached(), 3);
  CHECK_EQ(a.n_free(), 0);

  BlockId e1 = a.allocate();  // under pressure: least recently released first
  CHECK_EQ(e1, A);
  CHECK_EQ(a.refcount(A), 1);
  CHECK(!a.registered(A));
  CHECK_EQ(a.key_of(A), uint64_t{0});
  CHECK_EQ(a.lookup(key_for(1)), -1);
  CHECK_EQ(a.lookup(key_for(2)), B);
  CHECK_EQ(a.lookup(key_for(3)), C);
  CHECK_EQ(a.stats().evictions, int64_t{1});
  CHECK_EQ(a.allocate(), B);
  CHECK_EQ(a.allocate(), C);
  CHECK_EQ(a.allocate(), -1);
  CHECK_EQ(a.stats().evictions, int64_t{3});
  CHECK_INVARIANTS(a);

  // The evicted block's old key can be registered again, on another block.
  CHECK(a.register_block(C, key_for(1)));
  CHECK_EQ(a.lookup(key_for(1)), C);
}

TEST(block_allocator_release_order_not_register_order) {
  // LRU position comes from the time of the last release, so a block re-used from the cache and
  // released again moves to the most recent end.
  BlockAllocator a(3);
  const auto [A, B, C] = allocate_registered<3>(a);
  a.unref(A);
  a.unref(B);
  a.unref(C);
  a.ref(A);    // a new request shares A's prefix
  a.unref(A);  // and finishes: A is now the most recently released
  CHECK_EQ(a.allocate(), B);
  CHECK_EQ(a.allocate(), C);
  CHECK_EQ(a.allocate(), A);
  CHECK_INVARIANTS(a);
}

TEST(block_allocator_ref_of_cached_leaves_lru) {
  BlockAllocator a(2);
  const auto [A, B] = allocate_registered<2>(a);
  a.unref(A);
  a.unref(B);
  CHECK_EQ(a.n_cached(), 2);
  a.ref(A);
  CHECK_EQ(a.refcount(A), 1);
  CHECK_EQ(a.n_cached(), 1);
  CHECK_EQ(a.n_used(), 1);
  CHECK_INVARIANTS(a);
  // A is no longer evictable: pressure takes B, then nothing.
  CHECK_EQ(a.allocate(), B);
  CHECK_EQ(a.allocate(), -1);
  CHECK_EQ(a.lookup(key_for(1)), A);  // A kept its key while used
  CHECK_EQ(a.lookup(key_for(2)), -1);
  CHECK_INVARIANTS(a);
}

TEST(block_allocator_register_conflicts) {
  BlockAllocator a(3);
  BlockId A = a.allocate(), B = a.allocate();
  const uint64_t k1 = key_for(1), k2 = key_for(2);
  CHECK(a.register_block(A, k1));
  CHECK(!a.register_block(B, k1));  // key already held by A
  CHECK(!a.registered(B));
  CHECK_EQ(a.lookup(k1), A);
  CHECK(!a.register_block(A, k2));  // A already has a key
  CHECK_EQ(a.key_of(A), k1);
  CHECK_EQ(a.lookup(k2), -1);
  CHECK(!a.register_block(A, k1));         // same pair again: still false, no change
  CHECK_EQ(a.misuse_count(), int64_t{0});  // conflicts are normal races, not misuse
  // Key 0 is a valid key (registered() does not rely on a sentinel).
  CHECK(a.register_block(B, 0));
  CHECK(a.registered(B));
  CHECK_EQ(a.lookup(0), B);
  // Conflict with a cached (rc 0) holder too.
  a.unref(A);
  BlockId C = a.allocate();
  CHECK(C != A);
  CHECK(!a.register_block(C, k1));
  CHECK_EQ(a.lookup(k1), A);
  CHECK_INVARIANTS(a);
}

TEST(block_allocator_misuse_is_noop) {
  BlockAllocator a(3);
  BlockId A = a.allocate();
  CHECK(a.register_block(A, key_for(1)));
  CHECK_INVARIANTS(a);
  int64_t m = 0;
  for (BlockId bad : {-1, 3, 100, INT_MAX, INT_MIN}) {
    a.ref(bad);
    a.unref(bad);
    CHECK(!a.register_block(bad, key_for(9)));
    CHECK_EQ(a.refcount(bad), 0);
    CHECK(!a.registered(bad));
    CHECK_EQ(a.key_of(bad), uint64_t{0});
    m += 3;
  }
  CHECK_EQ(a.misuse_count(), m);
  // Free block: unref, ref (use allocate) and register are misuse.
  BlockId free_block = A == 0 ? 1 : 0;
  a.unref(free_block);
  a.ref(free_block);
  CHECK(!a.register_block(free_block, key_for(5)));
  m += 3;
  CHECK_EQ(a.misuse_count(), m);
  CHECK_EQ(a.refcount(free_block), 0);
  CHECK_EQ(a.n_free(), 2);
  // Cached block: unref below zero and register are misuse; the block stays cached.
  a.unref(A);
  a.unref(A);
  CHECK(!a.register_block(A, key_for(6)));
  m += 2;
  CHECK_EQ(a.misuse_count(), m);
  CHECK_EQ(a.n_cached(), 1);
  CHECK_EQ(a.lookup(key_for(1)), A);
  CHECK_EQ(a.lookup(key_for(9)), -1);
  CHECK_EQ(a.stats().allocations, int64_t{1});
  CHECK_INVARIANTS(a);
}

TEST(block_allocator_clear_cached) {
  BlockAllocator a(4);
  const auto [A, B, C] = allocate_registered<3>(a);
  a.unref(A);
  a.unref(B);
  CHECK_EQ(a.clear_cached(), 2);
  CHECK_EQ(a.n_cached(), 0);
  CHECK_EQ(a.n_free(), 3);
  CHECK_EQ(a.lookup(key_for(1)), -1);
  CHECK_EQ(a.lookup(key_for(3)), C);  // used blocks keep their keys
  CHECK_INVARIANTS(a);
}

TEST(block_allocator_hash_block_inputs) {
  const int32_t t[4] = {1, 2, 3, 4};
  const int32_t u[4] = {1, 2, 3, 5};
  const int32_t swapped[4] = {2, 1, 3, 4};
  const uint64_t base = BlockAllocator::hash_block(0, t, 4, 0);
  CHECK_EQ(BlockAllocator::hash_block(0, t, 4, 0), base);       // deterministic
  CHECK(BlockAllocator::hash_block(1, t, 4, 0) != base);        // parent
  CHECK(BlockAllocator::hash_block(0, u, 4, 0) != base);        // tokens
  CHECK(BlockAllocator::hash_block(0, swapped, 4, 0) != base);  // token order
  CHECK(BlockAllocator::hash_block(0, t, 3, 0) != base);        // n
  CHECK(BlockAllocator::hash_block(0, t, 4, 1) != base);        // adapter
  CHECK(BlockAllocator::hash_block(0, t, 4, 0, true) != base);  // computed with the prompt arithmetic
  // Parent and adapter are not interchangeable.
  CHECK(BlockAllocator::hash_block(7, t, 4, 0) != BlockAllocator::hash_block(0, t, 4, 7));
  // Odd tail: {1} and {1, 0} differ, so do {0} and {}.
  const int32_t z[2] = {1, 0};
  CHECK(BlockAllocator::hash_block(0, z, 1, 0) != BlockAllocator::hash_block(0, z, 2, 0));
  CHECK(BlockAllocator::hash_block(0, z + 1, 1, 0) != BlockAllocator::hash_block(0, z, 0, 0));
  // Chaining: same block tokens after different prefixes give different keys.
  const uint64_t p1 = BlockAllocator::hash_block(0, t, 4, 0), p2 = BlockAllocator::hash_block(0, u, 4, 0);
  CHECK(BlockAllocator::hash_block(p1, t, 4, 0) != BlockAllocator::hash_block(p2, t, 4, 0));
  // Bad input does not crash and equals the empty block.
  CHECK_EQ(BlockAllocator::hash_block(0, nullptr, 4, 0), BlockAllocator::hash_block(0, t, 0, 0));
  CHECK_EQ(BlockAllocator::hash_block(0, t, -3, 0), BlockAllocator::hash_block(0, t, 0, 0));
  // Pinned value: the hash is our own arithmetic (no std::hash), so it is the same in every run,
  // build and platform. Update this constant if the hash is changed on purpose.
  CHECK_EQ(base, uint64_t{0x975af3ef3934b3a8ULL});
}

TEST(block_allocator_hash_block_spread) {
  // No collisions over 200k distinct, near-identical chained blocks, and single-bit changes flip about half
  // of the output bits (a weak mix would leave low-entropy keys for sequential token ids).
  std::set<uint64_t> keys;
  int32_t toks[16];
  uint64_t parent = 0;
  for (int32_t i = 0; i < 200000; ++i) {
    for (int j = 0; j < 16; ++j) toks[j] = (i + j) % 1000 + (j == 0 ? i : 0);  // distinct inputs
    uint64_t k = BlockAllocator::hash_block(parent, toks, 16, static_cast<uint64_t>(i % 3));
    keys.insert(k);
    parent = (i % 100 == 99) ? 0 : k;
  }
  CHECK_EQ(keys.size(), size_t{200000});

  int64_t flipped = 0, trials = 0;
  for (int32_t i = 0; i < 16; ++i) toks[i] = i;
  const uint64_t ref = BlockAllocator::hash_block(0, toks, 16, 0);
  for (int pos = 0; pos < 16; ++pos) {
    for (int bit = 0; bit < 32; ++bit) {
      toks[pos] ^= (1u << bit);
      flipped += __builtin_popcountll(ref ^ BlockAllocator::hash_block(0, toks, 16, 0));
      ++trials;
      toks[pos] ^= (1u << bit);
    }
  }
  const double mean = static_cast<double>(flipped) / static_cast<double>(trials);
  CHECK_NEAR(mean, 32.0, 1.5);
}

// Randomized: random operations against a naive model; full state compare and check_invariants()
// after every operation.
TEST(block_allocator_randomized_against_model) {
  constexpr int32_t N = 24;
  constexpr int kOps = 100000;
  constexpr int kKeys = 40;  // small key space, so lookups hit and registers conflict
  BlockAllocator a(N);
  std::mt19937_64 rng(12345);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };

  std::vector<uint64_t> keyspace;
  for (int i = 0; i < kKeys; ++i) keyspace.push_back(key_for(i));

  // Model.
  std::vector<int32_t> rc(N, 0);
  std::vector<bool> has_key(N, false);
  std::vector<uint64_t> key(N, 0);
  std::vector<int64_t> released_at(N, 0);  // for cached blocks: LRU order
  std::map<uint64_t, BlockId> by_key;
  int64_t clock = 0, misuse = 0;
  BlockAllocatorStats st;
  std::vector<BlockId> held;  // one entry per reference this test owns

  auto model_release = [&](BlockId b) {
    if (--rc[b] == 0 && has_key[b]) released_at[b] = ++clock;
  };
  int64_t n_alloc_free = 0, n_evict = 0, n_fail = 0, n_reg_ok = 0, n_reg_conflict = 0, n_hits = 0, n_misuse = 0;

  bool ok = true;
  for (int op = 0; op < kOps && ok; ++op) {
    const int r = static_cast<int>(pick(100));
    if (r < 30) {  // allocate
      bool any_free = false;
      BlockId oldest = -1;
      for (BlockId b = 0; b < N; ++b) {
        if (rc[b] == 0 && !has_key[b]) any_free = true;
        if (rc[b] == 0 && has_key[b] && (oldest < 0 || released_at[b] < released_at[oldest])) oldest = b;
      }
      BlockId got = a.allocate();
      if (any_free) {
        CHECK(got >= 0 && got < N && rc[got] == 0 && !has_key[got]);
        ++n_alloc_free;
      } else if (oldest >= 0) {
        CHECK_EQ(got, oldest);
        by_key.erase(key[oldest]);
        has_key[oldest] = false;
        key[oldest] = 0;
        ++st.evictions;
        ++n_evict;
      } else {
        CHECK_EQ(got, -1);
        ++st.failed_allocations;
        ++n_fail;
      }
      if (got >= 0 && got < N) {
        rc[got] = 1;
        held.push_back(got);
        ++st.allocations;
      }
    } else if (r < 60) {  // unref one held reference
      if (held.empty()) continue;
      size_t i = pick(held.size());
      BlockId b = held[i];
      held[i] = held.back();
      held.pop_back();
      a.unref(b);
      model_release(b);
    } else if (r < 68) {  // extra ref of a held block (sharing between sequences)
      if (held.empty()) continue;
      BlockId b = held[pick(held.size())];
      a.ref(b);
      ++rc[b];
      held.push_back(b);
    } else if (r < 83) {  // register a held block
      if (held.empty()) continue;
      BlockId b = held[pick(held.size())];
      uint64_t k = keyspace[pick(kKeys)];
      bool expect = !has_key[b] && !by_key.count(k);
      CHECK_EQ(a.register_block(b, k), expect);
      if (expect) {
        has_key[b] = true;
        key[b] = k;
        by_key[k] = b;
        ++n_reg_ok;
      } else {
        ++n_reg_conflict;
      }
    } else if (r < 98) {  // lookup, and ref on a hit (prefix reuse)
      uint64_t k = keyspace[pick(kKeys)];
      auto it = by_key.find(k);
      BlockId expect = it == by_key.end() ? -1 : it->second;
      BlockId got = a.lookup(k);
      CHECK_EQ(got, expect);
      ++st.lookups;
      if (expect >= 0) {
        ++st.hits;
        ++n_hits;
        if (got == expect) {
          a.ref(got);
          ++rc[got];
          held.push_back(got);
        }
      }
    } else {  // misuse: must change nothing but the counter
      BlockId b;
      switch (pick(4)) {
        case 0: b = -1 - static_cast<BlockId>(pick(5)); break;
        case 1: b = N + static_cast<BlockId>(pick(5)); break;
        default: b = static_cast<BlockId>(pick(N)); break;
      }
      bool in_range = b >= 0 && b < N;
      switch (pick(3)) {
        case 0:
          if (in_range && rc[b] > 0) continue;  // a legal unref would steal a held reference
          a.unref(b);
          ++misuse;
          break;
        case 1:
          if (in_range && (rc[b] > 0 || has_key[b])) continue;  // legal ref
          a.ref(b);
          ++misuse;
          break;
        default:
          if (in_range && rc[b] > 0) continue;  // legal register
          CHECK(!a.register_block(b, keyspace[pick(kKeys)]));
          ++misuse;
          break;
      }
      ++n_misuse;
    }

    // Full compare with the model.
    int32_t m_free = 0, m_cached = 0, m_used = 0;
    for (BlockId b = 0; b < N; ++b) {
      if (a.refcount(b) != rc[b] || a.registered(b) != has_key[b] || a.key_of(b) != key[b]) ok = false;
      if (rc[b] > 0) ++m_used;
      else if (has_key[b]) ++m_cached;
      else ++m_free;
    }
    if (a.n_free() != m_free || a.n_cached() != m_cached || a.n_used() != m_used) ok = false;
    if (a.n_available() != m_free + m_cached) ok = false;
    const auto& s = a.stats();
    if (s.allocations != st.allocations || s.evictions != st.evictions || s.lookups != st.lookups ||
        s.hits != st.hits || s.failed_allocations != st.failed_allocations)
      ok = false;
    if (a.misuse_count() != misuse) ok = false;
    const std::string inv = a.check_invariants();
    if (!inv.empty()) {
      std::fprintf(stderr, "  invariant broken after op %d: %s\n", op, inv.c_str());
      ok = false;
    }
    if (!ok) std::fprintf(stderr, "  model mismatch after op %d (r=%d)\n", op, r);
  }
  CHECK(ok);
  // Every path was exercised.
  CHECK(n_alloc_free > 1000);
  CHECK(n_evict > 1000);
  CHECK(n_fail > 100);
  CHECK(n_reg_ok > 1000);
  CHECK(n_reg_conflict > 1000);
  CHECK(n_hits > 1000);
  CHECK(n_misuse > 100);

  // Release everything: nothing is used, every block is free or cached.
  for (BlockId b : held) a.unref(b);
  held.clear();
  CHECK_EQ(a.n_used(), 0);
  CHECK_EQ(a.n_free() + a.n_cached(), N);
  CHECK_EQ(a.n_available(), N);
  CHECK_EQ(a.misuse_count(), misuse);
  CHECK_INVARIANTS(a);
}
