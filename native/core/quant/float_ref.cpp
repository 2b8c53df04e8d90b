// Scalar references for the float formats F32, F16, BF16 (block size 1).
// Dots multiply in f32 (f16*f16 and bf16*bf16 products are exact in f32) and accumulate in double,
// like ggml's scalar ggml_vec_dot_{f32,f16,bf16}; SIMD variants accumulate in f32 lanes.
#include "quant/quant_impl.h"

namespace llmserve::quant {

// x: [n] f32 -> y: [n] f32
void dequantize_row_f32_ref(const void* x, float* y, int64_t n) {
  std::memcpy(y, x, static_cast<size_t>(n) * sizeof(float));
}
void quantize_row_f32_ref(const float* x, void* y, int64_t n) {
  std::memcpy(y, x, static_cast<size_t>(n) * sizeof(float));
}
// w, xq: [n] f32
float vec_dot_f32_ref(int64_t n, const void* w, const void* xq) {
  const float* a = static_cast<const float*>(w);
  const float* b = static_cast<const float*>(xq);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i] * b[i]);
  return static_cast<float>(s);
}

// x: [n] f16 bits -> y: [n] f32
void dequantize_row_f16_ref(const void* x, float* y, int64_t n) {
  const uint16_t* h = static_cast<const uint16_t*>(x);
  for (int64_t i = 0; i < n; ++i) y[i] = half_to_float(h[i]);
}
// x: [n] f32 -> y: [n] f16 bits (round to nearest even)
void quantize_row_f16_ref(const float* x, void* y, int64_t n) {
  uint16_t* h = static_cast<uint16_t*>(y);
  for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_fp16(x[i]);
}
// w, xq: [n] f16 bits
float vec_dot_f16_ref(int64_t n, const void* w, const void* xq) {
  const uint16_t* a = static_cast<const uint16_t*>(w);
  const uint16_t* b = static_cast<const uint16_t*>(xq);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(half_to_float(a[i]) * half_to_float(b[i]));
  return static_cast<float>(s);
}

// x: [n] bf16 bits -> y: [n] f32
void dequantize_row_bf16_ref(const void* x, float* y, int64_t n) {
  const uint16_t* h = static_cast<const uint16_t*>(x);
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_bits_to_float(h[i]);
}
// x: [n] f32 -> y: [n] bf16 bits (round to nearest even, NaN kept quiet)
void quantize_row_bf16_ref(const float* x, void* y, int64_t n) {
  uint16_t* h = static_cast<uint16_t*>(y);
  for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_bf16(x[i]);
}
// w, xq: [n] bf16 bits
float vec_dot_bf16_ref(int64_t n, const void* w, const void* xq) {
  const uint16_t* a = static_cast<const uint16_t*>(w);
  const uint16_t* b = static_cast<const uint16_t*>(xq);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(bf16_bits_to_float(a[i]) * bf16_bits_to_float(b[i]));
  return static_cast<float>(s);
}

}  // namespace llmserve::quant
