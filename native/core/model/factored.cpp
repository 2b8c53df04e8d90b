// Factored matrices (factored.h): the LoRA low-rank kernels for U·(V·x), a CSR pass for S.
#include "factored.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "../quant/quant.h"
#include "lowrank.h"

namespace llmserve {
namespace {

LowRankFactors factors(const FactoredMatrix& w) {
  LowRankFactors f;
  f.a = w.v;
  f.bt = w.ut;
  f.type = w.f16 ? LowRankType::F16 : LowRankType::F32;
  f.r = w.r;
  f.scale = 1.0f;
  return f;
}

}  // namespace

void csr_add_rows(const FactoredMatrix& w, const float* x, int64_t n, int64_t r0, int64_t r1, const float* bias,
                  float* y, int64_t ldy) {
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * w.n_in;
    float* yt = y + t * ldy;
    for (int64_t i = r0; i < r1; ++i) {
      float acc = 0.0f;
      if (w.sp_ptr)
        for (int32_t e = w.sp_ptr[i]; e < w.sp_ptr[i + 1]; ++e)
          acc = std::fma(fp16_to_fp32(w.sp_val[e]), xt[w.sp_col[e]], acc);
      yt[i] += acc;
      if (bias) yt[i] += bias[i];
    }
  }
}

void factored_matmul(const FactoredMatrix& w, const float* x, int64_t n, const float* bias, float* y, int64_t ldy,
                     ThreadPool& pool) {
  if (n <= 0) return;
  for (int64_t t = 0; t < n; ++t) std::fill(y + t * ldy, y + t * ldy + w.n_out, 0.0f);
  thread_local std::vector<int64_t> rows;
  rows.resize(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) rows[static_cast<size_t>(t)] = t;
  LowRankGroup g;
  g.f = factors(w);
  g.rows = rows.data();
  g.n_rows = n;
  lowrank_apply(&g, 1, x, w.n_in, y, ldy, w.n_out, pool);
  if (!w.sp_ptr && !bias) return;
  constexpr int64_t kRows = 64;
  const int64_t tiles = (w.n_out + kRows - 1) / kRows;
  pool.parallel_for(tiles, [&](int64_t b, int64_t e) {
    csr_add_rows(w, x, n, b * kRows, std::min(w.n_out, e * kRows), bias, y, ldy);
  });
}

void factored_matmul_ref(const FactoredMatrix& w, const float* x, int64_t n, const float* bias, float* y, int64_t ldy) {
  const LowRankFactors f = factors(w);
  std::vector<float> t(static_cast<size_t>(w.r));
  for (int64_t tok = 0; tok < n; ++tok) {
    const float* xt = x + tok * w.n_in;
    float* yt = y + tok * ldy;
    float* tp = t.data();
    std::fill(yt, yt + w.n_out, 0.0f);
    lowrank_a_ref(f, &xt, 1, w.n_in, 0, w.r, &tp);
    lowrank_b_ref(f, &tp, &yt, 1, w.n_out, 0, w.n_out);
  }
  csr_add_rows(w, x, n, 0, w.n_out, bias, y, ldy);
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

}  // namespace llmserve
