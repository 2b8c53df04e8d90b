// Matrix multiply over a token batch: activations converted once to the weight's vec_dot type,
// then every (token, row) output is one vec_dot, so results do not depend on the batch.
#include "matmul.h"

#include <algorithm>
#include <cstring>

#include "../quant/quant.h"

namespace llmserve {

namespace {
constexpr int64_t kRowTile = 16;    // weight rows per parallel work item
constexpr int64_t kTokenTile = 32;  // tokens per inner sweep (their activations stay in cache)
constexpr size_t kAlign = 64;
// Multiply-adds below which splitting a job across threads costs more than it saves.
constexpr int64_t kMinChunkWork = 1 << 16;

size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

struct Converted {
  GgmlType vdt;
  const uint8_t* data;
  size_t stride;  // bytes between tokens
};
}  // namespace

size_t matmul_scratch_bytes(const MatmulTask* tasks, int n_tasks, int64_t n) {
  size_t total = 0;
  GgmlType seen[4];
  int n_seen = 0;
  for (int i = 0; i < n_tasks; ++i) {
    const GgmlType vdt = type_traits(tasks[i].w->type).vec_dot_type;
    if (vdt == GgmlType::F32 || std::find(seen, seen + n_seen, vdt) != seen + n_seen) continue;
    seen[n_seen++] = vdt;
    total += align_up(row_size(vdt, tasks[i].w->n_in) * static_cast<size_t>(n));
  }
  return total;
}

void matmul(const MatmulTask* tasks, int n_tasks, const float* x, int64_t n, uint8_t* scratch,
            ThreadPool& pool) {
  if (n <= 0 || n_tasks <= 0) return;
  const int64_t n_in = tasks[0].w->n_in;

  // 1. Convert the activations once per distinct vec_dot type.
  Converted conv[4];
  int n_conv = 0;
  int task_conv[4];
  uint8_t* free_ptr = scratch;
  for (int i = 0; i < n_tasks; ++i) {
    const GgmlType vdt = type_traits(tasks[i].w->type).vec_dot_type;
    int found = -1;
    for (int j = 0; j < n_conv; ++j)
      if (conv[j].vdt == vdt) found = j;
    if (found < 0) {
      found = n_conv++;
      if (vdt == GgmlType::F32) {
        conv[found] = {vdt, reinterpret_cast<const uint8_t*>(x), static_cast<size_t>(n_in) * 4};
      } else {
        const size_t stride = row_size(vdt, n_in);
        uint8_t* buf = free_ptr;
        free_ptr += align_up(stride * static_cast<size_t>(n));
        conv[found] = {vdt, buf, stride};
        pool.parallel_for(n, [&](int64_t b, int64_t e) {
          for (int64_t t = b; t < e; ++t) quantize_row(vdt, x + t * n_in, buf + t * stride, n_in);
        }, std::max<int64_t>(1, kMinChunkWork / 8 / n_in));
      }
    }
    task_conv[i] = found;
  }

  // 2. Row tiles across all tasks; each tile computes every token.
  int64_t tile_start[5];
  tile_start[0] = 0;
  for (int i = 0; i < n_tasks; ++i)
    tile_start[i + 1] = tile_start[i] + (tasks[i].w->n_out + kRowTile - 1) / kRowTile;
  const int64_t tile_work = kRowTile * n_in * n;
  pool.parallel_for(tile_start[n_tasks], [&](int64_t b, int64_t e) {
    for (int64_t tile = b; tile < e; ++tile) {
      int ti = 0;
      while (tile >= tile_start[ti + 1]) ++ti;
      const MatmulTask& task = tasks[ti];
      const MatrixView& w = *task.w;
      const Converted& cv = conv[task_conv[ti]];
      const int64_t r0 = (tile - tile_start[ti]) * kRowTile;
      const int64_t r1 = std::min(r0 + kRowTile, w.n_out);
      for (int64_t t0 = 0; t0 < n; t0 += kTokenTile) {
        const int64_t t1 = std::min(t0 + kTokenTile, n);
        for (int64_t r = r0; r < r1; ++r) {
          const uint8_t* wr = w.row(r);
          const float bias = task.bias ? task.bias[r] : 0.0f;
          for (int64_t t = t0; t < t1; ++t) {
            float d = vec_dot(w.type, n_in, wr, cv.data + t * cv.stride);
            if (task.bias) d += bias;
            task.y[t * task.ldy + r] = d;
          }
        }
      }
    }
  }, std::max<int64_t>(1, kMinChunkWork / tile_work));
}

}  // namespace llmserve
