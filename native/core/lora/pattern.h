// Python `re` patterns as PEFT applies them to module names: `target_modules` / `exclude_modules`
// given as a string (re.fullmatch) and the keys of `rank_pattern` / `alpha_pattern`
// (re.match(rf"(.*\.)?({key})$", name), i.e. a full match of "(.*\.)?(key)").
//
// Matching runs a Pike VM over a Thompson NFA: time linear in the name times the program size, no
// backtracking, so no pattern in an adapter_config.json can hang a load (std::regex backtracks and
// recurses). Names are ASCII, so matching is bytewise ('.' is any byte but '\n'; \w \d \s are ASCII).
// Supported: literals, '.', classes [..] with ranges and negation, \d \w \s \D \W \S, \xhh,
// \n \t \r \f \v, escaped punctuation, groups (...) (?:...) (?P<name>...), '|', quantifiers
// * + ? {m} {m,} {,n} {m,n} (m, n <= 1000) and their lazy forms (laziness does not change whether
// a name matches), anchors ^ $ \A \Z. Anything else (back-references, look-around, inline flags,
// possessive quantifiers, \b ...) is refused with InvalidArgument naming the pattern.
#pragma once
#include <bitset>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../status.h"

namespace llmserve {

class Pattern {
 public:
  // Compiles pattern; `what` names it in errors (e.g. "target_modules").
  static Status compile(std::string_view pattern, const std::string& what, Pattern* out);
  // True if the whole of s matches.
  bool full_match(std::string_view s) const;

  // Caps: pattern length and compiled program size (counted repetition expands the program).
  static constexpr size_t kMaxPatternBytes = 4096;
  static constexpr size_t kMaxProgram = 1 << 16;

  struct Inst {
    enum Op : uint8_t { Set, Split, Jmp, Bol, Eol, Match } op;
    int32_t x = 0, y = 0;  // Set: sets_ index; Split: both targets; Jmp: target
  };

 private:
  friend class PatternCompiler;
  std::vector<Inst> prog_;
  std::vector<std::bitset<256>> sets_;
};

}  // namespace llmserve
