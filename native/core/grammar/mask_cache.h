// Grammar masks shared by every request of one grammar on one vocabulary: structural state keys
// and a byte-capped cache of computed masks.
//
// Why: a mask is a function of the matcher's state only, but the state's stacks name rules, and
// a bounded repetition (JSON Schema `maxLength: 400` becomes `char{0,400}`) expands into 400
// generated rules `r_k ::= char r_(k-1) |`: every step of a string is a new state by rule id, so a
// cache keyed by positions never hits and every step walks the whole vocabulary trie (~ms).
//
// Structural classes: rules are partitioned by bounded bisimulation. Level 0 groups rules of the
// same shape (element types and values, references ignored); level j+1 also requires each
// reference to point to rules equal at level j (partition refinement until R levels or a fixed
// point). A mask walk consumes at most D = (longest token in bytes) + 1 code points (the +1: a
// partial UTF-8 tail is checked against the next character sets), and between two consumed code
// points it expands at most H + 2 nested references (H: the longest chain of the grammar's "can
// start" graph). So two stacks whose frames agree as (class at level R, offset in rule), with
// R = (D + 1) * (H + 2), accept exactly the same byte strings up to D code points: the same mask.
// At the fixed point the classes are exact bisimulation and R no longer matters. The key of a
// state is its frames' (class, offset) plus the pending UTF-8 state; r_k for k >= R all share
// one class, so a long bounded string hits the cache after its first R steps.
//
// Thread safety: lookup/insert take a mutex (masks for many sequences are computed in parallel).
// The cache's content only decides whether a mask is walked or copied, never its value, so which
// requests ran before does not change a request's tokens (batch invariance).
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "gbnf.h"

namespace llmserve {

class TokenTrie;

class GrammarMasks {
 public:
  static constexpr size_t kDefaultCacheBytes = size_t{8} << 20;
  // Above this many element visits the refinement is skipped and each rule is its own class
  // (exact, merely fewer cache hits): bounds the work a hostile grammar can ask for.
  static constexpr uint64_t kMaxRefineWork = uint64_t{8} << 20;

  GrammarMasks(std::shared_ptr<const Grammar> g, std::shared_ptr<const TokenTrie> trie,
               size_t cache_bytes = kDefaultCacheBytes);

  const std::shared_ptr<const Grammar>& grammar() const { return g_; }
  const std::shared_ptr<const TokenTrie>& trie() const { return trie_; }
  // Canonical (class << 32 | offset) of a grammar position.
  uint64_t canon(const GElem* e) const;
  // Copies the cached mask for `key` into allowed[n_tokens] (0/1). false: not cached.
  bool lookup(const std::string& key, uint8_t* allowed);
  // Caches allowed[n_tokens] under `key` (as a bitset), evicting the oldest entries past the cap.
  void insert(const std::string& key, const uint8_t* allowed);

  // Introspection for tests and the benchmark.
  uint32_t n_classes() const { return n_classes_; }
  size_t cache_bytes() const;
  uint64_t hits() const;
  uint64_t misses() const;

 private:
  void refine();

  std::shared_ptr<const Grammar> g_;
  std::shared_ptr<const TokenTrie> trie_;
  std::vector<uint32_t> cls_;                            // rule -> class
  std::vector<std::pair<uintptr_t, uint32_t>> rule_at_;  // (first element's address, rule), sorted
  uint32_t n_classes_ = 0;
  size_t cap_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::vector<uint64_t>> masks_;  // under mu_
  std::deque<std::string> order_;                                 // insertion order, for eviction
  size_t bytes_ = 0;
  uint64_t hits_ = 0, misses_ = 0;
};

// Are two grammars the same rule table (so they can share one GrammarMasks)?
bool same_grammar(const Grammar& a, const Grammar& b);

}  // namespace llmserve
