// Scalar references of the non-linear 4-bit formats (bit-exact with ggml):
//   IQ4_NL: blocks of 32, value = d * kIQ4NLValues[nibble] (Q4_0's nibble order).
//   IQ4_XS: super-blocks of 256 = 8 sub-blocks of 32 with 6-bit scales (-32 bias):
//           value = d * (ls - 32) * kIQ4NLValues[nibble].
// The quantizer is ggml's quantize_row_iq4_nl_impl as llama-quantize runs it without an importance
// matrix (quantize_iq4_nl / quantize_iq4_xs: weights x^2, 7 trial scales each side), step for step in
// the same float operation order, so our files match llama.cpp's. (ggml's quantize_row_iq4_nl_ref
// passes ntry = -1 instead: a faster, slightly worse fit that llama-quantize does not use.)
#include "quant/quant_impl.h"

namespace llmserve::quant {
namespace {

constexpr float kGroupMaxEps = 1e-15f;  // ggml's GROUP_MAX_EPS
constexpr int kTrials = 7;              // quantize_iq4_nl/xs's ntry

// Index of the grid value nearest to x (ggml's best_index_int8; ties go to the upper value).
int best_index(float x) {
  const int8_t* v = kIQ4NLValues;
  if (x <= v[0]) return 0;
  if (x >= v[15]) return 15;
  int lo = 0, hi = 15;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (x < v[mid]) hi = mid;
    else lo = mid;
  }
  return x - v[hi - 1] < v[hi] - x ? hi - 1 : hi;
}

// Weighted least-squares scale of one 32-element block xb on the grid: the best of the scale
// through the largest value and 2*kTrials+1 inverse scales around it. Weights: x^2 without an
// importance matrix; with one (qw: its 32 columns of this block) qw * sqrt(sigma2 + x^2), sigma2
// twice the mean square of the super-block (ggml's choice). Returns 0 for an all-zero block.
// (quantize_row_iq4_nl_impl's per-block loop; the L it computes there is always recomputed by the
// callers, so it is not kept.)
float fit_block(const float* xb, const float* qw, float sigma2) {
  float weight[32];
  for (int j = 0; j < 32; ++j) weight[j] = qw ? qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]) : xb[j] * xb[j];
  float amax = 0, max = 0;
  for (int j = 0; j < 32; ++j) {
    const float ax = std::fabs(xb[j]);
    if (ax > amax) {
      amax = ax;
      max = xb[j];
    }
  }
  if (amax < kGroupMaxEps) return 0.0f;
  const float v0 = static_cast<float>(kIQ4NLValues[0]);
  float d = -max / v0;
  float id = 1 / d;
  auto sums = [xb, &weight](float inv, float* sqx, float* sq2) {
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < 32; ++j) {
      const float q = static_cast<float>(kIQ4NLValues[best_index(inv * xb[j])]);
      const float w = weight[j];
      sumqx += w * q * xb[j];
      sumq2 += w * q * q;
    }
    *sqx = sumqx;
    *sq2 = sumq2;
  };
  float sumqx, sumq2;
  sums(id, &sumqx, &sumq2);
  d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
  float best = d * sumqx;
  for (int itry = -kTrials; itry <= kTrials; ++itry) {
    id = static_cast<float>(itry + kIQ4NLValues[0]) / max;
    sums(id, &sumqx, &sumq2);
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
      d = sumqx / sumq2;
      best = d * sumqx;
    }
  }
  return d;
}

// ggml's sigma2 of a super-block of n elements: 2 * mean square, summed in element order.
float sigma2_of(const float* x, int n) {
  float s = 0;
  for (int j = 0; j < n; ++j) s += x[j] * x[j];
  return s * (2.f / static_cast<float>(n));
}

// 32 indexes L -> 16 bytes: element j in the low nibble of byte j, element j+16 in the high one.
void pack_nibbles(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(L[j] | (L[16 + j] << 4));
}

// Signed 6-bit scale of IQ4_XS sub-block ib (0..7), bias removed.
inline int iq4_xs_scale(const BlockIQ4_XS& b, int ib) {
  const int lo = (b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF;
  const int hi = (b.scales_h >> (2 * ib)) & 3;
  return (lo | (hi << 4)) - 32;
}

}  // namespace

// ---------------------------------------------------------------------------------------- IQ4_NL

// x: [n/32] BlockIQ4_NL -> y: [n] f32
void dequantize_row_iq4_nl_ref(const void* x, float* y, int64_t n) {
  const BlockIQ4_NL* b = static_cast<const BlockIQ4_NL*>(x);
  for (int64_t i = 0; i < n / 32; ++i, y += 32) {
    const float d = half_to_float(b[i].d);
    for (int j = 0; j < 16; ++j) {
      y[j] = d * static_cast<float>(kIQ4NLValues[b[i].qs[j] & 0xF]);
      y[j + 16] = d * static_cast<float>(kIQ4NLValues[b[i].qs[j] >> 4]);
    }
  }
}

// x: [n] f32 -> y: [n/32] BlockIQ4_NL: per block the fitted scale d (stored as f16), then each
// element's nearest grid index against the unrounded 1/d.
void quantize_row_iq4_nl_ref(const float* x, void* y, int64_t n) { quantize_row_iq4_nl_w(x, y, n, nullptr); }

// qw: the row's n importance weights, or nullptr (quantize_row_iq4_nl_ref).
void quantize_row_iq4_nl_w(const float* x, void* y, int64_t n, const float* qw) {
  BlockIQ4_NL* b = static_cast<BlockIQ4_NL*>(y);
  uint8_t L[32];
  for (int64_t i = 0; i < n / 32; ++i, x += 32) {
    const float d = fit_block(x, qw ? qw + 32 * i : nullptr, qw ? sigma2_of(x, 32) : 0.f);
    b[i].d = fp32_to_fp16(d);
    const float id = d != 0.0f ? 1 / d : 0.0f;
    for (int j = 0; j < 32; ++j) L[j] = static_cast<uint8_t>(best_index(id * x[j]));
    pack_nibbles(L, b[i].qs);
  }
}

// w: [n/32] BlockIQ4_NL, xq: [n/32] BlockQ8_0 -> sum over blocks of (d_x*d_w)*sum(value*x.qs)
float vec_dot_iq4_nl_ref(int64_t n, const void* w, const void* xq) {
  const BlockIQ4_NL* a = static_cast<const BlockIQ4_NL*>(w);
  const BlockQ8_0* b = static_cast<const BlockQ8_0*>(xq);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / 32; ++i) {
    const float d = half_to_float(b[i].d) * half_to_float(a[i].d);
    int sumi = 0;
    for (int j = 0; j < 16; ++j)
      sumi += b[i].qs[j] * kIQ4NLValues[a[i].qs[j] & 0xF] + b[i].qs[j + 16] * kIQ4NLValues[a[i].qs[j] >> 4];
    sum += d * static_cast<float>(sumi);
  }
  return sum;
}

// ---------------------------------------------------------------------------------------- IQ4_XS

// x: [n/256] BlockIQ4_XS -> y: [n] f32
void dequantize_row_iq4_xs_ref(const void* x, float* y, int64_t n) {
  const BlockIQ4_XS* b = static_cast<const BlockIQ4_XS*>(x);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = half_to_float(b[i].d);
    for (int ib = 0; ib < 8; ++ib, y += 32) {
      const float dl = d * static_cast<float>(iq4_xs_scale(b[i], ib));
      const uint8_t* qs = b[i].qs + 16 * ib;
      for (int j = 0; j < 16; ++j) {
        y[j] = dl * static_cast<float>(kIQ4NLValues[qs[j] & 0xF]);
        y[j + 16] = dl * static_cast<float>(kIQ4NLValues[qs[j] >> 4]);
      }
    }
  }
}

// x: [n] f32 -> y: [n/256] BlockIQ4_XS: each sub-block's fitted scale, the super-block scale
// d = -max_scale/32 (max_scale: the fitted scale of largest magnitude; an all-zero super-block stores
// d = -0.0 as ggml does), 6-bit sub-block scales l = round(scale/d) in [-32, 31], then each element's
// nearest grid index against 1/(d*l) (d unrounded).
void quantize_row_iq4_xs_ref(const float* x, void* y, int64_t n) { quantize_row_iq4_xs_w(x, y, n, nullptr); }

// qw: the row's n importance weights, or nullptr (quantize_row_iq4_xs_ref).
void quantize_row_iq4_xs_w(const float* x, void* y, int64_t n, const float* qw) {
  BlockIQ4_XS* b = static_cast<BlockIQ4_XS*>(y);
  uint8_t L[32];
  float scales[8];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    const float* qwb = qw ? qw + kQK_K * i : nullptr;
    const float sigma2 = qw ? sigma2_of(x, kQK_K) : 0.f;
    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < 8; ++ib) {
      scales[ib] = fit_block(x + 32 * ib, qwb ? qwb + 32 * ib : nullptr, sigma2);
      const float abs_d = std::fabs(scales[ib]);
      if (abs_d > amax_scale) {
        amax_scale = abs_d;
        max_scale = scales[ib];
      }
    }
    const float d = -max_scale / 32;
    b[i].d = fp32_to_fp16(d);
    const float id = d != 0.0f ? 1 / d : 0.f;
    b[i].scales_h = 0;
    for (int ib = 0; ib < 8; ++ib) {
      int l = nearest_int(id * scales[ib]);
      l = l < -32 ? -32 : (l > 31 ? 31 : l);
      const float dl = d * static_cast<float>(l);
      const float idl = dl != 0.0f ? 1 / dl : 0.f;
      const float* xb = x + 32 * ib;
      for (int j = 0; j < 32; ++j) L[j] = static_cast<uint8_t>(best_index(idl * xb[j]));
      pack_nibbles(L, b[i].qs + 16 * ib);
      l += 32;
      const uint8_t l_lo = static_cast<uint8_t>(l & 0xF), l_hi = static_cast<uint8_t>(l >> 4);
      if (ib % 2 == 0) b[i].scales_l[ib / 2] = l_lo;
      else b[i].scales_l[ib / 2] |= static_cast<uint8_t>(l_lo << 4);
      b[i].scales_h = static_cast<uint16_t>(b[i].scales_h | (l_hi << (2 * ib)));
    }
  }
}

// w: [n/256] BlockIQ4_XS, xq: [n/256] BlockQ8_K -> per super-block, per sub-block
// (d_w*d_x*(ls-32)) * sum(value*x.qs) (ggml's generic order)
float vec_dot_iq4_xs_ref(int64_t n, const void* w, const void* xq) {
  const BlockIQ4_XS* a = static_cast<const BlockIQ4_XS*>(w);
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(xq);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d4d8 = half_to_float(a[i].d) * b[i].d;
    for (int ib = 0; ib < 8; ++ib) {
      const uint8_t* qs = a[i].qs + 16 * ib;
      const int8_t* q8 = b[i].qs + 32 * ib;
      int sumi = 0;
      for (int j = 0; j < 16; ++j) sumi += q8[j] * kIQ4NLValues[qs[j] & 0xF] + q8[j + 16] * kIQ4NLValues[qs[j] >> 4];
      sum += (d4d8 * static_cast<float>(iq4_xs_scale(a[i], ib))) * static_cast<float>(sumi);
    }
  }
  return sum;
}

}  // namespace llmserve::quant
