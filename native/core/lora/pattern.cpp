// Parse (recursive descent, depth-capped) -> small AST -> Pike VM program (Cox, "Regular Expression
// Matching: the Virtual Machine Approach"). Only whether the whole name matches is needed, so
// capture groups and greediness are dropped.
#include "pattern.h"

namespace llmserve {

namespace {

struct Node {
  enum Kind { Empty, Set, Cat, Alt, Repeat, Bol, Eol } kind = Empty;
  int set = 0;             // Set: index into the set table
  int min = 0, max = 0;    // Repeat: max < 0 = unbounded
  std::vector<Node> kids;  // Cat / Alt: parts; Repeat: one
};

constexpr int kMaxDepth = 64;
constexpr int kMaxCount = 1000;

bool is_digit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

class PatternCompiler {
 public:
  PatternCompiler(std::string_view p, const std::string& what, Pattern* out) : p_(p), what_(what), out_(out) {}

  Status run() {
    if (p_.size() > Pattern::kMaxPatternBytes)
      return make_error(Code::InvalidArgument, what_ + " is a pattern of " + std::to_string(p_.size()) +
                                                   " bytes, over llmserve's limit of " +
                                                   std::to_string(Pattern::kMaxPatternBytes));
    Node root;
    LLMS_RETURN_IF_ERROR(alt(&root, 0));
    if (pos_ != p_.size()) return fail("unbalanced ')'");
    LLMS_RETURN_IF_ERROR(emit(root));
    out_->prog_.push_back({Pattern::Inst::Match});
    return Status::ok();
  }

 private:
  Status fail(const std::string& why) const {
    return make_error(Code::InvalidArgument, what_ + " pattern \"" + std::string(p_) + "\": " + why +
                                                 " (at character " + std::to_string(pos_) +
                                                 "). llmserve matches names with a subset of Python's re: literals, "
                                                 "., [...], \\d \\w \\s, groups, |, * + ? {m,n}, ^ $.");
  }
  bool more() const { return pos_ < p_.size(); }
  char peek() const { return p_[pos_]; }

  int add_set(const std::bitset<256>& s) {
    out_->sets_.push_back(s);
    return static_cast<int>(out_->sets_.size() - 1);
  }
  static std::bitset<256> one(unsigned char c) {
    std::bitset<256> s;
    s.set(c);
    return s;
  }
  static std::bitset<256> range(int lo, int hi) {
    std::bitset<256> s;
    for (int c = lo; c <= hi; ++c) s.set(static_cast<size_t>(c));
    return s;
  }
  // \d \w \s and their complements; false if c is not one of them.
  static bool class_escape(char c, std::bitset<256>* s) {
    std::bitset<256> b;
    switch (c | 0x20) {
      case 'd': b = range('0', '9'); break;
      case 'w': b = range('0', '9') | range('A', 'Z') | range('a', 'z') | one('_'); break;
      case 's': b = one(' ') | range('\t', '\r'); break;
      default: return false;
    }
    *s = (c >= 'A' && c <= 'Z') ? ~b : b;
    return true;
  }
  static int hexval(char c) {
    if (is_digit(c)) return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') return (c | 0x20) - 'a' + 10;
    return -1;
  }
  // One escaped character after '\' (pos_ on it) that stands for a single byte, into *c.
  Status escaped_char(unsigned char* c) {
    const char e = p_[pos_++];
    switch (e) {
      case 'n': *c = '\n'; return Status::ok();
      case 't': *c = '\t'; return Status::ok();
      case 'r': *c = '\r'; return Status::ok();
      case 'f': *c = '\f'; return Status::ok();
      case 'v': *c = '\v'; return Status::ok();
      case 'a': *c = '\a'; return Status::ok();
      case 'x': {
        const int h = pos_ + 1 < p_.size() ? hexval(p_[pos_]) : -1, l = h >= 0 ? hexval(p_[pos_ + 1]) : -1;
        if (l < 0) return fail("\\x needs two hex digits");
        pos_ += 2;
        *c = static_cast<unsigned char>(h * 16 + l);
        return Status::ok();
      }
      default:
        // Python: escaped ASCII letters and digits are special (or errors); anything else is itself.
        if (is_digit(e) || ((e | 0x20) >= 'a' && (e | 0x20) <= 'z')) {
          --pos_;
          return fail(std::string("the escape \\") + e + " is not supported");
        }
        *c = static_cast<unsigned char>(e);
        return Status::ok();
    }
  }

  Status alt(Node* n, int depth) {
    if (depth > kMaxDepth) return fail("groups nest too deeply");
    Node first;
    LLMS_RETURN_IF_ERROR(concat(&first, depth));
    if (!more() || peek() != '|') {
      *n = std::move(first);
      return Status::ok();
    }
    n->kind = Node::Alt;
    n->kids.push_back(std::move(first));
    while (more() && peek() == '|') {
      ++pos_;
      n->kids.emplace_back();
      LLMS_RETURN_IF_ERROR(concat(&n->kids.back(), depth));
    }
    return Status::ok();
  }

  Status concat(Node* n, int depth) {
    n->kind = Node::Cat;
    while (more() && peek() != '|' && peek() != ')') {
      Node atom_node;
      LLMS_RETURN_IF_ERROR(atom(&atom_node, depth));
      LLMS_RETURN_IF_ERROR(quantifiers(&atom_node));
      n->kids.push_back(std::move(atom_node));
    }
    return Status::ok();
  }

  // {m}, {m,}, {,n}, {m,n} at pos_ ('{'); false (pos_ unchanged) if it is a literal '{' in Python.
  bool counted(int* mn, int* mx) {
    size_t i = pos_ + 1;
    auto num = [&](int* v) {
      size_t b = i;
      long x = 0;
      while (i < p_.size() && is_digit(p_[i]) && i - b < 9) x = x * 10 + (p_[i++] - '0');
      *v = static_cast<int>(x);
      return i > b;
    };
    int a = 0, b = -1;
    const bool has_a = num(&a);
    if (i < p_.size() && p_[i] == ',') {
      ++i;
      if (!num(&b)) b = -1;
    } else {
      if (!has_a) return false;
      b = a;
    }
    if (i >= p_.size() || p_[i] != '}') return false;
    pos_ = i + 1;
    *mn = has_a ? a : 0;
    *mx = b;
    return true;
  }

  Status quantifiers(Node* n) {
    bool quantified = false;
    while (more()) {
      int mn = 0, mx = -1;
      const char c = peek();
      if (c == '*') {
        ++pos_;
      } else if (c == '+') {
        ++pos_, mn = 1;
      } else if (c == '?') {
        ++pos_, mx = 1;
      } else if (c != '{' || !counted(&mn, &mx)) {
        return Status::ok();
      }
      if (quantified) return fail("multiple repeat (possessive quantifiers are not supported)");
      if (n->kind == Node::Bol || n->kind == Node::Eol) return fail("nothing to repeat");
      if (mn > kMaxCount || mx > kMaxCount || (mx >= 0 && mx < mn)) return fail("bad repeat count");
      if (more() && peek() == '?') ++pos_;  // lazy: the same set of matching names
      Node r;
      r.kind = Node::Repeat, r.min = mn, r.max = mx;
      r.kids.push_back(std::move(*n));
      *n = std::move(r);
      quantified = true;
    }
    return Status::ok();
  }

  Status klass(Node* n) {
    ++pos_;  // '['
    bool neg = false;
    if (more() && peek() == '^') ++pos_, neg = true;
    std::bitset<256> s;
    bool first = true;
    for (;;) {
      if (!more()) return fail("unterminated [...]");
      if (peek() == ']' && !first) {
        ++pos_;
        break;
      }
      first = false;
      unsigned char lo = static_cast<unsigned char>(p_[pos_++]);
      if (lo == '\\') {
        if (!more()) return fail("a pattern cannot end with \\");
        std::bitset<256> e;
        if (class_escape(peek(), &e)) {
          ++pos_;
          s |= e;
          continue;
        }
        LLMS_RETURN_IF_ERROR(escaped_char(&lo));
      }
      unsigned char hi = lo;
      if (pos_ + 1 < p_.size() && peek() == '-' && p_[pos_ + 1] != ']') {
        ++pos_;
        hi = static_cast<unsigned char>(p_[pos_++]);
        if (hi == '\\') {
          if (!more()) return fail("a pattern cannot end with \\");
          LLMS_RETURN_IF_ERROR(escaped_char(&hi));
        }
        if (hi < lo) return fail("bad character range");
      }
      s |= range(lo, hi);
    }
    n->kind = Node::Set;
    n->set = add_set(neg ? ~s : s);
    return Status::ok();
  }

  Status atom(Node* n, int depth) {
    const char c = p_[pos_];
    switch (c) {
      case '(': {
        ++pos_;
        if (more() && peek() == '?') {
          if (p_.substr(pos_, 2) == "?:") {
            pos_ += 2;
          } else if (p_.substr(pos_, 3) == "?P<") {
            const size_t end = p_.find('>', pos_);
            if (end == std::string_view::npos) return fail("unterminated group name");
            pos_ = end + 1;
          } else {
            return fail(
                "(? groups other than (?: and (?P<name> (look-around, flags, back-references) are not "
                "supported");
          }
        }
        LLMS_RETURN_IF_ERROR(alt(n, depth + 1));
        if (!more() || peek() != ')') return fail("missing ')'");
        ++pos_;
        return Status::ok();
      }
      case '[': return klass(n);
      case '.':
        ++pos_;
        n->kind = Node::Set;
        n->set = add_set(~one('\n'));
        return Status::ok();
      case '^': ++pos_, n->kind = Node::Bol; return Status::ok();
      case '$': ++pos_, n->kind = Node::Eol; return Status::ok();
      case '*':
      case '+':
      case '?': return fail("nothing to repeat");
      case '\\': {
        ++pos_;
        if (!more()) return fail("a pattern cannot end with \\");
        std::bitset<256> e;
        if (class_escape(peek(), &e)) {
          ++pos_;
          n->kind = Node::Set;
          n->set = add_set(e);
          return Status::ok();
        }
        if (peek() == 'A' || peek() == 'Z') {
          n->kind = peek() == 'A' ? Node::Bol : Node::Eol;
          ++pos_;
          return Status::ok();
        }
        unsigned char ch = 0;
        LLMS_RETURN_IF_ERROR(escaped_char(&ch));
        n->kind = Node::Set;
        n->set = add_set(one(ch));
        return Status::ok();
      }
      default:
        ++pos_;
        n->kind = Node::Set;
        n->set = add_set(one(static_cast<unsigned char>(c)));
        return Status::ok();
    }
  }

  // ---- emission ----
  using Inst = Pattern::Inst;
  Status push(Inst i) {
    if (out_->prog_.size() >= Pattern::kMaxProgram)
      return make_error(Code::InvalidArgument, what_ + " pattern \"" + std::string(p_) +
                                                   "\" is too large once its repeat counts are expanded (over " +
                                                   std::to_string(Pattern::kMaxProgram) + " steps)");
    out_->prog_.push_back(i);
    return Status::ok();
  }
  int32_t here() const { return static_cast<int32_t>(out_->prog_.size()); }

  Status emit(const Node& n) {
    switch (n.kind) {
      case Node::Empty: return Status::ok();
      case Node::Set: return push({Inst::Set, n.set, 0});
      case Node::Bol: return push({Inst::Bol});
      case Node::Eol: return push({Inst::Eol});
      case Node::Cat:
        for (const Node& k : n.kids) LLMS_RETURN_IF_ERROR(emit(k));
        return Status::ok();
      case Node::Alt: {
        // split L1, next; L1: kid; jmp END; next: split ... ; the last kid falls through to END.
        std::vector<int32_t> jumps;
        for (size_t i = 0; i < n.kids.size(); ++i) {
          int32_t split = -1;
          if (i + 1 < n.kids.size()) {
            split = here();
            LLMS_RETURN_IF_ERROR(push({Inst::Split, split + 1, 0}));
          }
          LLMS_RETURN_IF_ERROR(emit(n.kids[i]));
          if (split >= 0) {
            jumps.push_back(here());
            LLMS_RETURN_IF_ERROR(push({Inst::Jmp}));
            out_->prog_[static_cast<size_t>(split)].y = here();
          }
        }
        for (int32_t j : jumps) out_->prog_[static_cast<size_t>(j)].x = here();
        return Status::ok();
      }
      default: {  // Repeat
        const Node& k = n.kids[0];
        for (int i = 0; i < n.min; ++i) LLMS_RETURN_IF_ERROR(emit(k));
        if (n.max < 0) {  // L: split body, END; body; jmp L; END
          const int32_t loop = here();
          LLMS_RETURN_IF_ERROR(push({Inst::Split, loop + 1, 0}));
          LLMS_RETURN_IF_ERROR(emit(k));
          LLMS_RETURN_IF_ERROR(push({Inst::Jmp, loop, 0}));
          out_->prog_[static_cast<size_t>(loop)].y = here();
          return Status::ok();
        }
        std::vector<int32_t> splits;  // (max - min) optional copies, each may skip to the end
        for (int i = n.min; i < n.max; ++i) {
          splits.push_back(here());
          LLMS_RETURN_IF_ERROR(push({Inst::Split, here() + 1, 0}));
          LLMS_RETURN_IF_ERROR(emit(k));
        }
        for (int32_t s : splits) out_->prog_[static_cast<size_t>(s)].y = here();
        return Status::ok();
      }
    }
  }

  std::string_view p_;
  const std::string& what_;
  Pattern* out_;
  size_t pos_ = 0;
};

Status Pattern::compile(std::string_view pattern, const std::string& what, Pattern* out) {
  *out = Pattern();
  PatternCompiler c(pattern, what, out);
  Status s = c.run();
  if (!s) *out = Pattern();
  return s;
}

bool Pattern::full_match(std::string_view s) const {
  if (prog_.empty()) return false;
  const size_t np = prog_.size();
  // Thread lists as sparse sets of program counters, with a per-step mark so each pc is added once
  // (which also stops empty loops such as (a*)*).
  std::vector<int32_t> cur, next, stack;
  std::vector<uint32_t> mark(np, 0);
  uint32_t gen = 0;
  auto add = [&](std::vector<int32_t>& list, int32_t pc0, size_t pos) {
    stack.assign(1, pc0);
    while (!stack.empty()) {
      const int32_t pc = stack.back();
      stack.pop_back();
      if (mark[static_cast<size_t>(pc)] == gen) continue;
      mark[static_cast<size_t>(pc)] = gen;
      const Inst& in = prog_[static_cast<size_t>(pc)];
      switch (in.op) {
        case Inst::Jmp: stack.push_back(in.x); break;
        case Inst::Split:
          stack.push_back(in.y);
          stack.push_back(in.x);
          break;
        case Inst::Bol:
          if (pos == 0) stack.push_back(pc + 1);
          break;
        case Inst::Eol:
          if (pos == s.size()) stack.push_back(pc + 1);
          break;
        default: list.push_back(pc);  // Set, Match
      }
    }
  };
  ++gen;
  add(cur, 0, 0);
  for (size_t pos = 0; pos < s.size(); ++pos) {
    next.clear();
    ++gen;
    const auto ch = static_cast<unsigned char>(s[pos]);
    for (int32_t pc : cur) {
      const Inst& in = prog_[static_cast<size_t>(pc)];
      if (in.op == Inst::Set && sets_[static_cast<size_t>(in.x)].test(ch)) add(next, pc + 1, pos + 1);
    }
    cur.swap(next);
    if (cur.empty()) return false;
  }
  for (int32_t pc : cur)
    if (prog_[static_cast<size_t>(pc)].op == Inst::Match) return true;
  return false;
}

}  // namespace llmserve
