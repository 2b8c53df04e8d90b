#include "forward.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <initializer_list>
#include <new>

#include "../attention/attention.h"
#include "../kv/kv_rotation.h"
#include "../quant/quant.h"
#include "matmul.h"
#include "moe.h"
#include "ops.h"

namespace llmserve {

namespace {

constexpr size_t kAlign = 64;
size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

// Carves aligned regions out of one scratch block. First pass (base == nullptr) only measures.
class Arena {
 public:
  explicit Arena(uint8_t* base) : base_(base) {}
  template <typename T>
  T* take(size_t count) {
    T* p = base_ ? reinterpret_cast<T*>(base_ + used_) : nullptr;
    used_ += align_up(count * sizeof(T));
    return p;
  }
  size_t used() const { return used_; }

 private:
  uint8_t* base_;
  size_t used_ = 0;
};

struct Buffers {
  float* x;                 // [n, n_embd] residual stream
  float* xn;                // [n, n_embd] normed input / projection output
  float* q;                 // [n, n_embd_q]
  float* k;                 // [n, n_embd_kv]
  float* v;                 // [n, n_embd_kv]
  float* attn;              // [n, n_embd_q]
  float* gate;              // [n, n_ff]
  float* up;                // [n, n_ff]
  float* rope;              // [n, n_rot]
  float* rope_swa;          // [n, n_rot] local layers' table when their base/scale differ (gemma3), else == rope
  int64_t* pos;             // [n] position of each token
  const int32_t** blocks;   // [n] block table of each token's sequence
  const int32_t** lblocks;  // [n] its local layers' table (== blocks when one pool holds every layer)
  uint8_t* attn_scratch;    // [pool.size()] per-thread attention scratch
  float* moe_y;             // [n, n_embd] a mixture-of-experts FFN's output (MoE models only)
  MoeBuffers moe;           // its scratch (MoE models only)
};

void layout(Arena& a, const ModelConfig& c, GgmlType kv_type, int64_t n, int n_threads, Buffers* b) {
  const size_t N = static_cast<size_t>(n);
  b->x = a.take<float>(N * c.n_embd);
  b->xn = a.take<float>(N * c.n_embd);
  b->q = a.take<float>(N * c.n_embd_q());
  b->k = a.take<float>(N * c.n_embd_kv());
  b->v = a.take<float>(N * c.n_embd_kv());
  b->attn = a.take<float>(N * c.n_embd_q());
  b->gate = a.take<float>(N * c.n_ff);
  b->up = a.take<float>(N * c.n_ff);
  b->rope = a.take<float>(N * c.n_rot);
  b->rope_swa = c.swa_rope_differs() ? a.take<float>(N * c.n_rot) : b->rope;
  b->pos = a.take<int64_t>(N);
  b->blocks = a.take<const int32_t*>(N);
  b->lblocks = a.take<const int32_t*>(N);
  b->attn_scratch = a.take<uint8_t>(static_cast<size_t>(n_threads) * attention_scratch_bytes(attn_shape(c), kv_type));
  if (!c.is_moe()) return;
  const MoeSizes z = moe_sizes(c, n);
  auto take_f = [&](int64_t count) { return a.take<float>(static_cast<size_t>(count)); };
  b->moe_y = take_f(n * c.n_embd);
  b->moe = {take_f(z.probs),
            a.take<int32_t>(static_cast<size_t>(z.sel)),
            take_f(z.sel),
            a.take<int32_t>(static_cast<size_t>(z.order)),
            a.take<int64_t>(static_cast<size_t>(z.start)),
            take_f(z.gx),
            take_f(z.ff),
            take_f(z.ff),
            take_f(z.gx),
            take_f(z.eo)};
}

// Residual add, y: [count] <- d + y (ggml_add(cur, residual)).
void add_rows(float* y, const float* d, int64_t count) {
  for (int64_t i = 0; i < count; ++i) y[i] = d[i] + y[i];
}

// Checks a batch against the model and the pool; counts its tokens (n) and logit rows (n_out).
// Layers of each kind: [0] global, [1] local (sliding-window).
void count_kinds(const ModelConfig& c, int64_t n[2]) {
  n[0] = n[1] = 0;
  for (int64_t il = 0; il < c.n_layer; ++il) ++n[c.is_swa(il) ? 1 : 0];
}

// Whether the pools fit the model: one pool of every layer, or one per kind with that kind's layer
// count (null exactly when the model has no layer of the kind); one block size and element type.
bool pools_fit(const ModelConfig& c, const KvPools& kv) {
  auto fits = [&](const KvPool* p, int64_t layers) {
    return layers == 0 ? p == nullptr : p && p->n_layer() == layers && p->n_embd_kv() == c.n_embd_kv();
  };
  if (!kv.local) return fits(kv.global, c.n_layer);
  int64_t n[2];
  count_kinds(c, n);
  if (!fits(kv.global, n[0]) || !fits(kv.local, n[1])) return false;
  return !kv.global || (kv.global->block_size() == kv.local->block_size() && kv.global->type() == kv.local->type());
}

Status validate_batch(const ModelConfig& c, const KvPools& pools, const int32_t* tokens, const BatchSeq* seqs,
                      int64_t n_seqs, int64_t* n_total, int64_t* n_out_total) {
  if (!tokens || !seqs || n_seqs < 1) return make_error(Code::InvalidArgument, "forward: empty batch");
  if (!pools_fit(c, pools)) return make_error(Code::InvalidArgument, "forward: KV cache was created for another model");
  const KvPool& kv = pools.global ? *pools.global : *pools.local;
  int64_t n = 0, n_out = 0;
  for (int64_t s = 0; s < n_seqs; ++s) {
    const BatchSeq& q = seqs[s];
    if (q.n_tokens < 1)
      return make_error(Code::InvalidArgument,
                        "Expected at least 1 token per sequence but received " + std::to_string(q.n_tokens));
    if (q.pos0 < 0 || !q.blocks) return make_error(Code::InvalidArgument, "forward: sequence without a block table");
    const int64_t need = (q.pos0 + q.n_tokens + kv.block_size() - 1) / kv.block_size();
    if (need > q.n_blocks) {
      return make_error(Code::ContextOverflow, "context overflow: " + std::to_string(q.pos0) + " cached + " +
                                                   std::to_string(q.n_tokens) + " new tokens exceed the " +
                                                   std::to_string(q.n_blocks * kv.block_size()) +
                                                   " positions of the sequence's KV blocks");
    }
    for (int64_t b = 0; pools.global && b < need; ++b)
      if (q.blocks[b] < 0 || q.blocks[b] >= pools.global->n_blocks())
        return make_error(Code::InvalidArgument, "forward: block id out of range");
    if (pools.local) {
      // Only the blocks some query of this batch can see (its window) must be held.
      if (!q.local_blocks) return make_error(Code::InvalidArgument, "forward: sequence without a local block table");
      const int64_t first = std::max<int64_t>(0, q.pos0 - c.n_swa + 1) / kv.block_size();
      for (int64_t b = first; b < need; ++b)
        if (q.local_blocks[b] < 0 || q.local_blocks[b] >= pools.local->n_blocks())
          return make_error(Code::InvalidArgument, "forward: local block id out of range or freed inside the window");
    }
    n += q.n_tokens;
    n_out += q.out == 2 ? q.n_tokens : (q.out == 1 ? 1 : 0);
  }
  for (int64_t t = 0; t < n; ++t) {
    if (tokens[t] < 0 || tokens[t] >= c.n_vocab) {
      return make_error(Code::InvalidArgument, "token id " + std::to_string(tokens[t]) + " at index " +
                                                   std::to_string(t) + " is outside [0, " + std::to_string(c.n_vocab) +
                                                   ")");
    }
  }
  *n_total = n;
  *n_out_total = n_out;
  return Status::ok();
}

// The state one forward pass shares between its stages.
struct Pass {
  const Model& model;
  const ModelConfig& c;
  KvPools kv;
  std::vector<int64_t> kv_index{};  // [n_layer] each layer's index in its pool
  KvPool& pool_of(int64_t il) const { return kv.local && c.is_swa(il) ? *kv.local : *kv.global; }
  const int32_t* const* tables_of(int64_t il) const { return c.is_swa(il) ? B.lblocks : B.blocks; }
  ThreadPool& pool;
  Buffers B{};
  int64_t n = 0;                    // tokens in the batch
  int64_t n_out = 0;                // rows whose logits are wanted
  std::vector<int64_t> out_rows{};  // those rows, ascending
  KvRotation rot{};
  int64_t tok_grain = 1;  // tokens per parallel work item for per-token elementwise work
  // LoRA: each row's delta ([n], empty when the batch has none) and the rows [0, m) of each
  // distinct non-null delta, in row order (rebuilt when the last layer compacts its rows). One
  // group per adapter, not per run of rows: each adapter's A and B are read once per projection
  // however its requests interleave with others in the batch (Punica's SGMV shape).
  struct Group {
    const ProjectionDelta* d;
    std::vector<int64_t> rows;  // ascending
    bool contiguous() const { return rows.back() - rows.front() + 1 == static_cast<int64_t>(rows.size()); }
  };
  std::vector<const ProjectionDelta*> row_delta{};
  std::vector<uint8_t> tiled{};  // [n] rows with the prompt arithmetic (empty: none); BatchLayout::tiled
  std::vector<Group> groups{};
  std::vector<float> gx{}, gy{};                       // gathered rows of a non-contiguous group
  std::array<std::vector<LowRankGroup>, 3> lowrank{};  // per target of an apply_deltas call: its batched groups
};

// Groups of rows [0, m) with the same non-null delta.
void build_groups(Pass& p, int64_t m) {
  p.groups.clear();
  if (p.row_delta.empty()) return;
  for (int64_t t = 0; t < m; ++t) {
    const ProjectionDelta* d = p.row_delta[static_cast<size_t>(t)];
    if (!d) continue;
    auto g = std::find_if(p.groups.begin(), p.groups.end(), [d](const Pass::Group& x) { return x.d == d; });
    if (g == p.groups.end()) {
      p.groups.push_back({d, {}});
      g = p.groups.end() - 1;
    }
    g->rows.push_back(t);
  }
}

// Whether some group's LoRA delta touches projection `which` of layer il.
bool touched(const Pass& p, int64_t il, Proj which) {
  for (const Pass::Group& g : p.groups)
    if (g.d->touches(il, which)) return true;
  return false;
}

// The bias a projection's matmul adds itself. llama.cpp adds the bias after the LoRA term
// (build_lora_mm, then ggml_add of the bias), so when a delta touches the projection the matmul
// runs without it and apply_deltas adds it afterwards, to every row: the kernels' bias add is the
// same single f32 addition after the dot, so rows without a delta keep their bits.
const float* matmul_bias(const Pass& p, int64_t il, Proj which, const float* bias) {
  return bias && touched(p, il, which) ? nullptr : bias;
}

// Whether some group's delta on one of these projections multiplies q8_0 gemm rows of x
// (Q8_0Gemm or Q4_0Gemm LoRA factors): then the projections' matmul prepares those rows too, and the deltas
// read them instead of quantizing x once per projection and adapter.
bool wants_q8(const Pass& p, int64_t il, std::initializer_list<Proj> which) {
  for (const Pass::Group& g : p.groups)
    for (Proj w : which) {
      LowRankFactors f;
      if (g.d->touches(il, w) && g.d->low_rank(il, w, &f) &&
          (f.type == LowRankType::Q8_0Gemm || f.type == LowRankType::Q4_0Gemm))
        return true;
    }
  return false;
}

// A projection apply_deltas updates after its matmul: y [m, n_out] (row stride ldy) = W·x.
struct DeltaTarget {
  Proj which;
  const MatrixView* w;
  const float* bias;  // the bias matmul_bias deferred, or null
  float* y;
  int64_t ldy;
};

// After the base products of up to 3 projections that share x (Q, K, V; gate, up) over rows
// [0, m): each group whose delta touches a projection gets y += delta(x). Low-rank deltas (LoRA)
// of all the projections go together through one lowrank_apply_jobs call; any other delta
// through its add(), a scattered group on gathered copies of its x and y rows that are copied back
// (the delta sees exactly the values it would in place, so tokens do not depend on the grouping).
// Then each projection's bias, if matmul_bias deferred it.
// xq: x's q8_0 gemm rows from the projections' matmul (wants_q8), or empty.
void apply_deltas(Pass& p, int64_t il, std::initializer_list<DeltaTarget> targets, const float* x, int64_t m,
                  PreparedQ8 xq = {}) {
  LowRankJob jobs[3];
  int n_jobs = 0;
  for (const DeltaTarget& T : targets) {
    if (!touched(p, il, T.which)) continue;
    const int64_t n_in = T.w->n_in, n_out = T.w->n_out, ldy = T.ldy;
    float* y = T.y;
    std::vector<LowRankGroup>& lr = p.lowrank[static_cast<size_t>(n_jobs)];
    lr.clear();
    for (const Pass::Group& g : p.groups) {
      if (!g.d->touches(il, T.which)) continue;
      LowRankFactors f;
      if (n_in % 8 == 0 && g.d->low_rank(il, T.which, &f)) {
        lr.push_back({f, g.rows.data(), static_cast<int64_t>(g.rows.size())});
        continue;
      }
      const int64_t k = static_cast<int64_t>(g.rows.size()), r0 = g.rows.front();
      xq = {};  // add() may run matmul, which reuses this thread's buffer of prepared rows
      if (g.contiguous()) {
        g.d->add(il, T.which, x + r0 * n_in, k, y + r0 * ldy, ldy, p.pool);
        continue;
      }
      p.gx.resize(static_cast<size_t>(k * n_in));
      p.gy.resize(static_cast<size_t>(k * n_out));
      for (int64_t i = 0; i < k; ++i) {
        const int64_t r = g.rows[static_cast<size_t>(i)];
        std::copy(x + r * n_in, x + (r + 1) * n_in, p.gx.data() + i * n_in);
        std::copy(y + r * ldy, y + r * ldy + n_out, p.gy.data() + i * n_out);
      }
      g.d->add(il, T.which, p.gx.data(), k, p.gy.data(), n_out, p.pool);
      for (int64_t i = 0; i < k; ++i) {
        const int64_t r = g.rows[static_cast<size_t>(i)];
        std::copy(p.gy.data() + i * n_out, p.gy.data() + (i + 1) * n_out, y + r * ldy);
      }
    }
    jobs[n_jobs++] = {lr.data(), static_cast<int64_t>(lr.size()), x, n_in, y, ldy, n_out, nullptr, 0};
  }
  for (int j = 0; j < n_jobs; ++j) jobs[j].xq = xq.data, jobs[j].xq_stride = xq.stride;
  lowrank_apply_jobs(jobs, n_jobs, p.pool);
  for (const DeltaTarget& T : targets) {
    if (!T.bias || !touched(p, il, T.which)) continue;
    for (int64_t t = 0; t < m; ++t)
      for (int64_t j = 0; j < T.w->n_out; ++j) T.y[t * T.ldy + j] = T.y[t * T.ldy + j] + T.bias[j];
  }
}

// Per-token positions, block tables and deltas; the rows whose logits are wanted, in batch order.
void expand_positions(Pass& p, const BatchSeq* seqs, int64_t n_seqs, const ProjectionDelta* const* deltas) {
  p.out_rows.reserve(static_cast<size_t>(p.n_out));
  bool any_delta = false, any_tiled = false;
  for (int64_t s = 0; deltas && s < n_seqs; ++s) any_delta = any_delta || deltas[s];
  for (int64_t s = 0; s < n_seqs; ++s) any_tiled = any_tiled || seqs[s].tiled;
  if (any_delta) p.row_delta.assign(static_cast<size_t>(p.n), nullptr);
  if (any_tiled) p.tiled.assign(static_cast<size_t>(p.n), 0);
  for (int64_t s = 0, t0 = 0; s < n_seqs; t0 += seqs[s].n_tokens, ++s) {
    const BatchSeq& q = seqs[s];
    for (int64_t i = 0; i < q.n_tokens; ++i) {
      p.B.pos[t0 + i] = q.pos0 + i;
      p.B.blocks[t0 + i] = q.blocks;
      p.B.lblocks[t0 + i] = p.kv.local ? q.local_blocks : q.blocks;
      if (any_delta) p.row_delta[static_cast<size_t>(t0 + i)] = deltas[s];
      if (any_tiled) p.tiled[static_cast<size_t>(t0 + i)] = q.tiled;
      if (q.out == 2 || (q.out == 1 && i == q.n_tokens - 1)) p.out_rows.push_back(t0 + i);
    }
  }
  build_groups(p, p.n);
}

// Embeddings (dequantized rows of token_embd; gemma scales them by sqrtf(n_embd) as ggml_scale)
// and the RoPE table of each token's position (a second one for local layers with their own base).
void embed(Pass& p, const int32_t* tokens) {
  const ModelWeights& W = p.model.weights();
  const int64_t E = p.c.n_embd;
  const float escale = sqrtf(static_cast<float>(E));
  ModelConfig local;
  if (p.c.swa_rope_differs()) {
    local.rope_freq_base = p.c.rope_freq_base_swa;
    local.rope_freq_scale = p.c.rope_freq_scale_swa;
    local.n_rot = p.c.n_rot;
    local.rope_n_ctx_orig = p.c.rope_n_ctx_orig;
    local.yarn_ext_factor = p.c.yarn_ext_factor;
    local.yarn_attn_factor = p.c.yarn_attn_factor;
    local.yarn_beta_fast = p.c.yarn_beta_fast;
    local.yarn_beta_slow = p.c.yarn_beta_slow;
  }
  p.pool.parallel_for(
      p.n,
      [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
          float* x = p.B.x + t * E;
          dequantize_row(W.tok_embd.type, W.tok_embd.row(tokens[t]), x, E);
          if (p.c.embd_scale)
            for (int64_t i = 0; i < E; ++i) x[i] *= escale;
          rope_cache_f32(p.c, W.rope_freqs, p.B.pos[t], 1, p.B.rope + t * p.c.n_rot);
          if (p.B.rope_swa != p.B.rope)
            rope_cache_f32(local, W.rope_freqs, p.B.pos[t], 1, p.B.rope_swa + t * p.c.n_rot);
        }
      },
      p.tok_grain);
}

// Norm -> Q, K, V (-> per-head Q/K norms) -> RoPE (-> KV rotation) -> every token's K, V stored
// in the pool.
void qkv_and_store(Pass& p, const LayerWeights& L, int64_t il) {
  const ModelConfig& c = p.c;
  Buffers& B = p.B;
  const int64_t E = c.n_embd, NQ = c.n_embd_q(), NKV = c.n_embd_kv();
  p.pool.parallel_for(
      p.n, [&](int64_t b, int64_t e) { rms_norm_f32(B.x + b * E, L.attn_norm, B.xn + b * E, e - b, E, c.rms_eps); },
      p.tok_grain);
  const MatmulTask qkv[3] = {{&L.wq, matmul_bias(p, il, Proj::Q, L.bq), B.q, NQ},
                             {&L.wk, matmul_bias(p, il, Proj::K, L.bk), B.k, NKV},
                             {&L.wv, matmul_bias(p, il, Proj::V, L.bv), B.v, NKV}};
  PreparedQ8 xq;
  matmul(qkv, 3, B.xn, p.n, p.pool, wants_q8(p, il, {Proj::Q, Proj::K, Proj::V}) ? &xq : nullptr);
  apply_deltas(p, il,
               {{Proj::Q, &L.wq, L.bq, B.q, NQ}, {Proj::K, &L.wk, L.bk, B.k, NKV}, {Proj::V, &L.wv, L.bv, B.v, NKV}},
               B.xn, p.n, xq);
  const KvRotation rot = p.rot;
  const float* rope = c.is_swa(il) ? B.rope_swa : B.rope;
  p.pool.parallel_for(
      p.n,
      [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
          const float* cache_row = rope + t * c.n_rot;
          // qwen3: RMSNorm over each head's head_dim values (llama.cpp build_norm on the
          // [head_dim, n_head] view, the model's eps), after biases and LoRA, before RoPE.
          if (L.attn_q_norm) {
            rms_norm_f32(B.q + t * NQ, L.attn_q_norm, B.q + t * NQ, c.n_head, c.head_dim, c.rms_eps);
          }
          if (L.attn_k_norm) {
            rms_norm_f32(B.k + t * NKV, L.attn_k_norm, B.k + t * NKV, c.n_head_kv, c.head_dim, c.rms_eps);
          }
          rope_apply_f32(B.q + t * NQ, c.n_head, c.head_dim, c.n_rot, c.rope_type, cache_row);
          rope_apply_f32(B.k + t * NKV, c.n_head_kv, c.head_dim, c.n_rot, c.rope_type, cache_row);
          // gemma: Q *= f_attention_scale after RoPE (ggml_scale), the attention then scales by 1.
          if (c.q_scale != 0.0f)
            for (int64_t i = 0; i < NQ; ++i) B.q[t * NQ + i] *= c.q_scale;
          if (rot.k) {
            hadamard_blocks_f32(B.q + t * NQ, NQ, rot.k);
            hadamard_blocks_f32(B.k + t * NKV, NKV, rot.k);
          }
          if (rot.v) hadamard_blocks_f32(B.v + t * NKV, NKV, rot.v);
          p.pool_of(il).store(p.kv_index[static_cast<size_t>(il)], p.tables_of(il)[t], B.pos[t], B.k + t * NKV,
                              B.v + t * NKV);
        }
      },
      p.tok_grain);
}

// In the last layer only the rows whose logits are wanted go on (llama.cpp's out_ids); every
// token's K and V were stored already. Rows are compacted in place (out_rows ascends).
void keep_output_rows(Pass& p) {
  const int64_t E = p.c.n_embd, NQ = p.c.n_embd_q();
  Buffers& B = p.B;
  for (int64_t i = 0; i < p.n_out; ++i) {
    const int64_t r = p.out_rows[static_cast<size_t>(i)];
    if (r == i) continue;
    std::copy(B.q + r * NQ, B.q + (r + 1) * NQ, B.q + i * NQ);
    std::copy(B.x + r * E, B.x + (r + 1) * E, B.x + i * E);
    B.pos[i] = B.pos[r];
    B.blocks[i] = B.blocks[r];
    B.lblocks[i] = B.lblocks[r];
    if (!p.row_delta.empty()) p.row_delta[static_cast<size_t>(i)] = p.row_delta[static_cast<size_t>(r)];
    if (!p.tiled.empty()) p.tiled[static_cast<size_t>(i)] = p.tiled[static_cast<size_t>(r)];
  }
  build_groups(p, p.n_out);
}

// Residual add of a block's output (B.xn rows [0, m)) into x, after gemma's post-norm of it.
void post_norm_and_add(Pass& p, const float* post_norm, int64_t m) {
  const int64_t E = p.c.n_embd;
  Buffers& B = p.B;
  p.pool.parallel_for(
      m,
      [&](int64_t b, int64_t e) {
        if (post_norm) rms_norm_f32(B.xn + b * E, post_norm, B.xn + b * E, e - b, E, p.c.rms_eps);
        add_rows(B.x + b * E, B.xn + b * E, (e - b) * E);
      },
      p.tok_grain);
}

// Attention of rows [0, m) -> (back from the rotated V basis) -> output projection -> residual.
void attention_block(Pass& p, const LayerWeights& L, int64_t il, int64_t m) {
  const ModelConfig& c = p.c;
  Buffers& B = p.B;
  const int64_t E = c.n_embd, NQ = c.n_embd_q();
  const BatchLayout bl{p.n, B.pos, p.tables_of(il), p.tiled.empty() ? nullptr : p.tiled.data()};
  attention_f32(attn_shape(c, il), p.pool_of(il), p.kv_index[static_cast<size_t>(il)], B.q, bl, 0, m, B.attn,
                B.attn_scratch, p.pool);
  if (p.rot.v) {
    p.pool.parallel_for(
        m,
        [&](int64_t b, int64_t e) {
          for (int64_t t = b; t < e; ++t) hadamard_blocks_f32(B.attn + t * NQ, NQ, p.rot.v);
        },
        p.tok_grain);
  }
  const MatmulTask wo[1] = {{&L.wo, matmul_bias(p, il, Proj::O, L.bo), B.xn, E}};
  PreparedQ8 xq;
  matmul(wo, 1, B.attn, m, p.pool, wants_q8(p, il, {Proj::O}) ? &xq : nullptr);
  apply_deltas(p, il, {{Proj::O, &L.wo, L.bo, B.xn, E}}, B.attn, m, xq);
  post_norm_and_add(p, L.attn_post_norm, m);
}

// Norm -> SwiGLU feed-forward (or the mixture of experts, model/moe.h) -> residual, rows [0, m).
void ffn_block(Pass& p, const LayerWeights& L, int64_t il, int64_t m) {
  const ModelConfig& c = p.c;
  Buffers& B = p.B;
  const int64_t E = c.n_embd, FF = c.n_ff;
  p.pool.parallel_for(
      m, [&](int64_t b, int64_t e) { rms_norm_f32(B.x + b * E, L.ffn_norm, B.xn + b * E, e - b, E, c.rms_eps); },
      p.tok_grain);
  if (c.is_moe()) {
    moe_ffn(c, L, B.xn, m, B.moe_y, B.moe, p.pool);
    std::copy(B.moe_y, B.moe_y + m * E, B.xn);
    post_norm_and_add(p, L.ffn_post_norm, m);
    return;
  }
  const MatmulTask gu[2] = {{&L.ffn_gate, matmul_bias(p, il, Proj::Gate, L.ffn_gate_b), B.gate, FF},
                            {&L.ffn_up, matmul_bias(p, il, Proj::Up, L.ffn_up_b), B.up, FF}};
  PreparedQ8 xq;
  matmul(gu, 2, B.xn, m, p.pool, wants_q8(p, il, {Proj::Gate, Proj::Up}) ? &xq : nullptr);
  apply_deltas(p, il,
               {{Proj::Gate, &L.ffn_gate, L.ffn_gate_b, B.gate, FF}, {Proj::Up, &L.ffn_up, L.ffn_up_b, B.up, FF}}, B.xn,
               m, xq);
  p.pool.parallel_for(
      m,
      [&](int64_t b, int64_t e) {
        if (c.geglu) geglu_f32(B.gate + b * FF, B.up + b * FF, (e - b) * FF);
        else swiglu_f32(B.gate + b * FF, B.up + b * FF, (e - b) * FF);
      },
      p.tok_grain);
  const MatmulTask down[1] = {{&L.ffn_down, matmul_bias(p, il, Proj::Down, L.ffn_down_b), B.xn, E}};
  PreparedQ8 gq;
  matmul(down, 1, B.gate, m, p.pool, wants_q8(p, il, {Proj::Down}) ? &gq : nullptr);
  apply_deltas(p, il, {{Proj::Down, &L.ffn_down, L.ffn_down_b, B.xn, E}}, B.gate, m, gq);
  post_norm_and_add(p, L.ffn_post_norm, m);
}

// Final norm and output projection of the wanted rows (compacted to the front). hidden: the normed
// rows themselves ([n_out, n_embd], llama.cpp's "result_norm", what embeddings pool) instead.
void output_head(Pass& p, float* logits, bool hidden) {
  const ModelWeights& W = p.model.weights();
  const int64_t E = p.c.n_embd;
  Buffers& B = p.B;
  p.pool.parallel_for(
      p.n_out,
      [&](int64_t b, int64_t e) { rms_norm_f32(B.x + b * E, W.output_norm, B.xn + b * E, e - b, E, p.c.rms_eps); },
      p.tok_grain);
  if (hidden) {
    std::copy(B.xn, B.xn + p.n_out * E, logits);
    return;
  }
  const MatmulTask out[1] = {{&W.output, nullptr, logits, p.c.n_vocab}};
  matmul(out, 1, B.xn, p.n_out, p.pool);
  apply_deltas(p, -1, {{Proj::Output, &W.output, nullptr, logits, p.c.n_vocab}}, B.xn, p.n_out);
  if (p.c.final_softcap != 0.0f) {
    const int64_t V = p.c.n_vocab;
    p.pool.parallel_for(p.n_out,
                        [&](int64_t b, int64_t e) { softcap_f32(logits + b * V, (e - b) * V, p.c.final_softcap); });
  }
}

}  // namespace

uint8_t* ForwardScratch::get(size_t bytes) {
  if (bytes > bytes_) {
    buf_.reset();
    bytes_ = 0;
    buf_.reset(new (std::nothrow) uint8_t[bytes]);
    if (!buf_) return nullptr;
    bytes_ = bytes;
  }
  return buf_.get();
}

Status forward_batch(const Model& model, KvPool& kv, const int32_t* tokens, const BatchSeq* seqs, int64_t n_seqs,
                     std::vector<float>* logits, ThreadPool& pool, ForwardScratch& scratch,
                     const ProjectionDelta* const* deltas, bool hidden) {
  return forward_batch(model, KvPools{&kv, nullptr}, tokens, seqs, n_seqs, logits, pool, scratch, deltas, hidden);
}

Status forward_batch(const Model& model, const KvPools& pools, const int32_t* tokens, const BatchSeq* seqs,
                     int64_t n_seqs, std::vector<float>* logits, ThreadPool& pool, ForwardScratch& scratch,
                     const ProjectionDelta* const* deltas, bool hidden) {
  const ModelConfig& c = model.config();
  if (!logits) return make_error(Code::InvalidArgument, "forward: logits output is null");
  Pass p{model, c, pools, {}, pool, {}};
  LLMS_RETURN_IF_ERROR(validate_batch(c, pools, tokens, seqs, n_seqs, &p.n, &p.n_out));
  const KvPool& kv = pools.global ? *pools.global : *pools.local;
  int64_t rank[2] = {0, 0};
  for (int64_t il = 0; il < c.n_layer; ++il) {
    const int kind = pools.local && c.is_swa(il) ? 1 : 0;
    p.kv_index.push_back(rank[kind]++);
  }

  Arena measure(nullptr);
  layout(measure, c, kv.type(), p.n, pool.size(), &p.B);
  uint8_t* block = scratch.get(measure.used());
  if (!block) {
    return make_error(Code::OutOfMemory, "could not allocate " + std::to_string(measure.used() >> 20) +
                                             " MiB of forward scratch for " + std::to_string(p.n) + " tokens");
  }
  Arena arena(block);
  layout(arena, c, kv.type(), p.n, pool.size(), &p.B);
  try {
    logits->resize(static_cast<size_t>(p.n_out * (hidden ? c.n_embd : c.n_vocab)));
  } catch (const std::bad_alloc&) { return make_error(Code::OutOfMemory, "could not allocate logits"); }
  expand_positions(p, seqs, n_seqs, deltas);
  p.rot = kv_rotation(c.head_dim, kv.type());
  // Per-token elementwise work is cheap: give each thread at least ~16K elements.
  p.tok_grain = std::max<int64_t>(1, (int64_t(1) << 14) / std::max(c.n_embd, c.n_ff));

  embed(p, tokens);
  for (int64_t il = 0; il < c.n_layer; ++il) {
    const LayerWeights& L = model.weights().layers[static_cast<size_t>(il)];
    qkv_and_store(p, L, il);
    int64_t m = p.n;
    if (il == c.n_layer - 1 && p.n_out < p.n) {
      keep_output_rows(p);
      m = p.n_out;
      if (m == 0) break;
    }
    attention_block(p, L, il, m);
    ffn_block(p, L, il, m);
  }
  if (p.n_out == 0) return Status::ok();
  output_head(p, logits->data(), hidden);
  return Status::ok();
}

Status forward(const Model& model, KvCache& kv, const int32_t* tokens, int64_t n, bool logits_all,
               std::vector<float>* logits, ThreadPool& pool, ForwardScratch* scratch, const ProjectionDelta* delta,
               bool hidden) {
  if (n < 1) return make_error(Code::InvalidArgument, "Expected at least 1 token but received " + std::to_string(n));
  if (!tokens) return make_error(Code::InvalidArgument, "forward: tokens is null");
  const ModelConfig& c = model.config();
  if (kv.n_layer() != c.n_layer || kv.n_embd_kv() != c.n_embd_kv())
    return make_error(Code::InvalidArgument, "forward: KV cache was created for another model");
  if (n > kv.n_ctx() - kv.n_past()) {
    return make_error(Code::ContextOverflow, "context overflow: " + std::to_string(kv.n_past()) + " cached + " +
                                                 std::to_string(n) + " new tokens exceed n_ctx " +
                                                 std::to_string(kv.n_ctx()));
  }
  BatchSeq s;
  s.blocks = kv.blocks();
  s.n_blocks = (kv.n_ctx() + kv.pool().block_size() - 1) / kv.pool().block_size();
  s.pos0 = kv.n_past();
  s.n_tokens = n;
  s.out = logits_all ? 2 : 1;
  ForwardScratch local;
  const ProjectionDelta* deltas[1] = {delta};
  LLMS_RETURN_IF_ERROR(
      forward_batch(model, kv.pool(), tokens, &s, 1, logits, pool, scratch ? *scratch : local, deltas, hidden));
  kv.set_n_past(kv.n_past() + n);
  return Status::ok();
}

}  // namespace llmserve
