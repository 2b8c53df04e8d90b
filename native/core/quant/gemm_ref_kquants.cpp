// Scalar GEMM and packers of the K-quant-style types added after Q4_K/Q6_K: Q5_K, Q3_K, Q2_K and
// IQ4_XS (super-blocks of 256 against Q8_K activations). The canonical per-output formulas
// (quant/gemm.h), exact integer sums per super-block, then f32 accumulation in block order:
//   Q5_K, Q2_K:  acc = fma(float(sumi), d_w * d_x, acc); acc_min = fma(float(summ), dmin_w * d_x, acc_min)
//                y = acc - acc_min   (as Q4_K, and llama.cpp's repacked q2_K_8x8 kernels)
//   Q3_K, IQ4_XS: acc = fma(float(sumi), d_w * d_x, acc); y = acc
// sumi = sum over sub-blocks of scale * sum(q * x.qs) (Q5_K: 8 x 32, 6-bit scales, q 0..31; Q2_K:
// 16 x 16, 4-bit scales, q 0..3; Q3_K: 16 x 16, signed 6-bit scales, q -4..3; IQ4_XS: 8 x 32,
// signed 6-bit scales, q the grid value), summ = sum of min * the activation's bsums.
#include <cmath>

#include "quant/gemm_impl.h"

namespace llmserve::quant {
namespace {

// ----------------------------------------------------------------------------- packing

void pack_q5_K(const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out) {
  for (int64_t b = 0; b < nb; ++b, out += kPackQ5_K) {
    std::memset(out, 0, kPackQ5_K);
    for (int r = 0; r < nr; ++r) {
      const BlockQ5_K* src = reinterpret_cast<const BlockQ5_K*>(w + r * rb) + b;
      pack_q4_K_layout_row(src, r, out);
      for (int c = 0; c < 8; ++c) std::memcpy(out + 2368 + 64 * c + 4 * r, src->qh + 4 * c, 4);
    }
  }
}

void pack_q2_K(const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out) {
  for (int64_t b = 0; b < nb; ++b, out += kPackQ2_K) {
    std::memset(out, 0, kPackQ2_K);
    for (int r = 0; r < nr; ++r) {
      const BlockQ2_K* src = reinterpret_cast<const BlockQ2_K*>(w + r * rb) + b;
      std::memcpy(out + 2 * r, &src->d, 2);
      std::memcpy(out + 32 + 2 * r, &src->dmin, 2);
      for (int k = 0; k < 8; ++k) std::memcpy(out + 64 + 32 * k + 2 * r, src->scales + 2 * k, 2);
      for (int c = 0; c < 16; ++c) std::memcpy(out + 320 + 64 * c + 4 * r, src->qs + 4 * c, 4);
    }
  }
}

void pack_q3_K(const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out) {
  for (int64_t b = 0; b < nb; ++b, out += kPackQ3_K) {
    std::memset(out, 0, kPackQ3_K);
    for (int r = 0; r < nr; ++r) {
      const BlockQ3_K* src = reinterpret_cast<const BlockQ3_K*>(w + r * rb) + b;
      std::memcpy(out + 2 * r, &src->d, 2);
      int8_t sc[16];
      unpack_q3_K_scales(src->scales, sc);
      for (int k = 0; k < 8; ++k) std::memcpy(out + 32 + 32 * k + 2 * r, sc + 2 * k, 2);
      for (int c = 0; c < 16; ++c) std::memcpy(out + 288 + 64 * c + 4 * r, src->qs + 4 * c, 4);
      for (int c = 0; c < 8; ++c) std::memcpy(out + 1312 + 64 * c + 4 * r, src->hmask + 4 * c, 4);
    }
  }
}

void pack_iq4_xs(const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out) {
  for (int64_t b = 0; b < nb; ++b, out += kPackIQ4_XS) {
    std::memset(out, 0, kPackIQ4_XS);
    for (int r = 0; r < nr; ++r) {
      const BlockIQ4_XS* src = reinterpret_cast<const BlockIQ4_XS*>(w + r * rb) + b;
      std::memcpy(out + 2 * r, &src->d, 2);
      for (int ib = 0; ib < 8; ++ib) {
        const int lo = (src->scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF, hi = (src->scales_h >> (2 * ib)) & 3;
        out[32 + 16 * ib + r] = static_cast<uint8_t>(static_cast<int8_t>((lo | (hi << 4)) - 32));
      }
      for (int c = 0; c < 32; ++c) std::memcpy(out + 160 + 64 * c + 4 * r, src->qs + 4 * c, 4);
    }
  }
}

// ----------------------------------------------------------------------------- scalar GEMM

inline int two_bits(const uint8_t* qs, int e) { return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3; }

float dot_q5_K(const uint8_t* wr, const BlockQ8_K* a, int64_t nb) {
  const BlockQ5_K* w = reinterpret_cast<const BlockQ5_K*>(wr);
  float acc = 0.0f, acc_min = 0.0f;
  for (int64_t i = 0; i < nb; ++i) {
    uint8_t sm[16];
    unpack_q4_K_scales(w[i].scales, sm);
    int32_t sumi = 0, summ = 0;
    for (int j = 0; j < 8; ++j) {
      const uint8_t* q4 = w[i].qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      int32_t dot = 0;
      for (int l = 0; l < 32; ++l) {
        const int q = ((q4[l] >> shift) & 0x0F) | (((w[i].qh[l] >> j) & 1) << 4);
        dot += q * a[i].qs[32 * j + l];
      }
      sumi += sm[j] * dot;
      summ += sm[8 + j] * (a[i].bsums[2 * j] + a[i].bsums[2 * j + 1]);
    }
    acc = std::fma(static_cast<float>(sumi), half_to_float(w[i].d) * a[i].d, acc);
    acc_min = std::fma(static_cast<float>(summ), half_to_float(w[i].dmin) * a[i].d, acc_min);
  }
  return acc - acc_min;
}

float dot_q2_K(const uint8_t* wr, const BlockQ8_K* a, int64_t nb) {
  const BlockQ2_K* w = reinterpret_cast<const BlockQ2_K*>(wr);
  float acc = 0.0f, acc_min = 0.0f;
  for (int64_t i = 0; i < nb; ++i) {
    int32_t sumi = 0, summ = 0;
    for (int g = 0; g < 16; ++g) {
      int32_t dot = 0;
      for (int l = 0; l < 16; ++l) dot += two_bits(w[i].qs, 16 * g + l) * a[i].qs[16 * g + l];
      sumi += (w[i].scales[g] & 0xF) * dot;
      summ += (w[i].scales[g] >> 4) * a[i].bsums[g];
    }
    acc = std::fma(static_cast<float>(sumi), half_to_float(w[i].d) * a[i].d, acc);
    acc_min = std::fma(static_cast<float>(summ), half_to_float(w[i].dmin) * a[i].d, acc_min);
  }
  return acc - acc_min;
}

float dot_q3_K(const uint8_t* wr, const BlockQ8_K* a, int64_t nb) {
  const BlockQ3_K* w = reinterpret_cast<const BlockQ3_K*>(wr);
  float acc = 0.0f;
  for (int64_t i = 0; i < nb; ++i) {
    int8_t sc[16];
    unpack_q3_K_scales(w[i].scales, sc);
    int32_t sumi = 0;
    for (int g = 0; g < 16; ++g) {
      int32_t dot = 0;
      for (int l = 0; l < 16; ++l) {
        const int e = 16 * g + l;
        const int q = two_bits(w[i].qs, e) - ((w[i].hmask[e % 32] >> (e / 32)) & 1 ? 0 : 4);
        dot += q * a[i].qs[e];
      }
      sumi += sc[g] * dot;
    }
    acc = std::fma(static_cast<float>(sumi), half_to_float(w[i].d) * a[i].d, acc);
  }
  return acc;
}

float dot_iq4_xs(const uint8_t* wr, const BlockQ8_K* a, int64_t nb) {
  const BlockIQ4_XS* w = reinterpret_cast<const BlockIQ4_XS*>(wr);
  float acc = 0.0f;
  for (int64_t i = 0; i < nb; ++i) {
    int32_t sumi = 0;
    for (int ib = 0; ib < 8; ++ib) {
      const int lo = (w[i].scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF, hi = (w[i].scales_h >> (2 * ib)) & 3;
      const uint8_t* qs = w[i].qs + 16 * ib;
      const int8_t* q8 = a[i].qs + 32 * ib;
      int32_t dot = 0;
      for (int j = 0; j < 16; ++j) dot += kIQ4NLValues[qs[j] & 0xF] * q8[j] + kIQ4NLValues[qs[j] >> 4] * q8[j + 16];
      sumi += ((lo | (hi << 4)) - 32) * dot;
    }
    acc = std::fma(static_cast<float>(sumi), half_to_float(w[i].d) * a[i].d, acc);
  }
  return acc;
}

template <float (*Dot)(const uint8_t*, const BlockQ8_K*, int64_t)>
void gemm_ref_k(const GemmArgs& a) {
  const int64_t nb = a.n_in / kQK_K;
  for (int64_t t = 0; t < a.n; ++t) {
    const BlockQ8_K* x = reinterpret_cast<const BlockQ8_K*>(a.act + t * a.act_stride);
    float* y = a.y + t * a.ldy;
    for (int64_t r = a.r0; r < a.r1; ++r) {
      float v = Dot(a.w + r * a.row_bytes, x, nb);
      if (a.bias) v += a.bias[r];
      y[r] = v;
    }
  }
}

}  // namespace

bool gemm_pack_group_kquants_ref(GgmlType t, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out) {
  switch (t) {
    case GgmlType::Q5_K: pack_q5_K(w, rb, nr, nb, out); return true;
    case GgmlType::Q2_K: pack_q2_K(w, rb, nr, nb, out); return true;
    case GgmlType::Q3_K: pack_q3_K(w, rb, nr, nb, out); return true;
    case GgmlType::IQ4_XS: pack_iq4_xs(w, rb, nr, nb, out); return true;
    default: return false;
  }
}

void install_ref_gemm_kquants(KernelTable& t) {
  t.gemm[idx(GgmlType::Q5_K)] = gemm_ref_k<dot_q5_K>;
  t.gemm[idx(GgmlType::Q2_K)] = gemm_ref_k<dot_q2_K>;
  t.gemm[idx(GgmlType::Q3_K)] = gemm_ref_k<dot_q3_K>;
  t.gemm[idx(GgmlType::IQ4_XS)] = gemm_ref_k<dot_iq4_xs>;
}

}  // namespace llmserve::quant
