// Token sampling; see sampler.h for the chain and its semantics.
//
// Cost per call (V = n_vocab):
//   penalties      O(distinct tokens in the window), no copy of the logits;
//   top_k <= 256   one heap scan over the raw logits (penalized tokens offered separately);
//   larger / off   one penalized copy of V, nth_element for top_k, min_p while copying;
//   top_p, draw    walk the ranked candidates; past the sorted prefix, a logit histogram picks
//                  the one bucket holding the answer and only that bucket is ranked (O(V) even
//                  for a draw deep into a flat tail, never a full sort);
//   logprobs       one max pass + one vectorized exp pass over V (+ a top-n heap scan).
// Per-call buffers live in the Sampler and are reused: sample(logits, &out) allocates nothing in
// steady state (accept() may add a node to the penalty-count map).
#include "sampler.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <limits>
#include <string>

#include "vec_exp.h"

namespace llmserve {

namespace {

using Cand = Sampler::Cand;
using sampling_detail::exp4_nonpos;
using sampling_detail::exp_nonpos;
using sampling_detail::f4;
using sampling_detail::i4;
using sampling_detail::splat;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Up to this top_k a heap scan of the raw logits beats copying the vocabulary.
constexpr int32_t kHeapTopK = 256;
// Ranked searches over more unsorted candidates than this go through the logit histogram.
constexpr size_t kBucketMin = 2048;
constexpr int kBuckets = 2048;

std::string fmt(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

Status bad(const char* name, const char* range, double v) {
  return make_error(Code::InvalidArgument, std::string(name) + " must be " + range + " but received " + fmt(v));
}

// NaN -> -inf (never chosen unless everything is), +inf -> FLT_MAX (keeps differences finite).
inline float sanitize(float v) { return v != v ? kNegInf : (v > FLT_MAX ? FLT_MAX : v); }

// Ranking used everywhere: higher logit first; equal logits -> lower token id first.
// A function object (not a function pointer) so std algorithms inline it.
struct Better {
  bool operator()(const Cand& a, const Cand& b) const {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  }
};
constexpr Better better{};

// h: heap under `better`, so h.front() is the worst kept candidate; holds at most k.
inline void heap_offer(std::vector<Cand>& h, size_t k, const Cand& c) {
  if (h.size() < k) {
    h.push_back(c);
    std::push_heap(h.begin(), h.end(), better);
    return;
  }
  if (!better(c, h.front())) return;
  std::pop_heap(h.begin(), h.end(), better);
  h.back() = c;
  std::push_heap(h.begin(), h.end(), better);
}

// Adds the k best of logits[0, n) to heap h (which may already hold offered candidates), then
// sorts h best-first. With kSkip, ids present in *skip are left out of the scan (the caller
// offered them already with their penalized logits).
// logits: [n]
template <bool kSkip>
void select_top(const float* logits, int32_t n, size_t k, const std::unordered_map<int32_t, int32_t>* skip,
                std::vector<Cand>& h) {
  int32_t i = 0;
  for (; i < n && h.size() < k; ++i) {
    if (kSkip && skip->count(i)) continue;
    heap_offer(h, k, {sanitize(logits[i]), i, 0.0f});
  }
  if (h.size() == k && k > 0) {
    float thr = h.front().logit;
    auto offer = [&](int32_t j) {
      const float v = logits[j];
      if (!(v >= thr)) return;  // also drops NaN
      if (kSkip && skip->count(j)) return;
      const Cand c{sanitize(v), j, 0.0f};
      if (!better(c, h.front())) return;
      std::pop_heap(h.begin(), h.end(), better);
      h.back() = c;
      std::push_heap(h.begin(), h.end(), better);
      thr = h.front().logit;
    };
    // Most blocks of 8 hold nothing at or above the threshold: test them 4 lanes at a time.
    for (; i + 8 <= n; i += 8) {
      const f4 t = splat(thr);
      const i4 hit = (sampling_detail::load4(logits + i) >= t) | (sampling_detail::load4(logits + i + 4) >= t);
      if ((hit[0] | hit[1] | hit[2] | hit[3]) == 0) continue;
      for (int32_t j = i; j < i + 8; ++j) offer(j);
    }
    for (; i < n; ++i) offer(i);
  }
  std::sort_heap(h.begin(), h.end(), better);
}

// c[i].e = exp((c[i].logit - m) * inv_t) for logits <= m; returns the sum. 4 lanes at a time;
// inv_t == 1 gives exactly exp(logit - m).
// c: [n]
double weigh(Cand* c, size_t n, float m, float inv_t) {
  const f4 mv = splat(m), tv = splat(inv_t);
  double total = 0.0;
  f4 acc = splat(0.0f);
  size_t i = 0;
  for (size_t group = 0; i + 4 <= n; i += 4) {
    const f4 l = {c[i].logit, c[i + 1].logit, c[i + 2].logit, c[i + 3].logit};
    const f4 e = exp4_nonpos((l - mv) * tv);
    for (int j = 0; j < 4; ++j) c[i + j].e = e[j];
    acc += e;
    if (++group % 32 == 0) {
      total += static_cast<double>(acc[0]) + acc[1] + acc[2] + acc[3];
      acc = splat(0.0f);
    }
  }
  total += static_cast<double>(acc[0]) + acc[1] + acc[2] + acc[3];
  for (; i < n; ++i) {
    c[i].e = exp_nonpos((c[i].logit - m) * inv_t);
    total += c[i].e;
  }
  return total;
}

}  // namespace

Status validate(const SamplingParams& p) {
  if (!std::isfinite(p.temperature)) return bad("temperature", "a finite number (<= 0 means greedy)", p.temperature);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return bad("topP", "in (0, 1]", p.top_p);
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) return bad("minP", "in [0, 1]", p.min_p);
  if (!(p.repeat_penalty > 0.0f) || !std::isfinite(p.repeat_penalty))
    return bad("repeatPenalty", "a finite number > 0", p.repeat_penalty);
  if (p.repeat_last_n < -1)
    return bad("repeatLastN", "an integer >= -1 (-1 = whole history, 0 = off)", p.repeat_last_n);
  if (!std::isfinite(p.frequency_penalty)) return bad("frequencyPenalty", "a finite number", p.frequency_penalty);
  if (!std::isfinite(p.presence_penalty)) return bad("presencePenalty", "a finite number", p.presence_penalty);
  if (p.n_logprobs < 0 || p.n_logprobs > kMaxLogprobs) return bad("logprobs", "an integer in [0, 20]", p.n_logprobs);
  for (const auto& [token, bias] : p.logit_bias) {
    if (token < 0) return bad("logitBias token id", "a non-negative integer", token);
    if (!(bias >= -kMaxLogitBias && bias <= kMaxLogitBias)) return bad("logitBias", "in [-100, 100]", bias);
  }
  // top_k: every value is valid (<= 0 disables; larger than the vocabulary keeps everything).
  return Status::ok();
}

// ---- Rng ----------------------------------------------------------------------------------

void Rng::reseed(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : s_) {  // splitmix64
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    s = z ^ (z >> 31);
  }
}

uint64_t Rng::next() {  // xoshiro256**
  auto rotl = [](uint64_t v, int k) { return (v << k) | (v >> (64 - k)); };
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

// ---- Sampler ------------------------------------------------------------------------------

Sampler::Sampler(const SamplingParams& p, int32_t n_vocab) : p_(p), n_vocab_(n_vocab > 0 ? n_vocab : 0), rng_(p.seed) {
  // Clamp anything validate() would reject to a harmless value.
  if (!std::isfinite(p_.temperature)) p_.temperature = p_.temperature > 0 ? 1.0f : 0.0f;
  if (p_.temperature > 0.0f && !std::isfinite(1.0f / p_.temperature)) p_.temperature = 0.0f;
  if (!(p_.top_p > 0.0f && p_.top_p <= 1.0f)) p_.top_p = 1.0f;
  if (!(p_.min_p >= 0.0f)) p_.min_p = 0.0f;
  if (p_.min_p > 1.0f) p_.min_p = 1.0f;
  if (!(p_.repeat_penalty > 0.0f) || !std::isfinite(p_.repeat_penalty)) p_.repeat_penalty = 1.0f;
  if (p_.repeat_last_n < -1) p_.repeat_last_n = 0;
  if (!std::isfinite(p_.frequency_penalty)) p_.frequency_penalty = 0.0f;
  if (!std::isfinite(p_.presence_penalty)) p_.presence_penalty = 0.0f;
  p_.n_logprobs = std::clamp(p_.n_logprobs, 0, std::min(kMaxLogprobs, n_vocab_));
  penalties_on_ = p_.repeat_last_n != 0 &&
                  (p_.repeat_penalty != 1.0f || p_.frequency_penalty != 0.0f || p_.presence_penalty != 0.0f);
  for (const auto& [token, bias] : p_.logit_bias)
    if (token >= 0 && token < n_vocab_ && bias == bias) bias_[token] = std::clamp(bias, -kMaxLogitBias, kMaxLogitBias);
}

void Sampler::accept(int32_t token) {
  if (!penalties_on_ || token < 0 || token >= n_vocab_) return;
  ++counts_[token];
  if (p_.repeat_last_n < 0) return;  // whole history: counts only
  const size_t n = static_cast<size_t>(p_.repeat_last_n);
  if (ring_.size() < n) {  // grows lazily: a huge repeat_last_n costs nothing up front
    ring_.push_back(token);
    return;
  }
  const int32_t old = ring_[ring_head_];
  ring_[ring_head_] = token;
  ring_head_ = (ring_head_ + 1) % n;
  auto it = counts_.find(old);
  if (--it->second == 0) counts_.erase(it);
}

int32_t Sampler::window_count(int32_t token) const {
  auto it = counts_.find(token);
  return it == counts_.end() ? 0 : it->second;
}

// pen_ <- (biased, then penalized logit, id) for every biased token and every token in the
// window (llama.cpp's logit-bias then penalties samplers).
void Sampler::compute_penalties(const float* logits) {
  pen_.clear();
  auto penalize = [&](float l, int32_t count) {
    if (l > 0.0f) l /= p_.repeat_penalty;
    else l *= p_.repeat_penalty;
    return l - (static_cast<float>(count) * p_.frequency_penalty + p_.presence_penalty);
  };
  if (bias_.empty()) {
    if (!penalties_on_) return;
    for (const auto& [tok, count] : counts_)
      pen_.push_back({sanitize(penalize(sanitize(logits[tok]), count)), tok, 0.0f});
    return;
  }
  mods_.clear();
  for (const auto& [tok, bias] : bias_) mods_.emplace(tok, 0);
  if (penalties_on_)
    for (const auto& [tok, count] : counts_) mods_[tok] = count;
  for (const auto& [tok, count] : mods_) {
    float l = sanitize(logits[tok]);
    const auto it = bias_.find(tok);
    if (it != bias_.end()) l = it->second <= -kMaxLogitBias ? kNegInf : sanitize(l + it->second);
    if (count > 0) l = penalize(l, count);  // count > 0 only while penalties are on
    pen_.push_back({sanitize(l), tok, 0.0f});
  }
}

// top_k by heap scan over the raw logits (penalized tokens offered separately). cand_ sorted.
// *m: the max logit kept; *z: sum of exp(logit - m) (cand_[i].e holds the terms) if top_p < 1.
void Sampler::candidates_top_k(const float* logits, int32_t k, float* m, double* z) {
  for (const Cand& c : pen_) heap_offer(cand_, static_cast<size_t>(k), c);
  if (pen_.empty()) select_top<false>(logits, n_vocab_, static_cast<size_t>(k), nullptr, cand_);
  else select_top<true>(logits, n_vocab_, static_cast<size_t>(k), overridden(), cand_);
  sorted_n_ = cand_.size();
  *m = cand_[0].logit;
  if (*m == kNegInf) {  // nothing finite: uniform over the kept candidates
    for (Cand& c : cand_) c.logit = 0.0f;
    *m = 0.0f;
  }
  if (p_.top_p < 1.0f) *z = weigh(cand_.data(), cand_.size(), *m, 1.0f);
}

// top_k disabled or large: penalized copy of the whole vocabulary, cand_ unsorted. Same outputs
// as candidates_top_k. When top_k is off, min_p is applied while copying (*min_p_done).
void Sampler::candidates_full(const float* logits, int32_t k, float* m, double* z, bool* min_p_done) {
  const int32_t n = n_vocab_;
  sorted_n_ = 0;
  if (k < n) {
    cand_.resize(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) cand_[i] = {sanitize(logits[i]), i, 0.0f};
    for (const Cand& c : pen_) cand_[c.id].logit = c.logit;
    std::nth_element(cand_.begin(), cand_.begin() + (k - 1), cand_.end(), better);
    cand_.resize(static_cast<size_t>(k));
    float mx = kNegInf;
    for (const Cand& c : cand_) mx = std::max(mx, c.logit);
    if (mx == kNegInf) {
      for (Cand& c : cand_) c.logit = 0.0f;
      mx = 0.0f;
    }
    *m = mx;
    if (p_.top_p < 1.0f) *z = weigh(cand_.data(), cand_.size(), mx, 1.0f);
    return;
  }
  work_.resize(static_cast<size_t>(n));
  float* w = work_.data();
  for (int32_t i = 0; i < n; ++i) w[i] = sanitize(logits[i]);
  for (const Cand& c : pen_) w[c.id] = c.logit;
  float mx = sampling_detail::max_of(w, static_cast<size_t>(n));
  if (mx == kNegInf) {
    std::fill(work_.begin(), work_.end(), 0.0f);
    mx = 0.0f;
  }
  *m = mx;
  *min_p_done = true;
  if (p_.min_p > 0.0f) {
    // top_p measures against the whole post-top_k set, so sum before filtering.
    if (p_.top_p < 1.0f) *z = sampling_detail::sum_exp(w, static_cast<size_t>(n), mx);
    const float thr = std::log(p_.min_p);
    for (int32_t i = 0; i < n; ++i)
      if (w[i] - mx >= thr) cand_.push_back({w[i], i, exp_nonpos(w[i] - mx)});
    return;
  }
  cand_.resize(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) cand_[i] = {w[i], i, 0.0f};
  if (p_.top_p < 1.0f) *z = weigh(cand_.data(), cand_.size(), mx, 1.0f);
}

// Smallest ranked index i (rank: logit desc, id asc) whose cumulative weight (sum of e through
// i) reaches target (>= when inclusive, else >), or cand_.size() if none does. Afterwards
// cand_[0..i] are the i + 1 best candidates and [0, sorted_n_) is still sorted.
size_t Sampler::ranked_find(double target, bool inclusive) {
  auto reached = [&](double c) { return inclusive ? c >= target : c > target; };
  double cum = 0.0;
  for (size_t i = 0; i < sorted_n_; ++i) {
    cum += cand_[i].e;
    if (reached(cum)) return i;
  }
  auto at = [&](size_t i) { return cand_.begin() + static_cast<std::ptrdiff_t>(i); };
  size_t lo = sorted_n_, hi = cand_.size();
  bool bucketed = false;

  // Large unsorted remainder: histogram the weights by logit (buckets are monotone in the
  // logit, so bucket order is rank order), find the bucket where the target is reached, and
  // move [better buckets | that bucket | worse buckets] into place with one scatter. Repeats
  // inside the bucket while it is still large and its logits still differ.
  while (hi - lo > kBucketMin) {
    float lmax = kNegInf, lmin = std::numeric_limits<float>::infinity();
    for (size_t i = lo; i < hi; ++i) {
      const float l = cand_[i].logit;
      lmax = l > lmax ? l : lmax;
      if (l > kNegInf && l < lmin) lmin = l;
    }
    const float range = lmax - lmin;
    if (range == 0.0f && cand_[lo].e > 0.0f) {
      // One logit, hence one weight, for the whole range: rank is id order, and the answer's
      // position follows from the weight; one nth_element puts it in place.
      const double e = cand_[lo].e;
      const size_t n = hi - lo;
      size_t j = static_cast<size_t>(std::clamp(std::floor((target - cum) / e), 0.0, static_cast<double>(n - 1)));
      while (j > 0 && reached(cum + static_cast<double>(j) * e)) --j;
      while (j + 1 < n && !reached(cum + static_cast<double>(j + 1) * e)) ++j;
      if (!reached(cum + static_cast<double>(j + 1) * e)) return bucketed ? hi - 1 : cand_.size();
      std::nth_element(at(lo), at(lo + j), at(hi), better);
      return lo + j;
    }
    if (!(range > 0.0f) || !std::isfinite(range)) break;
    const float scale = static_cast<float>(kBuckets - 1) / range;
    // A denormal range overflows the scale to +inf and the top logit's key to 0 * inf = NaN
    // (found by fuzz_sampling); the quickselect below handles such a range.
    if (!std::isfinite(scale)) break;
    auto key = [&](float l) {
      const float d = lmax - l;  // >= 0; +inf for -inf logits
      return d >= range ? kBuckets - 1 : std::min(kBuckets - 1, static_cast<int>(d * scale));
    };
    hist_w_.assign(kBuckets, 0.0);
    hist_n_.assign(kBuckets, 0);
    for (size_t i = lo; i < hi; ++i) {
      const int b = key(cand_[i].logit);
      hist_w_[b] += cand_[i].e;
      hist_n_[b] += 1;
    }
    int tb = -1;
    size_t n_before = 0;
    for (int b = 0; b < kBuckets; ++b) {
      if (hist_n_[b] != 0 && reached(cum + hist_w_[b])) {
        tb = b;
        break;
      }
      cum += hist_w_[b];
      n_before += hist_n_[b];
    }
    if (tb < 0) return bucketed ? hi - 1 : cand_.size();
    tmp_.resize(hi - lo);
    size_t slot[3] = {0, n_before, n_before + hist_n_[tb]};
    for (size_t i = lo; i < hi; ++i) {
      const int b = key(cand_[i].logit);
      tmp_[slot[(b > tb) + (b >= tb)]++] = cand_[i];
    }
    std::copy(tmp_.begin(), tmp_.end(), at(lo));
    lo += n_before;
    hi = lo + hist_n_[tb];
    bucketed = true;
  }

  // Weighted quickselect: halve [lo, hi) with nth_element until it is small, then sort it.
  while (hi - lo > 64) {
    const size_t mid = lo + (hi - lo) / 2;
    std::nth_element(at(lo), at(mid), at(hi), better);  // [lo, mid] = the best of [lo, hi)
    double left = 0.0;
    for (size_t i = lo; i <= mid; ++i) left += cand_[i].e;
    if (reached(cum + left)) {
      hi = mid + 1;
    } else {
      cum += left;
      lo = mid + 1;
    }
  }
  std::sort(at(lo), at(hi), better);
  if (lo == sorted_n_) sorted_n_ = hi;  // everything after hi ranks below [lo, hi)
  for (size_t i = lo; i < hi; ++i) {
    cum += cand_[i].e;
    if (reached(cum)) return i;
  }
  // The bucket's total reached the target but its sequential sum (rounding) did not.
  return bucketed && hi > lo ? hi - 1 : cand_.size();
}

// out->logprob and out->top from log-softmax of the raw logits.
void Sampler::raw_logprobs(const float* logits, int32_t chosen, SampleResult* out) {
  const size_t n = static_cast<size_t>(n_vocab_);
  float mr;
  if (p_.n_logprobs == 0 && !p_.compute_logprob) {
    out->logprob = 0.0f;
    return;
  }
  if (p_.n_logprobs > 0) {
    topn_.clear();
    select_top<false>(logits, n_vocab_, static_cast<size_t>(p_.n_logprobs), nullptr, topn_);
    mr = topn_[0].logit;
  } else {
    mr = sanitize(sampling_detail::max_of(logits, n));
  }
  if (mr == kNegInf) {  // nothing finite: report the uniform distribution
    const float lp = -std::log(static_cast<float>(n_vocab_));
    out->logprob = lp;
    for (int32_t j = 0; j < p_.n_logprobs; ++j) out->top.push_back({topn_[j].id, lp});
    return;
  }
  const double log_z = static_cast<double>(mr) + std::log(sampling_detail::sum_exp(logits, n, mr));
  out->logprob = static_cast<float>(static_cast<double>(sanitize(logits[chosen])) - log_z);
  for (int32_t j = 0; j < p_.n_logprobs; ++j)
    out->top.push_back({topn_[j].id, static_cast<float>(topn_[j].logit - log_z)});
}

SampleResult Sampler::sample(const float* logits) {
  SampleResult r;
  sample(logits, &r);
  return r;
}

void Sampler::sample_masked(const float* logits, const uint8_t* allowed, SampleResult* out) {
  masked_.resize((size_t)n_vocab_);
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int32_t i = 0; i < n_vocab_; ++i) masked_[(size_t)i] = allowed[i] ? logits[i] : ninf;
  sample(masked_.data(), out);
}

void Sampler::sample(const float* logits, SampleResult* out) {
  out->top.clear();
  last_valid_ = false;
  cand_.clear();
  sorted_n_ = 0;
  z_final_ = 1.0;
  if (n_vocab_ <= 0 || logits == nullptr) {
    out->token = -1;
    out->logprob = 0.0f;
    return;
  }
  compute_penalties(logits);

  if (!(p_.temperature > 0.0f)) {  // greedy: argmax of penalized logits, ties -> lowest id
    for (const Cand& c : pen_) heap_offer(cand_, 1, c);
    if (pen_.empty()) select_top<false>(logits, n_vocab_, 1, nullptr, cand_);
    else select_top<true>(logits, n_vocab_, 1, overridden(), cand_);
    cand_[0].e = 1.0f;
    sorted_n_ = 1;
    out->token = cand_[0].id;
    raw_logprobs(logits, out->token, out);
    return;
  }

  // 1. penalties (pen_) + top_k
  const int32_t k = p_.top_k > 0 ? std::min(p_.top_k, n_vocab_) : n_vocab_;
  float m = 0.0f;  // max penalized logit among the top_k survivors
  double z = 1.0;  // sum of exp(logit - m) over the top_k survivors (only when top_p < 1)
  bool min_p_done = false;
  if (k <= kHeapTopK && k < n_vocab_) candidates_top_k(logits, k, &m, &z);
  else candidates_full(logits, k, &m, &z, &min_p_done);

  // 2+3. top_p and min_p each keep a prefix of the ranked candidates, both measured on the
  // post-top_k distribution (min_p is a ratio to the max, which top_p's renormalization does
  // not change), so the result is the shorter prefix: filter min_p, then search top_p.
  if (!min_p_done && p_.min_p > 0.0f) {
    const float thr = std::log(p_.min_p);
    const bool all_sorted = sorted_n_ == cand_.size();
    cand_.erase(std::remove_if(cand_.begin(), cand_.end(), [&](const Cand& c) { return !(c.logit - m >= thr); }),
                cand_.end());
    sorted_n_ = all_sorted ? cand_.size() : 0;
  }
  if (p_.top_p < 1.0f) {  // weights e = exp(logit - m) were filled by the builder
    const size_t i = ranked_find(static_cast<double>(p_.top_p) * z, /*inclusive=*/true);
    if (i < cand_.size()) cand_.resize(i + 1);
    sorted_n_ = std::min(sorted_n_, cand_.size());
  }

  // 4+5. temperature + softmax (m is still the max: top_p and min_p always keep it).
  const float inv_t = 1.0f / p_.temperature;
  double zt = 0.0;
  if (inv_t == 1.0f && p_.top_p < 1.0f) {  // the T = 1 weights are already there
    for (const Cand& c : cand_) zt += c.e;
  } else {
    zt = weigh(cand_.data(), cand_.size(), m, inv_t);
  }
  z_final_ = zt;

  // 6. draw: uniform in [0, 1) against the cumulative distribution in ranked order. One RNG
  // step per non-greedy call, even when a single candidate is left.
  const double u = rng_.uniform();
  if (cand_.empty()) {  // unreachable (the max always survives); never index an empty set
    out->token = 0;
    raw_logprobs(logits, out->token, out);
    return;
  }
  size_t pick = ranked_find(u * zt, /*inclusive=*/false);
  if (pick >= cand_.size()) {  // rounding left the target past the end: last token with mass
    std::sort(cand_.begin(), cand_.end(), better);
    pick = cand_.size() - 1;
    while (pick > 0 && cand_[pick].e == 0.0f) --pick;
  }
  out->token = cand_[pick].id;
  raw_logprobs(logits, out->token, out);
}

const std::vector<TokenLogprob>& Sampler::last_candidates() const {
  if (!last_valid_) {
    std::vector<Cand> sorted(cand_.begin(), cand_.end());
    std::sort(sorted.begin(), sorted.end(), better);
    last_.clear();
    last_.reserve(sorted.size());
    const double inv = z_final_ > 0.0 ? 1.0 / z_final_ : 0.0;
    for (const Cand& c : sorted) last_.push_back({c.id, static_cast<float>(c.e * inv)});
    last_valid_ = true;
  }
  return last_;
}

}  // namespace llmserve
