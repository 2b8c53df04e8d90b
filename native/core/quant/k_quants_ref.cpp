// K-quant scalar references: Q4_K and Q6_K weights, Q8_K activations (super-blocks of 256).
// The quantizers follow ggml's quantize_row_{q4_K,q6_K,q8_K}_ref step for step, in the same float
// operation order, so files we write match what llama.cpp's own reference quantizer writes.
#include "quant/k_quants_util.h"
#include "quant/quant_impl.h"

namespace llmserve::quant {

float make_qkx2_quants(int n, int nmax, const float* x, const float* w, uint8_t* L, float* the_min, uint8_t* Laux,
                       float rmin, float rdelta, int nstep, bool use_mad) {
  float min = x[0], max = x[0];
  float sum_w = w[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_err = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(l < 0 ? 0 : (l > nmax ? nmax : l));
    float diff = scale * L[i] + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_err += w[i] * diff;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = l < 0 ? 0 : (l > nmax ? nmax : l);
      Laux[i] = static_cast<uint8_t>(l);
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float err = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        err += w[i] * diff;
      }
      if (err < best_err) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_err = err;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

namespace {

// Symmetric fit x ~ scale*(L - nmax), L in [0, 2*nmax), weights x^2, trying 19 inverse scales
// around -nmax/max (ggml's make_qx_quants with rmse_type 1 and no importance weights).
float make_qx_quants(int n, int nmax, const float* x, int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  auto clampl = [nmax](int l) { return l < -nmax ? -nmax : (l > nmax - 1 ? nmax - 1 : l); };
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = clampl(nearest_int(iscale * x[i]));
    L[i] = static_cast<int8_t>(l + nmax);
    float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = clampl(nearest_int(iscale * x[i]));
      float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(nmax + clampl(nearest_int(iscale * x[i])));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

}  // namespace

// ---------------------------------------------------------------------------------------- Q4_K
// value = d*sc[j]*q - dmin*m[j] for sub-block j = element/32, q a 4-bit nibble.

// x: [n/256] BlockQ4_K -> y: [n] f32
void dequantize_row_q4_K_ref(const void* x, float* y, int64_t n) {
  const BlockQ4_K* b = static_cast<const BlockQ4_K*>(x);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = half_to_float(b[i].d);
    const float dmin = half_to_float(b[i].dmin);
    const uint8_t* q = b[i].qs;
    for (int j = 0; j < kQK_K / 64; ++j, q += 32) {
      uint8_t sc, m;
      get_scale_min_k4(2 * j, b[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      get_scale_min_k4(2 * j + 1, b[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
    }
  }
}

// x: [n] f32 -> y: [n/256] BlockQ4_K
void quantize_row_q4_K_ref(const float* x, void* y, int64_t n) {
  BlockQ4_K* b = static_cast<BlockQ4_K*>(y);
  uint8_t L[kQK_K], Laux[32];
  float weights[32], mins[kQK_K / 32], scales[kQK_K / 32];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float max_scale = 0, max_min = 0;  // scales and mins are both >= 0 here
    for (int j = 0; j < kQK_K / 32; ++j) {
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
      scales[j] = make_qkx2_quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20, false);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t* s = b[i].scales;
    for (int j = 0; j < kQK_K / 32; ++j) {
      uint8_t ls = static_cast<uint8_t>(nearest_int(inv_scale * scales[j]));
      uint8_t lm = static_cast<uint8_t>(nearest_int(inv_min * mins[j]));
      if (ls > 63) ls = 63;
      if (lm > 63) lm = 63;
      if (j < 4) {
        s[j] = ls;
        s[j + 4] = lm;
      } else {
        s[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
        s[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
        s[j] |= static_cast<uint8_t>((lm >> 4) << 6);
      }
    }
    b[i].d = fp32_to_fp16(max_scale / 63.f);
    b[i].dmin = fp32_to_fp16(max_min / 63.f);
    // Re-quantize against the rounded (6-bit, f16) scales actually stored.
    for (int j = 0; j < kQK_K / 32; ++j) {
      uint8_t sc, m;
      get_scale_min_k4(j, s, &sc, &m);
      const float d = half_to_float(b[i].d) * sc;
      if (!d) continue;
      const float dm = half_to_float(b[i].dmin) * m;
      for (int l = 0; l < 32; ++l) {
        int q = nearest_int((x[32 * j + l] + dm) / d);
        L[32 * j + l] = static_cast<uint8_t>(q < 0 ? 0 : (q > 15 ? 15 : q));
      }
    }
    uint8_t* q = b[i].qs;
    for (int j = 0; j < kQK_K; j += 64, q += 32) {
      for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    }
  }
}

// w: [n/256] BlockQ4_K, xq: [n/256] BlockQ8_K. Per block: d_w*d_x*sum_j(sc_j*dot_j) minus
// dmin_w*d_x*sum_j(m_j*(bsums[2j]+bsums[2j+1])) -- the min term uses the activation block sums.
float vec_dot_q4_K_ref(int64_t n, const void* w, const void* xq) {
  const BlockQ4_K* a = static_cast<const BlockQ4_K*>(w);
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(xq);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    int sumi = 0, summ = 0;
    const uint8_t* q4 = a[i].qs;
    const int8_t* q8 = b[i].qs;
    for (int j = 0; j < kQK_K / 64; ++j, q4 += 32, q8 += 64) {
      uint8_t sc0, m0, sc1, m1;
      get_scale_min_k4(2 * j, a[i].scales, &sc0, &m0);
      get_scale_min_k4(2 * j + 1, a[i].scales, &sc1, &m1);
      int s0 = 0, s1 = 0;
      for (int l = 0; l < 32; ++l) {
        s0 += (q4[l] & 0xF) * q8[l];
        s1 += (q4[l] >> 4) * q8[l + 32];
      }
      sumi += sc0 * s0 + sc1 * s1;
      summ += m0 * (b[i].bsums[4 * j] + b[i].bsums[4 * j + 1]) + m1 * (b[i].bsums[4 * j + 2] + b[i].bsums[4 * j + 3]);
    }
    const float d = half_to_float(a[i].d) * b[i].d;
    const float dmin = half_to_float(a[i].dmin) * b[i].d;
    sum += d * static_cast<float>(sumi);
    sum -= dmin * static_cast<float>(summ);
  }
  return sum;
}

// ---------------------------------------------------------------------------------------- Q6_K
// value = d*scales[e/16]*(q-32), q 6-bit: low 4 bits in ql, high 2 bits in qh. Per 128 elements
// (ql 64 bytes, qh 32 bytes), for l in 0..31: element l = ql[l]&15 | (qh[l]&3)<<4,
// l+32 = ql[l+32]&15 | (qh[l]>>2&3)<<4, l+64 = ql[l]>>4 | (qh[l]>>4&3)<<4,
// l+96 = ql[l+32]>>4 | (qh[l]>>6)<<4.

// x: [n/256] BlockQ6_K -> y: [n] f32
void dequantize_row_q6_K_ref(const void* x, float* y, int64_t n) {
  const BlockQ6_K* b = static_cast<const BlockQ6_K*>(x);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = half_to_float(b[i].d);
    const uint8_t* ql = b[i].ql;
    const uint8_t* qh = b[i].qh;
    const int8_t* sc = b[i].scales;
    for (int h = 0; h < 2; ++h, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l + 0] = d * sc[is + 0] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
    }
  }
}

// x: [n] f32 -> y: [n/256] BlockQ6_K
void quantize_row_q6_K_ref(const float* x, void* y, int64_t n) {
  BlockQ6_K* b = static_cast<BlockQ6_K*>(y);
  int8_t L[kQK_K];
  float scales[kQK_K / 16];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < kQK_K / 16; ++ib) {
      scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
      if (std::fabs(scales[ib]) > max_abs_scale) {
        max_abs_scale = std::fabs(scales[ib]);
        max_scale = scales[ib];
      }
    }
    if (max_abs_scale < kGroupMaxEps) {
      std::memset(&b[i], 0, sizeof(BlockQ6_K));
      continue;
    }
    const float iscale = -128.f / max_scale;
    b[i].d = fp32_to_fp16(1 / iscale);
    for (int ib = 0; ib < kQK_K / 16; ++ib) {
      const int s = nearest_int(iscale * scales[ib]);
      b[i].scales[ib] = static_cast<int8_t>(s > 127 ? 127 : s);
    }
    for (int j = 0; j < kQK_K / 16; ++j) {
      const float d = half_to_float(b[i].d) * b[i].scales[j];
      if (!d) continue;
      for (int l = 0; l < 16; ++l) {
        int q = nearest_int(x[16 * j + l] / d);
        q = q < -32 ? -32 : (q > 31 ? 31 : q);
        L[16 * j + l] = static_cast<int8_t>(q + 32);
      }
    }
    uint8_t* ql = b[i].ql;
    uint8_t* qh = b[i].qh;
    for (int j = 0; j < kQK_K; j += 128, ql += 64, qh += 32) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
        ql[l] = static_cast<uint8_t>((q1 & 0xF) | ((q3 & 0xF) << 4));
        ql[l + 32] = static_cast<uint8_t>((q2 & 0xF) | ((q4 & 0xF) << 4));
        qh[l] = static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
      }
    }
  }
}

// w: [n/256] BlockQ6_K, xq: [n/256] BlockQ8_K -> per block d_w*d_x*sum_g(scales[g]*sum((q-32)*x))
float vec_dot_q6_K_ref(int64_t n, const void* w, const void* xq) {
  const BlockQ6_K* a = static_cast<const BlockQ6_K*>(w);
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(xq);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    int8_t q[kQK_K];
    unpack_q6_K(a[i], q);
    int sumi = 0;
    for (int g = 0; g < kQK_K / 16; ++g) {
      int s = 0;
      for (int l = 0; l < 16; ++l) s += q[16 * g + l] * b[i].qs[16 * g + l];
      sumi += a[i].scales[g] * s;
    }
    sum += half_to_float(a[i].d) * b[i].d * static_cast<float>(sumi);
  }
  return sum;
}

// ---------------------------------------------------------------------------------------- Q8_K
// Activation format for K-quant dots: value = d*qs[j], d in f32, bsums = sums of 16 qs.

// x: [n/256] BlockQ8_K -> y: [n] f32
void dequantize_row_q8_K_ref(const void* x, float* y, int64_t n) {
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(x);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    for (int j = 0; j < kQK_K; ++j) *y++ = b[i].d * b[i].qs[j];
  }
}

// x: [n] f32 -> y: [n/256] BlockQ8_K. As ggml's quantize_row_q8_K_ref: iscale = -127/max where
// max is the first value of largest magnitude (so d = 1/iscale may be negative), q rounded half to
// even. Unlike ggml, an all-zero block also zeroes bsums (ggml leaves them as they were).
void quantize_row_q8_K_ref(const float* x, void* y, int64_t n) {
  BlockQ8_K* b = static_cast<BlockQ8_K*>(y);
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float max = 0, amax = 0;
    for (int j = 0; j < kQK_K; ++j) {
      const float ax = std::fabs(x[j]);
      if (ax > amax) {
        amax = ax;
        max = x[j];
      }
    }
    if (!amax) {
      std::memset(&b[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    const float iscale = -127.f / max;
    for (int j = 0; j < kQK_K; ++j) {
      const int v = nearest_int(iscale * x[j]);
      b[i].qs[j] = static_cast<int8_t>(v > 127 ? 127 : (v < -128 ? -128 : v));
    }
    for (int g = 0; g < kQK_K / 16; ++g) {
      int s = 0;
      for (int l = 0; l < 16; ++l) s += b[i].qs[16 * g + l];
      b[i].bsums[g] = static_cast<int16_t>(s);
    }
    b[i].d = 1 / iscale;
  }
}

// w, xq: [n/256] BlockQ8_K -> sum over blocks of d_w*d_x*sum(w.qs*x.qs)
float vec_dot_q8_K_ref(int64_t n, const void* w, const void* xq) {
  const BlockQ8_K* a = static_cast<const BlockQ8_K*>(w);
  const BlockQ8_K* b = static_cast<const BlockQ8_K*>(xq);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    int sumi = 0;
    for (int j = 0; j < kQK_K; ++j) sumi += a[i].qs[j] * b[i].qs[j];
    sum += a[i].d * b[i].d * static_cast<float>(sumi);
  }
  return sum;
}

}  // namespace llmserve::quant
