#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../isa/isa.h"
#include "../math/fast_exp.h"

namespace llmserve {

namespace {
constexpr size_t kAlign = 64;
// Multiply-adds below which splitting a job across threads costs more than it saves.
constexpr int64_t kMinChunkWork = 1 << 16;
size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }
}  // namespace

namespace {
size_t q_row_bytes(GgmlType kv_type, int64_t hd) { return align_up(row_size(type_traits(kv_type).vec_dot_type, hd)); }
}  // namespace

size_t attention_group_work_floats(int64_t n_rows, int64_t hd) {
  const size_t hdp = static_cast<size_t>((hd + 15) / 16 * 16), T = kAttnTile, nr = static_cast<size_t>(n_rows);
  const size_t nr8 = (nr + 7) / 8 * 8;
  // scores [n_rows][T] | ms [nr8][T] | vs [nr8][T] | acc [n_rows][hdp] | V tile [T][hdp] |
  // K tile [T][hdp] | queries [n_rows][hdp] | 16 spare
  return T * nr + 2 * T * nr8 + 2 * nr * hdp + 2 * T * hdp + 16;
}

namespace {
// Query tokens of one sequence that share an attention_group call: as many as keep the rows
// (tokens x query heads of a KV head) within kMaxAttnGroup, at most 16 (enough to amortize the K/V
// conversion; more would only coarsen the split across threads).
int64_t tokens_per_call(int64_t n_gqa) { return std::max<int64_t>(1, std::min<int64_t>(16, kMaxAttnGroup / n_gqa)); }

// Scratch of one call with `rows` rows: either kernel's work floats, then the converted queries
// (the decode arithmetic's vec_dot type, or f32 for the prompt arithmetic).
size_t call_work_bytes(int64_t rows, int64_t hd) {
  return align_up(std::max(attention_group_work_floats(rows, hd), attention_prompt_work_floats(rows, hd)) * 4);
}
size_t q_conv_row_bytes(GgmlType kv_type, int64_t hd) {
  return std::max(q_row_bytes(kv_type, hd), align_up(static_cast<size_t>(hd) * 4));
}
}  // namespace

size_t attention_scratch_bytes(const AttnShape& s, GgmlType kv_type) {
  const int64_t rows = tokens_per_call(s.n_gqa()) * s.n_gqa();
  return call_work_bytes(rows, s.head_dim) + static_cast<size_t>(rows) * q_conv_row_bytes(kv_type, s.head_dim);
}

void attention_group_ref(const AttnGroup& a) {
  const int64_t hd = a.hd;
  const bool f16 = a.kv_type == GgmlType::F16;
  float* acc = a.work;
  float* vrow = a.work + ((hd + 15) / 16 * 16);
  auto round16 = [](float x) { return fp16_to_fp32(fp32_to_fp16(x)); };
  for (int64_t i = 0; i < a.n_tok; ++i) {
    const int64_t begin = a.row_begin(i), len = a.len + i;
    for (int64_t h = 0; h < a.n_q; ++h) {
      const uint8_t* q = a.q + (i * a.n_q + h) * a.q_stride;
      for (int64_t d = 0; d < hd; ++d) acc[d] = 0.0f;
      float M = -INFINITY, S = 0.0f;
      for (int64_t j = begin; j < len; ++j) {
        const size_t off = attn_row_offset(a, j);
        float s = vec_dot(a.kv_type, hd, a.k + off, q) * a.scale;
        if (a.softcap != 0.0f) s = a.softcap * tanhf(s);
        float ms = 1.0f, vs = 1.0f;
        if (s > M) {  // new maximum: the accumulator is rescaled by exp(Mold - M)
          ms = fast_exp(M - s);
          M = s;
        } else {
          vs = fast_exp(s - M);
        }
        if (a.kv_type == GgmlType::F32) std::memcpy(vrow, a.v + off, static_cast<size_t>(hd) * 4);
        else dequantize_row(a.kv_type, a.v + off, vrow, hd);
        for (int64_t d = 0; d < hd; ++d) {
          float x = acc[d] * ms;
          if (f16) x = round16(x);
          x = fmaf(vrow[d], vs, x);
          acc[d] = f16 ? round16(x) : x;
        }
        S = fmaf(S, ms, vs);
      }
      const float S_inv = S == 0.0f ? 0.0f : 1.0f / S;
      float* out = a.out + i * a.out_tok_stride + h * a.out_stride;
      for (int64_t d = 0; d < hd; ++d) out[d] = acc[d] * S_inv;
    }
  }
}

namespace {
using AttnGroupFn = void (*)(const AttnGroup&);
AttnGroupFn pick_attention_group() {
#if defined(LLMSERVE_X86)
  if (active_isa() >= Isa::Avx512) return attention_group_avx512;
  if (active_isa() >= Isa::Avx2) return attention_group_avx2;
#endif
  return attention_group_ref;
}
}  // namespace

void attention_group(const AttnGroup& a) {
  const AttnGroupFn fn = pick_attention_group();
  // The SIMD kernel keeps per-head state in kMaxAttnGroup-long stack arrays. Model configs are
  // limited at load (read_model_config); any other caller with a larger group gets the reference
  // kernel rather than a stack overflow.
  if (a.n_q * a.n_tok > kMaxAttnGroup) return attention_group_ref(a);
  fn(a);
}

void attention_f32(const AttnShape& c, KvPool& kv, int64_t layer, const float* q, const BatchLayout& bl, int64_t r0,
                   int64_t m, float* out, uint8_t* scratch, ThreadPool& pool) {
  const int64_t hd = c.head_dim, n_gqa = c.n_gqa(), n_kv = c.n_head_kv, nq = c.n_embd_q();
  const GgmlType kv_type = kv.type(), q_type = type_traits(kv_type).vec_dot_type;
  const int64_t max_tok = tokens_per_call(n_gqa);
  const size_t per_thread = attention_scratch_bytes(c, kv_type);
  const size_t work_bytes = call_work_bytes(max_tok * n_gqa, hd);
  const bool can_tile = bl.tiled && prompt_tiled_kv(kv_type);
  float scale = c.kq_scale != 0.0f ? c.kq_scale : 1.0f / sqrtf(static_cast<float>(hd));
  if (c.softcap != 0.0f) scale /= c.softcap;  // ggml folds the cap into the scale first
  const uint8_t* k_layer = kv.k_layer(layer);
  const uint8_t* v_layer = kv.v_layer(layer);
  // Calls: runs of consecutive rows of one sequence (same block table, consecutive positions, the
  // same arithmetic; a prefill chunk is one run) cut into pieces of at most max_tok tokens; decode
  // rows are calls of one token each.
  std::vector<int64_t> starts;  // first row (relative to r0) of each call; the next one ends it
  starts.reserve(static_cast<size_t>(m) + 1);
  for (int64_t i = 0; i < m; ++i) {
    const int64_t t = r0 + i;
    const bool joins = i > 0 && i - starts.back() < max_tok && bl.blocks[t] == bl.blocks[t - 1] &&
                       bl.pos[t] == bl.pos[t - 1] + 1 && (!can_tile || bl.tiled[t] == bl.tiled[t - 1]);
    if (!joins) starts.push_back(i);
  }
  const int64_t n_calls = static_cast<int64_t>(starts.size());
  starts.push_back(m);
  // Work per (call, KV head) grows with its tokens' positions; estimate with the mean.
  int64_t total_len = 0;
  for (int64_t t = r0; t < r0 + m; ++t) total_len += c.window > 0 ? std::min(bl.pos[t] + 1, c.window) : bl.pos[t] + 1;
  const int64_t mean_work = std::max<int64_t>(1, total_len / std::max<int64_t>(1, n_calls)) * n_gqa * hd * 2;
  pool.parallel_for_chunked(
      n_calls * n_kv,
      [&](int64_t b, int64_t e, int slot) {
        uint8_t* base = scratch + static_cast<size_t>(slot) * per_thread;
        uint8_t* q_conv = base + work_bytes;
        for (int64_t it = b; it < e; ++it) {
          const int64_t ci = it / n_kv, g = it % n_kv;
          const int64_t i0 = starts[static_cast<size_t>(ci)], n_tok = starts[static_cast<size_t>(ci) + 1] - i0;
          const int64_t t = r0 + i0;
          const bool tiled = can_tile && bl.tiled[t];
          // Q to K's vec_dot type, as ggml (f32: a copy), or f32 for the prompt arithmetic; rows
          // [token][head].
          const GgmlType qt = tiled ? GgmlType::F32 : q_type;
          const size_t q_stride = tiled ? align_up(static_cast<size_t>(hd) * 4) : q_row_bytes(kv_type, hd);
          for (int64_t i = 0; i < n_tok; ++i) {
            const float* qg = q + (i0 + i) * nq + g * n_gqa * hd;
            for (int64_t h = 0; h < n_gqa; ++h) quantize_row(qt, qg + h * hd, q_conv + (i * n_gqa + h) * q_stride, hd);
          }
          AttnGroup a;
          const size_t off = kv.head_offset(g, hd);
          a.k = k_layer + off;
          a.v = v_layer + off;
          a.blocks = bl.blocks[t];
          a.block_size = kv.block_size();
          a.row_stride = kv.row_bytes();
          a.block_stride = kv.block_bytes();
          a.kv_type = kv_type;
          a.q = q_conv;
          a.q_stride = q_stride;
          a.n_q = n_gqa;
          a.len = bl.pos[t] + 1;
          a.begin = 0;
          a.window = c.window;
          a.hd = hd;
          a.scale = scale;
          a.softcap = c.softcap;
          a.out = out + i0 * nq + g * n_gqa * hd;
          a.out_stride = hd;
          a.n_tok = n_tok;
          a.out_tok_stride = nq;
          a.work = reinterpret_cast<float*>(base);
          if (tiled) attention_prompt(a);
          else attention_group(a);
        }
      },
      std::max<int64_t>(1, kMinChunkWork / mean_work));
}

}  // namespace llmserve
