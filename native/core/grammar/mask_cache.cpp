// Structural classes and the shared mask cache (see mask_cache.h).
#include "mask_cache.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>

#include "matcher.h"

namespace llmserve {

static_assert(std::endian::native == std::endian::little, "lookup() reads the bitset's words as bytes");

GrammarMasks::GrammarMasks(std::shared_ptr<const Grammar> g, std::shared_ptr<const TokenTrie> trie, size_t cache_bytes)
    : g_(std::move(g)), trie_(std::move(trie)), cap_(cache_bytes) {
  refine();
}

void GrammarMasks::refine() {
  const Grammar& g = *g_;
  const size_t n = g.rules.size();
  size_t n_elems = 0;
  for (const auto& r : g.rules) n_elems += r.size();
  std::vector<bool> nullable;
  std::vector<std::vector<uint32_t>> first;
  grammar_start_graph(g, &nullable, &first);
  const int64_t h = longest_start_chain(first);
  const uint64_t d = (uint64_t)trie_->max_bytes() + 1;
  const uint64_t levels = h < 0 ? 0 : (d + 1) * ((uint64_t)h + 2);
  std::vector<uint32_t> cls(n, 0);  // level -1: every rule alike
  uint32_t n_cls = n > 0 ? 1 : 0;
  bool exact = false;  // cls is a valid partition for the walk (reached the fixed point or R)
  if (h >= 0 && levels * (n_elems + n) <= kMaxRefineWork) {
    std::vector<uint32_t> next(n);
    std::string sig;
    std::unordered_map<std::string, uint32_t> ids;
    for (uint64_t level = 0; level <= levels; ++level) {
      ids.clear();
      for (size_t r = 0; r < n; ++r) {
        sig.clear();
        for (const GElem& e : g.rules[r]) {
          const uint32_t v[2] = {(uint32_t)e.type, e.type == GType::RuleRef ? cls[e.value] : e.value};
          sig.append(reinterpret_cast<const char*>(v), sizeof v);
        }
        next[r] = ids.emplace(sig, (uint32_t)ids.size()).first->second;
      }
      const bool fixed = ids.size() == n_cls && level > 0;
      cls.swap(next);
      n_cls = (uint32_t)ids.size();
      if (fixed) break;
    }
    exact = true;
  }
  if (!exact) {
    for (size_t r = 0; r < n; ++r) cls[r] = (uint32_t)r;
    n_cls = (uint32_t)n;
  }
  n_classes_ = n_cls;
  cls_ = std::move(cls);
  rule_at_.reserve(n);
  for (size_t r = 0; r < n; ++r)
    if (!g.rules[r].empty()) rule_at_.push_back({reinterpret_cast<uintptr_t>(g.rules[r].data()), (uint32_t)r});
  std::sort(rule_at_.begin(), rule_at_.end());
}

uint64_t GrammarMasks::canon(const GElem* e) const {
  // The rule holding e: the last one starting at or before it (rules are separate arrays).
  // Compared as integers: `<` between pointers into different arrays is unspecified.
  const uintptr_t p = reinterpret_cast<uintptr_t>(e);
  auto it = std::upper_bound(rule_at_.begin(), rule_at_.end(), std::make_pair(p, ~uint32_t{0}));
  if (it == rule_at_.begin()) return ~uint64_t{0};
  --it;
  const auto& rule = g_->rules[it->second];
  const size_t off = (p - it->first) / sizeof(GElem);
  if (off >= rule.size()) return ~uint64_t{0};
  return (uint64_t)cls_[it->second] << 32 | off;
}

bool GrammarMasks::lookup(const std::string& key, uint8_t* allowed) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = masks_.find(key);
  if (it == masks_.end()) {
    ++misses_;
    return false;
  }
  ++hits_;
  const size_t n = (size_t)trie_->n_tokens();
  // Eight mask bytes per bitset byte through a table (a per-bit loop costs ~30 us at 32k tokens,
  // which is paid every constrained step).
  static const auto kSpread = [] {
    std::array<uint64_t, 256> t{};
    for (uint32_t b = 0; b < 256; ++b)
      for (uint32_t k = 0; k < 8; ++k) t[b] |= (uint64_t)(b >> k & 1) << (8 * k);
    return t;
  }();
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(it->second.data());
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = kSpread[bytes[i >> 3]];
    std::memcpy(allowed + i, &v, 8);  // little-endian: byte k of v is token i + k
  }
  for (; i < n; ++i) allowed[i] = (uint8_t)(bytes[i >> 3] >> (i & 7) & 1);
  return true;
}

void GrammarMasks::insert(const std::string& key, const uint8_t* allowed) {
  const size_t n = (size_t)trie_->n_tokens();
  std::vector<uint64_t> bits((n + 63) / 64, 0);
  for (size_t i = 0; i < n; ++i) bits[i >> 6] |= (uint64_t)(allowed[i] != 0) << (i & 63);
  const size_t cost = bits.size() * sizeof(uint64_t) + key.size() + 64;
  if (cost > cap_) return;
  std::lock_guard<std::mutex> lk(mu_);
  if (masks_.count(key)) return;  // another sequence computed the same mask meanwhile
  while (bytes_ + cost > cap_ && !order_.empty()) {
    auto old = masks_.find(order_.front());
    bytes_ -= old->second.size() * sizeof(uint64_t) + old->first.size() + 64;
    masks_.erase(old);
    order_.pop_front();
  }
  masks_.emplace(key, std::move(bits));
  order_.push_back(key);
  bytes_ += cost;
}

size_t GrammarMasks::cache_bytes() const {
  std::lock_guard<std::mutex> lk(mu_);
  return bytes_;
}
uint64_t GrammarMasks::hits() const {
  std::lock_guard<std::mutex> lk(mu_);
  return hits_;
}
uint64_t GrammarMasks::misses() const {
  std::lock_guard<std::mutex> lk(mu_);
  return misses_;
}

bool same_grammar(const Grammar& a, const Grammar& b) {
  if (a.root != b.root || a.rules.size() != b.rules.size()) return false;
  for (size_t r = 0; r < a.rules.size(); ++r) {
    const auto& x = a.rules[r];
    const auto& y = b.rules[r];
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (x[i].type != y[i].type || x[i].value != y[i].value) return false;
  }
  return true;
}

}  // namespace llmserve
