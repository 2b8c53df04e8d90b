// CSR sparse matrices (csr.h): the scalar reference, the threaded driver and the format helpers.
#include "csr.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "../isa/isa.h"
#include "../quant/quant.h"

namespace llmserve {

float csr_value(const CsrMatrix& w, int64_t e) {
  return w.f32 ? static_cast<const float*>(w.val)[e] : fp16_to_fp32(static_cast<const uint16_t*>(w.val)[e]);
}

void csr_gemm_ref(const CsrMatrix& w, const float* x, int64_t n, int64_t r0, int64_t r1, const float* bias,
                  bool accumulate, float* y, int64_t ldy) {
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * w.n_in;
    for (int64_t i = r0; i < r1; ++i) {
      float l[8] = {};
      const int32_t p0 = w.ptr[i];
      for (int32_t e = p0; e < w.ptr[i + 1]; ++e)
        l[(e - p0) % 8] = std::fma(csr_value(w, e), xt[w.col[e]], l[(e - p0) % 8]);
      const float s = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
      float& out = y[t * ldy + i];
      out = accumulate ? out + s : s;
      if (bias) out += bias[i];
    }
  }
}

void csr_store_tile(const float* out, int64_t rows, int64_t T, int64_t nt, int64_t r0, const float* bias,
                    bool accumulate, float* y, int64_t ldy) {
  for (int64_t j = 0; j < nt; ++j) {
    float* yj = y + j * ldy + r0;
    for (int64_t r = 0; r < rows; ++r) {
      const float s = out[r * T + j];
      yj[r] = accumulate ? yj[r] + s : s;
      if (bias) yj[r] += bias[r0 + r];
    }
  }
}

void csr_transpose_tile(const float* x, int64_t n_in, int64_t t0, int64_t nt, int64_t T, float* xt) {
  // Columns in blocks so each token row is read in cache-line runs and each xt row written whole.
  constexpr int64_t kBlock = 64;
  for (int64_t c0 = 0; c0 < n_in; c0 += kBlock) {
    const int64_t c1 = std::min(n_in, c0 + kBlock);
    for (int64_t j = 0; j < T; ++j) {
      const float* src = x + (t0 + j) * n_in;
      for (int64_t c = c0; c < c1; ++c) xt[c * T + j] = j < nt ? src[c] : 0.0f;
    }
  }
}

void csr_decode_row(const CsrMatrix& w, int64_t i, float* out) {
  std::fill(out, out + w.n_in, 0.0f);
  for (int32_t e = w.ptr[i]; e < w.ptr[i + 1]; ++e) out[w.col[e]] = csr_value(w, e);
}

void csr_to_dense(const CsrMatrix& w, uint8_t* dst) {
  if (w.f32) {
    auto* d = reinterpret_cast<float*>(dst);
    std::fill(d, d + w.n_in * w.n_out, 0.0f);
    for (int64_t i = 0; i < w.n_out; ++i)
      for (int32_t e = w.ptr[i]; e < w.ptr[i + 1]; ++e) d[i * w.n_in + w.col[e]] = static_cast<const float*>(w.val)[e];
  } else {
    auto* d = reinterpret_cast<uint16_t*>(dst);
    std::fill(d, d + w.n_in * w.n_out, uint16_t{0});
    for (int64_t i = 0; i < w.n_out; ++i)
      for (int32_t e = w.ptr[i]; e < w.ptr[i + 1]; ++e)
        d[i * w.n_in + w.col[e]] = static_cast<const uint16_t*>(w.val)[e];
  }
}

bool csr_valid(const int32_t* ptr, const int32_t* col, int64_t n_out, int64_t n_in, int64_t nnz) {
  if (ptr[0] != 0 || ptr[n_out] != nnz) return false;
  for (int64_t i = 0; i < n_out; ++i) {
    if (ptr[i + 1] < ptr[i] || ptr[i + 1] > nnz) return false;
    for (int32_t e = ptr[i]; e < ptr[i + 1]; ++e)
      if (col[e] < 0 || col[e] >= n_in || (e > ptr[i] && col[e] <= col[e - 1])) return false;
  }
  return true;
}

#if !defined(LLMSERVE_X86)  // csr_avx*.cpp are not built; never called
void csr_gemv_avx2(const CsrMatrix& w, const float* x, int64_t r0, int64_t r1, const float* bias, bool accumulate,
                   float* y) {
  csr_gemm_ref(w, x, 1, r0, r1, bias, accumulate, y, w.n_out);
}
void csr_gemv_avx512(const CsrMatrix& w, const float* x, int64_t r0, int64_t r1, const float* bias, bool accumulate,
                     float* y) {
  csr_gemm_ref(w, x, 1, r0, r1, bias, accumulate, y, w.n_out);
}
void csr_tile8_avx2(const CsrMatrix&, const float*, int64_t, int64_t, int64_t, const float*, bool, float*, int64_t) {}
void csr_tile16_avx512(const CsrMatrix&, const float*, int64_t, int64_t, int64_t, const float*, bool, float*, int64_t) {
}
void csr_tile32_avx512(const CsrMatrix&, const float*, int64_t, int64_t, int64_t, const float*, bool, float*, int64_t) {
}
#endif

void csr_matmul(const CsrMatrix& w, const float* x, int64_t n, const float* bias, bool accumulate, float* y,
                int64_t ldy, ThreadPool& pool) {
  if (n <= 0 || w.n_out <= 0) return;
  constexpr int64_t kRows = kCsrTileRows;  // rows per work item
  constexpr int64_t kMinWork = 1 << 12;    // multiply-adds below which a chunk is not split further
  const int64_t tiles = (w.n_out + kRows - 1) / kRows;
  const int64_t tile_work = std::max<int64_t>(1, w.nnz() * kRows / std::max<int64_t>(1, w.n_out) * n);
  const int64_t grain = std::max<int64_t>(1, kMinWork / tile_work);
  const Isa isa = active_isa();
  const auto rows_of = [&](int64_t tile, int64_t* r0, int64_t* r1) {
    *r0 = tile * kRows;
    *r1 = std::min(w.n_out, *r0 + kRows);
  };
  if (isa == Isa::Scalar) {
    pool.parallel_for(
        tiles,
        [&](int64_t b, int64_t e) {
          for (int64_t tile = b; tile < e; ++tile) {
            int64_t r0, r1;
            rows_of(tile, &r0, &r1);
            csr_gemm_ref(w, x, n, r0, r1, bias, accumulate, y, ldy);
          }
        },
        grain);
    return;
  }
  if (n < kCsrTileMinTokens) {
    const CsrGemvKernel gemv = isa == Isa::Avx512 ? csr_gemv_avx512 : csr_gemv_avx2;
    pool.parallel_for(
        tiles,
        [&](int64_t b, int64_t e) {
          for (int64_t tile = b; tile < e; ++tile) {
            int64_t r0, r1;
            rows_of(tile, &r0, &r1);
            for (int64_t t = 0; t < n; ++t) gemv(w, x + t * w.n_in, r0, r1, bias, accumulate, y + t * ldy);
          }
        },
        grain);
    return;
  }
  // The widest tile the batch fills (the AVX2 8-token tile runs on AVX-512 machines too).
  const int64_t T = isa == Isa::Avx512 && n >= 32 ? 32 : isa == Isa::Avx512 && n >= 16 ? 16 : 8;
  const CsrTileKernel kernel = T == 32 ? csr_tile32_avx512 : T == 16 ? csr_tile16_avx512 : csr_tile8_avx2;
  const int64_t n_tiles = (n + T - 1) / T;
  // The transposed activations, in a grow-only buffer of the calling thread.
  thread_local std::vector<float> xt;
  const size_t tile_floats = static_cast<size_t>(w.n_in * T);
  if (xt.size() < tile_floats * static_cast<size_t>(n_tiles)) xt.resize(tile_floats * static_cast<size_t>(n_tiles));
  float* xtp = xt.data();
  pool.parallel_for(n_tiles, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k)
      csr_transpose_tile(x, w.n_in, k * T, std::min(T, n - k * T), T, xtp + static_cast<size_t>(k) * tile_floats);
  });
  pool.parallel_for(
      tiles,
      [&](int64_t b, int64_t e) {
        // Token tiles inner: the rows' entries stay in L1 across the token tiles.
        for (int64_t tile = b; tile < e; ++tile) {
          int64_t r0, r1;
          rows_of(tile, &r0, &r1);
          for (int64_t k = 0; k < n_tiles; ++k)
            kernel(w, xtp + static_cast<size_t>(k) * tile_floats, std::min(T, n - k * T), r0, r1, bias, accumulate,
                   y + k * T * ldy, ldy);
        }
      },
      grain);
}

}  // namespace llmserve
