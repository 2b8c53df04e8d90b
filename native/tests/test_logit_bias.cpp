// Tests for SamplingParams::logit_bias (OpenAI's logit_bias): the bias is added to the raw logit
// before the penalties on every code path (greedy, top-k heap, full vocabulary), -100 bans,
// logprobs stay raw, and validate() / the sampler refuse or ignore what they must.
#include <cmath>
#include <limits>
#include <vector>

#include "sampling/sampler.h"
#include "sampling_test_util.h"
#include "testing.h"

using namespace llmserve;
using namespace llmserve::sampling_test;

TEST(logit_bias_shifts_the_distribution_by_exp_bias) {
  const float logits[4] = {1, 1, 1, 1};
  SamplingParams p = plain();
  p.logit_bias = {{2, 1.0f}};  // token 2: 1 + 1 = 2 -> softmax([1, 1, 2, 1])
  Sampler s(p, 4);
  s.sample(logits);
  const double z = 3.0 + std::exp(1.0);
  CHECK_NEAR(prob_of(s, 2), std::exp(1.0) / z, 1e-6);
  CHECK_NEAR(prob_of(s, 0), 1.0 / z, 1e-6);
}

TEST(logit_bias_minus_100_bans_and_plus_100_forces_on_every_path) {
  std::vector<float> logits(1000);
  for (int i = 0; i < 1000; ++i) logits[i] = float(i % 97) * 0.01f;
  logits[500] = 10.0f;  // the greedy token
  for (int top_k : {0, 1, 5, 40, 2000}) {
    for (float temperature : {0.0f, 1.0f}) {
      SamplingParams p = plain();
      p.temperature = temperature;
      p.top_k = top_k;
      p.seed = 3;
      p.logit_bias = {{500, -100.0f}};
      Sampler banned(p, 1000);
      for (int step = 0; step < 20; ++step) CHECK(banned.sample(logits.data()).token != 500);
      p.logit_bias = {{7, 100.0f}};  // 0.07 + 100 beats 10 by far more than any draw can bridge
      Sampler forced(p, 1000);
      for (int step = 0; step < 20; ++step) CHECK_EQ(forced.sample(logits.data()).token, 7);
    }
  }
}

TEST(logit_bias_minus_100_is_a_ban_not_a_shift) {
  // A logit 1000 above the rest still leads after -100 were it only added: -100 must ban.
  const float logits[4] = {1000, 1, 2, 3};
  for (float temperature : {0.0f, 1.0f}) {
    SamplingParams p = plain();
    p.temperature = temperature;
    p.logit_bias = {{0, -100.0f}};
    Sampler s(p, 4);
    for (int step = 0; step < 20; ++step) CHECK(s.sample(logits).token != 0);
    p.logit_bias = {{0, -99.0f}};  // a large but finite bias is only a shift
    Sampler shifted(p, 4);
    CHECK_EQ(shifted.sample(logits).token, 0);
  }
}

TEST(logit_bias_applies_before_penalties_and_keeps_raw_logprobs) {
  // token 0, bias 3, repeat penalty 4: bias first gives (1 + 3) / 4 = 1 < 1.5, so greedy picks
  // token 1; the penalty first would give 1 / 4 + 3 = 3.25 and pick token 0.
  const float logits[3] = {1.0f, 1.5f, 0.0f};
  SamplingParams p = plain();
  p.temperature = 0.0f;
  p.repeat_penalty = 4.0f;
  p.logit_bias = {{0, 3.0f}};
  p.n_logprobs = 1;
  Sampler s(p, 3);
  s.accept(0);
  const SampleResult r = s.sample(logits);
  CHECK_EQ(r.token, 1);
  // logprobs are the raw logits' log-softmax: the top alternative is token 1, unbiased.
  const double log_z = std::log(std::exp(1.0) + std::exp(1.5) + 1.0);
  CHECK_NEAR(r.logprob, 1.5 - log_z, 1e-5);
  CHECK_EQ(r.top[0].token, 1);
}

TEST(logit_bias_later_pair_wins_and_out_of_vocab_ids_are_ignored) {
  const float logits[4] = {4, 1, 1, 1};
  SamplingParams p = plain();
  p.temperature = 0.0f;
  p.logit_bias = {{1, 100.0f}, {1, -100.0f}, {99, 100.0f}};
  Sampler s(p, 4);
  CHECK_EQ(s.sample(logits).token, 0);
}

TEST(logit_bias_validate_rejects_bad_pairs) {
  SamplingParams p = plain();
  p.logit_bias = {{1, 100.5f}};
  CHECK(!validate(p).is_ok());
  p.logit_bias = {{1, std::numeric_limits<float>::quiet_NaN()}};
  CHECK(!validate(p).is_ok());
  p.logit_bias = {{-1, 1.0f}};
  CHECK(!validate(p).is_ok());
  p.logit_bias = {{1, -100.0f}, {2, 100.0f}};
  CHECK(validate(p).is_ok());
}
