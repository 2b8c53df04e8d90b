// Batched low-rank updates: scalar references, dispatch and the two parallel passes (lowrank.h).
#include "lowrank.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "../isa/isa.h"
#include "../quant/gemm.h"
#include "../quant/quant.h"
#include "../quant/quant_impl.h"
#include "lowrank_gemm.h"

namespace llmserve {
namespace {

std::atomic<bool> g_force_scalar{false};

using AFn = void (*)(const LowRankFactors&, const float* const*, int64_t, int64_t, int64_t, int64_t, float* const*);
using BFn = void (*)(const LowRankFactors&, const float* const*, float* const*, int64_t, int64_t, int64_t, int64_t);

// The kernels of the tier isa/ chose (the scalar references when forced by a test).
void pick(AFn* a, BFn* b) {
  *a = lowrank_a_ref, *b = lowrank_b_ref;
#if defined(LLMSERVE_X86)
  if (g_force_scalar.load(std::memory_order_relaxed)) return;
  if (active_isa() >= Isa::Avx512) {
    *a = lowrank_a_avx512, *b = lowrank_b_avx512;
  } else if (active_isa() >= Isa::Avx2) {
    *a = lowrank_a_avx2, *b = lowrank_b_avx2;
  }
#endif
}

// Column ranges of the B pass are multiples of this (the kernels' SIMD column steps, and q8_0
// factors' 8-column loads never straddle a block); a 2-thread pool can still split a K/V
// projection (n_out 256) of one adapter in two.
constexpr int64_t kColChunk = 128;

// Ranks per task of the A pass at most: the kernels run up to 8 ranks of a row side by side (their
// fma chains overlap); fewer when that would leave threads idle.
constexpr int64_t kRankChunk = 8;

// A task of the A pass: group g (its rows are slots s0..), ranks [k0, k0 + chunk) (gemm kinds:
// [k0, k0 + kGemmGroupRows), one packed group of A's rows).
struct Item {
  int64_t g, s0, k0;
};

// Grow-only buffers of the calling thread (the forward pass runs on one thread at a time).
struct Scratch {
  std::vector<float> t;
  std::vector<std::pair<int64_t, int64_t>> slot;
  std::vector<const float*> xs;
  std::vector<float*> ts, ys;
  std::vector<Item> item;
  std::vector<int64_t> first;   // first slot of each group
  std::vector<uint8_t> xq, tq;  // gemm-kind groups: each slot's x and t as gemm activations
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

}  // namespace

void lowrank_force_scalar_for_testing(bool on) { g_force_scalar.store(on, std::memory_order_relaxed); }
bool lowrank_scalar_forced() { return g_force_scalar.load(std::memory_order_relaxed); }

float lowrank_elem(const void* p, LowRankType type, int64_t i) {
  switch (type) {
    case LowRankType::F16: return fp16_to_fp32(static_cast<const uint16_t*>(p)[i]);
    case LowRankType::Q8_0:
    case LowRankType::Q8_0Gemm: {  // rows of q8_0 blocks
      const quant::BlockQ8_0& b = static_cast<const quant::BlockQ8_0*>(p)[i / quant::kQK8_0];
      return fp16_to_fp32(b.d) * static_cast<float>(b.qs[i % quant::kQK8_0]);
    }
    // Rows of q4_0 blocks: element j < 16 in qs[j]'s low nibble, j >= 16 in qs[j - 16]'s high one.
    // (The gemm passes never call this; it states the layout the tests check.)
    case LowRankType::Q4_0Gemm: {
      const quant::BlockQ4_0& b = static_cast<const quant::BlockQ4_0*>(p)[i / quant::kQK4_0];
      const int j = static_cast<int>(i % quant::kQK4_0);
      const int q = j < 16 ? (b.qs[j] & 0x0F) : (b.qs[j - 16] >> 4);
      return fp16_to_fp32(b.d) * static_cast<float>(q - 8);
    }
    case LowRankType::F32: break;
  }
  return static_cast<const float*>(p)[i];
}

void lowrank_a_ref(const LowRankFactors& f, const float* const* xs, int64_t n_x, int64_t n_in, int64_t k0, int64_t k1,
                   float* const* ts) {
  for (int64_t k = k0; k < k1; ++k)
    for (int64_t r = 0; r < n_x; ++r) {
      float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      const int64_t base = k * n_in;
      for (int64_t i = 0; i < n_in; ++i)
        lane[i % 8] = std::fma(lowrank_elem(f.a, f.type, base + i), xs[r][i], lane[i % 8]);
      ts[r][k] = ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
    }
}

void lowrank_b_ref(const LowRankFactors& f, const float* const* ts, float* const* ys, int64_t n_y, int64_t n_out,
                   int64_t j0, int64_t j1) {
  for (int64_t r = 0; r < n_y; ++r)
    for (int64_t j = j0; j < j1; ++j) {
      float acc = 0.0f;
      for (int64_t k = 0; k < f.r; ++k) acc = std::fma(ts[r][k], lowrank_elem(f.bt, f.type, k * n_out + j), acc);
      ys[r][j] = std::fma(acc, f.scale, ys[r][j]);
    }
}

void lowrank_add_scaled_ref(float* y, const float* u, int64_t n, float scale) {
  for (int64_t j = 0; j < n; ++j) y[j] = y[j] + u[j] * scale;
}

void lowrank_add_scaled(float* y, const float* u, int64_t n, float scale) {
  // Every decode step adds each adapter's delta to its rows this way (7 projections x 16 adapters
  // x thousands of columns); the scalar loop cost ~8% of the low-rank time.
#if defined(LLMSERVE_X86)
  if (!g_force_scalar.load(std::memory_order_relaxed)) {
    if (active_isa() >= Isa::Avx512) return lowrank_add_scaled_avx512(y, u, n, scale);
    if (active_isa() >= Isa::Avx2) return lowrank_add_scaled_avx2(y, u, n, scale);
  }
#endif
  lowrank_add_scaled_ref(y, u, n, scale);
}

void lowrank_apply(const LowRankGroup* groups, int64_t n_groups, const float* x, int64_t n_in, float* y, int64_t ldy,
                   int64_t n_out, ThreadPool& pool, const uint8_t* xq, size_t xq_stride) {
  // T: one slot of max_r floats per (group, row), in group order.
  int64_t total = 0, max_r = 0, gemm_r = 0;
  for (int64_t g = 0; g < n_groups; ++g) {
    total += groups[g].n_rows, max_r = std::max(max_r, groups[g].f.r);
    if (gemm_kind(groups[g].f)) gemm_r = std::max(gemm_r, groups[g].f.r);
  }
  // Gemm-kind groups (Q8_0Gemm, Q4_0Gemm) take their ranks in runs of gemm_chunk (whole 16-row groups of A: one gemm
  // call streams a run's groups with its prefetch running ahead; a call per group stalls on each
  // first group), float groups in runs of chunk; both shrink while there are too few tasks.
  int64_t gemm_chunk = kGemmGroupRows;
  while (gemm_chunk < gemm_r) gemm_chunk *= 2;
  auto step = [&](int64_t g, int64_t chunk) { return gemm_kind(groups[g].f) ? gemm_chunk : chunk; };
  auto count_items = [&](int64_t chunk) {
    int64_t n = 0;
    for (int64_t g = 0; g < n_groups; ++g) n += (groups[g].f.r + step(g, chunk) - 1) / step(g, chunk);
    return n;
  };
  // Only gemm-kind groups, at least two per thread (many adapters of a decode step: BGMV): each
  // runs whole as one task (lowrank_apply_jobs: both products, one parallel region).
  const int64_t want_items = 2 * static_cast<int64_t>(pool.size());
  int64_t n_gemm = 0;
  for (int64_t g = 0; g < n_groups; ++g) n_gemm += gemm_kind(groups[g].f) ? 1 : 0;
  if (n_gemm == n_groups && n_gemm >= want_items) {
    const LowRankJob job{groups, n_groups, x, n_in, y, ldy, n_out, xq, xq_stride};
    lowrank_apply_jobs(&job, 1, pool);
    return;
  }
  int64_t chunk = kRankChunk;
  while (chunk > 2 && count_items(chunk) < want_items) chunk /= 2;
  while (gemm_chunk > kGemmGroupRows && count_items(chunk) < want_items) gemm_chunk /= 2;
  const int64_t items = count_items(chunk);
  if (total == 0 || max_r == 0) return;
  Scratch& sc = scratch();
  if (sc.t.size() < static_cast<size_t>(total * max_r)) sc.t.resize(static_cast<size_t>(total * max_r));
  sc.slot.resize(static_cast<size_t>(total));
  sc.xs.resize(static_cast<size_t>(total));
  sc.ts.resize(static_cast<size_t>(total));
  sc.ys.resize(static_cast<size_t>(total));
  sc.item.resize(static_cast<size_t>(items));
  sc.first.resize(static_cast<size_t>(n_groups));
  float* T = sc.t.data();
  auto& slot = sc.slot;  // (group, row) of each slot
  for (int64_t g = 0, s = 0, it = 0; g < n_groups; ++g) {
    const int64_t s0 = s;
    sc.first[static_cast<size_t>(g)] = s0;
    for (int64_t i = 0; i < groups[g].n_rows; ++i, ++s) {
      slot[static_cast<size_t>(s)] = {g, groups[g].rows[i]};
      sc.xs[static_cast<size_t>(s)] = x + groups[g].rows[i] * n_in;
      sc.ts[static_cast<size_t>(s)] = T + s * max_r;
      sc.ys[static_cast<size_t>(s)] = y + groups[g].rows[i] * ldy;
    }
    for (int64_t k0 = 0; k0 < groups[g].f.r; k0 += step(g, chunk)) sc.item[static_cast<size_t>(it++)] = {g, s0, k0};
  }
  // Gemm-kind groups read x as gemm activations (quantized per row as matmul() does; q8_0 for
  // q4_0 and q8_0 factors alike): the caller's rows where they cover the group (consecutive rows),
  // else the group's slots of sc.xq, made here once.
  const size_t own_stride = gemm_r ? gemm_act_row_bytes(GgmlType::Q8_0, n_in) : 0;
  const size_t tq_stride = gemm_r ? gemm_act_row_bytes(GgmlType::Q8_0, gemm_r) : 0;
  auto given = [&](int64_t g) { return lowrank_rows_act(groups[g].rows, groups[g].n_rows, xq, xq_stride); };
  if (gemm_r) {
    if (sc.xq.size() < static_cast<size_t>(total) * own_stride) sc.xq.resize(static_cast<size_t>(total) * own_stride);
    if (sc.tq.size() < static_cast<size_t>(total) * tq_stride) sc.tq.resize(static_cast<size_t>(total) * tq_stride);
    bool make = false;
    for (int64_t g = 0; g < n_groups; ++g) make = make || (gemm_kind(groups[g].f) && !given(g));
    if (make)
      pool.parallel_for(
          total,
          [&](int64_t b, int64_t e) {
            for (int64_t s = b; s < e; ++s) {
              const int64_t g = slot[static_cast<size_t>(s)].first;
              if (gemm_kind(groups[g].f) && !given(g))
                gemm_prepare_act(GgmlType::Q8_0, sc.xs[static_cast<size_t>(s)], n_in,
                                 sc.xq.data() + static_cast<size_t>(s) * own_stride);
            }
          },
          std::max<int64_t>(1, 4096 / std::max<int64_t>(n_in, 1)));
  }
  AFn a_pass;
  BFn b_pass;
  pick(&a_pass, &b_pass);
  // Pass 1: t = A·x, one (group, range of ranks) per task over all the group's rows, so each row
  // of A is read once per projection.
  pool.parallel_for(items, [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      const Item& w = sc.item[static_cast<size_t>(it)];
      const LowRankGroup& G = groups[w.g];
      const int64_t k1 = std::min(G.f.r, w.k0 + step(w.g, chunk));
      if (gemm_kind(G.f)) {
        // Ranks [k0, k1) of the group's rows, straight into their slots of T (rows max_r apart).
        const uint8_t* act = given(w.g);
        if (act) lowrank_gemm_a(G.f, n_in, act, xq_stride, G.n_rows, w.k0, k1, T + w.s0 * max_r, max_r);
        else
          lowrank_gemm_a(G.f, n_in, sc.xq.data() + static_cast<size_t>(w.s0) * own_stride, own_stride, G.n_rows, w.k0,
                         k1, T + w.s0 * max_r, max_r);
      } else {
        a_pass(G.f, sc.xs.data() + w.s0, G.n_rows, n_in, w.k0, k1, sc.ts.data() + w.s0);
      }
    }
  });
  // Gemm-kind groups read t as gemm activations too (r values per row: cheap, so on this thread).
  for (int64_t s = 0; gemm_r && s < total; ++s) {
    const LowRankFactors& f = groups[slot[static_cast<size_t>(s)].first].f;
    if (gemm_kind(f))
      gemm_prepare_act(GgmlType::Q8_0, sc.ts[static_cast<size_t>(s)], f.r,
                       sc.tq.data() + static_cast<size_t>(s) * tq_stride);
  }
  // Pass 2: y += scale·B·t, one (group, column range) per task over all the group's rows, so each
  // part of Bt is read once per projection, and a task walks its rows of Bt in address order (the
  // hardware prefetcher follows; a task per column range over every group read 256-byte pieces of
  // every group's rows). Ranges are whole kColChunk multiples, enough of them for every thread.
  int64_t splits = std::max<int64_t>(1, (want_items + n_groups - 1) / n_groups);
  const int64_t cols = ((n_out + splits - 1) / splits + kColChunk - 1) / kColChunk * kColChunk;
  splits = (n_out + cols - 1) / cols;
  pool.parallel_for(n_groups * splits, [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      const int64_t g = it / splits, j0 = (it % splits) * cols;
      const int64_t j1 = std::min(n_out, j0 + cols);
      const int64_t s0 = sc.first[static_cast<size_t>(g)], n = groups[g].n_rows;
      const LowRankFactors& f = groups[g].f;
      if (gemm_kind(f))
        lowrank_gemm_b(f, sc.tq.data() + static_cast<size_t>(s0) * tq_stride, tq_stride, n, j0, j1, sc.ys.data() + s0);
      else b_pass(f, sc.ts.data() + s0, sc.ys.data() + s0, n, n_out, j0, j1);
    }
  });
}

#if !defined(LLMSERVE_X86)  // lowrank_avx*.cpp are not built; never called (pick() keeps the references)
void lowrank_a_avx2(const LowRankFactors& f, const float* const* xs, int64_t n_x, int64_t n_in, int64_t k0, int64_t k1,
                    float* const* ts) {
  lowrank_a_ref(f, xs, n_x, n_in, k0, k1, ts);
}
void lowrank_b_avx2(const LowRankFactors& f, const float* const* ts, float* const* ys, int64_t n_y, int64_t n_out,
                    int64_t j0, int64_t j1) {
  lowrank_b_ref(f, ts, ys, n_y, n_out, j0, j1);
}
void lowrank_a_avx512(const LowRankFactors& f, const float* const* xs, int64_t n_x, int64_t n_in, int64_t k0,
                      int64_t k1, float* const* ts) {
  lowrank_a_ref(f, xs, n_x, n_in, k0, k1, ts);
}
void lowrank_b_avx512(const LowRankFactors& f, const float* const* ts, float* const* ys, int64_t n_y, int64_t n_out,
                      int64_t j0, int64_t j1) {
  lowrank_b_ref(f, ts, ys, n_y, n_out, j0, j1);
}
void lowrank_add_scaled_avx2(float* y, const float* u, int64_t n, float scale) {
  lowrank_add_scaled_ref(y, u, n, scale);
}
void lowrank_add_scaled_avx512(float* y, const float* u, int64_t n, float scale) {
  lowrank_add_scaled_ref(y, u, n, scale);
}
#endif

}  // namespace llmserve
