// GEMM plumbing shared by every ISA (activation preparation, weight packing, the per-thread pack
// buffer) and the portable scalar GEMM, which spells out the canonical per-output formulas of
// quant/gemm.h: exact integer block sums, then per block acc = fma(float(sumi), d_w * d_x, acc) in
// block order (Q4_K: a second accumulator for the mins).
// The SIMD kernels compute the same sequences lane by lane, so they agree with this file bit for
// bit on the quantized types.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "os/os.h"
#include "quant/gemm_impl.h"

namespace llmserve {
namespace quant {
namespace {

size_t align_act(size_t v) { return (v + kGemmActAlign - 1) / kGemmActAlign * kGemmActAlign; }

// ----------------------------------------------------------------------------- activations

// x: [n] f32 -> Q8_0 prepared row (see gemm_impl.h).
void prepare_q8_0(const float* x, int64_t n, uint8_t* out) {
  const int64_t nb = n / kQK8_0;
  int8_t* qs = reinterpret_cast<int8_t*>(out);
  uint8_t* d = out + nb * 32;
  uint8_t* c4 = out + nb * 36;
  uint8_t* c128 = out + nb * 40;
  constexpr int64_t kChunk = 16;
  BlockQ8_0 tmp[kChunk];
  for (int64_t b0 = 0; b0 < nb; b0 += kChunk) {
    const int64_t m = std::min(kChunk, nb - b0);
    quantize_row(GgmlType::Q8_0, x + b0 * kQK8_0, tmp, m * kQK8_0);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t b = b0 + i;
      std::memcpy(qs + b * 32, tmp[i].qs, 32);
      int32_t s = 0;
      for (int j = 0; j < 32; ++j) s += tmp[i].qs[j];
      const float df = half_to_float(tmp[i].d);
      const int32_t s4 = -8 * s, s128 = -128 * s;
      std::memcpy(d + 4 * b, &df, 4);
      std::memcpy(c4 + 4 * b, &s4, 4);
      std::memcpy(c128 + 4 * b, &s128, 4);
    }
  }
}

// x: [n] f32 -> [n] f32 rounded through the 16-bit type vt (F16 or BF16).
void prepare_round16(GgmlType vt, const float* x, int64_t n, float* out) {
  constexpr int64_t kChunk = 256;
  uint16_t tmp[kChunk];
  for (int64_t i = 0; i < n; i += kChunk) {
    const int64_t m = std::min(kChunk, n - i);
    quantize_row(vt, x + i, tmp, m);
    dequantize_row(vt, tmp, out + i, m);
  }
}

// ----------------------------------------------------------------------------- packing

void pack_q4_0(const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out) {
  for (int64_t b = 0; b < nb; ++b, out += kPackQ4_0) {
    std::memset(out, 0, kPackQ4_0);
    for (int r = 0; r < nr; ++r) {
      const BlockQ4_0* src = reinterpret_cast<const BlockQ4_0*>(w + r * rb) + b;
      std::memcpy(out + 2 * r, &src->d, 2);
      for (int j = 0; j < 4; ++j) std::memcpy(out + 32 + 64 * j + 4 * r, src->qs + 4 * j, 4);
    }
  }
}

void pack_q8_0(const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out) {
  for (int64_t b = 0; b < nb; ++b, out += kPackQ8_0) {
    std::memset(out, 0, 32);
    std::memset(out + 32, 0x80, kPackQ8_0 - 32);  // missing rows: w = 0
    for (int r = 0; r < nr; ++r) {
      const BlockQ8_0* src = reinterpret_cast<const BlockQ8_0*>(w + r * rb) + b;
      std::memcpy(out + 2 * r, &src->d, 2);
      for (int j = 0; j < 8; ++j)
        for (int k = 0; k < 4; ++k) out[32 + 64 * j + 4 * r + k] = static_cast<uint8_t>(src->qs[4 * j + k]) ^ 0x80;
    }
  }
}

void pack_q4_K(const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out) {
  for (int64_t b = 0; b < nb; ++b, out += kPackQ4_K) {
    std::memset(out, 0, kPackQ4_K);
    for (int r = 0; r < nr; ++r) {
      const BlockQ4_K* src = reinterpret_cast<const BlockQ4_K*>(w + r * rb) + b;
      pack_q4_K_layout_row(src, r, out);
    }
  }
}

void pack_q6_K(const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out) {
  for (int64_t b = 0; b < nb; ++b, out += kPackQ6_K) {
    std::memset(out, 0, kPackQ6_K);
    for (int r = 0; r < nr; ++r) {
      const BlockQ6_K* src = reinterpret_cast<const BlockQ6_K*>(w + r * rb) + b;
      std::memcpy(out + 2 * r, &src->d, 2);
      for (int k = 0; k < 8; ++k) {
        out[32 + 32 * k + 2 * r] = static_cast<uint8_t>(src->scales[2 * k]);
        out[32 + 32 * k + 2 * r + 1] = static_cast<uint8_t>(src->scales[2 * k + 1]);
      }
      for (int g = 0; g < 32; ++g) std::memcpy(out + 288 + 64 * g + 4 * r, src->ql + 4 * g, 4);
      for (int g = 0; g < 16; ++g) std::memcpy(out + 2336 + 64 * g + 4 * r, src->qh + 4 * g, 4);
    }
  }
}

// ----------------------------------------------------------------------------- scalar GEMM

// One output of each quantized type: row `wr` (raw blocks) against prepared activation row `x`.
float dot_q4_0(const uint8_t* wr, const uint8_t* x, int64_t nb) {
  const BlockQ4_0* w = reinterpret_cast<const BlockQ4_0*>(wr);
  const int8_t* qs = reinterpret_cast<const int8_t*>(x);
  const uint8_t* d = x + nb * 32;
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t sumi = 0;
    for (int j = 0; j < 16; ++j) {
      sumi += ((w[b].qs[j] & 0x0F) - 8) * qs[32 * b + j];
      sumi += ((w[b].qs[j] >> 4) - 8) * qs[32 * b + j + 16];
    }
    acc = std::fma(static_cast<float>(sumi), half_to_float(w[b].d) * ldf(d + 4 * b), acc);
  }
  return acc;
}

// Q8_0 has Q4_0's shape: one exact sum per block, one fma. (Not ggml's vec_dot_q8_0_q8_0 order, whose
// 8 lane accumulators cost 8 converts + 8 fmas per block; parity with llama.cpp is within rounding.)
float dot_q8_0(const uint8_t* wr, const uint8_t* x, int64_t nb) {
  const BlockQ8_0* w = reinterpret_cast<const BlockQ8_0*>(wr);
  const int8_t* qs = reinterpret_cast<const int8_t*>(x);
  const uint8_t* d = x + nb * 32;
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t sumi = 0;
    for (int j = 0; j < 32; ++j) sumi += w[b].qs[j] * qs[32 * b + j];
    acc = std::fma(static_cast<float>(sumi), half_to_float(w[b].d) * ldf(d + 4 * b), acc);
  }
  return acc;
}

// Q4_K keeps the mins term in its own accumulator and subtracts at the end, as llama.cpp's repacked
// (q4_K_8x8) kernels do.
float dot_q4_K(const uint8_t* wr, const uint8_t* x, int64_t nb) {
  const BlockQ4_K* w = reinterpret_cast<const BlockQ4_K*>(wr);
  const BlockQ8_K* a = reinterpret_cast<const BlockQ8_K*>(x);
  float acc = 0.0f, acc_min = 0.0f;
  for (int64_t i = 0; i < nb; ++i) {
    uint8_t sm[16];
    unpack_q4_K_scales(w[i].scales, sm);
    int32_t sumi = 0, summ = 0;
    for (int j = 0; j < 8; ++j) {
      const uint8_t* q4 = w[i].qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      const int8_t* q8 = a[i].qs + 32 * j;
      int32_t dot = 0;
      for (int l = 0; l < 32; ++l) dot += ((q4[l] >> shift) & 0x0F) * q8[l];
      sumi += sm[j] * dot;
      summ += sm[8 + j] * (a[i].bsums[2 * j] + a[i].bsums[2 * j + 1]);
    }
    const float dx = a[i].d;
    acc = std::fma(static_cast<float>(sumi), half_to_float(w[i].d) * dx, acc);
    acc_min = std::fma(static_cast<float>(summ), half_to_float(w[i].dmin) * dx, acc_min);
  }
  return acc - acc_min;
}

float dot_q6_K(const uint8_t* wr, const uint8_t* x, int64_t nb) {
  const BlockQ6_K* w = reinterpret_cast<const BlockQ6_K*>(wr);
  const BlockQ8_K* a = reinterpret_cast<const BlockQ8_K*>(x);
  float acc = 0.0f;
  for (int64_t i = 0; i < nb; ++i) {
    int8_t q[kQK_K];
    unpack_q6_K(w[i], q);
    int32_t sumi = 0;
    for (int g = 0; g < 16; ++g) {
      int32_t s = 0;
      for (int l = 0; l < 16; ++l) s += q[16 * g + l] * a[i].qs[16 * g + l];
      sumi += w[i].scales[g] * s;
    }
    acc = std::fma(static_cast<float>(sumi), half_to_float(w[i].d) * a[i].d, acc);
  }
  return acc;
}

// Float weights: f32 products (exact for f16/bf16 operands) summed in double, as vec_dot_ref.
template <typename LoadW>
float dot_float(const uint8_t* wr, const uint8_t* x, int64_t n, LoadW load) {
  const float* xf = reinterpret_cast<const float*>(x);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(load(wr, i) * xf[i]);
  return static_cast<float>(s);
}

template <typename Dot>
void gemm_scalar(const GemmArgs& a, Dot dot) {
  for (int64_t t = 0; t < a.n; ++t) {
    const uint8_t* x = a.act + t * a.act_stride;
    float* y = a.y + t * a.ldy;
    for (int64_t r = a.r0; r < a.r1; ++r) {
      float v = dot(a.w + r * a.row_bytes, x);
      if (a.bias) v += a.bias[r];
      y[r] = v;
    }
  }
}

// Row r of a packed Q8_0 matrix (pack_q8_0's records, 16 rows per group) back as q8_0 blocks.
void unpack_q8_0_row(const uint8_t* packed, int64_t r, int64_t nb, BlockQ8_0* out) {
  const uint8_t* rec = packed + static_cast<size_t>(r / kGemmGroupRows) * kPackQ8_0 * static_cast<size_t>(nb);
  const int lane = static_cast<int>(r % kGemmGroupRows);
  for (int64_t b = 0; b < nb; ++b, rec += kPackQ8_0) {
    std::memcpy(&out[b].d, rec + 2 * lane, 2);
    for (int j = 0; j < 8; ++j)
      for (int k = 0; k < 4; ++k) out[b].qs[4 * j + k] = static_cast<int8_t>(rec[32 + 64 * j + 4 * lane + k] ^ 0x80);
  }
}

// Row r of a packed Q4_0 matrix (pack_q4_0's records) back as q4_0 blocks.
void unpack_q4_0_row(const uint8_t* packed, int64_t r, int64_t nb, BlockQ4_0* out) {
  const uint8_t* rec = packed + static_cast<size_t>(r / kGemmGroupRows) * kPackQ4_0 * static_cast<size_t>(nb);
  const int lane = static_cast<int>(r % kGemmGroupRows);
  for (int64_t b = 0; b < nb; ++b, rec += kPackQ4_0) {
    std::memcpy(&out[b].d, rec + 2 * lane, 2);
    for (int j = 0; j < 4; ++j) std::memcpy(out[b].qs + 4 * j, rec + 32 + 64 * j + 4 * lane, 4);
  }
}

// gemm_scalar over raw rows, or, with only the packed copy (gemm.h allows it for Q8_0 and Q4_0),
// each row unpacked once, then the same dot.
template <class Block, void (*Unpack)(const uint8_t*, int64_t, int64_t, Block*),
          float (*Dot)(const uint8_t*, const uint8_t*, int64_t)>
void gemm_ref_raw_or_packed(const GemmArgs& a) {
  const int64_t nb = a.n_in / 32;
  if (a.w) {
    gemm_scalar(a, [nb](const uint8_t* w, const uint8_t* x) { return Dot(w, x, nb); });
    return;
  }
  std::vector<Block> row(static_cast<size_t>(nb));
  for (int64_t r = a.r0; r < a.r1; ++r) {
    Unpack(a.packed, r, nb, row.data());
    for (int64_t t = 0; t < a.n; ++t) {
      float v = Dot(reinterpret_cast<const uint8_t*>(row.data()), a.act + t * a.act_stride, nb);
      if (a.bias) v += a.bias[r];
      a.y[t * a.ldy + r] = v;
    }
  }
}
void gemm_ref_q4_0(const GemmArgs& a) { gemm_ref_raw_or_packed<BlockQ4_0, unpack_q4_0_row, dot_q4_0>(a); }
void gemm_ref_q8_0(const GemmArgs& a) { gemm_ref_raw_or_packed<BlockQ8_0, unpack_q8_0_row, dot_q8_0>(a); }
void gemm_ref_q4_K(const GemmArgs& a) {
  const int64_t nb = a.n_in / kQK_K;
  gemm_scalar(a, [nb](const uint8_t* w, const uint8_t* x) { return dot_q4_K(w, x, nb); });
}
void gemm_ref_q6_K(const GemmArgs& a) {
  const int64_t nb = a.n_in / kQK_K;
  gemm_scalar(a, [nb](const uint8_t* w, const uint8_t* x) { return dot_q6_K(w, x, nb); });
}
void gemm_ref_f32(const GemmArgs& a) {
  const int64_t n = a.n_in;
  gemm_scalar(a, [n](const uint8_t* w, const uint8_t* x) {
    return dot_float(w, x, n, [](const uint8_t* p, int64_t i) { return ldf(p + 4 * i); });
  });
}
void gemm_ref_f16(const GemmArgs& a) {
  const int64_t n = a.n_in;
  gemm_scalar(a, [n](const uint8_t* w, const uint8_t* x) {
    return dot_float(w, x, n, [](const uint8_t* p, int64_t i) { return half_to_float(ld16(p + 2 * i)); });
  });
}
void gemm_ref_bf16(const GemmArgs& a) {
  const int64_t n = a.n_in;
  gemm_scalar(a, [n](const uint8_t* w, const uint8_t* x) {
    return dot_float(w, x, n, [](const uint8_t* p, int64_t i) { return bf16_bits_to_float(ld16(p + 2 * i)); });
  });
}

struct ThreadBuffer {
  uint8_t* p = nullptr;
  size_t cap = 0;
  ~ThreadBuffer() { os::aligned_free(p); }
};

}  // namespace

int64_t gemm_blocks(GgmlType t, int64_t n_in) {
  const int64_t bs = type_traits(t).block_size;
  return bs > 0 ? n_in / bs : 0;
}

size_t gemm_pack_record_bytes(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return kPackQ4_0;
    case GgmlType::Q8_0: return kPackQ8_0;
    case GgmlType::Q4_K: return kPackQ4_K;
    case GgmlType::Q6_K: return kPackQ6_K;
    case GgmlType::IQ4_NL: return kPackIQ4_NL;
    case GgmlType::Q4_1: return kPackQ4_1;
    case GgmlType::Q5_0: return kPackQ5_0;
    case GgmlType::Q5_1: return kPackQ5_1;
    case GgmlType::Q5_K: return kPackQ5_K;
    case GgmlType::Q2_K: return kPackQ2_K;
    case GgmlType::Q3_K: return kPackQ3_K;
    case GgmlType::IQ4_XS: return kPackIQ4_XS;
    default: return 0;
  }
}

void gemm_pack_group_ref(GgmlType t, const uint8_t* w, size_t row_bytes, int n_rows, int64_t nb, uint8_t* out) {
  switch (t) {
    case GgmlType::Q4_0: pack_q4_0(w, row_bytes, n_rows, nb, out); break;
    case GgmlType::Q8_0: pack_q8_0(w, row_bytes, n_rows, nb, out); break;
    case GgmlType::Q4_K: pack_q4_K(w, row_bytes, n_rows, nb, out); break;
    case GgmlType::Q6_K: pack_q6_K(w, row_bytes, n_rows, nb, out); break;
    default:
      if (!gemm_pack_group_legacy_ref(t, w, row_bytes, n_rows, nb, out))
        gemm_pack_group_kquants_ref(t, w, row_bytes, n_rows, nb, out);
      break;
  }
}

uint8_t* gemm_thread_buffer(size_t bytes, int slot) {
  thread_local ThreadBuffer bufs[2];
  ThreadBuffer& buf = bufs[slot & 1];
  if (buf.cap < bytes) {
    os::aligned_free(buf.p);
    buf.p = nullptr;
    buf.cap = 0;  // a failed allocation must not leave the old capacity behind
    const size_t cap = (bytes + 4095) / 4096 * 4096;
    buf.p = static_cast<uint8_t*>(os::aligned_alloc(64, cap));
    if (!buf.p) throw std::bad_alloc();
    buf.cap = cap;
  }
  return buf.p;
}

void install_ref_gemm(KernelTable& t) {
  t.pack_group = gemm_pack_group_ref;
  t.gemm[idx(GgmlType::F32)] = gemm_ref_f32;
  t.gemm[idx(GgmlType::F16)] = gemm_ref_f16;
  t.gemm[idx(GgmlType::BF16)] = gemm_ref_bf16;
  t.gemm[idx(GgmlType::Q8_0)] = gemm_ref_q8_0;
  t.gemm[idx(GgmlType::Q4_0)] = gemm_ref_q4_0;
  t.gemm[idx(GgmlType::Q4_K)] = gemm_ref_q4_K;
  t.gemm[idx(GgmlType::Q6_K)] = gemm_ref_q6_K;
  install_ref_gemm_legacy(t);
  install_ref_gemm_kquants(t);
}

}  // namespace quant

bool gemm_supported(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
    case GgmlType::Q4_K:
    case GgmlType::Q6_K:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::IQ4_NL:
    case GgmlType::Q5_K:
    case GgmlType::Q3_K:
    case GgmlType::Q2_K:
    case GgmlType::IQ4_XS: return true;
    default: return false;
  }
}

size_t gemm_act_row_bytes(GgmlType wtype, int64_t n_in) {
  if (!gemm_supported(wtype) || n_in <= 0) return 0;
  const GgmlType vt = type_traits(wtype).vec_dot_type;
  const int64_t bs = type_traits(vt).block_size;
  if (n_in % bs != 0) return 0;
  switch (vt) {
    case GgmlType::Q8_0: return quant::align_act(static_cast<size_t>(n_in / 32) * quant::kActQ8_0Block);
    case GgmlType::Q8_1: return quant::align_act(static_cast<size_t>(n_in / 32) * quant::kActQ8_1Block);
    case GgmlType::Q8_K: return quant::align_act(static_cast<size_t>(n_in / 256) * quant::kActQ8_KBlock);
    default: return quant::align_act(static_cast<size_t>(n_in) * 4);
  }
}

void gemm_prepare_act(GgmlType wtype, const float* x, int64_t n_in, uint8_t* out) {
  const size_t bytes = gemm_act_row_bytes(wtype, n_in);
  if (bytes == 0) return;
  const GgmlType vt = type_traits(wtype).vec_dot_type;
  size_t used = 0;
  switch (vt) {
    case GgmlType::Q8_0:
      quant::prepare_q8_0(x, n_in, out);
      used = static_cast<size_t>(n_in / 32) * quant::kActQ8_0Block;
      break;
    case GgmlType::Q8_1:
      quant::gemm_prepare_q8_1(x, n_in, out);
      used = static_cast<size_t>(n_in / 32) * quant::kActQ8_1Block;
      break;
    case GgmlType::Q8_K: {
      quantize_row(vt, x, out, n_in);
      const int64_t nb = n_in / 256;
      const auto* b = reinterpret_cast<const quant::BlockQ8_K*>(out);
      uint8_t* s32 = out + static_cast<size_t>(nb) * quant::kQ8KBlock;
      for (int64_t i = 0; i < nb; ++i)
        for (int j = 0; j < 8; ++j) {
          const int16_t v = static_cast<int16_t>(b[i].bsums[2 * j] + b[i].bsums[2 * j + 1]);
          std::memcpy(s32 + 16 * i + 2 * j, &v, 2);
        }
      used = static_cast<size_t>(nb) * quant::kActQ8_KBlock;
      break;
    }
    case GgmlType::F16:
    case GgmlType::BF16:
      quant::prepare_round16(vt, x, n_in, reinterpret_cast<float*>(out));
      used = static_cast<size_t>(n_in) * 4;
      break;
    default:
      std::memcpy(out, x, static_cast<size_t>(n_in) * 4);
      used = static_cast<size_t>(n_in) * 4;
      break;
  }
  std::memset(out + used, 0, bytes - used);
}

bool gemm_packable(GgmlType t) { return quant::gemm_pack_record_bytes(t) != 0; }

size_t gemm_packed_bytes(GgmlType t, int64_t n_in, int64_t n_out) {
  const size_t rec = quant::gemm_pack_record_bytes(t);
  if (rec == 0 || n_in <= 0 || n_out <= 0 || n_in % type_traits(t).block_size != 0) return 0;
  const int64_t groups = (n_out + kGemmGroupRows - 1) / kGemmGroupRows;
  return rec * static_cast<size_t>(quant::gemm_blocks(t, n_in)) * static_cast<size_t>(groups);
}

void gemm_pack(GgmlType t, const uint8_t* w, size_t row_bytes, int64_t n_in, int64_t n_out, uint8_t* out) {
  const size_t rec = quant::gemm_pack_record_bytes(t);
  if (gemm_packed_bytes(t, n_in, n_out) == 0) return;
  const int64_t nb = quant::gemm_blocks(t, n_in);
  const size_t group_bytes = rec * static_cast<size_t>(nb);
  for (int64_t r = 0, g = 0; r < n_out; r += kGemmGroupRows, ++g) {
    const int nr = static_cast<int>(std::min<int64_t>(kGemmGroupRows, n_out - r));
    quant::gemm_pack_group(t, w + r * row_bytes, row_bytes, nr, nb, out + g * group_bytes);
  }
}

}  // namespace llmserve
