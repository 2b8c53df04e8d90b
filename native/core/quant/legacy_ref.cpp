// Scalar references of the legacy 32-element formats beyond Q4_0/Q8_0 (bit-exact with ggml):
//   Q4_1: value = q * d + m,         q = 4-bit nibble (0..15)
//   Q5_0: value = (q - 16) * d,      q = nibble | fifth bit << 4 (0..31)
//   Q5_1: value = q * d + m,         q as Q5_0
//   Q8_1: value = qs * d, plus s = d * sum(qs) (the activation format Q4_1/Q5_1 dot against)
// Nibble order as Q4_0: element j (0..15) in the low nibble of qs[j], element j+16 in the high one;
// the fifth bit of element j is bit j of the little-endian u32 qh.
#include <cfloat>

#include "quant/quant_impl.h"

namespace llmserve::quant {
namespace {

uint32_t load_qh(const uint8_t* qh) {
  uint32_t v;
  std::memcpy(&v, qh, 4);
  return v;
}

// The 5-bit value of element j (0..31) of a Q5 block.
inline int q5_value(const uint8_t* qs, uint32_t qh, int j) {
  const int lo = j < 16 ? (qs[j] & 0x0F) : (qs[j - 16] >> 4);
  return lo | static_cast<int>(((qh >> j) & 1u) << 4);
}

// ggml's (uint8_t)/(int8_t) cast of t = x0 + 0.5 (or + 16.5): truncation toward zero, then
// MIN(maxq, .). t is >= 0 for every finite input; NaN maps to 0 instead of undefined behaviour.
inline uint8_t trunc_q(float t, int maxq) {
  if (!(t >= 0.0f)) return 0;
  return t >= static_cast<float>(maxq) ? static_cast<uint8_t>(maxq) : static_cast<uint8_t>(t);
}

// Min/max of a block as ggml's Q4_1/Q5_1 quantizers compute them (strict compares from +-FLT_MAX).
void block_min_max(const float* x, float* mn, float* mx) {
  float lo = FLT_MAX, hi = -FLT_MAX;
  for (int j = 0; j < kQK4_0; ++j) {
    if (x[j] < lo) lo = x[j];
    if (x[j] > hi) hi = x[j];
  }
  *mn = lo;
  *mx = hi;
}

}  // namespace

// ---------------------------------------------------------------------------------------- Q4_1

// x: [n/32] BlockQ4_1 -> y: [n] f32 (q * d + m: a product then a sum, no fma, as ggml)
void dequantize_row_q4_1_ref(const void* x, float* y, int64_t n) {
  const BlockQ4_1* b = static_cast<const BlockQ4_1*>(x);
  for (int64_t i = 0; i < n / kQK4_0; ++i, y += kQK4_0) {
    const float d = half_to_float(b[i].d), m = half_to_float(b[i].m);
    for (int j = 0; j < 16; ++j) {
      const float p0 = static_cast<float>(b[i].qs[j] & 0x0F) * d;
      const float p1 = static_cast<float>(b[i].qs[j] >> 4) * d;
      y[j] = p0 + m;
      y[j + 16] = p1 + m;
    }
  }
}

// x: [n] f32 -> y: [n/32] BlockQ4_1. As ggml's quantize_row_q4_1_ref: d = (max - min)/15,
// m = min, q = min(15, trunc((x - min)/d + 0.5)) with 1/d precomputed.
void quantize_row_q4_1_ref(const float* x, void* y, int64_t n) {
  BlockQ4_1* b = static_cast<BlockQ4_1*>(y);
  for (int64_t i = 0; i < n / kQK4_0; ++i, x += kQK4_0) {
    float mn, mx;
    block_min_max(x, &mn, &mx);
    const float d = (mx - mn) / 15;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = fp32_to_fp16(d);
    b[i].m = fp32_to_fp16(mn);
    for (int j = 0; j < 16; ++j) {
      const uint8_t q0 = trunc_q((x[j] - mn) * id + 0.5f, 15);
      const uint8_t q1 = trunc_q((x[j + 16] - mn) * id + 0.5f, 15);
      b[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

// w: [n/32] BlockQ4_1, xq: [n/32] BlockQ8_1 -> sum over blocks of (d_w*d_x)*sumi + m_w*s_x
// (ggml's generic order).
float vec_dot_q4_1_ref(int64_t n, const void* w, const void* xq) {
  const BlockQ4_1* a = static_cast<const BlockQ4_1*>(w);
  const BlockQ8_1* b = static_cast<const BlockQ8_1*>(xq);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK4_0; ++i) {
    int sumi = 0;
    for (int j = 0; j < 16; ++j) sumi += (a[i].qs[j] & 0x0F) * b[i].qs[j] + (a[i].qs[j] >> 4) * b[i].qs[j + 16];
    const float dd = half_to_float(a[i].d) * half_to_float(b[i].d);
    const float ms = half_to_float(a[i].m) * half_to_float(b[i].s);
    sum += dd * static_cast<float>(sumi) + ms;
  }
  return sum;
}

// ---------------------------------------------------------------------------------------- Q5_0

// x: [n/32] BlockQ5_0 -> y: [n] f32
void dequantize_row_q5_0_ref(const void* x, float* y, int64_t n) {
  const BlockQ5_0* b = static_cast<const BlockQ5_0*>(x);
  for (int64_t i = 0; i < n / kQK4_0; ++i, y += kQK4_0) {
    const float d = half_to_float(b[i].d);
    const uint32_t qh = load_qh(b[i].qh);
    for (int j = 0; j < kQK4_0; ++j) y[j] = static_cast<float>(q5_value(b[i].qs, qh, j) - 16) * d;
  }
}

// x: [n] f32 -> y: [n/32] BlockQ5_0. As ggml's quantize_row_q5_0_ref: d = max/-16 where max is the
// first value of largest magnitude, q = min(31, trunc(x/d + 16.5)).
void quantize_row_q5_0_ref(const float* x, void* y, int64_t n) {
  BlockQ5_0* b = static_cast<BlockQ5_0*>(y);
  for (int64_t i = 0; i < n / kQK4_0; ++i, x += kQK4_0) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQK4_0; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -16;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = fp32_to_fp16(d);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const uint8_t q0 = trunc_q(x[j] * id + 16.5f, 31);
      const uint8_t q1 = trunc_q(x[j + 16] * id + 16.5f, 31);
      b[i].qs[j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
      qh |= static_cast<uint32_t>(q0 >> 4) << j;
      qh |= static_cast<uint32_t>(q1 >> 4) << (j + 16);
    }
    std::memcpy(b[i].qh, &qh, 4);
  }
}

// w: [n/32] BlockQ5_0, xq: [n/32] BlockQ8_0 -> sum over blocks of (d_w*d_x)*sum((q-16)*x.qs)
float vec_dot_q5_0_ref(int64_t n, const void* w, const void* xq) {
  const BlockQ5_0* a = static_cast<const BlockQ5_0*>(w);
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(xq);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK4_0; ++i) {
    const uint32_t qh = load_qh(a[i].qh);
    int sumi = 0;
    for (int j = 0; j < kQK4_0; ++j) sumi += (q5_value(a[i].qs, qh, j) - 16) * b[i].qs[j];
    sum += (half_to_float(a[i].d) * half_to_float(b[i].d)) * static_cast<float>(sumi);
  }
  return sum;
}

// ---------------------------------------------------------------------------------------- Q5_1

// x: [n/32] BlockQ5_1 -> y: [n] f32
void dequantize_row_q5_1_ref(const void* x, float* y, int64_t n) {
  const BlockQ5_1* b = static_cast<const BlockQ5_1*>(x);
  for (int64_t i = 0; i < n / kQK4_0; ++i, y += kQK4_0) {
    const float d = half_to_float(b[i].d), m = half_to_float(b[i].m);
    const uint32_t qh = load_qh(b[i].qh);
    for (int j = 0; j < kQK4_0; ++j) {
      const float p = static_cast<float>(q5_value(b[i].qs, qh, j)) * d;
      y[j] = p + m;
    }
  }
}

// x: [n] f32 -> y: [n/32] BlockQ5_1. As ggml's quantize_row_q5_1_ref: d = (max - min)/31,
// q = trunc((x - min)/d + 0.5) (ggml does not clamp here; the value never exceeds 31).
void quantize_row_q5_1_ref(const float* x, void* y, int64_t n) {
  BlockQ5_1* b = static_cast<BlockQ5_1*>(y);
  for (int64_t i = 0; i < n / kQK4_0; ++i, x += kQK4_0) {
    float mn, mx;
    block_min_max(x, &mn, &mx);
    const float d = (mx - mn) / 31;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = fp32_to_fp16(d);
    b[i].m = fp32_to_fp16(mn);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const uint8_t q0 = trunc_q((x[j] - mn) * id + 0.5f, 31);
      const uint8_t q1 = trunc_q((x[j + 16] - mn) * id + 0.5f, 31);
      b[i].qs[j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
      qh |= static_cast<uint32_t>(q0 >> 4) << j;
      qh |= static_cast<uint32_t>(q1 >> 4) << (j + 16);
    }
    std::memcpy(b[i].qh, &qh, 4);
  }
}

// w: [n/32] BlockQ5_1, xq: [n/32] BlockQ8_1 -> sum over blocks of (d_w*d_x)*sumi + m_w*s_x
float vec_dot_q5_1_ref(int64_t n, const void* w, const void* xq) {
  const BlockQ5_1* a = static_cast<const BlockQ5_1*>(w);
  const BlockQ8_1* b = static_cast<const BlockQ8_1*>(xq);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK4_0; ++i) {
    const uint32_t qh = load_qh(a[i].qh);
    int sumi = 0;
    for (int j = 0; j < kQK4_0; ++j) sumi += q5_value(a[i].qs, qh, j) * b[i].qs[j];
    const float dd = half_to_float(a[i].d) * half_to_float(b[i].d);
    const float ms = half_to_float(a[i].m) * half_to_float(b[i].s);
    sum += dd * static_cast<float>(sumi) + ms;
  }
  return sum;
}

// ---------------------------------------------------------------------------------------- Q8_1
// Like quantize_row_q8_0_ref, this follows llama.cpp's x86 quantize_row_q8_1 (the oracle on this
// hardware): d = amax/127, id = 127/amax, round half to even, s = f16(d * sum(qs)). ggml's portable
// quantize_row_q8_1_ref uses id = 1/d and rounds half away from zero.

// x: [n/32] BlockQ8_1 -> y: [n] f32 (s is redundant and not used)
void dequantize_row_q8_1_ref(const void* x, float* y, int64_t n) {
  const BlockQ8_1* b = static_cast<const BlockQ8_1*>(x);
  for (int64_t i = 0; i < n / kQK8_0; ++i) {
    const float d = half_to_float(b[i].d);
    for (int j = 0; j < kQK8_0; ++j) y[i * kQK8_0 + j] = b[i].qs[j] * d;
  }
}

// x: [n] f32 -> y: [n/32] BlockQ8_1
void quantize_row_q8_1_ref(const float* x, void* y, int64_t n) {
  BlockQ8_1* b = static_cast<BlockQ8_1*>(y);
  for (int64_t i = 0; i < n / kQK8_0; ++i, x += kQK8_0) {
    float amax = 0.0f;
    for (int j = 0; j < kQK8_0; ++j) {
      const float a = std::fabs(x[j]);
      amax = amax > a ? amax : a;
    }
    const float d = amax / 127;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    b[i].d = fp32_to_fp16(d);
    int sum = 0;
    for (int j = 0; j < kQK8_0; ++j) {
      float q = std::nearbyint(x[j] * id);                // default FP environment: ties to even
      q = q > 127.f ? 127.f : (q < -128.f ? -128.f : q);  // no-op for finite input; keeps NaN/inf defined
      b[i].qs[j] = q == q ? static_cast<int8_t>(q) : 0;
      sum += b[i].qs[j];
    }
    b[i].s = fp32_to_fp16(d * static_cast<float>(sum));
  }
}

// w, xq: [n/32] BlockQ8_1 -> sum over blocks of (d_w*d_x)*sum(w.qs*x.qs). (Not a ggml pair: it
// exists so Q8_1 is a complete type of the dispatcher, like Q8_K.)
float vec_dot_q8_1_ref(int64_t n, const void* w, const void* xq) {
  const BlockQ8_1* a = static_cast<const BlockQ8_1*>(w);
  const BlockQ8_1* b = static_cast<const BlockQ8_1*>(xq);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK8_0; ++i) {
    int sumi = 0;
    for (int j = 0; j < kQK8_0; ++j) sumi += a[i].qs[j] * b[i].qs[j];
    sum += (half_to_float(a[i].d) * half_to_float(b[i].d)) * static_cast<float>(sumi);
  }
  return sum;
}

}  // namespace llmserve::quant
