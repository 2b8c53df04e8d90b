// Matrix multiply over a token batch (see matmul.h): activations are prepared once per distinct
// vec_dot type, then quant/gemm.h's kernels compute tiles of 16 weight rows x every token, so each
// weight block is unpacked once per 8 tokens instead of once per token. Batch invariance comes
// from the kernels: an output's arithmetic depends only on its row and its token.
#include "matmul.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "../os/os.h"
#include "../quant/gemm.h"
#include "../quant/quant.h"
#include "csr.h"
#include "factored.h"
#include "sparse24.h"

namespace llmserve {

namespace {
constexpr int64_t kRowTile = kGemmGroupRows;  // weight rows per parallel work item
constexpr size_t kAlign = 64;
// Multiply-adds below which splitting a job across threads costs more than it saves.
constexpr int64_t kMinChunkWork = 1 << 16;

struct Prepared {
  GgmlType vdt;
  const uint8_t* data;
  size_t stride;  // bytes between tokens
};

// Grow-only, 64-byte aligned buffer for the prepared activations (one per calling thread: each
// engine thread has its own; pool workers only read it).
class ActBuffer {
 public:
  ~ActBuffer() { os::aligned_free(p_); }
  uint8_t* get(size_t bytes) {
    if (cap_ < bytes) {
      os::aligned_free(p_);
      p_ = nullptr;
      cap_ = 0;
      const size_t cap = (bytes + 4095) / 4096 * 4096;
      p_ = static_cast<uint8_t*>(os::aligned_alloc(kAlign, cap));
      if (!p_) throw std::bad_alloc();
      cap_ = cap;
    }
    return p_;
  }

 private:
  uint8_t* p_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace

size_t packed_bytes(const MatrixView& w) {
  if (!w.data || w.s24_idx || w.lr_rank > 0 || !gemm_packable(w.type) || w.row_bytes != row_size(w.type, w.n_in))
    return 0;
  return gemm_packed_bytes(w.type, w.n_in, w.n_out);
}

bool pack_matrix(MatrixView* w, uint8_t* dst) {
  if (!w || !dst || packed_bytes(*w) == 0) return false;
  gemm_pack(w->type, w->data, w->row_bytes, w->n_in, w->n_out, dst);
  w->packed = dst;
  return true;
}

void matmul(const MatmulTask* in_tasks, int n_in_tasks, const float* x, int64_t n, ThreadPool& pool, PreparedQ8* q8) {
  if (q8) *q8 = {};
  if (n <= 0 || n_in_tasks <= 0) return;
  n_in_tasks = std::min(n_in_tasks, 4);
  // 2:4 sparse (f16 values), CSR and low-rank factored matrices run their own kernels on the f32
  // activations; the dense ones go on below.
  MatmulTask tasks[4];
  int n_tasks = 0;
  for (int i = 0; i < n_in_tasks; ++i) {
    const MatmulTask& t = in_tasks[i];
    if (t.w->lr_rank > 0) {
      FactoredMatrix fm;
      fm.v = t.w->lr_v;
      fm.ut = t.w->lr_ut;
      fm.f16 = t.w->lr_f16;
      fm.r = t.w->lr_rank;
      fm.n_in = t.w->n_in;
      fm.n_out = t.w->n_out;
      fm.sp_ptr = t.w->sp_ptr;
      fm.sp_col = t.w->sp_col;
      fm.sp_val = t.w->sp_val;
      fm.sp_f32 = t.w->sp_f32;
      factored_matmul(fm, x, n, t.bias, t.y, t.ldy, pool);
      continue;
    }
    if (t.w->is_csr()) {
      CsrMatrix cm;
      cm.ptr = t.w->sp_ptr, cm.col = t.w->sp_col, cm.val = t.w->sp_val, cm.f32 = t.w->sp_f32;
      cm.n_in = t.w->n_in, cm.n_out = t.w->n_out;
      csr_matmul(cm, x, n, t.bias, false, t.y, t.ldy, pool);
      continue;
    }
    // Dense matrices, and 2:4 ones with q8_0 values (they share the dense q8_0 path's int8
    // activations, prepared below), go on below.
    if (!t.w->s24_idx || t.w->type == GgmlType::Q8_0) {
      tasks[n_tasks++] = t;
      continue;
    }
    const Sparse24Matrix sw{t.w->data, t.w->s24_idx, t.w->n_in, t.w->n_out, t.w->type};
    sparse24_matmul(sw, x, n, t.bias, t.y, t.ldy, pool);
  }
  if (n_tasks == 0) return;
  const int64_t n_in = tasks[0].w->n_in;

  // 1. Prepare the activations once per distinct vec_dot type (f32: used in place).
  Prepared prep[5];  // up to 4 tasks' vec_dot types and q8's rows
  int n_prep = 0;
  int task_prep[4];
  size_t need = 0;
  for (int i = 0; i < n_tasks; ++i) {
    const GgmlType vdt = type_traits(tasks[i].w->type).vec_dot_type;
    int found = -1;
    for (int j = 0; j < n_prep; ++j)
      if (prep[j].vdt == vdt) found = j;
    if (found < 0) {
      found = n_prep++;
      const size_t stride =
          vdt == GgmlType::F32 ? static_cast<size_t>(n_in) * 4 : gemm_act_row_bytes(tasks[i].w->type, n_in);
      prep[found] = {vdt, nullptr, stride};
      if (vdt != GgmlType::F32) need += stride * static_cast<size_t>(n);
    }
    task_prep[i] = found;
  }
  int q8_prep = -1;
  for (int j = 0; j < n_prep; ++j)
    if (prep[j].vdt == GgmlType::Q8_0) q8_prep = j;
  if (q8 && q8_prep < 0 && gemm_act_row_bytes(GgmlType::Q8_0, n_in) > 0) {
    q8_prep = n_prep++;
    prep[q8_prep] = {GgmlType::Q8_0, nullptr, gemm_act_row_bytes(GgmlType::Q8_0, n_in)};
    need += prep[q8_prep].stride * static_cast<size_t>(n);
  }
  thread_local ActBuffer act_buffer;
  uint8_t* free_ptr = need ? act_buffer.get(need) : nullptr;
  // Per kind of prepared rows: its buffer and a weight type (any type with that vec_dot type
  // prepares the same bytes).
  uint8_t* prep_buf[5] = {};
  GgmlType prep_wt[5];
  int n_made = 0;
  for (int j = 0; j < n_prep; ++j) {
    Prepared& p = prep[j];
    if (p.vdt == GgmlType::F32) {
      p.data = reinterpret_cast<const uint8_t*>(x);
      continue;
    }
    p.data = prep_buf[j] = free_ptr;
    free_ptr += p.stride * static_cast<size_t>(n);
    prep_wt[j] = p.vdt == GgmlType::Q8_0 ? GgmlType::Q8_0 : GgmlType::F32;
    for (int i = 0; i < n_tasks; ++i)
      if (task_prep[i] == j) prep_wt[j] = tasks[i].w->type;
    ++n_made;
  }
  // Every kind of a token's rows in one task (one parallel region, however many kinds).
  if (n_made > 0)
    pool.parallel_for(
        n,
        [&](int64_t b, int64_t e) {
          for (int j = 0; j < n_prep; ++j) {
            if (!prep_buf[j]) continue;
            for (int64_t t = b; t < e; ++t)
              gemm_prepare_act(prep_wt[j], x + t * n_in, n_in, prep_buf[j] + t * prep[j].stride);
          }
        },
        std::max<int64_t>(1, kMinChunkWork / 8 / n_in / n_made));

  if (q8 && q8_prep >= 0) *q8 = {prep[q8_prep].data, prep[q8_prep].stride};

  // 2. Row tiles (16 rows) across all tasks; each tile computes every token.
  const Sparse24Q8Kernel s24_q8 = sparse24_q8_kernel();
  int64_t tile_start[5];
  tile_start[0] = 0;
  for (int i = 0; i < n_tasks; ++i) tile_start[i + 1] = tile_start[i] + (tasks[i].w->n_out + kRowTile - 1) / kRowTile;
  const int64_t tile_work = kRowTile * n_in * n;
  pool.parallel_for(
      tile_start[n_tasks],
      [&](int64_t b, int64_t e) {
        // Consecutive tiles of one task go to gemm as one call.
        while (b < e) {
          int ti = 0;
          while (b >= tile_start[ti + 1]) ++ti;
          const int64_t tile_end = std::min(e, tile_start[ti + 1]);
          const MatmulTask& task = tasks[ti];
          const MatrixView& w = *task.w;
          const Prepared& p = prep[task_prep[ti]];
          const int64_t r0 = (b - tile_start[ti]) * kRowTile;
          const int64_t r1 = std::min(w.n_out, (tile_end - tile_start[ti]) * kRowTile);
          if (w.s24_idx) {  // 2:4 with q8_0 values (model/sparse24.h)
            const Sparse24Matrix sw{w.data, w.s24_idx, w.n_in, w.n_out, GgmlType::Q8_0};
            s24_q8(sw, p.data, p.stride, n, r0, r1, task.bias, task.y, task.ldy);
            b = tile_end;
            continue;
          }
          GemmArgs a;
          a.type = w.type;
          a.n_in = w.n_in;
          a.w = w.data;
          a.row_bytes = w.row_bytes;
          a.packed = w.packed;
          a.r0 = r0;
          a.r1 = r1;
          a.act = p.data;
          a.act_stride = p.stride;
          a.n = n;
          a.bias = task.bias;
          a.y = task.y;
          a.ldy = task.ldy;
          gemm(a);
          b = tile_end;
        }
      },
      std::max<int64_t>(1, kMinChunkWork / tile_work));
}

}  // namespace llmserve
