// Tests for native/core/grammar/mask_cache: masks served from the structural cache (shared by
// several matchers, bounded repetitions collapsed into one class) equal the brute-force oracle
// (every token tried on its own bytes) at every state of seeded random walks, and the cache stays
// under its byte cap.
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "grammar/gbnf.h"
#include "grammar/mask_cache.h"
#include "grammar/matcher.h"
#include "testing.h"

using namespace llmserve;

namespace {

std::shared_ptr<const Grammar> parse_ok(const std::string& text) {
  std::shared_ptr<const Grammar> g;
  Status s = parse_gbnf(text, GbnfLimits{}, &g);
  if (!s) std::fprintf(stderr, "  parse failed: %s\n", s.message.c_str());
  CHECK(s.is_ok());
  return g;
}

// JSON-Schema-like grammars: bounded strings (the generated-rule chains of `{0,N}`), unbounded
// ones, nesting, and an arithmetic grammar with recursion through a non-tail reference.
const char* kBoundedString = R"g(root ::= "{\"t\":" str ",\"n\":" [0-9]{1,3} ",\"a\":[" (str ("," str){0,3})? "]}"
str  ::= "\"" char{0,60} "\""
char ::= [^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
)g";
const char* kUnboundedString = R"g(root ::= "[" (s ("," s)*)? "]"
s    ::= "\"" ([^"\\] | "\\" ["\\n])* "\""
)g";
const char* kArith = R"g(root ::= expr
expr ::= term ([-+*] term){0,12}
term ::= [a-c] | [0-9]{1,4} | "(" expr ")"
)g";
const char* kLetters = "root ::= \"\\\"\" [a-d]{0,200} \"\\\"\"\n";

const std::vector<std::string> kPieces = {
    "",    "{",    "}",       "\"",   "\",",      ",",        ":",    "[",       "]",        "[\"",
    "\"]", "\"]}", "{\"t\":", "a",    "ab",       "abc",      "abcd", "abc\"",   "b",        "c",
    "d",   "dd",   "x",       "xy",   " ",        " a",       "1",    "12",      "123",      "1234",
    "+",   "-",    "*",       "(",    ")",        "(a",       "a)",   "\\",      "\\n",      "\\u",
    "00",  "\\\"", "\xc3",    "\xa9", "\xc3\xa9", "\xe2\x82", "\xac", ",\"n\":", ",\"a\":[", "\"t\"",
};

// The oracle: replay `prefix` on a fresh matcher, then try token t's bytes (accept_bytes never
// reads masks; `plain` only saves each oracle matcher the class refinement).
std::vector<uint8_t> brute_force(const std::shared_ptr<GrammarMasks>& plain, const std::string& prefix) {
  std::vector<uint8_t> want(kPieces.size(), 0);
  for (size_t t = 0; t < kPieces.size(); ++t) {
    if (kPieces[t].empty()) continue;
    GrammarMatcher one(plain);
    CHECK(one.accept_bytes(prefix));
    want[t] = one.accept_bytes(kPieces[t]) ? 1 : 0;
  }
  return want;
}

// Seeded random walks of several matchers sharing one GrammarMasks, interleaved step by step:
// each mask must equal the oracle, whatever the cache holds from the other walks.
int check_walks(const std::string& text, uint32_t seed, int steps, std::shared_ptr<GrammarMasks>* out_masks) {
  auto g = parse_ok(text);
  auto trie = std::make_shared<const TokenTrie>(kPieces);
  auto masks = std::make_shared<GrammarMasks>(g, trie);
  auto plain = std::make_shared<GrammarMasks>(g, trie);
  constexpr int kWalks = 3;
  std::vector<std::unique_ptr<GrammarMatcher>> ms;
  std::vector<std::string> text_so_far(kWalks);
  std::vector<std::mt19937> rng;
  for (int w = 0; w < kWalks; ++w) {
    ms.push_back(std::make_unique<GrammarMatcher>(masks));
    rng.emplace_back(seed + (uint32_t)w);
  }
  int checked = 0;
  for (int step = 0; step < steps; ++step) {
    for (int w = 0; w < kWalks; ++w) {
      std::vector<uint8_t> mask(kPieces.size(), 7);
      CHECK(ms[(size_t)w]->mask(mask.data()).is_ok());
      const std::vector<uint8_t> want = brute_force(plain, text_so_far[(size_t)w]);
      for (size_t t = 0; t < kPieces.size(); ++t)
        if (mask[t] != want[t])
          std::fprintf(stderr, "  seed %u walk %d step %d after '%s': token '%s' mask %d, oracle %d\n", seed, w, step,
                       text_so_far[(size_t)w].c_str(), kPieces[t].c_str(), mask[t], want[t]);
      CHECK(mask == want);
      ++checked;
      // Prefer long tokens (walks deep into the repetitions), sometimes any allowed one.
      std::vector<int32_t> allowed;
      for (size_t t = 0; t < kPieces.size(); ++t)
        if (want[t]) allowed.push_back((int32_t)t);
      if (allowed.empty()) {  // the grammar is complete: start over (the cache stays warm)
        ms[(size_t)w] = std::make_unique<GrammarMatcher>(masks);
        text_so_far[(size_t)w].clear();
        continue;
      }
      int32_t tok = allowed[rng[(size_t)w]() % allowed.size()];
      if (rng[(size_t)w]() % 4 != 0)
        for (int32_t t : allowed)
          if (kPieces[(size_t)t].size() > kPieces[(size_t)tok].size()) tok = t;
      CHECK(ms[(size_t)w]->accept(tok).is_ok());
      text_so_far[(size_t)w] += kPieces[(size_t)tok];
    }
  }
  if (out_masks) *out_masks = masks;
  return checked;
}

}  // namespace

TEST(grammar_masks_equal_brute_force_on_shared_random_walks) {
  const char* grammars[] = {kBoundedString, kUnboundedString, kArith, kLetters};
  for (const char* text : grammars)
    for (uint32_t seed : {1u, 2u}) CHECK(check_walks(text, seed, 70, nullptr) > 30);
}

// A long bounded repetition: the generated rules collapse into few classes, so most steps are
// served from the cache, and the last steps (where fewer characters remain than a token has) are
// still exact: the oracle check above runs through the end of the repetition here.
TEST(grammar_masks_bounded_repetition_hits_the_cache) {
  std::shared_ptr<GrammarMasks> masks;
  const int checked = check_walks(kLetters, 3, 90, &masks);
  CHECK(checked > 60);
  CHECK(masks->n_classes() < masks->grammar()->rules.size() / 2);
  CHECK(masks->hits() > masks->misses());
  // The same walk with every rule its own class would miss at every step of the repetition.
  auto g = parse_ok(kLetters);
  CHECK(g->rules.size() > 200);
}

TEST(grammar_masks_cache_respects_its_byte_cap) {
  auto g = parse_ok(kLetters);
  std::vector<std::string> pieces;
  for (int i = 0; i < 3000; ++i) pieces.push_back(std::string(1 + i % 3, (char)('a' + i % 4)));
  auto trie = std::make_shared<const TokenTrie>(pieces);
  const size_t cap = 4096;
  GrammarMasks masks(g, trie, cap);
  std::vector<uint8_t> m(pieces.size(), 1);
  for (int i = 0; i < 100; ++i) {
    masks.insert("key" + std::to_string(i), m.data());
    CHECK(masks.cache_bytes() <= cap);
  }
  CHECK(masks.cache_bytes() > 0);
  std::vector<uint8_t> back(pieces.size(), 0);
  CHECK(masks.lookup("key99", back.data()));  // the newest survives
  CHECK(back == m);
  CHECK(!masks.lookup("key0", back.data()));  // the oldest was evicted
}

// Grammars with the same rule table share masks in the engine; different ones must not.
TEST(grammar_masks_same_grammar_compares_rule_tables) {
  auto a = parse_ok(kArith);
  auto b = parse_ok(kArith);
  auto c = parse_ok(kLetters);
  CHECK(a.get() != b.get());
  CHECK(same_grammar(*a, *b));
  CHECK(!same_grammar(*a, *c));
  auto d = parse_ok(std::string(kArith) + "x ::= \"q\"\n");
  CHECK(!same_grammar(*a, *d));
}

// A refinement that would cost more than kMaxRefineWork (long tokens times a large grammar) falls
// back to one class per rule: fewer cache hits, masks still exact.
TEST(grammar_masks_large_refinement_falls_back_to_rule_classes) {
  // Three copies of one group: a refinement would put them in one class; the fallback does not.
  auto g = parse_ok("root ::= (\"ab\" | \"c\"){0,1000} \"!\" (\"ab\" | \"c\"){0,1000} (\"ab\" | \"c\"){0,1000}\n");
  std::vector<std::string> pieces = {"a", "b", "ab", "c", "!", "abc", "cab!", std::string(250, 'c')};
  auto trie = std::make_shared<const TokenTrie>(pieces);
  auto masks = std::make_shared<GrammarMasks>(g, trie);
  CHECK(masks->n_classes() == g->rules.size());
  GrammarMatcher m(masks);
  std::string text;
  for (int step = 0; step < 25; ++step) {
    std::vector<uint8_t> mask(pieces.size(), 7);
    CHECK(m.mask(mask.data()).is_ok());
    for (size_t t = 0; t < pieces.size(); ++t) {
      GrammarMatcher one(masks);  // accept_bytes only
      CHECK(one.accept_bytes(text));
      CHECK((mask[t] != 0) == one.accept_bytes(pieces[t]));
    }
    const int32_t tok = step % 3 == 0 ? 3 : 2;  // "c" or "ab"
    CHECK(mask[(size_t)tok] == 1);
    CHECK(m.accept(tok).is_ok());
    text += pieces[(size_t)tok];
  }
}
