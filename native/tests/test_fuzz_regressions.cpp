// Regression tests for findings of the libFuzzer targets (native/fuzz, `npm run fuzz`). Each test
// names the target and the input that found it, and asserts the behaviour the fix guarantees.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf.h"
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

// fuzz_gguf: GgufValue::arr_int on a float array element (and as_int on a float scalar) cast the
// double straight to int64: undefined behaviour for 4.36e27, +-inf or NaN (x86 gives INT64_MIN).
// Fixed: they saturate, NaN -> 0.
TEST(fuzz_gguf_float_to_int_saturates) {
  std::vector<uint8_t> b;
  auto put = [&b](const void* p, size_t n) { b.insert(b.end(), (const uint8_t*)p, (const uint8_t*)p + n); };
  auto u32 = [&](uint32_t v) { put(&v, 4); };
  auto u64 = [&](uint64_t v) { put(&v, 8); };
  auto str = [&](const std::string& s) { u64(s.size()); put(s.data(), s.size()); };
  auto f64 = [&](double v) { put(&v, 8); };
  u32(0x46554747); u32(3); u64(0); u64(2);  // magic, version, 0 tensors, 2 kvs
  str("a"); u32((uint32_t)GgufType::ARRAY); u32((uint32_t)GgufType::FLOAT64); u64(5);
  f64(4.36033e27); f64(-1e300); f64(std::numeric_limits<double>::quiet_NaN()); f64(-2.5); f64(1e19);
  str("s"); u32((uint32_t)GgufType::FLOAT64); f64(1e30);
  std::unique_ptr<GgufFile> f;
  Status st = GgufFile::parse(b.data(), b.size(), &f);
  CHECK(st.is_ok());
  if (!st) return;
  const GgufValue* a = f->find("a");
  CHECK(a != nullptr);
  if (a) {
    CHECK_EQ(a->arr_int(0), std::numeric_limits<int64_t>::max());
    CHECK_EQ(a->arr_int(1), std::numeric_limits<int64_t>::min());
    CHECK_EQ(a->arr_int(2), int64_t(0));
    CHECK_EQ(a->arr_int(3), int64_t(-2));
    CHECK_EQ(a->arr_int(4), std::numeric_limits<int64_t>::max());
  }
  const GgufValue* s = f->find("s");
  CHECK(s != nullptr);
  if (s) CHECK_EQ(s->as_int(), std::numeric_limits<int64_t>::max());
}
