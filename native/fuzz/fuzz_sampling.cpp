// libFuzzer target: sampling parameters and logits. validate() must accept or reject every
// parameter set with a Status; a Sampler built from any parameters (validated or not: it clamps)
// must, for any logits (NaN, +-inf, ties, denormals) and any penalty history (ids out of range
// included), return a token in [0, n_vocab) and the requested number of top logprobs, sorted.
// With greedy parameters that passed validate() and no penalties, the token is the argmax.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "fuzz_common.h"
#include "sampling/sampler.h"

using namespace llmserve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  // Up to 4096 so the full-vocabulary (histogram) path, taken from 2048 candidates, is reached.
  const int32_t n_vocab =
      in.ConsumeBool() ? in.ConsumeIntegralInRange<int32_t>(1, 40) : in.ConsumeIntegralInRange<int32_t>(-2, 4096);
  const SamplingParams p = fuzz::sampling_params(in);
  const bool valid = static_cast<bool>(validate(p));

  // Logits: the first few from raw bits / small ranges (ties likely), the rest from a seeded
  // pattern so a large vocabulary does not need megabytes of input.
  std::vector<float> logits(static_cast<size_t>(std::max(n_vocab, 1)));
  const size_t n_raw = in.ConsumeIntegralInRange<size_t>(0, 64);
  uint32_t x = in.ConsumeIntegral<uint32_t>() | 1u;
  const int mode = in.ConsumeIntegralInRange<int>(0, 3);
  for (size_t i = 0; i < logits.size(); ++i) {
    if (i < n_raw && in.remaining_bytes() >= 4) {
      logits[i] = fuzz::any_float(in, -8.0f, 8.0f);
      continue;
    }
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    switch (mode) {
      case 0: logits[i] = static_cast<float>(x % 17) - 8.0f; break;  // many ties
      case 1: logits[i] = static_cast<float>(static_cast<int32_t>(x)) * 1e-9f; break;
      case 2: logits[i] = (x & 7) == 0 ? -INFINITY : static_cast<float>(x % 1000) * 0.01f; break;
      default: logits[i] = 0.0f; break;  // all equal
    }
  }

  Sampler s(p, n_vocab);
  const int n_hist = in.ConsumeIntegralInRange<int>(0, 200);
  for (int i = 0; i < n_hist; ++i)
    s.accept(in.ConsumeBool() ? in.ConsumeIntegral<int32_t>() : in.ConsumeIntegralInRange<int32_t>(0, 40));
  if (n_vocab <= 0) return 0;  // nothing to sample from (the engine never builds one)

  const int32_t want_top = std::clamp(p.n_logprobs, 0, std::min(kMaxLogprobs, n_vocab));
  const int rounds = in.ConsumeIntegralInRange<int>(1, 3);
  SampleResult r;
  for (int k = 0; k < rounds; ++k) {
    s.sample(logits.data(), &r);
    if (r.token < 0 || r.token >= n_vocab) std::abort();
    if (static_cast<int32_t>(r.top.size()) != want_top) std::abort();
    for (size_t i = 0; i < r.top.size(); ++i) {
      if (r.top[i].token < 0 || r.top[i].token >= n_vocab) std::abort();
      if (i && r.top[i - 1].logprob < r.top[i].logprob) std::abort();
    }
    for (const TokenLogprob& c : s.last_candidates())
      if (c.token < 0 || c.token >= n_vocab || !(c.logprob >= 0.0f && c.logprob <= 1.0f + 1e-5f)) std::abort();
    if (valid && p.temperature <= 0.0f && s.window_count(r.token) == 0) {
      bool finite = true;
      for (float l : logits) finite = finite && std::isfinite(l);
      if (finite && s.params().repeat_last_n == 0) {
        const int32_t argmax = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
        if (r.token != argmax) std::abort();
      }
    }
    s.accept(r.token);
  }
  return 0;
}
