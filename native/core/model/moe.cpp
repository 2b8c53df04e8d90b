#include "moe.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "matmul.h"
#include "ops.h"

namespace llmserve {

namespace {

// llama.cpp clamps the sum of the chosen probabilities below by 2^-14 before dividing.
constexpr float kMinWeightSum = 6.103515625e-5f;

// One token's routing: probs [n_expert] (router logits in, probabilities out) -> sel / wts [K].
// ggml's soft_max (max, expf(x - max) summed in double, scaled by the float of 1/sum), argsort
// descending for top-k, ggml_sum_rows (double accumulator) and the division.
void route_token(float* probs, int64_t n_expert, int64_t k, int32_t* sel, float* wts) {
  float mx = -INFINITY;
  for (int64_t e = 0; e < n_expert; ++e) mx = std::max(mx, probs[e]);
  double sum = 0;
  for (int64_t e = 0; e < n_expert; ++e) {
    probs[e] = std::exp(probs[e] - mx);
    sum += static_cast<double>(probs[e]);
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t e = 0; e < n_expert; ++e) probs[e] *= inv;
  // Top-k, most probable first; equal probabilities keep the lower expert first.
  for (int64_t j = 0; j < k; ++j) {
    int32_t best = -1;
    for (int64_t e = 0; e < n_expert; ++e) {
      bool taken = false;
      for (int64_t i = 0; i < j; ++i) taken = taken || sel[i] == e;
      if (!taken && (best < 0 || probs[e] > probs[best])) best = static_cast<int32_t>(e);
    }
    sel[j] = best;
    wts[j] = probs[best];
  }
  double ws = 0;
  for (int64_t j = 0; j < k; ++j) ws += static_cast<double>(wts[j]);
  const float wsum = std::max(static_cast<float>(ws), kMinWeightSum);
  for (int64_t j = 0; j < k; ++j) wts[j] = wts[j] / wsum;
}

}  // namespace

MoeSizes moe_sizes(const ModelConfig& c, int64_t n) {
  const int64_t k = c.n_expert_used;
  return {n * c.n_expert, n * k, n * k, c.n_expert + 1, n * c.n_embd, n * c.n_ff_exp, n * k * c.n_embd};
}

void moe_ffn(const ModelConfig& c, const LayerWeights& L, const float* xn, int64_t m, float* y, const MoeBuffers& b,
             ThreadPool& pool) {
  const int64_t E = c.n_embd, FF = c.n_ff_exp, NE = c.n_expert, K = c.n_expert_used;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 14) / std::max(E, FF));
  // Router logits for every row, then each row's experts and weights.
  const MatmulTask router[1] = {{&L.ffn_gate_inp, nullptr, b.probs, NE}};
  matmul(router, 1, xn, m, pool);
  pool.parallel_for(m, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) route_token(b.probs + t * NE, NE, K, b.sel + t * K, b.wts + t * K);
  });
  // Group (token, slot) pairs by expert (counting sort: tokens stay ascending within a group).
  std::fill(b.start, b.start + NE + 1, int64_t(0));
  for (int64_t i = 0; i < m * K; ++i) ++b.start[b.sel[i] + 1];
  for (int64_t e = 0; e < NE; ++e) b.start[e + 1] += b.start[e];
  {
    int64_t* next = b.start;  // reused as the fill cursor, then restored
    for (int64_t i = 0; i < m * K; ++i) b.order[next[b.sel[i]]++] = static_cast<int32_t>(i);
    for (int64_t e = NE; e > 0; --e) b.start[e] = b.start[e - 1];
    b.start[0] = 0;
  }
  // Each expert with tokens: gather its rows, gate/up, SwiGLU, down, scatter to (token, slot).
  for (int64_t e = 0; e < NE; ++e) {
    const int64_t r0 = b.start[e], g = b.start[e + 1] - r0;
    if (g == 0) continue;
    const int32_t* rows = b.order + r0;
    for (int64_t i = 0; i < g; ++i) std::memcpy(b.gx + i * E, xn + (rows[i] / K) * E, static_cast<size_t>(E) * 4);
    const MatmulTask gu[2] = {{&L.gate_exps[static_cast<size_t>(e)], nullptr, b.gate, FF},
                              {&L.up_exps[static_cast<size_t>(e)], nullptr, b.up, FF}};
    matmul(gu, 2, b.gx, g, pool);
    pool.parallel_for(
        g, [&](int64_t i0, int64_t i1) { swiglu_f32(b.gate + i0 * FF, b.up + i0 * FF, (i1 - i0) * FF); }, grain);
    const MatmulTask down[1] = {{&L.down_exps[static_cast<size_t>(e)], nullptr, b.ey, E}};
    matmul(down, 1, b.gate, g, pool);
    for (int64_t i = 0; i < g; ++i) std::memcpy(b.eo + rows[i] * E, b.ey + i * E, static_cast<size_t>(E) * 4);
  }
  // y[t] = sum over slots in order of (expert output * weight): ggml_mul, then ggml_add per slot.
  pool.parallel_for(
      m,
      [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          float* yt = y + t * E;
          const float* o = b.eo + t * K * E;
          const float* w = b.wts + t * K;
          for (int64_t i = 0; i < E; ++i) yt[i] = o[i] * w[0];
          for (int64_t j = 1; j < K; ++j)
            for (int64_t i = 0; i < E; ++i) yt[i] = yt[i] + o[j * E + i] * w[j];
        }
      },
      grain);
}

}  // namespace llmserve
