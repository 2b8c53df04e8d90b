// Internal to sampling/: exp over non-positive arguments, 4 lanes at a time with GCC/Clang vector
// extensions (SSE2 on the portable x86-64 baseline, NEON on arm64, scalar code elsewhere), and
// the reductions the sampler runs over the whole vocabulary. The same code computes every lane,
// so the scalar helper and the array helpers agree bit for bit, and results do not depend on
// the platform's libm. Max relative error vs exp: ~1e-7 (Cephes expf polynomial).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

namespace llmserve::sampling_detail {

using f4 = float __attribute__((vector_size(16)));
using i4 = int32_t __attribute__((vector_size(16)));

inline f4 splat(float v) { return f4{v, v, v, v}; }
inline f4 load4(const float* p) {
  f4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline f4 select4(i4 mask, f4 a, f4 b) {  // mask lanes are all-ones or zero
  i4 ai, bi;
  std::memcpy(&ai, &a, sizeof ai);
  std::memcpy(&bi, &b, sizeof bi);
  const i4 r = (ai & mask) | (bi & ~mask);
  f4 out;
  std::memcpy(&out, &r, sizeof out);
  return out;
}

// exp(x) for x <= 0, per lane. -inf, NaN and x < -87.33 (below FLT_MIN) give exactly 0;
// exp(0) is exactly 1; x > 0 is treated as 0.
inline f4 exp4_nonpos(f4 x) {
  f4 xc = select4(x > splat(-88.0f), x, splat(-88.0f));  // NaN -> -88: no UB in the conversion
  xc = select4(xc < splat(0.0f), xc, splat(0.0f));
  const i4 n = __builtin_convertvector(xc * splat(1.44269504088896341f) - splat(0.5f), i4);
  const f4 nf = __builtin_convertvector(n, f4);
  f4 r = xc - nf * splat(0.693359375f);
  r = r - nf * splat(-2.12194440e-4f);
  f4 y = splat(1.9875691500e-4f);
  y = y * r + splat(1.3981999507e-3f);
  y = y * r + splat(8.3334519073e-3f);
  y = y * r + splat(4.1665795894e-2f);
  y = y * r + splat(1.6666665459e-1f);
  y = y * r + splat(5.0000001201e-1f);
  y = y * r * r + r + splat(1.0f);
  const i4 bits = (n + 127) << 23;  // 2^n, n in [-126, 0]
  f4 scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return select4(x >= splat(-87.33f), y * scale, splat(0.0f));
}

inline float exp_nonpos(float x) {
  const float ninf = -std::numeric_limits<float>::infinity();
  return exp4_nonpos(f4{x, ninf, ninf, ninf})[0];
}

// Largest value of x[0, n), ignoring NaN; -inf when none (or n == 0).
// x: [n]
inline float max_of(const float* x, size_t n) {
  const float ninf = -std::numeric_limits<float>::infinity();
  f4 a = splat(ninf), b = splat(ninf);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const f4 u = load4(x + i), v = load4(x + i + 4);
    a = select4(u > a, u, a);
    b = select4(v > b, v, b);
  }
  a = select4(b > a, b, a);
  float m = ninf;
  for (int j = 0; j < 4; ++j) m = a[j] > m ? a[j] : m;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// Sum over i of exp(x[i] - m) for x[i] <= m (NaN terms count 0; +inf terms count 1). Lanes sum
// in float for at most 32 terms each before flushing into a double.
// x: [n]
inline double sum_exp(const float* x, size_t n, float m) {
  const float ninf = -std::numeric_limits<float>::infinity();
  const f4 mv = splat(m);
  double total = 0.0;
  size_t i = 0;
  while (n - i >= 8) {
    f4 a = splat(0.0f), b = splat(0.0f);
    const size_t end = i + ((n - i) / 8 < 16 ? (n - i) / 8 : 16) * 8;
    for (; i < end; i += 8) {
      a += exp4_nonpos(load4(x + i) - mv);
      b += exp4_nonpos(load4(x + i + 4) - mv);
    }
    a += b;
    total += static_cast<double>(a[0]) + a[1] + a[2] + a[3];
  }
  float tail[8] = {ninf, ninf, ninf, ninf, ninf, ninf, ninf, ninf};
  for (size_t j = 0; i + j < n; ++j) tail[j] = x[i + j];
  const f4 t = exp4_nonpos(load4(tail) - mv) + exp4_nonpos(load4(tail + 4) - mv);
  total += static_cast<double>(t[0]) + t[1] + t[2] + t[3];
  return total;
}

}  // namespace llmserve::sampling_detail
