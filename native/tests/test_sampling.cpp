// Tests for native/core/sampling: each transform by hand, ordering of the chain, greedy ties,
// seeded reproducibility, empirical frequencies, raw logprobs, validation, bad input.
// Code-path coverage against a naive reference lives in test_sampling_paths.cpp.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "sampling/sampler.h"
#include "sampling_test_util.h"
#include "testing.h"

using namespace llmserve;
using namespace llmserve::sampling_test;

namespace {

// A sampler over the 4 `logits` after one sample(): last_candidates() and prob_of() read that draw.
Sampler sample_once(const SamplingParams& p, const float (&logits)[4]) {
  Sampler s(p, 4);
  s.sample(logits);
  return s;
}

}  // namespace

// ---- each transform by hand ---------------------------------------------------------------

TEST(sampling_top_k_keeps_best_two) {
  SamplingParams p = plain();
  p.top_k = 2;
  Sampler s(p, 4);
  const float logits[4] = {1, 2, 3, 4};
  int32_t tok = s.sample(logits).token;
  CHECK(tok == 3 || tok == 2);
  const auto& c = s.last_candidates();
  CHECK_EQ(c.size(), size_t(2));
  CHECK_EQ(c[0].token, 3);
  CHECK_EQ(c[1].token, 2);
  // softmax([4, 3]) = 1 / (1 + e^-1), e^-1 / (1 + e^-1)
  CHECK_NEAR(c[0].logprob, 0.7310585786, 1e-6);
  CHECK_NEAR(c[1].logprob, 0.2689414214, 1e-6);
}

TEST(sampling_top_k_larger_than_vocab_keeps_all) {
  SamplingParams p = plain();
  p.top_k = 100;
  const float logits[4] = {1, 2, 3, 4};
  Sampler s = sample_once(p, logits);
  CHECK_EQ(s.last_candidates().size(), size_t(4));
  // softmax([1,2,3,4]) = e^(l-4) / (1 + e^-1 + e^-2 + e^-3)
  CHECK_NEAR(prob_of(s, 0), 0.0320586033, 1e-6);
  CHECK_NEAR(prob_of(s, 3), 0.6439142599, 1e-6);
}

TEST(sampling_top_p_smallest_prefix) {
  // softmax([1,2,3,4]) = [0.0321, 0.0871, 0.2369, 0.6439]; cumulative desc 0.6439, 0.8808, 0.9679
  const float logits[4] = {1, 2, 3, 4};
  {
    SamplingParams p = plain();
    p.top_p = 0.8f;  // 0.6439 < 0.8 <= 0.8808 -> tokens 3, 2
    Sampler s = sample_once(p, logits);
    const auto& c = s.last_candidates();
    CHECK_EQ(c.size(), size_t(2));
    CHECK_EQ(c[0].token, 3);
    CHECK_EQ(c[1].token, 2);
    CHECK_NEAR(c[0].logprob, 0.7310585786, 1e-6);
  }
  {
    SamplingParams p = plain();
    p.top_p = 0.9f;  // 0.8808 < 0.9 <= 0.9679 -> tokens 3, 2, 1: softmax([4,3,2])
    Sampler s = sample_once(p, logits);
    CHECK_EQ(s.last_candidates().size(), size_t(3));
    CHECK_NEAR(prob_of(s, 3), 0.6652409558, 1e-6);
    CHECK_NEAR(prob_of(s, 2), 0.2447284711, 1e-6);
    CHECK_NEAR(prob_of(s, 1), 0.0900305732, 1e-6);
    CHECK_NEAR(prob_of(s, 0), -1.0, 0);
  }
  {
    SamplingParams p = plain();
    p.top_p = 0.5f;  // first token alone already covers 0.6439 -> always token 3
    Sampler s(p, 4);
    for (int i = 0; i < 20; ++i) CHECK_EQ(s.sample(logits).token, 3);
    CHECK_EQ(s.last_candidates().size(), size_t(1));
    CHECK_NEAR(s.last_candidates()[0].logprob, 1.0, 1e-7);
  }
}

TEST(sampling_min_p_ratio_to_max) {
  // prob / max_prob = e^(l - 4): token 2 -> 0.368, token 1 -> 0.135, token 0 -> 0.0498
  const float logits[4] = {1, 2, 3, 4};
  {
    SamplingParams p = plain();
    p.min_p = 0.3f;
    Sampler s = sample_once(p, logits);
    const auto& c = s.last_candidates();
    CHECK_EQ(c.size(), size_t(2));
    CHECK_EQ(c[0].token, 3);
    CHECK_EQ(c[1].token, 2);
    CHECK_NEAR(c[1].logprob, 0.2689414214, 1e-6);
  }
  {
    SamplingParams p = plain();
    p.min_p = 0.05f;  // 0.0498 < 0.05: token 0 goes, the rest stay
    Sampler s = sample_once(p, logits);
    CHECK_EQ(s.last_candidates().size(), size_t(3));
    CHECK_NEAR(prob_of(s, 0), -1.0, 0);
    CHECK_NEAR(prob_of(s, 1), 0.0900305732, 1e-6);
  }
  {  // same through the heap top_k path
    SamplingParams p = plain();
    p.top_k = 3;
    p.min_p = 0.3f;
    Sampler s = sample_once(p, logits);
    CHECK_EQ(s.last_candidates().size(), size_t(2));
  }
}

TEST(sampling_temperature_scales_logits) {
  const float logits[4] = {1, 2, 3, 4};
  SamplingParams p = plain();
  p.temperature = 0.5f;  // softmax([2,4,6,8])
  Sampler s = sample_once(p, logits);
  CHECK_NEAR(prob_of(s, 0), 0.0021440088, 1e-6);
  CHECK_NEAR(prob_of(s, 1), 0.0158422012, 1e-6);
  CHECK_NEAR(prob_of(s, 2), 0.1170589132, 1e-6);
  CHECK_NEAR(prob_of(s, 3), 0.8649548768, 1e-6);
}

TEST(sampling_temperature_applies_after_top_p) {
  // top_p = 0.8 on the T=1 distribution keeps {3, 2}; then T = 2 gives softmax([2, 1.5]).
  // (Temperature first would flatten to [0.10, 0.17, 0.28, 0.46] and keep three tokens.)
  const float logits[4] = {1, 2, 3, 4};
  SamplingParams p = plain();
  p.top_p = 0.8f;
  p.temperature = 2.0f;
  Sampler s = sample_once(p, logits);
  CHECK_EQ(s.last_candidates().size(), size_t(2));
  CHECK_NEAR(prob_of(s, 3), 0.6224593312, 1e-6);
  CHECK_NEAR(prob_of(s, 2), 0.3775406688, 1e-6);
}

TEST(sampling_repeat_penalty_positive_and_negative) {
  // token 0: 2 > 0 -> 2 / 2 = 1; token 1: -2 <= 0 -> -2 * 2 = -4; others untouched.
  const float logits[4] = {2, -2, 1, 0.5f};
  SamplingParams p = plain();
  p.repeat_penalty = 2.0f;
  Sampler s(p, 4);
  s.accept(0);
  s.accept(1);
  s.accept(1);  // repeat penalty applies once per token, whatever the count
  s.sample(logits);
  // softmax([1, -4, 1, 0.5])
  CHECK_NEAR(prob_of(s, 0), 0.3826625389, 1e-6);
  CHECK_NEAR(prob_of(s, 1), 0.0025783599, 1e-6);
  CHECK_NEAR(prob_of(s, 2), 0.3826625389, 1e-6);
  CHECK_NEAR(prob_of(s, 3), 0.2320965622, 1e-6);
  // greedy sees the same penalized logits: tokens 0 and 2 tie at 1 -> lowest id
  SamplingParams g = p;
  g.temperature = 0.0f;
  Sampler sg(g, 4);
  sg.accept(0);
  CHECK_EQ(sg.sample(logits).token, 0);
  const float logits2[3] = {3, 2.5f, -1};
  Sampler sg2(g, 3);
  sg2.accept(0);  // 3 -> 1.5 < 2.5
  CHECK_EQ(sg2.sample(logits2).token, 1);
}

TEST(sampling_frequency_and_presence_counts) {
  const float logits[4] = {1, 1, 1, 1};
  SamplingParams p = plain();
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  {
    Sampler s(p, 4);
    for (int32_t t : {0, 0, 0, 1}) s.accept(t);
    CHECK_EQ(s.window_count(0), 3);
    CHECK_EQ(s.window_count(1), 1);
    CHECK_EQ(s.window_count(2), 0);
    s.sample(logits);
    // token 0: 1 - 3*0.5 - 0.25 = -0.75; token 1: 1 - 0.5 - 0.25 = 0.25; softmax([-.75,.25,1,1])
    CHECK_NEAR(prob_of(s, 0), 0.0656707169, 1e-6);
    CHECK_NEAR(prob_of(s, 1), 0.1785115165, 1e-6);
    CHECK_NEAR(prob_of(s, 2), 0.3779088833, 1e-6);
    CHECK_NEAR(prob_of(s, 3), 0.3779088833, 1e-6);
  }
  {
    SamplingParams q = p;
    q.repeat_last_n = 2;  // window [0, 1]: each counted once -> both 0.25
    Sampler s(q, 4);
    for (int32_t t : {0, 0, 0, 1}) s.accept(t);
    CHECK_EQ(s.window_count(0), 1);
    s.sample(logits);
    CHECK_NEAR(prob_of(s, 0), 0.1604106504, 1e-6);
    CHECK_NEAR(prob_of(s, 1), 0.1604106504, 1e-6);
    CHECK_NEAR(prob_of(s, 2), 0.3395893496, 1e-6);
  }
  {
    SamplingParams q = p;
    q.repeat_last_n = -1;  // whole history
    Sampler s(q, 4);
    for (int i = 0; i < 100; ++i) s.accept(2);
    s.accept(0);
    CHECK_EQ(s.window_count(2), 100);
    CHECK_EQ(s.window_count(0), 1);
  }
  {
    SamplingParams q = p;
    q.repeat_last_n = 0;  // off: uniform
    Sampler s(q, 4);
    for (int32_t t : {0, 0, 0, 1}) s.accept(t);
    s.sample(logits);
    CHECK_NEAR(prob_of(s, 0), 0.25, 1e-6);
  }
  {  // negative presence penalty promotes seen tokens (greedy: token 3 wins)
    SamplingParams q = plain();
    q.temperature = 0.0f;
    q.presence_penalty = -0.5f;
    Sampler s(q, 4);
    s.accept(3);
    CHECK_EQ(s.sample(logits).token, 3);
  }
}

TEST(sampling_penalties_on_heap_path_can_promote_and_demote) {
  // Vocabulary 1000, top_k 5 (heap path): a penalized token must enter / leave the top set.
  std::vector<float> logits(1000, 0.0f);
  for (int i = 0; i < 1000; ++i) logits[i] = float(i % 97) * 0.01f;  // max 0.96 at ids 96, 193..
  logits[500] = 10.0f;                                               // the clear winner ...
  logits[7] = -3.0f;                                                 // ... and a loser
  SamplingParams p = plain();
  p.temperature = 0.0f;
  p.top_k = 5;
  p.repeat_penalty = 100.0f;
  p.presence_penalty = -20.0f;  // 7: -3*100 + 20 = -280; 500: 10/100 + 20 = 20.1
  Sampler s(p, 1000);
  s.accept(7);
  CHECK_EQ(s.sample(logits.data()).token, 500);
  SamplingParams q = p;
  q.presence_penalty = 20.0f;  // 500: 0.1 - 20 -> out; best left: 0.96 at the lowest id 96
  Sampler s2(q, 1000);
  s2.accept(500);
  CHECK_EQ(s2.sample(logits.data()).token, 96);
}

// ---- greedy, reproducibility, frequencies --------------------------------------------------

TEST(sampling_greedy_ties_lowest_id) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.n_logprobs = 2;
  Sampler s(p, 4);
  const float logits[4] = {1, 5, 5, 2};
  SampleResult r = s.sample(logits);
  CHECK_EQ(r.token, 1);
  // raw log-softmax: 5 - log(e + 2e^5 + e^2)
  const double lz = std::log(std::exp(1.0) + 2 * std::exp(5.0) + std::exp(2.0));
  CHECK_NEAR(r.logprob, 5.0 - lz, 1e-5);
  CHECK_EQ(r.top.size(), size_t(2));
  CHECK_EQ(r.top[0].token, 1);
  CHECK_EQ(r.top[1].token, 2);
  CHECK_EQ(s.last_candidates().size(), size_t(1));
  CHECK_NEAR(s.last_candidates()[0].logprob, 1.0, 0);
  SamplingParams neg = p;
  neg.temperature = -1.0f;  // also greedy
  Sampler s2(neg, 4);
  for (int i = 0; i < 10; ++i) CHECK_EQ(s2.sample(logits).token, 1);
}

TEST(sampling_seeded_reproducibility) {
  const int32_t V = 3000;
  Rng gen(123);
  std::vector<std::vector<float>> steps;
  for (int i = 0; i < 200; ++i) steps.push_back(random_logits(gen, V, 4.0));
  auto run = [&](uint64_t seed, int32_t top_k) {
    SamplingParams p;
    p.seed = seed;
    p.top_k = top_k;
    p.temperature = 1.5f;
    p.min_p = 0.0f;
    p.top_p = 0.99f;
    p.repeat_penalty = 1.1f;
    p.frequency_penalty = 0.1f;
    Sampler s(p, V);
    std::vector<int32_t> out;
    for (auto& l : steps) {
      int32_t t = s.sample(l.data()).token;
      s.accept(t);
      out.push_back(t);
    }
    return out;
  };
  for (int32_t k : {0, 40, 1000}) {
    auto a = run(42, k), b = run(42, k), c = run(43, k);
    CHECK(a == b);
    int differ = 0;
    for (size_t i = 0; i < a.size(); ++i) differ += a[i] != c[i];
    CHECK(differ > 50);
  }
  // Pin the generator itself so a platform difference would show up: splitmix64(0) seeds.
  Rng r(0);
  uint64_t x = r.next();
  Rng r2(0);
  CHECK_EQ(x, r2.next());
  double u = Rng(7).uniform();
  CHECK(u >= 0.0 && u < 1.0);
}

TEST(sampling_rng_known_values) {
  // xoshiro256** seeded by splitmix64(0): state words are the first four splitmix64 outputs
  // 0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f, 0xf88bb8a8724c81ec; the first
  // output is rotl(s1 * 5, 7) * 9.
  const uint64_t s1 = 0x6e789e6aa1b965f4ull;
  const uint64_t v = s1 * 5;
  const uint64_t expect = ((v << 7) | (v >> 57)) * 9;
  Rng r(0);
  CHECK_EQ(r.next(), expect);
}

TEST(sampling_empirical_frequencies_match) {
  const float logits[4] = {0, 1, 2, 0.5f};
  const double want[4] = {0.0783941172, 0.2130973043, 0.5792585299, 0.1292500486};
  SamplingParams p = plain();
  p.seed = 9;
  Sampler s(p, 4);
  const int n = 200000;
  int count[4] = {0, 0, 0, 0};
  for (int i = 0; i < n; ++i) count[s.sample(logits).token]++;
  for (int t = 0; t < 4; ++t) {
    CHECK_NEAR(prob_of(s, t), want[t], 1e-6);
    CHECK_NEAR(double(count[t]) / n, want[t], 0.005);  // ~5 sigma
  }
  // With top_k = 2 only tokens 2 and 1 can appear, in ratio e^2 : e^1.
  SamplingParams q = plain();
  q.top_k = 2;
  q.seed = 10;
  Sampler s2(q, 4);
  int c2[4] = {0, 0, 0, 0};
  for (int i = 0; i < n; ++i) c2[s2.sample(logits).token]++;
  CHECK_EQ(c2[0] + c2[3], 0);
  CHECK_NEAR(double(c2[2]) / n, 0.7310585786, 0.005);
}
// ---- logprobs -------------------------------------------------------------------------------

TEST(sampling_logprobs_are_raw_and_sorted) {
  const int32_t V = 1000;
  Rng gen(77);
  std::vector<float> logits = random_logits(gen, V, 3.0);
  double mx = -1e30;
  for (float v : logits) mx = std::max(mx, double(v));
  double z = 0;
  for (float v : logits) z += std::exp(double(v) - mx);
  const double lz = mx + std::log(z);
  std::vector<int32_t> ids(V);
  for (int32_t i = 0; i < V; ++i) ids[i] = i;
  std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });

  SamplingParams p;
  p.n_logprobs = 5;
  p.temperature = 0.3f;
  p.repeat_penalty = 1.5f;
  p.seed = 1;
  Sampler s(p, V);
  s.accept(ids[0]);  // penalties must not change the reported logprobs
  SampleResult r = s.sample(logits.data());
  CHECK_NEAR(r.logprob, logits[r.token] - lz, 1e-5);
  CHECK_EQ(r.top.size(), size_t(5));
  double sum = 0;
  for (size_t j = 0; j < r.top.size(); ++j) {
    CHECK_EQ(r.top[j].token, ids[j]);
    CHECK_NEAR(r.top[j].logprob, logits[ids[j]] - lz, 1e-5);
    if (j > 0) CHECK(r.top[j].logprob <= r.top[j - 1].logprob);
    sum += std::exp(double(r.top[j].logprob));
  }
  CHECK(sum <= 1.0 + 1e-6);
  // max allowed: 20 alternatives
  SamplingParams q;
  q.n_logprobs = 20;
  Sampler s20(q, V);
  CHECK_EQ(s20.sample(logits.data()).top.size(), size_t(20));
  SamplingParams none;
  Sampler s0(none, V);
  CHECK(s0.sample(logits.data()).top.empty());
  // compute_logprob = false skips the log-softmax (logprob 0) without changing the draws
  SamplingParams off;
  off.compute_logprob = false;
  off.seed = 4;
  SamplingParams on = off;
  on.compute_logprob = true;
  Sampler s_off(off, V), s_on(on, V);
  for (int i = 0; i < 50; ++i) {
    SampleResult a = s_off.sample(logits.data()), b = s_on.sample(logits.data());
    CHECK_EQ(a.token, b.token);
    CHECK_EQ(a.logprob, 0.0f);
    CHECK_NEAR(b.logprob, logits[b.token] - lz, 1e-5);
  }
  // top alternatives still come with compute_logprob = false
  off.n_logprobs = 3;
  Sampler s_top(off, V);
  SampleResult t = s_top.sample(logits.data());
  CHECK_EQ(t.top.size(), size_t(3));
  CHECK_NEAR(t.logprob, logits[t.token] - lz, 1e-5);
}

// ---- validation -----------------------------------------------------------------------------

TEST(sampling_validate_rejects_each_option) {
  CHECK(validate(SamplingParams{}).is_ok());
  auto rejects = [](SamplingParams p, const char* name) {
    Status st = validate(p);
    CHECK(!st.is_ok());
    CHECK(st.code == Code::InvalidArgument);
    CHECK(st.message.find(name) != std::string::npos);
    CHECK(st.message.find("but received") != std::string::npos);
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  SamplingParams p;
  p.top_p = 1.5f;
  CHECK(validate(p).message == "topP must be in (0, 1] but received 1.5");
  p.top_p = 0.0f;
  rejects(p, "topP");
  p.top_p = nan;
  rejects(p, "topP");
  p = {};
  p.min_p = -0.1f;
  rejects(p, "minP");
  p = {};
  p.min_p = 1.5f;
  rejects(p, "minP");
  p = {};
  p.temperature = nan;
  rejects(p, "temperature");
  p = {};
  p.temperature = inf;
  rejects(p, "temperature");
  p = {};
  p.repeat_penalty = 0.0f;
  rejects(p, "repeatPenalty");
  p = {};
  p.repeat_penalty = -1.0f;
  rejects(p, "repeatPenalty");
  p = {};
  p.repeat_last_n = -2;
  rejects(p, "repeatLastN");
  p = {};
  p.frequency_penalty = inf;
  rejects(p, "frequencyPenalty");
  p = {};
  p.presence_penalty = nan;
  rejects(p, "presencePenalty");
  p = {};
  p.n_logprobs = 21;
  rejects(p, "logprobs");
  p = {};
  p.n_logprobs = -1;
  rejects(p, "logprobs");
  // edges that are valid
  p = {};
  p.top_p = 1.0f;
  p.min_p = 1.0f;
  p.min_p = 0.0f;
  p.temperature = -1.0f;
  p.top_k = -5;
  p.repeat_last_n = -1;
  p.n_logprobs = 20;
  CHECK(validate(p).is_ok());
}

// ---- robustness and path equivalence ---------------------------------------------------------

TEST(sampling_bad_logits_never_crash) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  {
    const float logits[4] = {nan, inf, 1, -inf};
    SamplingParams p;
    p.n_logprobs = 3;
    for (int32_t k : {0, 2}) {
      p.top_k = k;
      Sampler s(p, 4);
      CHECK_EQ(s.sample(logits).token, 1);  // +inf dominates
      p.temperature = 0.0f;
    }
  }
  {
    const float logits[3] = {-inf, -inf, nan};  // nothing finite: uniform, still a valid token
    for (int32_t k : {0, 2}) {
      SamplingParams p = plain();
      p.top_k = k;
      p.n_logprobs = 2;
      Sampler s(p, 3);
      SampleResult r = s.sample(logits);
      CHECK(r.token >= 0 && r.token < 3);
      CHECK_NEAR(r.logprob, -std::log(3.0), 1e-6);
    }
  }
  {  // invalid params are clamped, out-of-range accepts ignored, n_vocab 1 works
    SamplingParams p;
    p.top_p = 7.0f;
    p.min_p = -3.0f;
    p.repeat_penalty = 0.0f;
    p.n_logprobs = 1000;
    Sampler s(p, 1);
    s.accept(-1);
    s.accept(5);
    const float one[1] = {0.5f};
    SampleResult r = s.sample(one);
    CHECK_EQ(r.token, 0);
    CHECK_EQ(r.top.size(), size_t(1));
    CHECK_NEAR(r.logprob, 0.0, 1e-7);
  }
  {
    Sampler s(SamplingParams{}, 0);
    const float one[1] = {0.5f};
    CHECK_EQ(s.sample(one).token, -1);
  }
}
