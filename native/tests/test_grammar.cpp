// Tests for native/core/grammar: GBNF parsing (llama.cpp's syntax on grammars equivalent to its
// examples), accept/reject through the matcher, typed errors for hostile grammars, and the trie
// mask against the brute-force oracle (every token tried on its own).
#include <memory>
#include <string>
#include <vector>

#include "grammar/gbnf.h"
#include "grammar/matcher.h"
#include "sampling/sampler.h"
#include "testing.h"

using namespace llmserve;

namespace {

const char* kJson = R"g(# JSON, as llama.cpp's grammars/json.gbnf describes it (written anew)
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws
array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws
string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4})
  )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws ::= | " " | "\n" [ \t]{0,20}
)g";

const char* kArith = R"g(root  ::= (expr "=" ws term "\n")+
expr  ::= term ([-+*/] term)*
term  ::= ident | num | "(" ws expr ")" ws
ident ::= [a-z] [a-z0-9_]* ws
num   ::= [0-9]+ ws
ws    ::= [ \t\n]*
)g";

const char* kList = R"g(root ::= item+
# Excludes various line break characters
item ::= "- " [^\r\n\x0b\x0c\x85\u2028\u2029]+ "\n"
)g";

const char* kChess = R"g(root   ::= "1. " move " " move "\n" ([1-9] [0-9]? ". " move " " move "\n")*
move   ::= (pawn | nonpawn | castle) [+#]?
nonpawn ::= [NBKQR] [a-h]? [1-8]? "x"? [a-h] [1-8]
pawn   ::= ([a-h] "x")? [a-h] [1-8] ("=" [NBKQR])?
castle ::= "O-O" "-O"?
)g";

std::shared_ptr<const Grammar> parse_ok(const char* text) {
  std::shared_ptr<const Grammar> g;
  Status s = parse_gbnf(text, GbnfLimits{}, &g);
  if (!s) std::fprintf(stderr, "  parse failed: %s\n", s.message.c_str());
  CHECK(s.is_ok());
  return g;
}

// The whole string accepted, and the grammar can end after it?
bool matches(const std::shared_ptr<const Grammar>& g, const std::string& text) {
  auto trie = std::make_shared<const TokenTrie>(std::vector<std::string>{"x"});
  GrammarMatcher m(g, trie);
  return m.accept_bytes(text) && m.can_end();
}

Code parse_code(const std::string& text, GbnfLimits lim = {}) {
  std::shared_ptr<const Grammar> g;
  return parse_gbnf(text, lim, &g).code;
}

}  // namespace

TEST(gbnf_json_grammar_accepts_json_and_rejects_the_rest) {
  auto g = parse_ok(kJson);
  CHECK(matches(g, "{}"));
  CHECK(matches(g, R"({"a": [1, 2.5, -3e4], "b": {"c": null}, "d": "x\"y\u00e9"})"));
  CHECK(matches(g, "{\"k\":\n  true}"));
  CHECK(!matches(g, "{"));                  // incomplete: not at an end
  CHECK(!matches(g, R"({"a" 1})"));         // missing colon
  CHECK(!matches(g, R"({"a": tru})"));      // bad literal
  CHECK(!matches(g, "[1, 2]"));             // root is an object
  CHECK(!matches(g, "{\"a\": \"\x01\"}"));  // control character in a string
}

TEST(gbnf_arithmetic_list_and_chess_grammars) {
  auto a = parse_ok(kArith);
  CHECK(matches(a, "x = 1\n"));
  CHECK(matches(a, "a+b*(c-2) = 10\nz = y\n"));
  CHECK(!matches(a, "x = \n"));
  CHECK(!matches(a, "x + = 1\n"));
  auto l = parse_ok(kList);
  CHECK(matches(l, "- milk\n- eggs \xe2\x9c\x93\n"));  // UTF-8 in an item
  CHECK(!matches(l, "- \n"));
  CHECK(!matches(l, "* milk\n"));
  CHECK(!matches(l,
                 "- a\xe2\x80\xa8"
                 "b\n"));  // U+2028 excluded by the negated class
  auto c = parse_ok(kChess);
  CHECK(matches(c, "1. e4 e5\n2. Nf3 Nc6\n3. O-O-O Qxd8#\n"));
  CHECK(!matches(c, "1. e9 e5\n"));
  CHECK(!matches(c, "1. e4\n"));
}

TEST(gbnf_repetition_counts_groups_any_and_escapes) {
  auto g = parse_ok(R"(root ::= "a"{2,3} [x-z]{2} ("b" | "c")* . "\x41\u00e9\n" # comment
)");
  CHECK(matches(g,
                "aaxybcbq"
                "A\xc3\xa9\n"));
  CHECK(matches(g,
                "aaazz"
                "\xe2\x82\xac"
                "A\xc3\xa9\n"));  // . takes a 3-byte code point
  CHECK(!matches(g,
                 "axx"
                 "qA\xc3\xa9\n"));           // a{2,3} needs two
  CHECK(!matches(g, "aaaaxxqA\xc3\xa9\n"));  // ... and at most three
  auto opt = parse_ok("root ::= \"x\"? \"y\"{0,} [^a]{1,}\n");
  CHECK(matches(opt, "b"));
  CHECK(matches(opt, "xyyyb"));
  CHECK(!matches(opt, "xa"));
  auto multi = parse_ok("root ::= a\n  | b\na ::= \"1\"\nb ::= \"2\"\n");  // alternative on the next line
  CHECK(matches(multi, "1") && matches(multi, "2"));
}

TEST(gbnf_hostile_grammars_give_typed_errors) {
  CHECK(parse_code("") == Code::Grammar);                                          // empty
  CHECK(parse_code("# only a comment\n") == Code::Grammar);                        // empty
  CHECK(parse_code("root ::= foo\n") == Code::Grammar);                            // undefined rule
  CHECK(parse_code("start ::= \"a\"\n") == Code::Grammar);                         // no root
  CHECK(parse_code("root ::= root \"a\" | \"b\"\n") == Code::Grammar);             // left recursion
  CHECK(parse_code("root ::= x\nx ::= y? root\ny ::= \"a\"\n") == Code::Grammar);  // through a nullable rule
  {
    // The message names the rule found reaching itself (the first on the walk from root).
    std::shared_ptr<const Grammar> g;
    const Status st = parse_gbnf("root ::= x\nx ::= y? z\ny ::= \"a\"\nz ::= x \"b\"\n", {}, &g);
    CHECK(st.code == Code::Grammar && st.message.find("rule `x` is left-recursive") != std::string::npos);
    if (st.message.find("`x`") == std::string::npos) std::fprintf(stderr, "  %s\n", st.message.c_str());
  }
  CHECK(parse_code("root ::= (\"a\"?)*\n") == Code::Grammar);  // nullable loop
  CHECK(parse_code("root ::= \"a\n") == Code::Grammar);        // unterminated literal
  CHECK(parse_code("root ::= [a-\n") == Code::Grammar);        // unterminated class
  CHECK(parse_code("root ::= [z-a]\n") == Code::Grammar);      // reversed range
  CHECK(parse_code("root ::= \"a\"{5,2}\n") == Code::Grammar);
  CHECK(parse_code("root ::= \"a\"{100000}\n") == Code::Grammar);          // repetition limit
  CHECK(parse_code("root ::= \"a\"\nroot ::= \"b\"\n") == Code::Grammar);  // defined twice
  CHECK(parse_code("root ::= * \"a\"\n") == Code::Grammar);
  CHECK(parse_code("root ::= \"\\q\"\n") == Code::Grammar);
  std::string deep = "root ::= ";
  for (int i = 0; i < 200; ++i) deep += "(";
  deep += "\"a\"";
  for (int i = 0; i < 200; ++i) deep += ")";
  CHECK(parse_code(deep + "\n") == Code::Grammar);  // nesting limit
  // Repetitions copy their item: the expanded size is capped before it exhausts memory.
  GbnfLimits small;
  small.max_elements = 10000;
  CHECK(parse_code("root ::= \"abcdefghijk\"{1000}\n", small) == Code::Grammar);
  CHECK(parse_code("root ::= \"abcdefghijk\"{1000}\n") == Code::Ok);
  std::shared_ptr<const Grammar> g;
  Status s = parse_gbnf("root ::= missing\n", GbnfLimits{}, &g);
  CHECK(s.message.find("missing") != std::string::npos);
}

// The trie walk must allow exactly the tokens that, tried one by one, continue the grammar; tokens
// split UTF-8 code points across each other and repeat prefixes of each other.
TEST(grammar_trie_mask_equals_brute_force) {
  std::vector<std::string> pieces = {
      "",     "{",    "}",   "{\"", "\"",   "a",        "ab",       "abc",      ":",
      ",",    " ",    "1",   "12",  "-",    "\xc3",     "\xa9",     "\xc3\xa9", "\xe2\x82",
      "\xac", "null", "nu",  "ll",  "true", "\":",      "\"a\"",    "[",        "]",
      "x",    "\\",   "\\n", "e",   "\xc0", "\xc0\xa0", "\xed\xa0", "\xf4\x90", "\xe0\x80"};
  auto trie = std::make_shared<const TokenTrie>(pieces);
  auto g = parse_ok(kJson);
  const std::vector<std::string> prefixes = {"",        "{",          "{\"a",      "{\"a\xc3",  "{\"a\xe2\x82",
                                             "{\"a\":", "{\"a\": nu", "{\"a\": 1", "{\"a\": [", "{\"a\": \"\\",
                                             "{}"};
  for (const auto& pre : prefixes) {
    GrammarMatcher m(g, trie);
    CHECK(m.accept_bytes(pre));
    std::vector<uint8_t> mask(pieces.size(), 7);
    CHECK(m.mask(mask.data()).is_ok());
    std::vector<uint8_t> again(pieces.size(), 7);
    CHECK(m.mask(again.data()).is_ok());  // the same state again: served by the mask cache
    CHECK(again == mask);
    int n_allowed = 0;
    for (size_t t = 0; t < pieces.size(); ++t) {
      GrammarMatcher one(g, trie);
      one.accept_bytes(pre);
      const bool want = !pieces[t].empty() && one.accept_bytes(pieces[t]);
      if ((mask[t] != 0) != want)
        std::fprintf(stderr, "  prefix '%s' token %zu: mask %d, oracle %d\n", pre.c_str(), t, mask[t], want);
      CHECK((mask[t] != 0) == want);
      n_allowed += want;
    }
    CHECK(n_allowed > 0);
  }
}

TEST(grammar_rejects_overlong_surrogate_and_out_of_range_utf8) {
  auto any = parse_ok("root ::= .\n");
  CHECK(matches(any, " "));
  CHECK(matches(any, "\xf4\x8f\xbf\xbf"));   // U+10FFFF
  CHECK(!matches(any, "\xc0\xa0"));          // overlong space (a decoder shows U+FFFD)
  CHECK(!matches(any, "\xe0\x80\xa0"));      // overlong
  CHECK(!matches(any, "\xed\xa0\x80"));      // surrogate U+D800
  CHECK(!matches(any, "\xf4\x90\x80\x80"));  // past U+10FFFF
  auto trie =
      std::make_shared<const TokenTrie>(std::vector<std::string>{"\xc0", "\xed\xa0", "\xf4\x90", "\xe0\x80", "\xc3"});
  GrammarMatcher m(any, trie);
  std::vector<uint8_t> mask(5);
  CHECK(m.mask(mask.data()).is_ok());
  CHECK(mask[0] == 0 && mask[1] == 0 && mask[2] == 0 && mask[3] == 0 && mask[4] == 1);  // only a real start
}

TEST(grammar_can_end_only_at_the_end_and_accept_follows_tokens) {
  auto g = parse_ok("root ::= \"ab\" \"c\"?\n");
  auto trie = std::make_shared<const TokenTrie>(std::vector<std::string>{"a", "b", "c", "ab", "bc", "abc"});
  GrammarMatcher m(g, trie);
  CHECK(!m.can_end());
  CHECK(m.accept(3).is_ok());  // "ab"
  CHECK(m.can_end());
  std::vector<uint8_t> mask(6);
  CHECK(m.mask(mask.data()).is_ok());
  CHECK(mask[2] == 1 && mask[0] == 0 && mask[1] == 0 && mask[4] == 0);
  CHECK(m.accept(0).code == Code::Grammar);  // "a" does not continue it
  CHECK(m.accept(2).is_ok());
  CHECK(m.mask(mask.data()).is_ok());
  for (uint8_t v : mask) CHECK(v == 0);  // complete: only an end-of-generation token fits
  CHECK(m.can_end());
  // A partial code point pending: not at an end even where the grammar could end after it.
  auto u = parse_ok("root ::= \"\xc3\xa9\"?\n");
  GrammarMatcher p(u, trie);
  CHECK(p.can_end());
  CHECK(p.accept_bytes("\xc3"));
  CHECK(!p.can_end());
}

TEST(sampler_masked_never_draws_a_disallowed_token) {
  SamplingParams sp;
  sp.temperature = 1.5f;
  sp.top_k = 0;
  sp.top_p = 1.0f;
  sp.min_p = 0.0f;
  std::vector<float> logits(64);
  for (int i = 0; i < 64; ++i) logits[i] = (float)(i % 7);
  std::vector<uint8_t> allowed(64, 0);
  allowed[3] = allowed[40] = 1;  // both have low logits (3 and 5 of max 6)
  for (uint64_t seed = 0; seed < 50; ++seed) {
    sp.seed = seed;
    Sampler s(sp, 64);
    SampleResult r;
    s.sample_masked(logits.data(), allowed.data(), &r);
    CHECK(r.token == 3 || r.token == 40);
  }
  sp.temperature = 0.0f;  // greedy: the best allowed, not the best overall
  Sampler g(sp, 64);
  SampleResult r;
  g.sample_masked(logits.data(), allowed.data(), &r);
  CHECK(r.token == 40);
}

TEST(grammar_too_ambiguous_is_a_typed_error) {
  // Every "a" doubles the live parses of x*: refused once past kMaxStacks rather than exploding.
  auto g = parse_ok("root ::= x* \"b\"\nx ::= \"a\" | \"a\" | y\ny ::= \"a\"\n");
  auto trie = std::make_shared<const TokenTrie>(std::vector<std::string>{"a", "b"});
  GrammarMatcher m(g, trie);
  std::vector<uint8_t> mask(2);
  bool failed = false;
  for (int i = 0; i < 30 && !failed; ++i) {
    if (!m.mask(mask.data()).is_ok()) failed = true;
    else if (!m.accept(0).is_ok()) failed = true;
  }
  CHECK(failed || mask[0] == 1);  // either refused, or the parses stayed bounded (deduplicated)
}
