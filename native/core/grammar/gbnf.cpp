// GBNF parser: recursive descent over the source, building rules as gbnf.h describes. Every error
// names the line and column; every loop is bounded by the text or by GbnfLimits.
#include "gbnf.h"

#include <algorithm>
#include <unordered_map>

namespace llmserve {

namespace {

class Parser {
 public:
  Parser(std::string_view t, const GbnfLimits& l) : s_(t), lim_(l) {}

  Status parse(Grammar* g) {
    g_ = g;
    skip_space(true);
    if (pos_ >= s_.size()) return fail("the grammar is empty; define at least `root ::= ...`");
    while (pos_ < s_.size()) {
      LLMS_RETURN_IF_ERROR(parse_rule());
      skip_space(true);
    }
    for (size_t i = 0; i < g->rules.size(); ++i)
      if (!defined_[i])
        return make_error(Code::Grammar, "Grammar: rule `" + g->names[i] + "` is used but never defined.");
    auto it = ids_.find("root");
    if (it == ids_.end())
      return make_error(Code::Grammar, "Grammar: no `root` rule; the start rule must be named root.");
    g->root = it->second;
    return Status::ok();
  }

 private:
  Status fail(const std::string& what) const {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < pos_ && i < s_.size(); ++i) {
      if (s_[i] == '\n') ++line, col = 1;
      else ++col;
    }
    return make_error(Code::Grammar, "Grammar syntax error at line " + std::to_string(line) + ", column " +
                                         std::to_string(col) + ": " + what);
  }
  bool at(char c) const { return pos_ < s_.size() && s_[pos_] == c; }
  static bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  }

  // Spaces and comments; newlines only where `newline_ok` (inside groups, after ::= and |).
  void skip_space(bool newline_ok) {
    while (pos_ < s_.size()) {
      char c = s_[pos_];
      if (c == ' ' || c == '\t') ++pos_;
      else if (c == '#') {
        while (pos_ < s_.size() && s_[pos_] != '\n') ++pos_;
      } else if (newline_ok && (c == '\n' || c == '\r')) ++pos_;
      else break;
    }
  }

  std::string parse_name() {
    size_t b = pos_;
    while (pos_ < s_.size() && is_name_char(s_[pos_])) ++pos_;
    return std::string(s_.substr(b, pos_ - b));
  }

  Status symbol(const std::string& name, uint32_t* id) {
    auto it = ids_.find(name);
    if (it != ids_.end()) {
      *id = it->second;
      return Status::ok();
    }
    return new_rule(name, id);
  }
  Status new_rule(const std::string& name, uint32_t* id) {
    if (g_->rules.size() >= lim_.max_rules)
      return fail("more than " + std::to_string(lim_.max_rules) +
                  " rules (including generated ones); simplify the grammar");
    *id = (uint32_t)g_->rules.size();
    g_->rules.emplace_back();
    g_->names.push_back(name);
    defined_.push_back(false);
    ids_.emplace(name, *id);
    return Status::ok();
  }
  Status generated(uint32_t parent, uint32_t* id) {
    return new_rule(g_->names[parent] + "_" + std::to_string(g_->rules.size()), id);
  }
  Status add_rule(uint32_t id, std::vector<GElem>&& elems) {
    n_elements_ += elems.size();
    if (n_elements_ > lim_.max_elements)
      return fail("the grammar expands to more than " + std::to_string(lim_.max_elements) +
                  " elements (large {m,n} repetitions?); simplify it");
    g_->rules[id] = std::move(elems);
    defined_[id] = true;
    return Status::ok();
  }

  Status parse_rule() {
    if (!pos_ok_name()) return fail("expected a rule name");
    std::string name = parse_name();
    skip_space(false);
    if (s_.substr(pos_, 3) != "::=") return fail("expected ::= after `" + name + "`");
    pos_ += 3;
    skip_space(true);
    uint32_t id;
    LLMS_RETURN_IF_ERROR(symbol(name, &id));
    if (defined_[id]) return fail("rule `" + name + "` is defined twice");
    std::vector<GElem> body;
    LLMS_RETURN_IF_ERROR(parse_alternates(id, 0, &body));
    body.push_back({GType::End, 0});
    LLMS_RETURN_IF_ERROR(add_rule(id, std::move(body)));
    if (pos_ < s_.size() && s_[pos_] == '\r') ++pos_;
    if (pos_ < s_.size() && s_[pos_] != '\n') return fail("expected the end of the line after rule `" + name + "`");
    return Status::ok();
  }
  bool pos_ok_name() const { return pos_ < s_.size() && is_name_char(s_[pos_]); }

  Status parse_alternates(uint32_t rule, int depth, std::vector<GElem>* out) {
    LLMS_RETURN_IF_ERROR(parse_sequence(rule, depth, out));
    for (;;) {
      // A top-level rule may continue on the next line when that line starts with `|`.
      if (depth == 0) {
        size_t save = pos_;
        skip_space(true);
        if (!at('|')) pos_ = save;
      }
      if (!at('|')) break;
      ++pos_;
      skip_space(true);
      out->push_back({GType::Alt, 0});
      LLMS_RETURN_IF_ERROR(parse_sequence(rule, depth, out));
    }
    return Status::ok();
  }

  // One code point of a literal or class, escapes decoded; UTF-8 in the source decoded.
  Status parse_char(uint32_t* cp) {
    if (pos_ >= s_.size()) return fail("unexpected end of the grammar");
    unsigned char c = (unsigned char)s_[pos_];
    if (c == '\\') {
      if (pos_ + 1 >= s_.size()) return fail("unfinished escape");
      char e = s_[pos_ + 1];
      pos_ += 2;
      int hex = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
      if (hex) {
        uint32_t v = 0;
        for (int i = 0; i < hex; ++i, ++pos_) {
          if (pos_ >= s_.size()) return fail("expected " + std::to_string(hex) + " hex digits after \\" + e);
          char h = s_[pos_];
          int d = (h >= '0' && h <= '9')   ? h - '0'
                  : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                  : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                           : -1;
          if (d < 0) return fail("expected " + std::to_string(hex) + " hex digits after \\" + e);
          v = v * 16 + (uint32_t)d;
        }
        if (v > 0x10FFFF) return fail("code point beyond U+10FFFF");
        *cp = v;
        return Status::ok();
      }
      switch (e) {
        case 'n': *cp = '\n'; return Status::ok();
        case 'r': *cp = '\r'; return Status::ok();
        case 't': *cp = '\t'; return Status::ok();
        case '\\':
        case '"':
        case '[':
        case ']':
        case '-':
        case '^': *cp = (uint32_t)e; return Status::ok();
        default: --pos_; return fail(std::string("unknown escape \\") + e);
      }
    }
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || pos_ + n > s_.size()) return fail("invalid UTF-8 in the grammar");
    uint32_t v = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (int i = 1; i < n; ++i) {
      unsigned char d = (unsigned char)s_[pos_ + i];
      if ((d & 0xC0) != 0x80) return fail("invalid UTF-8 in the grammar");
      v = (v << 6) | (d & 0x3F);
    }
    pos_ += n;
    *cp = v;
    return Status::ok();
  }

  Status parse_int(uint32_t* v) {
    size_t b = pos_;
    uint64_t x = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      x = x * 10 + (uint64_t)(s_[pos_++] - '0');
      if (x > lim_.max_repetition)
        return fail("repetition count above " + std::to_string(lim_.max_repetition) + "; use * or + instead");
    }
    if (pos_ == b) return fail("expected a number in {m,n}");
    *v = (uint32_t)x;
    return Status::ok();
  }

  // Rewrites out[last:] (the last symbol) as repeated min..max times (max < 0: unbounded), with
  // generated rules as llama.cpp does: x{2,4} -> x x r1; r1 ::= x r2 | ; r2 ::= x | .
  Status repeat(uint32_t rule, std::vector<GElem>* out, size_t last, uint32_t min, int64_t max) {
    if (last == out->size()) return fail("a repetition operator needs something before it");
    std::vector<GElem> prev(out->begin() + (ptrdiff_t)last, out->end());
    if ((uint64_t)prev.size() * (min + (max < 0 ? 1 : (uint64_t)max)) > lim_.max_elements)
      return fail("the repetition expands beyond " + std::to_string(lim_.max_elements) + " elements; simplify it");
    if (min == 0) out->resize(last);
    for (uint32_t i = 1; i < min; ++i) out->insert(out->end(), prev.begin(), prev.end());
    const int64_t n_opt = max < 0 ? 1 : max - (int64_t)min;
    uint32_t last_rec = 0;
    for (int64_t i = 0; i < n_opt; ++i) {
      std::vector<GElem> rec = prev;
      uint32_t id;
      LLMS_RETURN_IF_ERROR(generated(rule, &id));
      if (i > 0 || max < 0) rec.push_back({GType::RuleRef, max < 0 ? id : last_rec});
      rec.push_back({GType::Alt, 0});
      rec.push_back({GType::End, 0});
      LLMS_RETURN_IF_ERROR(add_rule(id, std::move(rec)));
      last_rec = id;
    }
    if (n_opt > 0) out->push_back({GType::RuleRef, last_rec});
    n_elements_ += out->size() - last;
    if (n_elements_ > lim_.max_elements)
      return fail("the grammar expands to more than " + std::to_string(lim_.max_elements) + " elements; simplify it");
    return Status::ok();
  }

  Status parse_sequence(uint32_t rule, int depth, std::vector<GElem>* out) {
    size_t last = out->size();  // where the last symbol starts
    const bool nested = depth > 0;
    while (pos_ < s_.size()) {
      char c = s_[pos_];
      if (c == '"') {
        ++pos_;
        last = out->size();
        while (!at('"')) {
          if (pos_ >= s_.size() || s_[pos_] == '\n') return fail("unterminated string literal");
          uint32_t cp;
          LLMS_RETURN_IF_ERROR(parse_char(&cp));
          out->push_back({GType::Char, cp});
        }
        ++pos_;
      } else if (c == '[') {
        ++pos_;
        last = out->size();
        GType first = GType::Char;
        if (at('^')) ++pos_, first = GType::CharNot;
        bool any = false;
        while (!at(']')) {
          if (pos_ >= s_.size() || s_[pos_] == '\n') return fail("unterminated character class");
          uint32_t lo;
          LLMS_RETURN_IF_ERROR(parse_char(&lo));
          out->push_back({any ? GType::CharAlt : first, lo});
          any = true;
          if (at('-') && pos_ + 1 < s_.size() && s_[pos_ + 1] != ']') {
            ++pos_;
            uint32_t hi;
            LLMS_RETURN_IF_ERROR(parse_char(&hi));
            if (hi < lo) return fail("character range with its upper bound below its lower bound");
            out->push_back({GType::RangeUpper, hi});
          }
        }
        if (!any) return fail("empty character class []");
        ++pos_;
      } else if (c == '.') {
        ++pos_;
        last = out->size();
        out->push_back({GType::CharAny, 0});
      } else if (is_name_char(c)) {
        std::string name = parse_name();
        last = out->size();
        uint32_t id;
        LLMS_RETURN_IF_ERROR(symbol(name, &id));
        out->push_back({GType::RuleRef, id});
      } else if (c == '(') {
        if (depth + 1 > lim_.max_nesting)
          return fail("groups nested deeper than " + std::to_string(lim_.max_nesting) + "; flatten them into rules");
        ++pos_;
        skip_space(true);
        uint32_t id;
        LLMS_RETURN_IF_ERROR(generated(rule, &id));
        std::vector<GElem> body;
        LLMS_RETURN_IF_ERROR(parse_alternates(rule, depth + 1, &body));
        body.push_back({GType::End, 0});
        LLMS_RETURN_IF_ERROR(add_rule(id, std::move(body)));
        if (!at(')')) return fail("expected ) to close a group");
        ++pos_;
        last = out->size();
        out->push_back({GType::RuleRef, id});
      } else if (c == '*' || c == '+' || c == '?') {
        ++pos_;
        LLMS_RETURN_IF_ERROR(repeat(rule, out, last, c == '+' ? 1 : 0, c == '?' ? 1 : -1));
      } else if (c == '{') {
        ++pos_;
        skip_space(nested);
        uint32_t min, max = 0;
        LLMS_RETURN_IF_ERROR(parse_int(&min));
        skip_space(nested);
        int64_t mx = min;
        if (at(',')) {
          ++pos_;
          skip_space(nested);
          if (at('}')) mx = -1;
          else {
            LLMS_RETURN_IF_ERROR(parse_int(&max));
            if (max < min) return fail("{m,n} with n < m");
            mx = max;
          }
          skip_space(nested);
        }
        if (!at('}')) return fail("expected } to close {m,n}");
        ++pos_;
        LLMS_RETURN_IF_ERROR(repeat(rule, out, last, min, mx));
      } else {
        break;
      }
      skip_space(nested);
    }
    return Status::ok();
  }

  std::string_view s_;
  const GbnfLimits& lim_;
  size_t pos_ = 0;
  Grammar* g_ = nullptr;
  std::unordered_map<std::string, uint32_t> ids_;
  std::vector<bool> defined_;
  size_t n_elements_ = 0;
};

}  // namespace

void grammar_start_graph(const Grammar& g, std::vector<bool>* nullable_out,
                         std::vector<std::vector<uint32_t>>* first_out) {
  const size_t n = g.rules.size();
  std::vector<bool>& nullable = *nullable_out;
  nullable.assign(n, false);
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t r = 0; r < n; ++r) {
      if (nullable[r]) continue;
      const auto& el = g.rules[r];
      bool alt_ok = true;
      for (size_t i = 0; i < el.size(); ++i) {
        if (gelem_is_end(&el[i])) {
          if (alt_ok) {
            nullable[r] = changed = true;
            break;
          }
          alt_ok = true;
        } else if (el[i].type == GType::RuleRef) {
          alt_ok = alt_ok && nullable[el[i].value];
        } else if (el[i].type != GType::RangeUpper && el[i].type != GType::CharAlt) {
          alt_ok = false;
        }
      }
    }
  }
  std::vector<std::vector<uint32_t>>& first = *first_out;
  first.assign(n, {});
  for (size_t r = 0; r < n; ++r) {
    bool open = true;
    for (const GElem& e : g.rules[r]) {
      if (gelem_is_end(&e)) open = true;
      else if (!open) continue;
      else if (e.type == GType::RuleRef) {
        first[r].push_back(e.value);
        open = nullable[e.value];
      } else if (e.type != GType::RangeUpper && e.type != GType::CharAlt) {
        open = false;
      }
    }
  }
}

int64_t longest_start_chain(const std::vector<std::vector<uint32_t>>& first, uint32_t* cycle_rule) {
  const size_t n = first.size();
  std::vector<int64_t> len(n, -1);
  std::vector<uint8_t> color(n, 0);  // 0 new, 1 on the stack, 2 done
  std::vector<std::pair<uint32_t, size_t>> st;
  int64_t best = 0;
  for (uint32_t s0 = 0; s0 < n; ++s0) {
    if (color[s0]) continue;
    st.push_back({s0, 0});
    color[s0] = 1;
    while (!st.empty()) {
      auto& [r, i] = st.back();
      if (i < first[r].size()) {
        const uint32_t t = first[r][i++];
        if (color[t] == 1) {
          if (cycle_rule) *cycle_rule = t;
          return -1;
        }
        if (color[t] == 0) {
          color[t] = 1;
          st.push_back({t, 0});
        }
        continue;
      }
      int64_t l = 0;
      for (uint32_t t : first[r]) l = std::max(l, len[t] + 1);
      len[r] = l;
      best = std::max(best, l);
      color[r] = 2;
      st.pop_back();
    }
  }
  return best;
}

namespace {

// Left recursion (a rule that can reach itself without consuming a character) would make the
// matcher's expansion loop forever: refuse it.
Status check_left_recursion(const Grammar& g) {
  std::vector<bool> nullable;
  std::vector<std::vector<uint32_t>> first;
  grammar_start_graph(g, &nullable, &first);
  uint32_t t = 0;
  if (longest_start_chain(first, &t) < 0)
    return make_error(Code::Grammar, "Grammar: rule `" + g.names[t] +
                                         "` is left-recursive (it can reach itself without matching a character); "
                                         "rewrite it with repetition, e.g. `list ::= item (\",\" item)*`.");
  return Status::ok();
}

}  // namespace

Status parse_gbnf(std::string_view text, const GbnfLimits& limits, std::shared_ptr<const Grammar>* out) {
  if (text.size() > limits.max_text_bytes)
    return make_error(Code::Grammar, "Grammar: the text has " + std::to_string(text.size()) +
                                         " bytes, above the limit of " + std::to_string(limits.max_text_bytes) + ".");
  auto g = std::make_shared<Grammar>();
  Parser p(text, limits);
  LLMS_RETURN_IF_ERROR(p.parse(g.get()));
  LLMS_RETURN_IF_ERROR(check_left_recursion(*g));
  *out = std::move(g);
  return Status::ok();
}

bool gelem_match(const GElem* e, uint32_t cp, const GElem** next) {
  if (e->type == GType::CharAny) {
    *next = e + 1;
    return true;
  }
  const bool positive = e->type == GType::Char;
  bool found = false;
  do {
    if (e[1].type == GType::RangeUpper) {
      found = found || (e->value <= cp && cp <= e[1].value);
      e += 2;
    } else {
      found = found || e->value == cp;
      e += 1;
    }
  } while (e->type == GType::CharAlt);
  *next = e;
  return found == positive;
}

bool gelem_match_range(const GElem* e, uint32_t lo, uint32_t hi) {
  if (e->type == GType::CharAny) return true;
  const bool positive = e->type == GType::Char;
  bool covers = false;  // negated: does one excluded range cover all of [lo, hi]?
  do {
    uint32_t a = e->value, b = e->value;
    if (e[1].type == GType::RangeUpper) b = e[1].value, e += 2;
    else e += 1;
    if (positive && a <= hi && lo <= b) return true;
    if (!positive && a <= lo && hi <= b) covers = true;
  } while (e->type == GType::CharAlt);
  return !positive && !covers;
}

}  // namespace llmserve
