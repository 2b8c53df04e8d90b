// Factored matrices (factored.h): the LoRA low-rank kernels for U·(V·x), the CSR kernels for S.
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
  if (w.sp_ptr) {
    csr_matmul(w.residual(), x, n, bias, true, y, ldy, pool);
  } else if (bias) {
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < w.n_out; ++i) y[t * ldy + i] += bias[i];
  }
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
  if (w.sp_ptr) {
    csr_gemm_ref(w.residual(), x, n, 0, w.n_out, bias, true, y, ldy);
  } else if (bias) {
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < w.n_out; ++i) y[t * ldy + i] += bias[i];
  }
}

}  // namespace llmserve
