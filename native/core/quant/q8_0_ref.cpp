// Q8_0 scalar reference: blocks of 32 int8 with one f16 scale; value = qs[j] * d.
// quantize_row_q8_0_ref reproduces how llama.cpp quantizes activations on x86 (its AVX/AVX2
// quantize_row_q8_0: d = amax/127, id = 127/amax, round half to even), since llama.cpp on the same
// machine is our oracle. (ggml's portable *_ref uses id = 1/d and rounds half away from zero; the
// two differ in about one block in 20,000.)
#include "quant/quant_impl.h"

namespace llmserve::quant {

// x: [n/32] BlockQ8_0 -> y: [n] f32
void dequantize_row_q8_0_ref(const void* x, float* y, int64_t n) {
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(x);
  for (int64_t i = 0; i < n / kQK8_0; ++i) {
    const float d = half_to_float(b[i].d);
    for (int j = 0; j < kQK8_0; ++j) y[i * kQK8_0 + j] = b[i].qs[j] * d;
  }
}

// x: [n] f32 -> y: [n/32] BlockQ8_0
void quantize_row_q8_0_ref(const float* x, void* y, int64_t n) {
  BlockQ8_0* b = static_cast<BlockQ8_0*>(y);
  for (int64_t i = 0; i < n / kQK8_0; ++i, x += kQK8_0) {
    float amax = 0.0f;
    for (int j = 0; j < kQK8_0; ++j) {
      const float a = std::fabs(x[j]);
      amax = amax > a ? amax : a;
    }
    const float d = amax / 127;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    b[i].d = fp32_to_fp16(d);
    for (int j = 0; j < kQK8_0; ++j) {
      float q = std::nearbyint(x[j] * id);                // default FP environment: ties to even
      q = q > 127.f ? 127.f : (q < -128.f ? -128.f : q);  // no-op for finite input; keeps NaN/inf defined
      b[i].qs[j] = q == q ? static_cast<int8_t>(q) : 0;
    }
  }
}

// x: [n] f32 -> y: [n/32] BlockQ8_0, as ggml's portable quantize_row_q8_0_ref (model files written
// by llama-quantize): d = amax/127, id = 1/d, round half away from zero.
void quantize_row_q8_0_weights_ref(const float* x, void* y, int64_t n) {
  BlockQ8_0* b = static_cast<BlockQ8_0*>(y);
  for (int64_t i = 0; i < n / kQK8_0; ++i, x += kQK8_0) {
    float amax = 0.0f;
    for (int j = 0; j < kQK8_0; ++j) {
      const float a = std::fabs(x[j]);
      amax = amax > a ? amax : a;
    }
    const float d = amax / 127;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = fp32_to_fp16(d);
    for (int j = 0; j < kQK8_0; ++j) {
      float q = std::round(x[j] * id);
      q = q > 127.f ? 127.f : (q < -128.f ? -128.f : q);  // no-op for finite input; keeps NaN/inf defined
      b[i].qs[j] = q == q ? static_cast<int8_t>(q) : 0;
    }
  }
}

// w: [n/32] BlockQ8_0, xq: [n/32] BlockQ8_0 -> sum over blocks of sum(w.qs*x.qs) * (d_w*d_x)
float vec_dot_q8_0_ref(int64_t n, const void* w, const void* xq) {
  const BlockQ8_0* a = static_cast<const BlockQ8_0*>(w);
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(xq);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK8_0; ++i) {
    int sumi = 0;
    for (int j = 0; j < kQK8_0; ++j) sumi += a[i].qs[j] * b[i].qs[j];
    sum += static_cast<float>(sumi) * (half_to_float(a[i].d) * half_to_float(b[i].d));
  }
  return sum;
}

}  // namespace llmserve::quant
