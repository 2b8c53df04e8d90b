// 2:4 sparse rows: encoding, the scalar reference GEMM and the threaded driver (sparse24.h).
#include "sparse24.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../isa/isa.h"
#include "../quant/gemm.h"
#include "../quant/quant.h"

namespace llmserve {

size_t sparse24_values_row_bytes(GgmlType vt, int64_t n_in) {
  return vt == GgmlType::Q8_0 ? row_size(GgmlType::Q8_0, n_in / 2) : static_cast<size_t>(n_in / 2) * 2;
}

bool sparse24_split_row(const float* w, int64_t n_in, float* kept, uint8_t* idx) {
  std::fill(idx, idx + sparse24_index_bytes_per_row(n_in), uint8_t{0});
  int64_t k = 0;
  for (int64_t g = 0; g < n_in; g += 4) {
    int pos[2], m = 0;
    for (int i = 0; i < 4; ++i) {
      if (w[g + i] == 0.0f) continue;
      if (m == 2) return false;
      pos[m++] = i;
    }
    // Fewer than 2 non-zeros: the first zero positions not taken, so positions stay ascending.
    for (int i = 0; i < 4 && m < 2; ++i) {
      if (w[g + i] != 0.0f || (m == 1 && pos[0] == i)) continue;
      pos[m++] = i;
    }
    if (pos[0] > pos[1]) std::swap(pos[0], pos[1]);
    for (int j = 0; j < 2; ++j, ++k) {
      kept[k] = w[g + pos[j]];
      idx[k / 4] = static_cast<uint8_t>(idx[k / 4] | (pos[j] << (2 * (k % 4))));
    }
  }
  return true;
}

bool sparse24_encode_row(GgmlType vt, const float* w, int64_t n_in, uint8_t* vals, uint8_t* idx, float* scratch) {
  if (!sparse24_split_row(w, n_in, scratch, idx)) return false;
  const int64_t m = sparse24_values_per_row(n_in);
  if (vt == GgmlType::Q8_0) {
    quantize_row_weights(GgmlType::Q8_0, scratch, vals, m);
  } else {
    for (int64_t k = 0; k < m; ++k) {
      const uint16_t h = fp32_to_fp16(scratch[k]);
      std::memcpy(vals + 2 * k, &h, 2);
    }
  }
  return true;
}

float sparse24_value(GgmlType vt, const uint8_t* vals, int64_t k) {
  if (vt == GgmlType::Q8_0) {
    // ggml's block_q8_0: f16 scale d, then 32 int8.
    const uint8_t* b = vals + (k / 32) * 34;
    uint16_t d;
    std::memcpy(&d, b, 2);
    return fp16_to_fp32(d) * static_cast<float>(static_cast<int8_t>(b[2 + k % 32]));
  }
  uint16_t h;
  std::memcpy(&h, vals + 2 * k, 2);
  return fp16_to_fp32(h);
}

void sparse24_decode_row(GgmlType vt, const uint8_t* vals, const uint8_t* idx, int64_t n_in, float* w) {
  std::fill(w, w + n_in, 0.0f);
  for (int64_t k = 0; k < n_in / 2; ++k)
    w[4 * (k / 2) + ((idx[k / 4] >> (2 * (k % 4))) & 3)] = sparse24_value(vt, vals, k);
}

float sparse24_finish_lanes(float* s, GgmlType vt, const uint8_t* vals, const uint8_t* idx, int64_t k0, int64_t m,
                            const float* x) {
  for (int64_t k = k0; k < m; ++k) {
    const int64_t col = 4 * (k / 2) + ((idx[k / 4] >> (2 * (k % 4))) & 3);
    s[k % 16] = std::fma(sparse24_value(vt, vals, k), x[col], s[k % 16]);
  }
  return sparse24_reduce_lanes(s);
}

float sparse24_reduce_lanes(float* s) {
  for (int l = 0; l < 8; ++l) s[l] += s[l + 8];
  return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

void sparse24_q8_gemm_ref(const Sparse24Matrix& w, const uint8_t* act, size_t act_stride, int64_t n, int64_t r0,
                          int64_t r1, const float* bias, float* y, int64_t ldy) {
  const int64_t m = sparse24_values_per_row(w.n_in), ib = sparse24_index_bytes_per_row(w.n_in);
  const size_t vb = sparse24_values_row_bytes(GgmlType::Q8_0, w.n_in);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* v = w.vals + static_cast<size_t>(r) * vb;
    const uint8_t* id = w.idx + r * ib;
    for (int64_t t = 0; t < n; ++t) {
      const auto* xq = reinterpret_cast<const int8_t*>(act + static_cast<size_t>(t) * act_stride);
      const auto* xd = reinterpret_cast<const float*>(act + static_cast<size_t>(t) * act_stride + w.n_in);
      float s[16] = {};
      for (int64_t k0 = 0; k0 < m; k0 += 64) {
        for (int l = 0; l < 16 && k0 + 4 * l < m; ++l) {
          const int64_t k = k0 + 4 * l;
          const uint8_t* b = v + (k / 32) * 34;  // block_q8_0: f16 d, 32 int8
          int32_t isum = 0;
          for (int64_t j = k; j < k + 4; ++j) {
            const int64_t col = 4 * (j / 2) + ((id[j / 4] >> (2 * (j % 4))) & 3);
            isum += static_cast<int32_t>(static_cast<int8_t>(b[2 + j % 32])) * xq[col];
          }
          uint16_t d;
          std::memcpy(&d, b, 2);
          s[l] = std::fma(static_cast<float>(isum), fp16_to_fp32(d) * xd[k / 16], s[l]);
        }
      }
      float acc = sparse24_reduce_lanes(s);
      if (bias) acc += bias[r];
      y[t * ldy + r] = acc;
    }
  }
}

void sparse24_gemm_ref(const Sparse24Matrix& w, const float* x, int64_t n, int64_t r0, int64_t r1, const float* bias,
                       float* y, int64_t ldy) {
  const int64_t m = sparse24_values_per_row(w.n_in), ib = sparse24_index_bytes_per_row(w.n_in);
  const size_t vb = sparse24_values_row_bytes(w.vtype, w.n_in);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* v = w.vals + static_cast<size_t>(r) * vb;
    const uint8_t* id = w.idx + r * ib;
    for (int64_t t = 0; t < n; ++t) {
      const float* xt = x + t * w.n_in;
      float s[16] = {};
      float acc = sparse24_finish_lanes(s, w.vtype, v, id, 0, m, xt);
      if (bias) acc += bias[r];
      y[t * ldy + r] = acc;
    }
  }
}

Sparse24Q8Kernel sparse24_q8_kernel() {
#if defined(LLMSERVE_X86)
  if (active_isa() == Isa::Avx512) return cpu_has_avx512vbmi() ? sparse24_q8_gemm_avx512vbmi : sparse24_q8_gemm_avx512;
  if (active_isa() == Isa::Avx2) return sparse24_q8_gemm_avx2;
#endif
  return sparse24_q8_gemm_ref;
}

Sparse24Kernel sparse24_kernel() {
#if defined(LLMSERVE_X86)
  if (active_isa() == Isa::Avx512) return sparse24_gemm_avx512;
  if (active_isa() == Isa::Avx2) return sparse24_gemm_avx2;
#endif
  return sparse24_gemm_ref;
}

#if !defined(LLMSERVE_X86)  // sparse24_*avx*.cpp are not built; never called
void sparse24_q8_gemm_avx2(const Sparse24Matrix& w, const uint8_t* act, size_t act_stride, int64_t n, int64_t r0,
                           int64_t r1, const float* bias, float* y, int64_t ldy) {
  sparse24_q8_gemm_ref(w, act, act_stride, n, r0, r1, bias, y, ldy);
}
void sparse24_q8_gemm_avx512(const Sparse24Matrix& w, const uint8_t* act, size_t act_stride, int64_t n, int64_t r0,
                             int64_t r1, const float* bias, float* y, int64_t ldy) {
  sparse24_q8_gemm_ref(w, act, act_stride, n, r0, r1, bias, y, ldy);
}
void sparse24_q8_gemm_avx512vbmi(const Sparse24Matrix& w, const uint8_t* act, size_t act_stride, int64_t n, int64_t r0,
                                 int64_t r1, const float* bias, float* y, int64_t ldy) {
  sparse24_q8_gemm_ref(w, act, act_stride, n, r0, r1, bias, y, ldy);
}
void sparse24_gemm_avx2(const Sparse24Matrix& w, const float* x, int64_t n, int64_t r0, int64_t r1, const float* bias,
                        float* y, int64_t ldy) {
  sparse24_gemm_ref(w, x, n, r0, r1, bias, y, ldy);
}
void sparse24_gemm_avx512(const Sparse24Matrix& w, const float* x, int64_t n, int64_t r0, int64_t r1, const float* bias,
                          float* y, int64_t ldy) {
  sparse24_gemm_ref(w, x, n, r0, r1, bias, y, ldy);
}
#endif

void sparse24_matmul(const Sparse24Matrix& w, const float* x, int64_t n, const float* bias, float* y, int64_t ldy,
                     ThreadPool& pool) {
  constexpr int64_t kRows = 16;          // rows per work item: their values stay in cache across tokens
  constexpr int64_t kMinWork = 1 << 16;  // multiply-adds below which a chunk is not split further
  // Q8_0 values run on int8 activations (matmul shares them with the call's dense q8_0 matrices;
  // alone, they are prepared here).
  std::vector<uint8_t> act;
  size_t stride = 0;
  if (w.vtype == GgmlType::Q8_0) {
    stride = gemm_act_row_bytes(GgmlType::Q8_0, w.n_in);
    act.resize(stride * static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t)
      gemm_prepare_act(GgmlType::Q8_0, x + t * w.n_in, w.n_in, act.data() + static_cast<size_t>(t) * stride);
  }
  const Sparse24Kernel kernel = sparse24_kernel();
  const Sparse24Q8Kernel q8 = sparse24_q8_kernel();
  const int64_t tiles = (w.n_out + kRows - 1) / kRows;
  const int64_t tile_work = kRows * (w.n_in / 2) * n;
  pool.parallel_for(
      tiles,
      [&](int64_t b, int64_t e) {
        // Tokens outer within a tile would reread the tile's values per token from L1: fine; the
        // x row of a token stays in L1 across the tile's rows.
        for (int64_t tile = b; tile < e; ++tile) {
          const int64_t r0 = tile * kRows, r1 = std::min(w.n_out, r0 + kRows);
          if (w.vtype == GgmlType::Q8_0) q8(w, act.data(), stride, n, r0, r1, bias, y, ldy);
          else kernel(w, x, n, r0, r1, bias, y, ldy);
        }
      },
      std::max<int64_t>(1, kMinWork / std::max<int64_t>(1, tile_work)));
}

}  // namespace llmserve
