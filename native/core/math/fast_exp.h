// exp for attention's online softmax, written once as scalar code and once per SIMD width with
// the same operations, so the vector kernels and the scalar reference agree bit for bit.
// ggml's flash attention calls libm expf per score; this is within 2 ulp of it on the range
// attention uses (arguments <= 0) and runs 8 or 16 lanes at a time.
//
// x = n ln2 + r with n = round(x / ln2) (Cody-Waite: ln2 split in a 16-bit head, exact for
// |n| <= 256, and a tail), |r| <= ln2 / 2; e^r by its degree-7 Taylor polynomial in Horner form
// (truncation < 0.15 ulp); times 2^n built in the exponent field.
// Domain: x <= -87.3365 (results below FLT_MIN) gives +0, -inf included; x > 88.3762 gives +inf
// (true overflow is at 88.7228: the range in between is not needed here); NaN gives NaN.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace llmserve {

namespace fast_exp_const {
constexpr float kLo = -87.33654f;  // ln(FLT_MIN)
constexpr float kHi = 88.37626f;   // keeps n <= 127
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer (nearest even)
constexpr float kLn2Hi = 0.693145751953125f;
constexpr float kLn2Lo = 1.428606765330187e-06f;
// 1/k! for k = 7 .. 2
constexpr float kC7 = 1.98412698e-4f, kC6 = 1.38888889e-3f, kC5 = 8.33333333e-3f, kC4 = 4.16666667e-2f,
                kC3 = 1.66666667e-1f, kC2 = 0.5f;
}  // namespace fast_exp_const

static inline float fast_exp(float x) {
  using namespace fast_exp_const;
  if (x != x) return x;
  if (x <= kLo) return 0.0f;
  if (x > kHi) return INFINITY;
  const float z = std::fmaf(x, kLog2e, kRound);
  const float n = z - kRound;
  float r = std::fmaf(n, -kLn2Hi, x);
  r = std::fmaf(n, -kLn2Lo, r);
  float p = std::fmaf(kC7, r, kC6);
  p = std::fmaf(p, r, kC5);
  p = std::fmaf(p, r, kC4);
  p = std::fmaf(p, r, kC3);
  p = std::fmaf(p, r, kC2);
  p = std::fmaf(p, r, 1.0f);
  p = std::fmaf(p, r, 1.0f);
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

}  // namespace llmserve
