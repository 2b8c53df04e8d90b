// 2:4 sparse rows: encoding, the scalar reference GEMM and the threaded driver (sparse24.h).
#include "sparse24.h"

#include <algorithm>
#include <cmath>

#include "../isa/isa.h"
#include "../quant/quant.h"

namespace llmserve {

bool sparse24_encode_row(const float* w, int64_t n_in, uint16_t* vals, uint8_t* idx) {
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
      vals[k] = fp32_to_fp16(w[g + pos[j]]);
      idx[k / 4] = static_cast<uint8_t>(idx[k / 4] | (pos[j] << (2 * (k % 4))));
    }
  }
  return true;
}

void sparse24_decode_row(const uint16_t* vals, const uint8_t* idx, int64_t n_in, float* w) {
  std::fill(w, w + n_in, 0.0f);
  for (int64_t k = 0; k < n_in / 2; ++k) w[4 * (k / 2) + ((idx[k / 4] >> (2 * (k % 4))) & 3)] = fp16_to_fp32(vals[k]);
}

float sparse24_finish_lanes(float* s, const uint16_t* vals, const uint8_t* idx, int64_t k0, int64_t m, const float* x) {
  for (int64_t k = k0; k < m; ++k) {
    const int64_t col = 4 * (k / 2) + ((idx[k / 4] >> (2 * (k % 4))) & 3);
    s[k % 16] = std::fma(fp16_to_fp32(vals[k]), x[col], s[k % 16]);
  }
  for (int l = 0; l < 8; ++l) s[l] += s[l + 8];
  return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

void sparse24_gemm_ref(const Sparse24Matrix& w, const float* x, int64_t n, int64_t r0, int64_t r1, const float* bias,
                       float* y, int64_t ldy) {
  const int64_t m = sparse24_values_per_row(w.n_in), ib = sparse24_index_bytes_per_row(w.n_in);
  for (int64_t r = r0; r < r1; ++r) {
    const uint16_t* v = w.vals + r * m;
    const uint8_t* id = w.idx + r * ib;
    for (int64_t t = 0; t < n; ++t) {
      const float* xt = x + t * w.n_in;
      float s[16] = {};
      float acc = sparse24_finish_lanes(s, v, id, 0, m, xt);
      if (bias) acc += bias[r];
      y[t * ldy + r] = acc;
    }
  }
}

Sparse24Kernel sparse24_kernel() {
#if defined(LLMSERVE_X86)
  if (active_isa() == Isa::Avx512) return sparse24_gemm_avx512;
  if (active_isa() == Isa::Avx2) return sparse24_gemm_avx2;
#endif
  return sparse24_gemm_ref;
}

#if !defined(LLMSERVE_X86)  // sparse24_avx*.cpp are not built; never called
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
  const Sparse24Kernel kernel = sparse24_kernel();
  const int64_t tiles = (w.n_out + kRows - 1) / kRows;
  const int64_t tile_work = kRows * (w.n_in / 2) * n;
  pool.parallel_for(
      tiles,
      [&](int64_t b, int64_t e) {
        // Tokens outer within a tile would reread the tile's values per token from L1: fine; the
        // x row of a token stays in L1 across the tile's rows.
        for (int64_t tile = b; tile < e; ++tile) {
          const int64_t r0 = tile * kRows, r1 = std::min(w.n_out, r0 + kRows);
          kernel(w, x, n, r0, r1, bias, y, ldy);
        }
      },
      std::max<int64_t>(1, kMinWork / std::max<int64_t>(1, tile_work)));
}

}  // namespace llmserve
