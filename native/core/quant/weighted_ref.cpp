// Quantizers with an importance matrix: what ggml_quantize_chunk writes when llama-quantize passes
// per-column weights qw (ggml-quants.c: quantize_row_{q4_0,q4_1,q5_0,q5_1,q2_K,q3_K,q4_K,q5_K,
// q6_K}_impl with quant_weights). They are not the reference quantizers with other weights: the
// k-quants then fit each sub-block with make_qkx3_quants / make_qx_quants over qw-scaled weights and
// the super-block scales with make_qp_quants (a weighted, iteratively refined fit) instead of a plain
// max. Each follows ggml step for step in the same float operation order, so the bytes are ggml's.
// Element weights are qw[j] * sqrt(sigma2 + x[j]^2) (sigma2: mean square of the row for the 32-block
// types, twice that of the super-block for Q3_K..Q5_K, the mean square for Q2_K); Q6_K uses qw as
// is. IQ4_NL / IQ4_XS live in iq4_ref.cpp (quantize_row_iq4_*_w).
#include "quant/k_quants_util.h"
#include "quant/quant_impl.h"

namespace llmserve::quant {
namespace {

template <typename T>
T clampi(T v, T lo, T hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// Symmetric weighted fit x ~ scale*(L - nmax), L in [0, 2*nmax): 19 inverse scales around
// -nmax/max (ggml's make_qx_quants with rmse_type 1 and weights w).
float make_qx_quants_w(int n, int nmax, const float* x, int8_t* L, const float* w) {
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
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l + nmax);
    sumlx += w[i] * x[i] * l;
    suml2 += w[i] * l * l;
  }
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
      sumlx += w[i] * x[i] * l;
      suml2 += w[i] * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i)
        L[i] = static_cast<int8_t>(nmax + clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Asymmetric weighted fit x ~ scale*L - min, L in [0, nmax] (ggml's make_qkx3_quants, weights
// given, squared error): like make_qkx2_quants, but a group with max <= min is all zero.
float make_qkx3_quants_w(int n, int nmax, const float* x, const float* w, uint8_t* L, float* the_min, uint8_t* Laux) {
  constexpr float rmin = -0.9f, rdelta = 0.05f;
  constexpr int nstep = 36;
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
  if (max <= min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<uint8_t>(clampi(nearest_int(iscale * (x[i] - min)), 0, nmax));
    const float diff = scale * L[i] + min - x[i];
    best += w[i] * (diff * diff);
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clampi(nearest_int(iscale * (x[i] - min)), 0, nmax);
      Laux[i] = static_cast<uint8_t>(l);
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float err = 0;
      for (int i = 0; i < n; ++i) {
        const float diff = this_scale * Laux[i] + this_min - x[i];
        err += w[i] * (diff * diff);
      }
      if (err < best) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best = err;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// Fit of non-negative values x (sub-block scales or mins) as scale*L, L in [0, nmax], weights w:
// the best of 9 inverse scales, then up to 5 passes moving single L's while the weighted
// correlation improves (ggml's make_qp_quants). L wraps as ggml's uint8_t does.
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* w) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
  if (max < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = nmax / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * L[i];
    best_mse += w[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * is + nmax) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale_is * x[i]);
      l = l < nmax ? l : nmax;
      const float diff = x[i] - scale_is * l;
      mse += w[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = l < nmax ? l : nmax;
    L[i] = static_cast<uint8_t>(l);
    sumlx += w[i] * x[i] * l;
    suml2 += w[i] * l * l;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      float slx = sumlx - w[i] * x[i] * L[i];
      float sl2 = suml2 - w[i] * L[i] * L[i];
      if (slx > 0 && sl2 > 0) {
        int new_l = nearest_int(x[i] * sl2 / slx);
        new_l = new_l < nmax ? new_l : nmax;
        if (new_l != L[i]) {
          slx += w[i] * x[i] * new_l;
          sl2 += w[i] * new_l * new_l;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

float sum_squares(const float* x, int64_t n) {
  float s = 0;
  for (int64_t j = 0; j < n; ++j) s += x[j] * x[j];
  return s;
}

// Q4_K / Q5_K's packing of 8 6-bit scales and 8 6-bit mins into 12 bytes.
void pack_k4_scales(const uint8_t* Ls, const uint8_t* Lm, uint8_t* s) {
  for (int j = 0; j < 8; ++j) {
    const uint8_t ls = Ls[j], lm = Lm[j];
    if (j < 4) {
      s[j] = ls;
      s[j + 4] = lm;
    } else {
      s[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      s[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      s[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
}

// Q4_K (nmax 15) and Q5_K (nmax 31) super-blocks: L gets the final levels of 256 elements.
void fit_k4_block(const float* x, const float* qw, int nmax, uint16_t* d_out, uint16_t* dmin_out, uint8_t* scales,
                  uint8_t* L) {
  uint8_t Laux[32], Ls[8], Lm[8];
  float weights[32], sw[8], mins[8], sc[8];
  const float sigma2 = 2 * sum_squares(x, kQK_K) / kQK_K;
  for (int j = 0; j < 8; ++j) {
    for (int l = 0; l < 32; ++l) weights[l] = qw[32 * j + l] * std::sqrt(sigma2 + x[32 * j + l] * x[32 * j + l]);
    float sumw = 0;
    for (int l = 0; l < 32; ++l) sumw += weights[l];
    sw[j] = sumw;
    sc[j] = make_qkx3_quants_w(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux);
  }
  const float d_block = make_qp_quants(8, 63, sc, Ls, sw);
  const float m_block = make_qp_quants(8, 63, mins, Lm, sw);
  for (int j = 0; j < 8; ++j) {
    Ls[j] = Ls[j] < 63 ? Ls[j] : 63;  // Q5_K's MIN(63, ...); a no-op (make_qp_quants caps at nmax)
    Lm[j] = Lm[j] < 63 ? Lm[j] : 63;
  }
  std::memset(scales, 0, kKScaleSize);
  pack_k4_scales(Ls, Lm, scales);
  *d_out = fp32_to_fp16(d_block);
  *dmin_out = fp32_to_fp16(m_block);
  for (int j = 0; j < 8; ++j) {
    uint8_t s, m;
    get_scale_min_k4(j, scales, &s, &m);
    const float d = half_to_float(*d_out) * s;
    if (!d) continue;
    const float dm = half_to_float(*dmin_out) * m;
    for (int ii = 0; ii < 32; ++ii)
      L[32 * j + ii] = static_cast<uint8_t>(clampi(nearest_int((x[32 * j + ii] + dm) / d), 0, nmax));
  }
}

void q2_K(const float* x, BlockQ2_K* y, int64_t n, const float* qw) {
  uint8_t L[kQK_K], Laux[16], Ls[16], Lm[16];
  float mins[16], scales[16], sw[16], weight[16];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    const float* q = qw + kQK_K * i;
    const float sigma2 = sum_squares(x, kQK_K) / kQK_K;
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) weight[l] = q[16 * j + l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
      sw[j] = 0;
      for (int l = 0; l < 16; ++l) sw[j] += weight[l];
      scales[j] = make_qkx3_quants_w(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux);
    }
    y[i].d = fp32_to_fp16(make_qp_quants(16, 15, scales, Ls, sw));
    y[i].dmin = fp32_to_fp16(make_qp_quants(16, 15, mins, Lm, sw));
    const float dm = half_to_float(y[i].d), mm = half_to_float(y[i].dmin);
    for (int j = 0; j < 16; ++j) y[i].scales[j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
    for (int j = 0; j < 16; ++j) {
      const float d = dm * (y[i].scales[j] & 0xF);
      if (!d) continue;
      const float m = mm * (y[i].scales[j] >> 4);
      for (int ii = 0; ii < 16; ++ii)
        L[16 * j + ii] = static_cast<uint8_t>(clampi(nearest_int((x[16 * j + ii] + m) / d), 0, 3));
    }
    for (int j = 0; j < kQK_K; j += 128)
      for (int l = 0; l < 32; ++l)
        y[i].qs[j / 4 + l] =
            static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
  }
}

void q3_K(const float* x, BlockQ3_K* y, int64_t n, const float* qw) {
  int8_t L[kQK_K], Ls[16];
  float scales[16], weight[16], sw[16];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    const float* q = qw + kQK_K * i;
    const float sigma2 = 2 * sum_squares(x, kQK_K) / kQK_K;
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) weight[l] = q[16 * j + l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
      float sumw = 0;
      for (int l = 0; l < 16; ++l) sumw += weight[l];
      sw[j] = sumw;
      scales[j] = make_qx_quants_w(16, 4, x + 16 * j, L + 16 * j, weight);
    }
    std::memset(y[i].scales, 0, 12);
    const float d_block = make_qx_quants_w(16, 32, scales, Ls, sw);
    for (int j = 0; j < 16; ++j) {
      int l = Ls[j];
      if (j < 8) y[i].scales[j] = static_cast<uint8_t>(l & 0xF);
      else y[i].scales[j - 8] |= static_cast<uint8_t>((l & 0xF) << 4);
      l >>= 4;
      y[i].scales[j % 4 + 8] |= static_cast<uint8_t>(l << (2 * (j / 4)));
    }
    y[i].d = fp32_to_fp16(d_block);
    for (int j = 0; j < 16; ++j) {
      int8_t sc = static_cast<int8_t>(j < 8 ? y[i].scales[j] & 0xF : y[i].scales[j - 8] >> 4);
      sc = static_cast<int8_t>((sc | (((y[i].scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
      const float d = half_to_float(y[i].d) * sc;
      if (!d) continue;
      for (int ii = 0; ii < 16; ++ii)
        L[16 * j + ii] = static_cast<int8_t>(clampi(nearest_int(x[16 * j + ii] / d), -4, 3) + 4);
    }
    std::memset(y[i].hmask, 0, kQK_K / 8);
    int m = 0;
    uint8_t hm = 1;
    for (int j = 0; j < kQK_K; ++j) {
      if (L[j] > 3) {
        y[i].hmask[m] |= hm;
        L[j] = static_cast<int8_t>(L[j] - 4);
      }
      if (++m == kQK_K / 8) {
        m = 0;
        hm = static_cast<uint8_t>(hm << 1);
      }
    }
    for (int j = 0; j < kQK_K; j += 128)
      for (int l = 0; l < 32; ++l)
        y[i].qs[j / 4 + l] =
            static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
  }
}

void q4_K(const float* x, BlockQ4_K* y, int64_t n, const float* qw) {
  uint8_t L[kQK_K];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    fit_k4_block(x, qw + kQK_K * i, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
    uint8_t* q = y[i].qs;
    for (int j = 0; j < kQK_K; j += 64, q += 32)
      for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
  }
}

void q5_K(const float* x, BlockQ5_K* y, int64_t n, const float* qw) {
  uint8_t L[kQK_K];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    fit_k4_block(x, qw + kQK_K * i, 31, &y[i].d, &y[i].dmin, y[i].scales, L);
    uint8_t* qh = y[i].qh;
    uint8_t* ql = y[i].qs;
    std::memset(qh, 0, kQK_K / 8);
    uint8_t m1 = 1, m2 = 2;
    for (int b = 0; b < kQK_K; b += 64, ql += 32) {
      for (int j = 0; j < 32; ++j) {
        int l1 = L[b + j], l2 = L[b + j + 32];
        if (l1 > 15) {
          l1 -= 16;
          qh[j] |= m1;
        }
        if (l2 > 15) {
          l2 -= 16;
          qh[j] |= m2;
        }
        ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
      }
      m1 = static_cast<uint8_t>(m1 << 2);
      m2 = static_cast<uint8_t>(m2 << 2);
    }
  }
}

void q6_K(const float* x, BlockQ6_K* y, int64_t n, const float* qw) {
  int8_t L[kQK_K];
  float scales[16];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
      // ggml passes qw itself here, not qw * sqrt(sigma2 + x^2) as the other k-quants.
      scales[ib] = make_qx_quants_w(16, 32, x + 16 * ib, L + 16 * ib, qw + kQK_K * i + 16 * ib);
      const float abs_scale = std::fabs(scales[ib]);
      if (abs_scale > max_abs_scale) {
        max_abs_scale = abs_scale;
        max_scale = scales[ib];
      }
    }
    if (max_abs_scale < kGroupMaxEps) {
      std::memset(&y[i], 0, sizeof(BlockQ6_K));
      y[i].d = fp32_to_fp16(0.f);
      continue;
    }
    const float iscale = -128.f / max_scale;
    y[i].d = fp32_to_fp16(1 / iscale);
    for (int ib = 0; ib < 16; ++ib) {
      const int v = nearest_int(iscale * scales[ib]);
      y[i].scales[ib] = static_cast<int8_t>(v < 127 ? v : 127);
    }
    for (int j = 0; j < 16; ++j) {
      const float d = half_to_float(y[i].d) * y[i].scales[j];
      if (!d) continue;
      for (int ii = 0; ii < 16; ++ii)
        L[16 * j + ii] = static_cast<int8_t>(clampi(nearest_int(x[16 * j + ii] / d), -32, 31) + 32);
    }
    uint8_t* ql = y[i].ql;
    uint8_t* qh = y[i].qh;
    for (int j = 0; j < kQK_K; j += 128, ql += 64, qh += 32) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
        ql[l] = static_cast<uint8_t>(q1 | (q3 << 4));
        ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
        qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                     ((L[j + l + 96] >> 4) << 6));
      }
    }
  }
}

// The 32-block legacy types: weights from the mean square of the whole row.
void fill_weights32(const float* xb, const float* q, float sigma2, float* weight) {
  for (int j = 0; j < 32; ++j) weight[j] = q[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
}

void q4_0(const float* x, BlockQ4_0* y, int64_t n, const float* qw) {
  float weight[32];
  int8_t L[32];
  const float sigma2 = sum_squares(x, n) / n;
  for (int64_t ib = 0; ib < n / 32; ++ib) {
    fill_weights32(x + 32 * ib, qw + 32 * ib, sigma2, weight);
    y[ib].d = fp32_to_fp16(make_qx_quants_w(32, 8, x + 32 * ib, L, weight));
    for (int j = 0; j < 16; ++j) y[ib].qs[j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  }
}

void q4_1(const float* x, BlockQ4_1* y, int64_t n, const float* qw) {
  float weight[32], min;
  uint8_t L[32], Laux[32];
  const float sigma2 = sum_squares(x, n) / n;
  for (int64_t ib = 0; ib < n / 32; ++ib) {
    fill_weights32(x + 32 * ib, qw + 32 * ib, sigma2, weight);
    y[ib].d = fp32_to_fp16(make_qkx3_quants_w(32, 15, x + 32 * ib, weight, L, &min, Laux));
    y[ib].m = fp32_to_fp16(-min);
    for (int j = 0; j < 16; ++j) y[ib].qs[j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  }
}

// Q5_0 / Q5_1's fifth bits: element j's in bit j of qh (little-endian u32), low nibbles as Q4_0.
template <typename L_t>
void pack5(const L_t* L, uint8_t* qs, uint8_t* qh_bytes) {
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const uint8_t a = static_cast<uint8_t>(L[j]), b = static_cast<uint8_t>(L[j + 16]);
    qs[j] = static_cast<uint8_t>((a & 0x0F) | ((b & 0x0F) << 4));
    qh |= ((a & 0x10u) >> 4) << j;
    qh |= ((b & 0x10u) >> 4) << (j + 16);
  }
  std::memcpy(qh_bytes, &qh, sizeof qh);
}

void q5_0(const float* x, BlockQ5_0* y, int64_t n, const float* qw) {
  float weight[32];
  int8_t L[32];
  const float sigma2 = sum_squares(x, n) / n;
  for (int64_t ib = 0; ib < n / 32; ++ib) {
    fill_weights32(x + 32 * ib, qw + 32 * ib, sigma2, weight);
    y[ib].d = fp32_to_fp16(make_qx_quants_w(32, 16, x + 32 * ib, L, weight));
    pack5(L, y[ib].qs, y[ib].qh);
  }
}

void q5_1(const float* x, BlockQ5_1* y, int64_t n, const float* qw) {
  float weight[32], min;
  uint8_t L[32], Laux[32];
  const float sigma2 = sum_squares(x, n) / n;
  for (int64_t ib = 0; ib < n / 32; ++ib) {
    fill_weights32(x + 32 * ib, qw + 32 * ib, sigma2, weight);
    y[ib].d = fp32_to_fp16(make_qkx3_quants_w(32, 31, x + 32 * ib, weight, L, &min, Laux));
    y[ib].m = fp32_to_fp16(-min);
    pack5(L, y[ib].qs, y[ib].qh);
  }
}

}  // namespace
}  // namespace llmserve::quant

namespace llmserve {

void quantize_row_imatrix(GgmlType t, const float* x, void* y, int64_t n, const float* qw) {
  using namespace quant;
  if (!qw) return quantize_row_weights(t, x, y, n);
  switch (t) {
    case GgmlType::Q4_0: return q4_0(x, static_cast<BlockQ4_0*>(y), n, qw);
    case GgmlType::Q4_1: return q4_1(x, static_cast<BlockQ4_1*>(y), n, qw);
    case GgmlType::Q5_0: return q5_0(x, static_cast<BlockQ5_0*>(y), n, qw);
    case GgmlType::Q5_1: return q5_1(x, static_cast<BlockQ5_1*>(y), n, qw);
    case GgmlType::Q2_K: return q2_K(x, static_cast<BlockQ2_K*>(y), n, qw);
    case GgmlType::Q3_K: return q3_K(x, static_cast<BlockQ3_K*>(y), n, qw);
    case GgmlType::Q4_K: return q4_K(x, static_cast<BlockQ4_K*>(y), n, qw);
    case GgmlType::Q5_K: return q5_K(x, static_cast<BlockQ5_K*>(y), n, qw);
    case GgmlType::Q6_K: return q6_K(x, static_cast<BlockQ6_K*>(y), n, qw);
    case GgmlType::IQ4_NL: return quantize_row_iq4_nl_w(x, y, n, qw);
    case GgmlType::IQ4_XS: return quantize_row_iq4_xs_w(x, y, n, qw);
    default: return quantize_row_weights(t, x, y, n);  // Q8_0 and the float types ignore weights
  }
}

}  // namespace llmserve
