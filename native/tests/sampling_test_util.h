// Helpers shared by the sampling tests (test_sampling.cpp, test_sampling_paths.cpp).
#pragma once
#include <cstdint>
#include <vector>

#include "sampling/sampler.h"

namespace llmserve::sampling_test {

// No filters, T = 1: the plain softmax of the (penalized) logits.
inline SamplingParams plain() {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  return p;
}

// Probability of `token` in s.last_candidates(), or -1 when it was filtered out.
inline double prob_of(const Sampler& s, int32_t token) {
  for (const auto& c : s.last_candidates())
    if (c.token == token) return c.logprob;
  return -1.0;
}

inline std::vector<float> random_logits(Rng& r, int32_t n, double scale) {
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) {  // sum of uniforms: roughly normal
    double s = r.uniform() + r.uniform() + r.uniform() - 1.5;
    x = static_cast<float>(s * scale);
  }
  return v;
}

}  // namespace llmserve::sampling_test
