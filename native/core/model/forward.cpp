#include "forward.h"

#include <algorithm>
#include <new>

#include "../quant/quant.h"
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
  float* x;       // [n, n_embd] residual stream
  float* xn;      // [n, n_embd] normed input / projection output
  float* q;       // [n, n_embd_q]
  float* k;       // [n, n_embd_kv]
  float* v;       // [n, n_embd_kv]
  float* attn;    // [n, n_embd_q]
  float* gate;    // [n, n_ff]
  float* up;      // [n, n_ff]
  float* rope;    // [n, n_rot]
  uint8_t* act;   // converted activations for matmul
  uint8_t* attn_scratch;  // [pool.size()] per-thread attention scratch
};

void layout(Arena& a, const Model& m, int64_t n, int64_t n_ctx, int n_threads, Buffers* b) {
  const ModelConfig& c = m.config();
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
  // One matmul group's conversions (each distinct vec_dot type aligned separately).
  b->act = a.take<uint8_t>(N * m.act_bytes_per_token() + 4 * kAlign);
  b->attn_scratch =
      a.take<uint8_t>(static_cast<size_t>(n_threads) * attention_scratch_bytes(n_ctx, c.head_dim));
}

// Residual add, y: [count] <- d + y (ggml_add(cur, residual)).
void add_rows(float* y, const float* d, int64_t count) {
  for (int64_t i = 0; i < count; ++i) y[i] = d[i] + y[i];
}

}  // namespace

Status forward(const Model& model, KvCache& kv, const int32_t* tokens, int64_t n, bool logits_all,
               std::vector<float>* logits, ThreadPool& pool) {
  const ModelConfig& c = model.config();
  const ModelWeights& W = model.weights();
  if (!logits) return make_error(Code::InvalidArgument, "forward: logits output is null");
  if (n < 1) {
    return make_error(Code::InvalidArgument,
                      "Expected at least 1 token but received " + std::to_string(n));
  }
  if (!tokens) return make_error(Code::InvalidArgument, "forward: tokens is null");
  if (kv.n_layer() != c.n_layer || kv.n_embd_kv() != c.n_embd_kv()) {
    return make_error(Code::InvalidArgument, "forward: KV cache was created for another model");
  }
  const int64_t n_past = kv.n_past();
  if (n > kv.n_ctx() - n_past) {
    return make_error(Code::ContextOverflow,
                      "context overflow: " + std::to_string(n_past) + " cached + " +
                          std::to_string(n) + " new tokens exceed n_ctx " +
                          std::to_string(kv.n_ctx()));
  }
  for (int64_t t = 0; t < n; ++t) {
    if (tokens[t] < 0 || tokens[t] >= c.n_vocab) {
      return make_error(Code::InvalidArgument, "token id " + std::to_string(tokens[t]) +
                                                   " at index " + std::to_string(t) +
                                                   " is outside [0, " + std::to_string(c.n_vocab) +
                                                   ")");
    }
  }

  Buffers B;
  Arena measure(nullptr);
  layout(measure, model, n, kv.n_ctx(), pool.size(), &B);
  uint8_t* block = kv.scratch(measure.used());
  if (!block) {
    return make_error(Code::OutOfMemory, "could not allocate " +
                                             std::to_string(measure.used() >> 20) +
                                             " MiB of forward scratch for " + std::to_string(n) +
                                             " tokens");
  }
  Arena arena(block);
  layout(arena, model, n, kv.n_ctx(), pool.size(), &B);
  const int64_t n_out_rows = logits_all ? n : 1;
  try {
    logits->resize(static_cast<size_t>(n_out_rows * c.n_vocab));
  } catch (const std::bad_alloc&) {
    return make_error(Code::OutOfMemory, "could not allocate logits");
  }

  const int64_t E = c.n_embd, NQ = c.n_embd_q(), NKV = c.n_embd_kv(), FF = c.n_ff;
  // Per-token elementwise work is cheap: give each thread at least ~16K elements.
  const int64_t tok_grain = std::max<int64_t>(1, (int64_t(1) << 14) / std::max(E, FF));

  // Embeddings (dequantized rows of token_embd) and the RoPE table of this batch's positions.
  pool.parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t)
      dequantize_row(W.tok_embd.type, W.tok_embd.row(tokens[t]), B.x + t * E, E);
    rope_cache_f32(c, W.rope_freqs, n_past + b, e - b, B.rope + b * c.n_rot);
  }, tok_grain);

  for (int64_t il = 0; il < c.n_layer; ++il) {
    const LayerWeights& L = W.layers[static_cast<size_t>(il)];

    // Attention block: norm -> Q, K, V -> RoPE -> store K, V -> attention.
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      rms_norm_f32(B.x + b * E, L.attn_norm, B.xn + b * E, e - b, E, c.rms_eps);
    }, tok_grain);
    const MatmulTask qkv[3] = {{&L.wq, L.bq, B.q, NQ}, {&L.wk, L.bk, B.k, NKV},
                               {&L.wv, L.bv, B.v, NKV}};
    matmul(qkv, 3, B.xn, n, B.act, pool);
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const float* cache_row = B.rope + t * c.n_rot;
        rope_apply_f32(B.q + t * NQ, c.n_head, c.head_dim, c.n_rot, c.rope_type, cache_row);
        rope_apply_f32(B.k + t * NKV, c.n_head_kv, c.head_dim, c.n_rot, c.rope_type, cache_row);
        kv_store(kv, il, n_past + t, B.k + t * NKV, B.v + t * NKV);
      }
    }, tok_grain);
    // In the last layer only the rows whose logits are wanted go on (as llama.cpp's out_ids);
    // every token's K and V were stored above.
    const int64_t r0 = (il == c.n_layer - 1 && !logits_all) ? n - 1 : 0;
    const int64_t m = n - r0;
    float* x = B.x + r0 * E;
    attention_f32(c, kv, il, B.q + r0 * NQ, m, n_past + r0, B.attn + r0 * NQ, B.attn_scratch, pool);

    const MatmulTask wo[1] = {{&L.wo, L.bo, B.xn, E}};
    matmul(wo, 1, B.attn + r0 * NQ, m, B.act, pool);
    pool.parallel_for(m, [&](int64_t b, int64_t e) {
      add_rows(x + b * E, B.xn + b * E, (e - b) * E);
      rms_norm_f32(x + b * E, L.ffn_norm, B.xn + b * E, e - b, E, c.rms_eps);
    }, tok_grain);

    // SwiGLU feed-forward.
    const MatmulTask gu[2] = {{&L.ffn_gate, L.ffn_gate_b, B.gate, FF},
                              {&L.ffn_up, L.ffn_up_b, B.up, FF}};
    matmul(gu, 2, B.xn, m, B.act, pool);
    pool.parallel_for(m, [&](int64_t b, int64_t e) {
      swiglu_f32(B.gate + b * FF, B.up + b * FF, (e - b) * FF);
    }, tok_grain);
    const MatmulTask down[1] = {{&L.ffn_down, L.ffn_down_b, B.xn, E}};
    matmul(down, 1, B.gate, m, B.act, pool);
    pool.parallel_for(m, [&](int64_t b, int64_t e) {
      add_rows(x + b * E, B.xn + b * E, (e - b) * E);
    }, tok_grain);
  }

  // Final norm and output projection of the wanted rows.
  const int64_t r0 = n - n_out_rows;
  pool.parallel_for(n_out_rows, [&](int64_t b, int64_t e) {
    rms_norm_f32(B.x + (r0 + b) * E, W.output_norm, B.xn + b * E, e - b, E, c.rms_eps);
  }, tok_grain);
  const MatmulTask out[1] = {{&W.output, nullptr, logits->data(), c.n_vocab}};
  matmul(out, 1, B.xn, n_out_rows, B.act, pool);

  kv.set_n_past(n_past + n);
  return Status::ok();
}

}  // namespace llmserve
