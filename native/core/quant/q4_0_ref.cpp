// Q4_0 scalar reference: blocks of 32 4-bit values with one f16 scale; value = (q - 8) * d.
// Element j (0..15) is the low nibble of qs[j], element j+16 the high nibble.
#include "quant/quant_impl.h"

namespace llmserve::quant {

// x: [n/32] BlockQ4_0 -> y: [n] f32
void dequantize_row_q4_0_ref(const void* x, float* y, int64_t n) {
  const BlockQ4_0* b = static_cast<const BlockQ4_0*>(x);
  for (int64_t i = 0; i < n / kQK4_0; ++i, y += kQK4_0) {
    const float d = half_to_float(b[i].d);
    for (int j = 0; j < kQK4_0 / 2; ++j) {
      y[j] = ((b[i].qs[j] & 0x0F) - 8) * d;
      y[j + kQK4_0 / 2] = ((b[i].qs[j] >> 4) - 8) * d;
    }
  }
}

// x: [n] f32 -> y: [n/32] BlockQ4_0. As ggml's quantize_row_q4_0_ref: d = max/-8 where max is the
// signed value of largest magnitude (so it maps to q=0 exactly), q = min(15, trunc(x/d + 8.5)).
void quantize_row_q4_0_ref(const float* x, void* y, int64_t n) {
  BlockQ4_0* b = static_cast<BlockQ4_0*>(y);
  for (int64_t i = 0; i < n / kQK4_0; ++i, x += kQK4_0) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQK4_0; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = fp32_to_fp16(d);
    auto q4 = [](float v) -> uint8_t {
      float t = v + 8.5f;
      if (!(t >= 0.0f)) return 0;  // only reachable for NaN input
      return t >= 15.0f ? 15 : static_cast<uint8_t>(t);
    };
    for (int j = 0; j < kQK4_0 / 2; ++j) {
      const uint8_t lo = q4(x[j] * id);
      const uint8_t hi = q4(x[j + kQK4_0 / 2] * id);
      b[i].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

// w: [n/32] BlockQ4_0, xq: [n/32] BlockQ8_0 -> sum over blocks of sum((q-8)*x.qs) * d_w * d_x
float vec_dot_q4_0_ref(int64_t n, const void* w, const void* xq) {
  const BlockQ4_0* a = static_cast<const BlockQ4_0*>(w);
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(xq);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK4_0; ++i) {
    int sumi = 0;
    for (int j = 0; j < kQK4_0 / 2; ++j) {
      sumi += ((a[i].qs[j] & 0x0F) - 8) * b[i].qs[j];
      sumi += ((a[i].qs[j] >> 4) - 8) * b[i].qs[j + kQK4_0 / 2];
    }
    sum += static_cast<float>(sumi) * half_to_float(a[i].d) * half_to_float(b[i].d);
  }
  return sum;
}

}  // namespace llmserve::quant
