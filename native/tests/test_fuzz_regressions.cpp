// Regression tests for findings of the libFuzzer targets (native/fuzz, `npm run fuzz`). Each test
// names the target and the input that found it, and asserts the behaviour the fix guarantees.
#include <cmath>
#include <vector>

#include "sampling/sampler.h"
#include "sampling_test_util.h"
#include "testing.h"

using namespace llmserve;
using namespace llmserve::sampling_test;

// fuzz_sampling: a large vocabulary (full-vocabulary path, > 2048 candidates) whose logits differ by
// a denormal (here 0 vs 1e-44) made the histogram scale 2047 / range overflow to +inf; the bucket
// of the top logit was then (0 * inf) = NaN cast to int: undefined behaviour, in practice an index
// of INT_MIN into the histogram. Fixed: such a range skips bucketing (the quickselect handles it).
TEST(fuzz_sampling_denormal_logit_range_full_vocab) {
  const int32_t n = 4096;
  std::vector<float> logits(n);
  for (int32_t i = 0; i < n; ++i) logits[i] = (i % 2) ? 1e-44f : 0.0f;
  for (float top_p : {0.5f, 0.999f}) {
    SamplingParams p = plain();
    p.top_p = top_p;
    for (uint64_t seed = 1; seed <= 8; ++seed) {
      p.seed = seed;
      Sampler s(p, n);
      const int32_t tok = s.sample(logits.data()).token;
      CHECK(tok >= 0 && tok < n);
      // All weights are exp(~0) = 1, ranked odd ids (the larger logit) first: top_p 0.5 keeps
      // exactly the 2048 odd ids.
      if (top_p == 0.5f) {
        CHECK_EQ(tok % 2, 1);
        CHECK_EQ(s.last_candidates().size(), size_t(2048));
      }
    }
  }
  // Sampling with no top_p (the draw itself searches the ranked candidates).
  SamplingParams p = plain();
  p.seed = 3;
  Sampler s(p, n);
  const int32_t tok = s.sample(logits.data()).token;
  CHECK(tok >= 0 && tok < n);
}
