// Scalar references of the K-quants beyond Q4_K/Q6_K (super-blocks of 256, bit-exact with ggml):
//   Q2_K: 16 groups of 16, value = d*sc_g*q - dmin*m_g, q 2-bit, sc/m 4-bit (low/high nibble of scales[g])
//   Q3_K: 16 groups of 16, value = d*(s_g - 32)*(q - 4*!hbit), q 2-bit + a third bit in hmask, s 6-bit
//   Q5_K: 8 groups of 32, value = d*sc_j*q - dmin*m_j, q 4-bit + a fifth bit in qh (Q4_K's scales)
// 2-bit fields (Q2_K, Q3_K): element 128h + 32k + l (l < 32) is bits 2k..2k+1 of qs[32h + l]. High
// bits (Q3_K hmask, Q5_K qh): element e is bit e/32 of byte e%32.
// The quantizers follow ggml's quantize_row_{q2_K,q3_K,q5_K}_ref in the same float operation order.
#include "quant/k_quants_util.h"
#include "quant/quant_impl.h"

namespace llmserve::quant {
namespace {

inline int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Symmetric fit x ~ scale*L, L in [-nmax, nmax), weights x^2, refined by up to 5 passes of
// single-element moves that raise (sum w x L)^2 / sum w L^2 (ggml's make_q3_quants with do_rmse).
// L comes back biased by nmax (in [0, 2*nmax)).
float make_q3_quants(int n, int nmax, const float* x, int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  const float iscale = static_cast<float>(-nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * L[i];
      if (slx > 0) {
        float sl2 = suml2 - w * L[i] * L[i];
        const int new_l = clampi(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
        if (new_l != L[i]) {
          slx += w * x[i] * new_l;
          sl2 += w * new_l * new_l;
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<int8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// 256 2-bit values (0..3) -> 64 bytes in the Q2_K/Q3_K order.
void pack_2bit(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQK_K; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] =
          static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

inline int two_bits(const uint8_t* qs, int e) { return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3; }

}  // namespace

// 16 signed Q3_K group scales (bias removed) from the 12 packed bytes: group g's low 4 bits are the
// low nibble of scales[g] (g < 8) or the high nibble of scales[g - 8]; its top 2 bits are bits
// 2*(g/4).. of scales[8 + g%4].
void unpack_q3_K_scales(const uint8_t* s, int8_t out[16]) {
  for (int g = 0; g < 16; ++g) {
    const int lo = g < 8 ? (s[g] & 0xF) : (s[g - 8] >> 4);
    const int hi = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
    out[g] = static_cast<int8_t>((lo | (hi << 4)) - 32);
  }
}

// ---------------------------------------------------------------------------------------- Q2_K

// x: [n/256] BlockQ2_K -> y: [n] f32
void dequantize_row_q2_K_ref(const void* x, float* y, int64_t n) {
  const BlockQ2_K* b = static_cast<const BlockQ2_K*>(x);
  for (int64_t i = 0; i < n / kQK_K; ++i, y += kQK_K) {
    const float d = half_to_float(b[i].d), dmin = half_to_float(b[i].dmin);
    for (int e = 0; e < kQK_K; ++e) {
      const uint8_t sc = b[i].scales[e / 16];
      const float dl = d * static_cast<float>(sc & 0xF), ml = dmin * static_cast<float>(sc >> 4);
      y[e] = dl * static_cast<float>(two_bits(b[i].qs, e)) - ml;
    }
  }
}

// x: [n] f32 -> y: [n/256] BlockQ2_K
void quantize_row_q2_K_ref(const float* x, void* y, int64_t n) {
  BlockQ2_K* b = static_cast<BlockQ2_K*>(y);
  uint8_t L[kQK_K], Laux[16];
  float weights[16], mins[16], scales[16];
  const float q4scale = 15.f;
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float max_scale = 0, max_min = 0;  // scales and mins are >= 0
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
      const float iscale = q4scale / max_scale;
      for (int j = 0; j < 16; ++j) b[i].scales[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
      b[i].d = fp32_to_fp16(max_scale / q4scale);
    } else {
      for (int j = 0; j < 16; ++j) b[i].scales[j] = 0;
      b[i].d = fp32_to_fp16(0.f);
    }
    if (max_min > 0) {
      const float iscale = q4scale / max_min;
      for (int j = 0; j < 16; ++j)
        b[i].scales[j] = static_cast<uint8_t>(b[i].scales[j] | (nearest_int(iscale * mins[j]) << 4));
      b[i].dmin = fp32_to_fp16(max_min / q4scale);
    } else {
      b[i].dmin = fp32_to_fp16(0.f);
    }
    // Re-quantize against the stored (4-bit, f16) scales and mins.
    for (int j = 0; j < 16; ++j) {
      const float d = half_to_float(b[i].d) * static_cast<float>(b[i].scales[j] & 0xF);
      if (!d) continue;
      const float dm = half_to_float(b[i].dmin) * static_cast<float>(b[i].scales[j] >> 4);
      for (int l = 0; l < 16; ++l)
        L[16 * j + l] = static_cast<uint8_t>(clampi(nearest_int((x[16 * j + l] + dm) / d), 0, 3));
    }
    pack_2bit(L, b[i].qs);
  }
}

// w: [n/256] BlockQ2_K, xq: [n/256] BlockQ8_K -> per block (d_x*d_w)*sum_g(sc_g*dot_g) -
// (d_x*dmin_w)*sum_g(m_g*bsums_g) (ggml's generic order)
float vec_dot_q2_K_ref(int64_t n, const void* w, const void* xq) {
  const BlockQ2_K* a = static_cast<const BlockQ2_K*>(w);
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(xq);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    int sumi = 0, summ = 0;
    for (int g = 0; g < 16; ++g) {
      int dot = 0;
      for (int l = 0; l < 16; ++l) dot += two_bits(a[i].qs, 16 * g + l) * b[i].qs[16 * g + l];
      sumi += (a[i].scales[g] & 0xF) * dot;
      summ += (a[i].scales[g] >> 4) * b[i].bsums[g];
    }
    const float dall = b[i].d * half_to_float(a[i].d), dmin = b[i].d * half_to_float(a[i].dmin);
    sum += dall * static_cast<float>(sumi) - dmin * static_cast<float>(summ);
  }
  return sum;
}

// ---------------------------------------------------------------------------------------- Q3_K

// The signed 3-bit value (-4..3) of element e of a Q3_K block.
static inline int q3_value(const BlockQ3_K& b, int e) {
  return two_bits(b.qs, e) - ((b.hmask[e % 32] >> (e / 32)) & 1 ? 0 : 4);
}

// x: [n/256] BlockQ3_K -> y: [n] f32
void dequantize_row_q3_K_ref(const void* x, float* y, int64_t n) {
  const BlockQ3_K* b = static_cast<const BlockQ3_K*>(x);
  int8_t sc[16];
  for (int64_t i = 0; i < n / kQK_K; ++i, y += kQK_K) {
    const float d_all = half_to_float(b[i].d);
    unpack_q3_K_scales(b[i].scales, sc);
    for (int e = 0; e < kQK_K; ++e) {
      const float dl = d_all * static_cast<float>(sc[e / 16]);
      y[e] = dl * static_cast<float>(q3_value(b[i], e));
    }
  }
}

// x: [n] f32 -> y: [n/256] BlockQ3_K
void quantize_row_q3_K_ref(const float* x, void* y, int64_t n) {
  BlockQ3_K* b = static_cast<BlockQ3_K*>(y);
  int8_t L[kQK_K];
  float scales[16];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float max_scale = 0, amax = 0;
    for (int j = 0; j < 16; ++j) {
      scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
      const float scale = std::fabs(scales[j]);
      if (scale > amax) {
        amax = scale;
        max_scale = scales[j];
      }
    }
    std::memset(b[i].scales, 0, 12);
    if (max_scale) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < 16; ++j) {
        const int l = clampi(nearest_int(iscale * scales[j]), -32, 31) + 32;
        if (j < 8) b[i].scales[j] = static_cast<uint8_t>(l & 0xF);
        else b[i].scales[j - 8] = static_cast<uint8_t>(b[i].scales[j - 8] | ((l & 0xF) << 4));
        b[i].scales[j % 4 + 8] = static_cast<uint8_t>(b[i].scales[j % 4 + 8] | ((l >> 4) << (2 * (j / 4))));
      }
      b[i].d = fp32_to_fp16(1 / iscale);
    } else {
      b[i].d = fp32_to_fp16(0.f);
    }
    // Re-quantize against the stored scales; groups whose scale is 0 keep make_q3_quants' values.
    int8_t sc[16];
    unpack_q3_K_scales(b[i].scales, sc);
    for (int j = 0; j < 16; ++j) {
      const float d = half_to_float(b[i].d) * static_cast<float>(sc[j]);
      if (!d) continue;
      for (int l = 0; l < 16; ++l)
        L[16 * j + l] = static_cast<int8_t>(clampi(nearest_int(x[16 * j + l] / d), -4, 3) + 4);
    }
    std::memset(b[i].hmask, 0, sizeof b[i].hmask);
    uint8_t L2[kQK_K];
    for (int e = 0; e < kQK_K; ++e) {
      int l = L[e];
      if (l > 3) {
        b[i].hmask[e % 32] = static_cast<uint8_t>(b[i].hmask[e % 32] | (1 << (e / 32)));
        l -= 4;
      }
      L2[e] = static_cast<uint8_t>(l);
    }
    pack_2bit(L2, b[i].qs);
  }
}

// w: [n/256] BlockQ3_K, xq: [n/256] BlockQ8_K -> per block (d_w*d_x)*sum_g((s_g-32)*dot_g)
float vec_dot_q3_K_ref(int64_t n, const void* w, const void* xq) {
  const BlockQ3_K* a = static_cast<const BlockQ3_K*>(w);
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(xq);
  float sum = 0.0f;
  int8_t sc[16];
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    unpack_q3_K_scales(a[i].scales, sc);
    int sumi = 0;
    for (int g = 0; g < 16; ++g) {
      int dot = 0;
      for (int l = 0; l < 16; ++l) dot += q3_value(a[i], 16 * g + l) * b[i].qs[16 * g + l];
      sumi += sc[g] * dot;
    }
    sum += half_to_float(a[i].d) * b[i].d * static_cast<float>(sumi);
  }
  return sum;
}

// ---------------------------------------------------------------------------------------- Q5_K

// The 5-bit value (0..31) of element e of a Q5_K block.
static inline int q5k_value(const BlockQ5_K& b, int e) {
  const uint8_t q = b.qs[32 * (e / 64) + e % 32];
  return ((e % 64) < 32 ? (q & 0xF) : (q >> 4)) | (((b.qh[e % 32] >> (e / 32)) & 1) << 4);
}

// x: [n/256] BlockQ5_K -> y: [n] f32
void dequantize_row_q5_K_ref(const void* x, float* y, int64_t n) {
  const BlockQ5_K* b = static_cast<const BlockQ5_K*>(x);
  for (int64_t i = 0; i < n / kQK_K; ++i, y += kQK_K) {
    const float d = half_to_float(b[i].d), dmin = half_to_float(b[i].dmin);
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      get_scale_min_k4(j, b[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      for (int l = 0; l < 32; ++l) y[32 * j + l] = d1 * static_cast<float>(q5k_value(b[i], 32 * j + l)) - m1;
    }
  }
}

// x: [n] f32 -> y: [n/256] BlockQ5_K (Q4_K's algorithm with 5-bit values)
void quantize_row_q5_K_ref(const float* x, void* y, int64_t n) {
  BlockQ5_K* b = static_cast<BlockQ5_K*>(y);
  uint8_t L[kQK_K], Laux[32];
  float weights[32], mins[8], scales[8];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
      scales[j] = make_qkx2_quants(32, 31, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15, false);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t* s = b[i].scales;
    for (int j = 0; j < 8; ++j) {
      uint8_t ls = static_cast<uint8_t>(nearest_int(inv_scale * scales[j]));
      uint8_t lm = static_cast<uint8_t>(nearest_int(inv_min * mins[j]));
      if (ls > 63) ls = 63;
      if (lm > 63) lm = 63;
      if (j < 4) {
        s[j] = ls;
        s[j + 4] = lm;
      } else {
        s[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
        s[j - 4] = static_cast<uint8_t>(s[j - 4] | ((ls >> 4) << 6));
        s[j] = static_cast<uint8_t>(s[j] | ((lm >> 4) << 6));
      }
    }
    b[i].d = fp32_to_fp16(max_scale / 63.f);
    b[i].dmin = fp32_to_fp16(max_min / 63.f);
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      get_scale_min_k4(j, s, &sc, &m);
      const float d = half_to_float(b[i].d) * sc;
      if (!d) continue;
      const float dm = half_to_float(b[i].dmin) * m;
      for (int l = 0; l < 32; ++l)
        L[32 * j + l] = static_cast<uint8_t>(clampi(nearest_int((x[32 * j + l] + dm) / d), 0, 31));
    }
    std::memset(b[i].qh, 0, sizeof b[i].qh);
    for (int e = 0; e < kQK_K; ++e) {
      if (L[e] > 15) b[i].qh[e % 32] = static_cast<uint8_t>(b[i].qh[e % 32] | (1 << (e / 32)));
    }
    for (int g = 0; g < 4; ++g)
      for (int l = 0; l < 32; ++l)
        b[i].qs[32 * g + l] = static_cast<uint8_t>((L[64 * g + l] & 0xF) | ((L[64 * g + 32 + l] & 0xF) << 4));
  }
}

// w: [n/256] BlockQ5_K, xq: [n/256] BlockQ8_K -> per block (d_w*d_x)*sum_j(sc_j*dot_j) -
// (dmin_w*d_x)*sum_j(m_j*(bsums[2j]+bsums[2j+1]))
float vec_dot_q5_K_ref(int64_t n, const void* w, const void* xq) {
  const BlockQ5_K* a = static_cast<const BlockQ5_K*>(w);
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(xq);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    int sumi = 0, summ = 0;
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      get_scale_min_k4(j, a[i].scales, &sc, &m);
      int dot = 0;
      for (int l = 0; l < 32; ++l) dot += q5k_value(a[i], 32 * j + l) * b[i].qs[32 * j + l];
      sumi += sc * dot;
      summ += m * (b[i].bsums[2 * j] + b[i].bsums[2 * j + 1]);
    }
    const float d = half_to_float(a[i].d) * b[i].d, dmin = half_to_float(a[i].dmin) * b[i].d;
    sum += d * static_cast<float>(sumi);
    sum -= dmin * static_cast<float>(summ);
  }
  return sum;
}

}  // namespace llmserve::quant
