// Shared helpers of the libFuzzer targets: decoding SamplingParams (raw IEEE bits included, so NaN,
// infinities and denormals reach the validators) from a FuzzedDataProvider.
#pragma once
#include <fuzzer/FuzzedDataProvider.h>

#include <bit>
#include <cstdint>

#include "sampling/sampler.h"

namespace llmserve::fuzz {

// A float: half the time any bit pattern, else a value in [lo, hi].
inline float any_float(FuzzedDataProvider& in, float lo, float hi) {
  if (in.ConsumeBool()) return std::bit_cast<float>(in.ConsumeIntegral<uint32_t>());
  return in.ConsumeFloatingPointInRange<float>(lo, hi);
}

inline SamplingParams sampling_params(FuzzedDataProvider& in) {
  SamplingParams p;
  p.temperature = any_float(in, -1.0f, 4.0f);
  p.top_k = in.ConsumeBool() ? in.ConsumeIntegral<int32_t>() : in.ConsumeIntegralInRange<int32_t>(-1, 64);
  p.top_p = any_float(in, 0.0f, 1.0f);
  p.min_p = any_float(in, 0.0f, 1.0f);
  p.repeat_penalty = any_float(in, 0.0f, 3.0f);
  p.repeat_last_n = in.ConsumeBool() ? in.ConsumeIntegral<int32_t>() : in.ConsumeIntegralInRange<int32_t>(-2, 80);
  p.frequency_penalty = any_float(in, -2.0f, 2.0f);
  p.presence_penalty = any_float(in, -2.0f, 2.0f);
  p.seed = in.ConsumeIntegral<uint64_t>();
  p.n_logprobs = in.ConsumeIntegralInRange<int32_t>(-2, 24);
  p.compute_logprob = in.ConsumeBool();
  return p;
}

}  // namespace llmserve::fuzz
