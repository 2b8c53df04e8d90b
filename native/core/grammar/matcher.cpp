// Grammar matcher and trie masking (see matcher.h). The walk allocates stack nodes in a scratch
// arena reset per mask() call, so a step costs no heap allocation once the arena has grown.
#include "matcher.h"

#include <algorithm>
#include <numeric>
#include <unordered_map>

namespace llmserve {

TokenTrie::TokenTrie(std::vector<std::string> pieces) : pieces_(std::move(pieces)) {
  for (int32_t i = 0; i < (int32_t)pieces_.size(); ++i)
    if (!pieces_[(size_t)i].empty() && pieces_[(size_t)i].size() <= kMaxTokenBytes) {
      ids_.push_back(i);
      max_bytes_ = std::max(max_bytes_, pieces_[(size_t)i].size());
    }
  std::sort(ids_.begin(), ids_.end(), [&](int32_t a, int32_t b) {
    return pieces_[(size_t)a] != pieces_[(size_t)b] ? pieces_[(size_t)a] < pieces_[(size_t)b] : a < b;
  });
  // Sorted insertion: each token shares a prefix with the previous one; path[d] is the node of the
  // previous token's first d bytes, and a new child is always its parent's last (children stay sorted).
  nodes_.emplace_back();
  std::vector<uint32_t> path{0}, last_child{0};
  const std::string* prev = nullptr;
  for (uint32_t k = 0; k < ids_.size(); ++k) {
    const std::string& p = pieces_[(size_t)ids_[k]];
    size_t lcp = 0;
    if (prev)
      while (lcp < p.size() && lcp < prev->size() && p[lcp] == (*prev)[lcp]) ++lcp;
    path.resize(lcp + 1);
    for (size_t d = lcp; d < p.size(); ++d) {
      const uint32_t parent = path[d], id = (uint32_t)nodes_.size();
      nodes_.emplace_back();
      nodes_[id].byte = (uint8_t)p[d];
      last_child.push_back(0);
      if (last_child[parent] == 0) nodes_[parent].first_child = id;
      else nodes_[last_child[parent]].next_sibling = id;
      last_child[parent] = id;
      path.push_back(id);
    }
    Node& end = nodes_[path.back()];
    if (end.tok_end != end.tok_begin) end.tok_end = k + 1;  // same bytes as the previous token
    else end.tok_begin = k, end.tok_end = k + 1;
    prev = &p;
  }
}

const GStack* GArena::make(const GElem* pos, const GStack* parent) {
  if (used_ == chunks_.size() * kChunk) chunks_.emplace_back(new GStack[kChunk]);
  GStack* s = &chunks_[used_ / kChunk][used_ % kChunk];
  ++used_;
  s->pos = pos;
  s->parent = parent;
  return s;
}

namespace {
bool same(const GStack* a, const GStack* b) {
  if (a == b) return true;
  return a && b && a->pos == b->pos && a->parent == b->parent;
}
void add_unique(std::vector<const GStack*>* out, const GStack* s) {
  for (const GStack* t : *out)
    if (same(t, s)) return;
  out->push_back(s);
}
}  // namespace

GrammarMatcher::GrammarMatcher(std::shared_ptr<const Grammar> g, std::shared_ptr<const TokenTrie> trie)
    : GrammarMatcher(std::make_shared<GrammarMasks>(std::move(g), std::move(trie))) {}

GrammarMatcher::GrammarMatcher(std::shared_ptr<GrammarMasks> masks)
    : g_(masks->grammar()), trie_(masks->trie()), masks_(std::move(masks)) {
  cur_ = &arena_;
  levels_.resize(TokenTrie::kMaxTokenBytes + 2);  // never resized during a walk (it holds references)
  const auto& root = g_->rules[g_->root];
  for (size_t i = 0; i < root.size();) {
    const GElem* a = &root[i];
    advance(gelem_is_end(a) ? nullptr : cur_->make(a, nullptr), &stacks_);
    while (root[i].type != GType::End && root[i].type != GType::Alt) ++i;  // to the next alternative
    if (root[i].type == GType::End) break;
    ++i;
  }
}

// Expands rule references at the top until every stack's top is a character set (or it is empty).
void GrammarMatcher::advance(const GStack* s, std::vector<const GStack*>* out) {
  if (out->size() > kMaxStacks) {
    overflow_ = true;
    return;
  }
  if (s == nullptr || s->pos->type != GType::RuleRef) {
    add_unique(out, s);
    return;
  }
  const GElem* next = s->pos + 1;
  const GStack* base = gelem_is_end(next) ? s->parent : cur_->make(next, s->parent);
  const auto& rule = g_->rules[s->pos->value];
  for (size_t i = 0;;) {
    const GElem* a = &rule[i];
    advance(gelem_is_end(a) ? base : cur_->make(a, base), out);
    while (!gelem_is_end(&rule[i])) ++i;
    if (rule[i].type == GType::End) break;
    ++i;
  }
}

void GrammarMatcher::accept_cp(const std::vector<const GStack*>& in, uint32_t cp, std::vector<const GStack*>* out) {
  out->clear();
  for (const GStack* s : in) {
    if (s == nullptr) continue;
    const GElem* next;
    if (!gelem_match(s->pos, cp, &next)) continue;
    advance(gelem_is_end(next) ? s->parent : cur_->make(next, s->parent), out);
  }
}

bool GrammarMatcher::partial_ok(const std::vector<const GStack*>& st, const Utf8& u) const {
  const uint32_t lo = std::max(u.value << (6 * u.missing), u.min);
  const uint32_t hi = std::min((u.value << (6 * u.missing)) | ((1u << (6 * u.missing)) - 1), 0x10FFFFu);
  if (lo > hi) return false;                       // only overlong or out-of-range code points start this way
  if (lo >= 0xD800 && hi <= 0xDFFF) return false;  // only surrogates
  for (const GStack* s : st)
    if (s && gelem_match_range(s->pos, lo, hi)) return true;
  return false;
}

// One byte: updates the UTF-8 state; on a completed code point advances `in` into `out`.
// false: the byte cannot continue (invalid UTF-8, or no stack survives).
bool GrammarMatcher::step_byte(uint8_t b, Utf8* u, const std::vector<const GStack*>& in,
                               std::vector<const GStack*>* out) {
  if (u->missing == 0) {
    if (b < 0x80) {
      accept_cp(in, b, out);
      return !out->empty();
    }
    if ((b & 0xE0) == 0xC0) u->value = b & 0x1F, u->missing = 1, u->min = 0x80;
    else if ((b & 0xF0) == 0xE0) u->value = b & 0x0F, u->missing = 2, u->min = 0x800;
    else if ((b & 0xF8) == 0xF0) u->value = b & 0x07, u->missing = 3, u->min = 0x10000;
    else return false;
  } else {
    if ((b & 0xC0) != 0x80) return false;
    u->value = (u->value << 6) | (b & 0x3F);
    if (--u->missing == 0) {
      const uint32_t cp = u->value;
      u->value = 0;
      // Overlong forms, surrogates and values past U+10FFFF are not UTF-8 (a decoder would turn
      // them into U+FFFD, breaking the text the grammar vouched for).
      if (cp < u->min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
      accept_cp(in, cp, out);
      return !out->empty();
    }
  }
  *out = in;
  return partial_ok(in, *u);
}

bool GrammarMatcher::can_end() const {
  if (pending_.missing) return false;
  return std::find(stacks_.begin(), stacks_.end(), nullptr) != stacks_.end();
}

void GrammarMatcher::walk(uint32_t node, int depth, Utf8 u, uint8_t* allowed) {
  const auto& nodes = trie_->nodes();
  const auto& ids = trie_->ids();
  for (uint32_t c = nodes[node].first_child; c != 0; c = nodes[c].next_sibling) {
    Utf8 v = u;
    std::vector<const GStack*>& out = levels_[(size_t)depth + 1];
    if (!step_byte(nodes[c].byte, &v, levels_[(size_t)depth], &out)) continue;
    if (overflow_) return;
    for (uint32_t k = nodes[c].tok_begin; k < nodes[c].tok_end; ++k) allowed[ids[k]] = 1;
    if (nodes[c].first_child) walk(c, depth + 1, v, allowed);
  }
}

bool GrammarMatcher::mask_cached(uint8_t* allowed) {
  std::string& key = key_;
  key.clear();
  auto put = [&key](uint64_t v) { key.append(reinterpret_cast<const char*>(&v), sizeof v); };
  put((uint64_t)pending_.value << 32 | (uint32_t)pending_.missing);
  put(pending_.min);
  for (const GStack* s : stacks_) {
    for (const GStack* t = s; t; t = t->parent) put(masks_->canon(t->pos));
    put(~uint64_t{1});  // end of this stack (canon() never returns it: offsets are < 2^32 - 1)
  }
  return masks_->lookup(key, allowed);
}

Status GrammarMatcher::mask(uint8_t* allowed) {
  if (mask_cached(allowed)) return Status::ok();
  const std::string& key = key_;
  const size_t n = (size_t)trie_->n_tokens();
  std::fill(allowed, allowed + n, 0);
  scratch_.reset();
  cur_ = &scratch_;
  overflow_ = false;
  levels_[0] = stacks_;
  walk(0, 0, pending_, allowed);
  cur_ = &arena_;
  if (overflow_)
    return make_error(Code::Grammar, "Grammar: more than " + std::to_string(kMaxStacks) +
                                         " parses are live at once; the grammar is too ambiguous to follow. "
                                         "Make its alternatives start differently.");
  masks_->insert(key, allowed);
  return Status::ok();
}

bool GrammarMatcher::accept_bytes(const std::string& bytes) {
  std::vector<const GStack*> cur = stacks_, next;
  Utf8 u = pending_;
  overflow_ = false;
  for (char ch : bytes) {
    if (!step_byte((uint8_t)ch, &u, cur, &next) || overflow_) return false;
    cur.swap(next);
  }
  stacks_ = std::move(cur);
  pending_ = u;
  rebase();
  return true;
}

Status GrammarMatcher::accept(int32_t token) {
  if (token < 0 || token >= trie_->n_tokens() || trie_->piece(token).empty() ||
      trie_->piece(token).size() > TokenTrie::kMaxTokenBytes || !accept_bytes(trie_->piece(token)))
    return make_error(Code::Grammar, "Grammar: token " + std::to_string(token) + " does not continue the grammar.");
  return Status::ok();
}

void GrammarMatcher::rebase() {
  // Every accept leaves dead nodes behind in arena_: copy the live stacks (keeping shared tails
  // shared) once it holds more than a few times what they need.
  spare_.reset();
  std::unordered_map<const GStack*, const GStack*> moved;
  moved[nullptr] = nullptr;
  auto copy = [&](auto&& self, const GStack* s) -> const GStack* {
    auto it = moved.find(s);
    if (it != moved.end()) return it->second;
    const GStack* c = spare_.make(s->pos, self(self, s->parent));
    moved[s] = c;
    return c;
  };
  for (auto& s : stacks_) s = copy(copy, s);
  std::swap(arena_, spare_);
  spare_.reset();
}

}  // namespace llmserve
