// The Q8_0Gemm / Q4_0Gemm passes of lowrank_apply (lowrank.h): llama.cpp's q8_0 / q4_0 adapter
// arithmetic through quant/gemm, whose packed 16-row groups and int8 dot products stream the
// factors at the speed of the model's own weights of that type.
#include "lowrank_gemm.h"

#include <vector>

#include "../quant/gemm.h"
#include "../quant/quant.h"
#include "../threadpool/thread_pool.h"

namespace llmserve {
namespace {

void run_gemm(const GemmArgs& a) {
  if (lowrank_scalar_forced()) gemm_ref(a);
  else gemm(a);
}

// Per worker thread (grow-only): a group's activations and products when it runs whole, and the
// u rows of a pass-2 task.
struct GemmScratch {
  std::vector<uint8_t> xq, tq;
  std::vector<float> t, u;
};
GemmScratch& gemm_scratch() {
  thread_local GemmScratch s;
  return s;
}

template <class T>
T* grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

}  // namespace

void lowrank_gemm_a(const LowRankFactors& f, int64_t n_in, const uint8_t* xq, size_t xq_stride, int64_t n, int64_t k0,
                    int64_t k1, float* t, int64_t ldt) {
  GemmArgs a;
  a.type = gemm_weight_type(f), a.n_in = n_in, a.row_bytes = row_size(a.type, n_in);
  a.w = static_cast<const uint8_t*>(f.a), a.packed = f.a_packed;
  a.r0 = k0, a.r1 = k1;
  a.act = xq, a.act_stride = xq_stride, a.n = n;
  a.y = t, a.ldy = ldt;
  run_gemm(a);
}

void lowrank_gemm_b(const LowRankFactors& f, const uint8_t* tq, size_t tq_stride, int64_t n, int64_t j0, int64_t j1,
                    float* const* ys) {
  // gemm's output row index starts at 0 in u: B's rows (raw and packed) are taken from row j0 on.
  const int64_t cols = j1 - j0;
  float* u = grow(gemm_scratch().u, static_cast<size_t>(n * cols));
  GemmArgs a;
  a.type = gemm_weight_type(f), a.n_in = f.r, a.row_bytes = row_size(a.type, f.r);
  a.w = f.b ? static_cast<const uint8_t*>(f.b) + static_cast<size_t>(j0) * a.row_bytes : nullptr;
  a.packed = f.b_packed ? f.b_packed +
                              static_cast<size_t>(j0 / kGemmGroupRows) * gemm_packed_bytes(a.type, f.r, kGemmGroupRows)
                        : nullptr;
  a.r0 = 0, a.r1 = cols;
  a.act = tq, a.act_stride = tq_stride, a.n = n;
  a.y = u, a.ldy = cols;
  run_gemm(a);
  for (int64_t i = 0; i < n; ++i) lowrank_add_scaled(ys[i] + j0, u + i * cols, cols, f.scale);
}

void lowrank_gemm_group(const LowRankFactors& f, const float* const* xs, int64_t n, int64_t n_in, float* const* ys,
                        int64_t n_out, const uint8_t* xq_in, size_t xq_in_stride) {
  GemmScratch& s = gemm_scratch();
  const size_t tq_stride = gemm_act_row_bytes(GgmlType::Q8_0, f.r);
  uint8_t* tq = grow(s.tq, static_cast<size_t>(n) * tq_stride);
  float* t = grow(s.t, static_cast<size_t>(n * f.r));
  if (xq_in) {
    lowrank_gemm_a(f, n_in, xq_in, xq_in_stride, n, 0, f.r, t, f.r);
  } else {
    const size_t xq_stride = gemm_act_row_bytes(GgmlType::Q8_0, n_in);
    uint8_t* xq = grow(s.xq, static_cast<size_t>(n) * xq_stride);
    for (int64_t i = 0; i < n; ++i)
      gemm_prepare_act(GgmlType::Q8_0, xs[i], n_in, xq + static_cast<size_t>(i) * xq_stride);
    lowrank_gemm_a(f, n_in, xq, xq_stride, n, 0, f.r, t, f.r);
  }
  for (int64_t i = 0; i < n; ++i)
    gemm_prepare_act(GgmlType::Q8_0, t + i * f.r, f.r, tq + static_cast<size_t>(i) * tq_stride);
  lowrank_gemm_b(f, tq, tq_stride, n, 0, n_out, ys);
}

void lowrank_apply_jobs(const LowRankJob* jobs, int n_jobs, ThreadPool& pool) {
  int64_t items = 0;
  bool all_gemm = true;
  for (int j = 0; j < n_jobs; ++j)
    for (int64_t g = 0; g < jobs[j].n_groups; ++g) all_gemm = all_gemm && gemm_kind(jobs[j].groups[g].f), ++items;
  if (!all_gemm || items < 2 * static_cast<int64_t>(pool.size())) {
    for (int j = 0; j < n_jobs; ++j)
      if (jobs[j].n_groups > 0)
        lowrank_apply(jobs[j].groups, jobs[j].n_groups, jobs[j].x, jobs[j].n_in, jobs[j].y, jobs[j].ldy, jobs[j].n_out,
                      pool, jobs[j].xq, jobs[j].xq_stride);
    return;
  }
  // Per (job, group): its rows' x and y pointers, in one array (this thread's, grow-only; the tasks
  // reach it through these references: a thread_local named inside them would be the worker's).
  struct Item {
    int job;
    int64_t g, first;
  };
  thread_local std::vector<Item> tl_item;
  thread_local std::vector<const float*> tl_xs;
  thread_local std::vector<float*> tl_ys;
  std::vector<Item>& item = tl_item;
  std::vector<const float*>& xs = tl_xs;
  std::vector<float*>& ys = tl_ys;
  item.clear(), xs.clear(), ys.clear();
  for (int j = 0; j < n_jobs; ++j)
    for (int64_t g = 0; g < jobs[j].n_groups; ++g) {
      const LowRankGroup& G = jobs[j].groups[g];
      item.push_back({j, g, static_cast<int64_t>(xs.size())});
      for (int64_t i = 0; i < G.n_rows; ++i) {
        xs.push_back(jobs[j].x + G.rows[i] * jobs[j].n_in);
        ys.push_back(jobs[j].y + G.rows[i] * jobs[j].ldy);
      }
    }
  pool.parallel_for(items, [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      const Item& w = item[static_cast<size_t>(it)];
      const LowRankJob& J = jobs[w.job];
      const LowRankGroup& G = J.groups[w.g];
      lowrank_gemm_group(G.f, xs.data() + w.first, G.n_rows, J.n_in, ys.data() + w.first, J.n_out,
                         lowrank_rows_act(G.rows, G.n_rows, J.xq, J.xq_stride), J.xq_stride);
    }
  });
}

}  // namespace llmserve
