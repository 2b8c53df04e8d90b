// Grammar matching (a pushdown automaton over code points, as llama.cpp's llama-grammar) and
// token masking over a byte trie of the vocabulary.
//
// State: a set of stacks of grammar positions. Each stack's top is a character set (Char/CharNot/
// CharAny) the next code point must match; an empty stack means the grammar can end here. Stacks
// are linked lists of nodes so that a step shares the untouched tail instead of copying it.
//
// Masking: TokenTrie holds every token's bytes once per model. mask() walks the trie depth first,
// advancing the stacks one code point at a time and pruning a subtree as soon as no stack survives,
// so tokens sharing a prefix share the work and a rejected prefix rejects its whole subtree.
// UTF-8: a code point split across tokens is kept as a partial (value so far, bytes missing); a
// token ending inside one is allowed when some stack accepts a code point in the range it narrows to.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../status.h"
#include "gbnf.h"
#include "mask_cache.h"

namespace llmserve {

// The vocabulary's token byte strings as a trie. Immutable after construction; shared by every
// request of a model. Tokens with no bytes (control tokens) or longer than kMaxTokenBytes are never
// allowed by a grammar (end-of-generation tokens are the engine's, allowed when the grammar can end).
class TokenTrie {
 public:
  static constexpr size_t kMaxTokenBytes = 256;
  explicit TokenTrie(std::vector<std::string> pieces);
  int32_t n_tokens() const { return (int32_t)pieces_.size(); }
  size_t max_bytes() const { return max_bytes_; }  // the longest token in the trie
  const std::string& piece(int32_t id) const { return pieces_[(size_t)id]; }

  struct Node {
    uint32_t first_child = 0;             // 0: none (node 0 is the root, never a child)
    uint32_t next_sibling = 0;            // 0: none
    uint32_t tok_begin = 0, tok_end = 0;  // ids_[tok_begin, tok_end): tokens whose bytes end here
    uint8_t byte = 0;
  };
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<int32_t>& ids() const { return ids_; }

 private:
  std::vector<std::string> pieces_;
  std::vector<Node> nodes_;
  std::vector<int32_t> ids_;  // token ids sorted by bytes
  size_t max_bytes_ = 0;
};

// A stack node: grammar position plus the rest of the stack. nullptr is the empty stack.
struct GStack {
  const GElem* pos;
  const GStack* parent;
};

// Chunked node storage: pointers stay valid while it grows; reset() keeps the memory.
class GArena {
 public:
  const GStack* make(const GElem* pos, const GStack* parent);
  void reset() { used_ = 0; }

 private:
  static constexpr size_t kChunk = 4096;
  std::vector<std::unique_ptr<GStack[]>> chunks_;
  size_t used_ = 0;
};

// One request's grammar state. Not thread-safe (one per sequence, like its Sampler).
class GrammarMatcher {
 public:
  // Beyond this many live stacks the grammar is too ambiguous to follow: mask()/accept() fail.
  static constexpr size_t kMaxStacks = 4096;

  // With a private GrammarMasks (tests; one-off use).
  GrammarMatcher(std::shared_ptr<const Grammar> g, std::shared_ptr<const TokenTrie> trie);
  // Sharing `masks` (its grammar and trie) with the other requests of the same grammar.
  explicit GrammarMatcher(std::shared_ptr<GrammarMasks> masks);

  // Can the grammar end here (an empty stack is live, no partial code point pending)?
  bool can_end() const;
  // allowed[id] = 1 for tokens the grammar accepts next, 0 otherwise ([n_tokens]). Code::Grammar
  // when the grammar's ambiguity exceeds kMaxStacks.
  Status mask(uint8_t* allowed);
  // mask() when the shared cache holds this state's mask (a copy, microseconds); false otherwise,
  // allowed then unspecified. Lets the step walk only the misses in parallel.
  bool mask_cached(uint8_t* allowed);
  // Advances over `token`'s bytes. Code::Grammar when the grammar rejects them (mask() excluded it).
  Status accept(int32_t token);
  // Advances over raw bytes (tests: accept/reject strings). false when rejected; the state is then
  // unchanged.
  bool accept_bytes(const std::string& bytes);

 private:
  struct Utf8 {
    uint32_t value = 0;
    int missing = 0;   // continuation bytes still expected
    uint32_t min = 0;  // smallest code point this length may encode (overlong forms are invalid)
  };
  bool step_byte(uint8_t b, Utf8* u, const std::vector<const GStack*>& in, std::vector<const GStack*>* out);
  void advance(const GStack* s, std::vector<const GStack*>* out);
  void accept_cp(const std::vector<const GStack*>& in, uint32_t cp, std::vector<const GStack*>* out);
  bool partial_ok(const std::vector<const GStack*>& st, const Utf8& u) const;
  void walk(uint32_t node, int depth, Utf8 u, uint8_t* allowed);
  void rebase();  // copy the live stacks into a fresh arena (drops the garbage of past steps)

  std::shared_ptr<const Grammar> g_;
  std::shared_ptr<const TokenTrie> trie_;
  GArena arena_, scratch_, spare_;
  GArena* cur_ = nullptr;  // where advance() allocates: arena_ (accept) or scratch_ (mask)
  std::vector<const GStack*> stacks_;
  Utf8 pending_;
  bool overflow_ = false;
  std::vector<std::vector<const GStack*>> levels_;  // per trie depth, the walk's stacks
  // Computed masks, shared by the grammar's requests, keyed by the state's structural key (see
  // mask_cache.h): a JSON string's `char*` or a long `char{0,N}` maps every step to the same key,
  // so its mask is walked once. The key is a function of the state only: batch invariance holds.
  std::shared_ptr<GrammarMasks> masks_;
  std::string key_;  // scratch
};

}  // namespace llmserve
