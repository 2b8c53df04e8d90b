// GBNF (llama.cpp's grammar format) parsed into a flat rule table the matcher walks.
//
// Syntax: `name ::= alternatives` rules; alternatives separated by `|`; sequences of "literals"
// (escapes \n \r \t \\ \" \[ \] \xHH \uHHHH \UHHHHHHHH), [character classes] (ranges a-z,
// negation [^...]), `.` (any code point), rule references, ( groups ); postfix `*` `+` `?` `{m}`
// `{m,}` `{m,n}`; `#` comments to the end of the line. A rule ends at a newline unless the newline is
// inside parentheses or follows `::=` / `|`. The start rule is `root`.
//
// Representation (the same as llama.cpp's, so its semantics carry over): each rule is a sequence of
// elements; alternatives are separated by Alt and the rule ends with End. A character set is one
// Char (or CharNot) element followed by CharAlt elements, any of which may be followed by a
// RangeUpper element that makes it a range. Repetitions and groups become generated rules.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "../status.h"

namespace llmserve {

enum class GType : uint8_t {
  End,         // end of a rule
  Alt,         // start of the next alternative
  RuleRef,     // value: rule id
  Char,        // value: code point (starts a positive character set)
  CharNot,     // value: code point (starts a negated character set)
  RangeUpper,  // value: upper bound of a range whose lower bound is the element before
  CharAlt,     // value: another code point of the current set
  CharAny,     // `.`: any code point
};

struct GElem {
  GType type;
  uint32_t value;
};

// Hardening: a grammar from the network must not exhaust memory or the stack.
struct GbnfLimits {
  size_t max_text_bytes = 1 << 20;  // grammar source
  size_t max_rules = 8192;          // named + generated rules
  size_t max_elements = 1 << 20;    // all rules' elements after repetition expansion
  int max_nesting = 64;             // nested ( groups )
  uint32_t max_repetition = 1000;   // m and n in {m,n}
};

struct Grammar {
  std::vector<std::vector<GElem>> rules;  // indexed by rule id
  std::vector<std::string> names;         // rule id -> name (generated rules: "parent_N")
  uint32_t root = 0;
};

inline bool gelem_is_end(const GElem* e) { return e->type == GType::End || e->type == GType::Alt; }

// Parses `text`. Errors are Code::Grammar with the line and column and what to fix: syntax errors,
// an undefined rule, a missing `root`, an empty grammar, left recursion (which would make the
// matcher loop), or a limit exceeded.
Status parse_gbnf(std::string_view text, const GbnfLimits& limits, std::shared_ptr<const Grammar>* out);

// The grammar's "can start" graph: nullable[r] when rule r matches the empty string; first[r] the
// rules referenced in r with only nullable elements before them (expanding r may expand them
// before any character is matched). parse_gbnf refuses cycles in it (left recursion).
void grammar_start_graph(const Grammar& g, std::vector<bool>* nullable, std::vector<std::vector<uint32_t>>* first);

// The longest path (in edges) of the "can start" graph `first`, walked in iterative post-order (a
// deep grammar cannot overflow the C++ stack); -1 when it has a cycle, with *cycle_rule (optional)
// set to the first rule found reaching itself. parse_gbnf refuses a cycle; the mask cache bounds
// its refinement by the length.
int64_t longest_start_chain(const std::vector<std::vector<uint32_t>>& first, uint32_t* cycle_rule = nullptr);

// Does `e` (a Char/CharNot/CharAny element) accept code point cp? *next: the element after the set.
bool gelem_match(const GElem* e, uint32_t cp, const GElem** next);
// Could the set at `e` accept some code point in [lo, hi]? (Partial UTF-8: the bytes seen so far
// narrow the code point to a range.)
bool gelem_match_range(const GElem* e, uint32_t lo, uint32_t hi);

}  // namespace llmserve
