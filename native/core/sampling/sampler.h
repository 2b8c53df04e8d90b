// Token sampling: penalties, top-k, top-p, min-p, temperature, seeded draw, logprobs.
//
// Chain order matches llama.cpp's default sampler chain:
//   logit bias (per token, added to the raw logit; -100 bans)
//   -> penalties (repeat / frequency / presence over the last repeat_last_n accepted tokens)
//   -> top_k -> top_p -> min_p -> temperature -> softmax -> draw (seeded RNG)
// temperature <= 0 is greedy: argmax of the biased, penalized logits, ties -> lowest token id.
// Reported logprobs are log-softmax of the RAW logits (the model's own distribution), as
// OpenAI-style APIs report them, independent of penalties and temperature.
//
// Ordering: candidates are ranked by (logit desc, token id asc) everywhere, so every code path
// (small top_k heap, nth_element top_k, full vocabulary with a histogram search) keeps the same
// set and draws the same token for the same seed.
// Determinism: same build + same seed + same logits -> same tokens. The RNG and the exp used for
// weights are our own code (no libm), so other platforms agree too, up to last-bit effects
// (libm's log for min_p's threshold; summation order after the standard library's nth_element)
// that change a draw only when it lands within ~1e-7 of a boundary.
#pragma once
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../status.h"

namespace llmserve {

struct SamplingParams {
  float temperature = 0.8f;        // <= 0 means greedy (argmax, ties -> lowest id)
  int32_t top_k = 40;              // <= 0 disables
  float top_p = 0.95f;             // 1 disables; must be in (0, 1]
  float min_p = 0.05f;             // 0 disables; in [0, 1]
  float repeat_penalty = 1.0f;     // 1 disables (llama.cpp: logit > 0 ? logit / p : logit * p)
  int32_t repeat_last_n = 64;      // window for all penalties; 0 disables penalties, -1 = whole history
  float frequency_penalty = 0.0f;  // logit -= count * frequency_penalty
  float presence_penalty = 0.0f;   // logit -= (count > 0) * presence_penalty
  uint64_t seed = 0;               // same seed + same logits sequence -> same tokens
  int32_t n_logprobs = 0;          // top-n alternatives to report (0..kMaxLogprobs)
  // false (and n_logprobs == 0) skips the raw log-softmax, an exp pass over the vocabulary
  // (the largest per-call cost with the default filters); SampleResult::logprob is then 0.
  bool compute_logprob = true;
  // OpenAI's logit_bias: (token, bias) pairs, bias in [-100, 100], added to the raw logit before
  // the penalties; -100 bans the token (its logit becomes -inf), as OpenAI documents it. A later
  // pair for the same token replaces an earlier one. Reported logprobs stay the raw logits'.
  std::vector<std::pair<int32_t, float>> logit_bias;
};

inline constexpr float kMaxLogitBias = 100.0f;  // |bias| limit; -kMaxLogitBias bans

inline constexpr int32_t kMaxLogprobs = 20;

// ERR_INVALID_ARGUMENT naming the option (JS spelling) and its valid range, e.g.
// "topP must be in (0, 1] but received 1.5". Options: temperature, topK, topP, minP,
// repeatPenalty, repeatLastN, frequencyPenalty, presencePenalty, logprobs (n_logprobs, as
// native/napi/model_wrap.cc reads it), logitBias (negative token ids, biases outside [-100, 100];
// ids beyond the vocabulary are the engine's check, which knows it).
Status validate(const SamplingParams& p);

struct TokenLogprob {
  int32_t token;
  float logprob;  // in last_candidates(): a probability, not a log
};

struct SampleResult {
  int32_t token = -1;
  float logprob = 0.0f;           // raw-logit log-softmax of the chosen token (0 when
                                  // compute_logprob is false and n_logprobs is 0)
  std::vector<TokenLogprob> top;  // top-n raw-logit alternatives, logprob desc (ties: id asc)
};

// xoshiro256** seeded through splitmix64: small, fast, identical on every platform.
// A Sampler advances it exactly once per non-greedy sample() call.
class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }
  void reseed(uint64_t seed);
  uint64_t next();
  double uniform();  // [0, 1) with 53 random bits
 private:
  uint64_t s_[4];
};

// One per sequence. Not thread-safe; different Samplers may run on different threads.
class Sampler {
 public:
  // p should have passed validate(); out-of-range values are clamped, never crash.
  Sampler(const SamplingParams& p, int32_t n_vocab);

  // Appends a token to the penalty history (prompt tokens too). Ids outside [0, n_vocab) are
  // ignored; so is everything while penalties are off. O(1).
  void accept(int32_t token);

  // logits: [n_vocab] raw model output (not modified). NaN counts as -inf, +inf as FLT_MAX.
  SampleResult sample(const float* logits);
  // Same, reusing out's storage (no allocation once out->top has capacity).
  void sample(const float* logits, SampleResult* out);
  // Constrained decoding: tokens with allowed[id] == 0 get logit -inf before every other step of
  // the chain (bias, penalties, top-k, temperature), so they are never drawn. allowed: [n_vocab],
  // at least one nonzero. Reported logprobs are those of the masked logits (what could be drawn).
  void sample_masked(const float* logits, const uint8_t* allowed, SampleResult* out);

  // The distribution the last sample() drew from (after all transforms): (token, prob) sorted by
  // prob desc, ties by token id asc. Greedy: the single chosen token with prob 1. For tests and
  // debugging: the first call after a sample() sorts a copy.
  const std::vector<TokenLogprob>& last_candidates() const;

  const SamplingParams& params() const { return p_; }
  int32_t n_vocab() const { return n_vocab_; }
  // Number of times `token` occurs in the current penalty window (0 when penalties are off).
  int32_t window_count(int32_t token) const;

  // Candidate during the chain: logit after penalties, then e = unnormalized final probability.
  struct Cand {
    float logit;
    int32_t id;
    float e;
  };

 private:
  void compute_penalties(const float* logits);
  // Tokens whose logit pen_ overrides (the scans skip them): the penalty window, plus the biased
  // tokens when there are any.
  const std::unordered_map<int32_t, int32_t>* overridden() const { return bias_.empty() ? &counts_ : &mods_; }
  void candidates_top_k(const float* logits, int32_t k, float* m, double* z);
  void candidates_full(const float* logits, int32_t k, float* m, double* z, bool* min_p_done);
  size_t ranked_find(double target, bool inclusive);
  void raw_logprobs(const float* logits, int32_t chosen, SampleResult* out);

  SamplingParams p_;
  int32_t n_vocab_;
  bool penalties_on_;
  Rng rng_;

  // Penalty window: counts of tokens in the last repeat_last_n accepted tokens.
  std::unordered_map<int32_t, int32_t> counts_;
  std::vector<int32_t> ring_;  // last repeat_last_n tokens (unused when repeat_last_n == -1)
  size_t ring_head_ = 0;

  std::unordered_map<int32_t, float> bias_;    // logit bias by token (ids inside the vocabulary)
  std::unordered_map<int32_t, int32_t> mods_;  // per call: biased + windowed tokens -> window count

  // Per-call scratch, kept between calls to avoid allocations.
  std::vector<Cand> pen_;   // penalized tokens: (penalized logit, id)
  std::vector<Cand> cand_;  // candidates; [0, sorted_n_) sorted by (logit desc, id asc)
  size_t sorted_n_ = 0;
  double z_final_ = 1.0;          // sum of cand_[i].e
  std::vector<float> work_;       // [n_vocab] penalized logits (full-vocabulary path only)
  std::vector<float> masked_;     // [n_vocab] logits after a grammar mask (sample_masked only)
  std::vector<Cand> topn_;        // raw top-n heap
  std::vector<Cand> tmp_;         // ranked_find scatter buffer
  std::vector<double> hist_w_;    // ranked_find logit histogram: weight per bucket
  std::vector<uint32_t> hist_n_;  // ... and candidates per bucket

  mutable std::vector<TokenLogprob> last_;
  mutable bool last_valid_ = false;
};

}  // namespace llmserve
