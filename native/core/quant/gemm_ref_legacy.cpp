// Scalar GEMM, packers and the Q8_1 activation rows of the legacy 32-element types added after
// Q4_0/Q8_0: Q4_1, Q5_0, Q5_1 and IQ4_NL. The canonical per-output formulas (quant/gemm.h), one
// exact integer sum per block and f32 accumulation in block order:
//   Q5_0, IQ4_NL:  acc = fma(float(sumi), d_w * d_x, acc);   y = acc
//   Q4_1, Q5_1:    acc = fma(float(sumi), d_w * d_x, acc); acc_m = fma(m_w, s_x, acc_m);   y = acc + acc_m
// with sumi = sum(q * x.qs) over the block's 32 elements (q = q5 - 16 for Q5_0, the grid value for
// IQ4_NL, the unsigned 4/5-bit value for Q4_1/Q5_1). The SIMD kernels compute the same sequences.
#include <algorithm>
#include <cmath>

#include "quant/gemm_impl.h"

namespace llmserve::quant {
namespace {

// ----------------------------------------------------------------------------- packing

// u16 d[16] | (u16 m[16]) | qs[4][16][4] | (u32 h[16]), rows r < nr (the rest zero).
template <class Block, bool kHasM, bool kHasH>
void pack_block32(const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out, size_t rec) {
  const size_t oq = kHasM ? 64 : 32, oh = oq + 256;
  for (int64_t b = 0; b < nb; ++b, out += rec) {
    std::memset(out, 0, rec);
    for (int r = 0; r < nr; ++r) {
      const Block* src = reinterpret_cast<const Block*>(w + r * rb) + b;
      std::memcpy(out + 2 * r, &src->d, 2);
      if constexpr (kHasM) std::memcpy(out + 32 + 2 * r, &src->m, 2);
      for (int j = 0; j < 4; ++j) std::memcpy(out + oq + 64 * j + 4 * r, src->qs + 4 * j, 4);
      if constexpr (kHasH) {
        uint32_t qh;
        std::memcpy(&qh, src->qh, 4);
        const uint32_t h = transpose_q5_high_bits(qh);
        std::memcpy(out + oh + 4 * r, &h, 4);
      }
    }
  }
}

// ----------------------------------------------------------------------------- scalar GEMM

struct Q8_1Row {  // views into a prepared Q8_1 row of nb blocks
  const int8_t* qs;
  const uint8_t* d;
  const uint8_t* s;
  Q8_1Row(const uint8_t* x, int64_t nb) : qs(reinterpret_cast<const int8_t*>(x)), d(x + nb * 32), s(x + nb * 36) {}
};

float dot_q4_1(const uint8_t* wr, const uint8_t* x, int64_t nb) {
  const BlockQ4_1* w = reinterpret_cast<const BlockQ4_1*>(wr);
  const Q8_1Row a(x, nb);
  float acc = 0.0f, acc_m = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t sumi = 0;
    for (int j = 0; j < 16; ++j)
      sumi += (w[b].qs[j] & 0x0F) * a.qs[32 * b + j] + (w[b].qs[j] >> 4) * a.qs[32 * b + j + 16];
    acc = std::fma(static_cast<float>(sumi), half_to_float(w[b].d) * ldf(a.d + 4 * b), acc);
    acc_m = std::fma(half_to_float(w[b].m), ldf(a.s + 4 * b), acc_m);
  }
  return acc + acc_m;
}

// The 5-bit values (0..31) of a Q5 block, in element order.
template <class Block>
void q5_values(const Block& blk, int* q) {
  uint32_t qh;
  std::memcpy(&qh, blk.qh, 4);
  for (int j = 0; j < 16; ++j) {
    q[j] = (blk.qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
    q[j + 16] = (blk.qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
  }
}

float dot_q5_1(const uint8_t* wr, const uint8_t* x, int64_t nb) {
  const BlockQ5_1* w = reinterpret_cast<const BlockQ5_1*>(wr);
  const Q8_1Row a(x, nb);
  float acc = 0.0f, acc_m = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    int q[32];
    q5_values(w[b], q);
    int32_t sumi = 0;
    for (int j = 0; j < 32; ++j) sumi += q[j] * a.qs[32 * b + j];
    acc = std::fma(static_cast<float>(sumi), half_to_float(w[b].d) * ldf(a.d + 4 * b), acc);
    acc_m = std::fma(half_to_float(w[b].m), ldf(a.s + 4 * b), acc_m);
  }
  return acc + acc_m;
}

float dot_q5_0(const uint8_t* wr, const uint8_t* x, int64_t nb) {
  const BlockQ5_0* w = reinterpret_cast<const BlockQ5_0*>(wr);
  const int8_t* qs = reinterpret_cast<const int8_t*>(x);
  const uint8_t* d = x + nb * 32;
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    int q[32];
    q5_values(w[b], q);
    int32_t sumi = 0;
    for (int j = 0; j < 32; ++j) sumi += (q[j] - 16) * qs[32 * b + j];
    acc = std::fma(static_cast<float>(sumi), half_to_float(w[b].d) * ldf(d + 4 * b), acc);
  }
  return acc;
}

float dot_iq4_nl(const uint8_t* wr, const uint8_t* x, int64_t nb) {
  const BlockIQ4_NL* w = reinterpret_cast<const BlockIQ4_NL*>(wr);
  const int8_t* qs = reinterpret_cast<const int8_t*>(x);
  const uint8_t* d = x + nb * 32;
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t sumi = 0;
    for (int j = 0; j < 16; ++j)
      sumi += kIQ4NLValues[w[b].qs[j] & 0x0F] * qs[32 * b + j] + kIQ4NLValues[w[b].qs[j] >> 4] * qs[32 * b + j + 16];
    acc = std::fma(static_cast<float>(sumi), half_to_float(w[b].d) * ldf(d + 4 * b), acc);
  }
  return acc;
}

template <float (*Dot)(const uint8_t*, const uint8_t*, int64_t)>
void gemm_ref_block32(const GemmArgs& a) {
  const int64_t nb = a.n_in / 32;
  for (int64_t t = 0; t < a.n; ++t) {
    const uint8_t* x = a.act + t * a.act_stride;
    float* y = a.y + t * a.ldy;
    for (int64_t r = a.r0; r < a.r1; ++r) {
      float v = Dot(a.w + r * a.row_bytes, x, nb);
      if (a.bias) v += a.bias[r];
      y[r] = v;
    }
  }
}

}  // namespace

bool gemm_pack_group_legacy_ref(GgmlType t, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out) {
  switch (t) {
    case GgmlType::Q4_1: pack_block32<BlockQ4_1, true, false>(w, rb, nr, nb, out, kPackQ4_1); return true;
    case GgmlType::Q5_0: pack_block32<BlockQ5_0, false, true>(w, rb, nr, nb, out, kPackQ5_0); return true;
    case GgmlType::Q5_1: pack_block32<BlockQ5_1, true, true>(w, rb, nr, nb, out, kPackQ5_1); return true;
    case GgmlType::IQ4_NL: pack_block32<BlockIQ4_NL, false, false>(w, rb, nr, nb, out, kPackIQ4_NL); return true;
    default: return false;
  }
}

void gemm_prepare_q8_1(const float* x, int64_t n, uint8_t* out) {
  const int64_t nb = n / 32;
  int8_t* qs = reinterpret_cast<int8_t*>(out);
  uint8_t* d = out + nb * 32;
  uint8_t* s = out + nb * 36;
  constexpr int64_t kChunk = 16;
  BlockQ8_1 tmp[kChunk];
  for (int64_t b0 = 0; b0 < nb; b0 += kChunk) {
    const int64_t m = std::min(kChunk, nb - b0);
    quantize_row(GgmlType::Q8_1, x + b0 * 32, tmp, m * 32);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t b = b0 + i;
      std::memcpy(qs + b * 32, tmp[i].qs, 32);
      const float df = half_to_float(tmp[i].d), sf = half_to_float(tmp[i].s);
      std::memcpy(d + 4 * b, &df, 4);
      std::memcpy(s + 4 * b, &sf, 4);
    }
  }
}

void install_ref_gemm_legacy(KernelTable& t) {
  t.gemm[idx(GgmlType::Q4_1)] = gemm_ref_block32<dot_q4_1>;
  t.gemm[idx(GgmlType::Q5_0)] = gemm_ref_block32<dot_q5_0>;
  t.gemm[idx(GgmlType::Q5_1)] = gemm_ref_block32<dot_q5_1>;
  t.gemm[idx(GgmlType::IQ4_NL)] = gemm_ref_block32<dot_iq4_nl>;
}

}  // namespace llmserve::quant
