#include "lora_train.h"

#include <algorithm>
#include <string>

#include "../model/ops.h"
#include "../quant/quant.h"
#include "train_ops.h"

namespace llmserve {

namespace {

const MatrixView& proj_weight(const LayerWeights& L, int p) {
  switch (static_cast<Proj>(p)) {
    case Proj::Q: return L.wq;
    case Proj::K: return L.wk;
    case Proj::V: return L.wv;
    case Proj::O: return L.wo;
    case Proj::Gate: return L.ffn_gate;
    case Proj::Up: return L.ffn_up;
    default: return L.ffn_down;
  }
}

const float* proj_bias(const LayerWeights& L, int p) {
  switch (static_cast<Proj>(p)) {
    case Proj::Q: return L.bq;
    case Proj::K: return L.bk;
    case Proj::V: return L.bv;
    case Proj::O: return L.bo;
    case Proj::Gate: return L.ffn_gate_b;
    case Proj::Up: return L.ffn_up_b;
    default: return L.ffn_down_b;
  }
}

// The per-call state of one projection: its dequantized weight (kept only while it runs).
template <typename T>
struct Proj1 {
  const Model& model;
  const LoraSet<T>& lora;
  ThreadPool& pool;
  std::vector<T>& w;   // dequantized weight, reused between projections
  std::vector<T>& du;  // backward scratch

  // y [n, n_out] = proj p of layer il applied to x [n, n_in]; u [n, r] kept when targeted.
  void fwd(int64_t il, int p, const T* x, int64_t n, T* y, std::vector<T>* u) {
    const MatrixView& W = proj_weight(model.weights().layers[static_cast<size_t>(il)], p);
    const LoraMatrix<T>& m = lora.at(il, p);
    dequant_matrix(W, &w, pool);
    if (m.on()) u->assign(static_cast<size_t>(n * lora.rank), T(0));
    linear_fwd(w.data(), proj_bias(model.weights().layers[static_cast<size_t>(il)], p), m.on() ? m.a.data() : nullptr,
               m.on() ? m.b.data() : nullptr, lora.rank, static_cast<T>(lora.scale), x, n, W.n_in, W.n_out, y,
               m.on() ? u->data() : nullptr, pool);
  }
  // dx [n, n_in] += d/dx; grad of the factors += (when grad is given and p is targeted).
  void bwd(int64_t il, int p, const T* x, const std::vector<T>& u, const T* dy, int64_t n, T* dx, LoraSet<T>* grad) {
    const MatrixView& W = proj_weight(model.weights().layers[static_cast<size_t>(il)], p);
    const LoraMatrix<T>& m = lora.at(il, p);
    dequant_matrix(W, &w, pool);
    LoraMatrix<T>* g = grad && m.on() ? &grad->at(il, p) : nullptr;
    linear_bwd(w.data(), m.on() ? m.a.data() : nullptr, m.on() ? m.b.data() : nullptr, lora.rank,
               static_cast<T>(lora.scale), x, m.on() ? u.data() : nullptr, dy, n, W.n_in, W.n_out, dx,
               g ? g->a.data() : nullptr, g ? g->b.data() : nullptr, &du, pool);
  }
};

// Sizes an output buffer that the op writing it fills completely (no zeroing needed; a reused
// buffer keeps its pages).
template <typename T>
void zero(std::vector<T>* v, size_t count) {
  v->resize(count);
}

}  // namespace

void proj_shape(const ModelConfig& c, int p, int64_t* n_in, int64_t* n_out) {
  switch (static_cast<Proj>(p)) {
    case Proj::Q: *n_in = c.n_embd, *n_out = c.n_embd_q(); break;
    case Proj::K:
    case Proj::V: *n_in = c.n_embd, *n_out = c.n_embd_kv(); break;
    case Proj::O: *n_in = c.n_embd_q(), *n_out = c.n_embd; break;
    case Proj::Gate:
    case Proj::Up: *n_in = c.n_embd, *n_out = c.n_ff; break;
    default: *n_in = c.n_ff, *n_out = c.n_embd; break;
  }
}

template <typename T>
int64_t LoraSet<T>::size() const {
  int64_t s = 0;
  for (const LoraMatrix<T>& m : mats) s += static_cast<int64_t>(m.a.size() + m.b.size());
  return s;
}

template <typename T>
Status lora_zeros(const ModelConfig& c, int64_t rank, double alpha, uint32_t targets, LoraSet<T>* out) {
  if (rank < 1) return make_error(Code::InvalidArgument, "LoRA rank must be at least 1, got " + std::to_string(rank));
  // The training forward/backward implements llama, qwen2 and qwen3 blocks only: gemma's soft-caps,
  // GeGLU, post-norms and sliding windows, and phi3's fused tensors would be silently wrong here.
  if (c.arch != "llama" && c.arch != "qwen2" && c.arch != "qwen3")
    return make_error(Code::UnsupportedArch, "finetune trains llama, qwen2 and qwen3 models; '" + c.arch +
                                                 "' runs for inference but its training backward is not written yet");
  // Nor the expert routing of mixture-of-experts models (Mixtral is llama with experts).
  if (c.is_moe())
    return make_error(Code::UnsupportedArch, "finetune does not train mixture-of-experts models (" +
                                                 std::to_string(c.n_expert) +
                                                 " experts); they run for inference only, use a dense model");
  if ((targets & kAllBlockProjs) == 0)
    return make_error(Code::InvalidArgument, "LoRA needs at least one target projection (q,k,v,o,gate,up,down)");
  out->rank = rank;
  out->scale = alpha / static_cast<double>(rank);
  out->mats.assign(static_cast<size_t>(c.n_layer * kLoraProjs), LoraMatrix<T>{});
  for (int64_t il = 0; il < c.n_layer; ++il)
    for (int p = 0; p < kLoraProjs; ++p) {
      LoraMatrix<T>& m = out->at(il, p);
      proj_shape(c, p, &m.n_in, &m.n_out);
      if (!(targets & (1u << p))) continue;
      m.a.assign(static_cast<size_t>(rank * m.n_in), T(0));
      m.b.assign(static_cast<size_t>(m.n_out * rank), T(0));
    }
  return Status::ok();
}

template <typename T>
void block_fwd(const Model& model, int64_t il, const LoraSet<T>& lora, const float* rope_cache, const T* x_in,
               int64_t n, BlockActs<T>* a, T* x_out, ThreadPool& pool, BlockScratch<T>* scratch) {
  const ModelConfig& c = model.config();
  const LayerWeights& L = model.weights().layers[static_cast<size_t>(il)];
  const int64_t E = c.n_embd, Eq = c.n_embd_q(), Ekv = c.n_embd_kv(), F = c.n_ff, H = c.n_head, Hkv = c.n_head_kv,
                D = c.head_dim;
  const size_t N = static_cast<size_t>(n);
  BlockScratch<T> local;
  BlockScratch<T>& ws = scratch ? *scratch : local;
  Proj1<T> pr{model, lora, pool, ws.w, ws.du};
  a->x_in.assign(x_in, x_in + n * E);
  zero(&a->rstd1, N), zero(&a->xn1, N * E);
  rmsnorm_fwd(x_in, L.attn_norm, n, E, c.rms_eps, a->xn1.data(), a->rstd1.data());
  zero(&a->q_raw, N * Eq), zero(&a->k_raw, N * Ekv), zero(&a->v, N * Ekv);
  pr.fwd(il, 0, a->xn1.data(), n, a->q_raw.data(), &a->u[0]);
  pr.fwd(il, 1, a->xn1.data(), n, a->k_raw.data(), &a->u[1]);
  pr.fwd(il, 2, a->xn1.data(), n, a->v.data(), &a->u[2]);
  a->q = a->q_raw;
  a->k = a->k_raw;
  if (L.attn_q_norm) {  // qwen3: RMSNorm of each head before RoPE
    zero(&a->q_rstd, N * H), zero(&a->k_rstd, N * Hkv);
    rmsnorm_fwd(a->q_raw.data(), L.attn_q_norm, n * H, D, c.rms_eps, a->q.data(), a->q_rstd.data());
    rmsnorm_fwd(a->k_raw.data(), L.attn_k_norm, n * Hkv, D, c.rms_eps, a->k.data(), a->k_rstd.data());
  }
  rope(a->q.data(), n, H, D, c.n_rot, c.rope_type, rope_cache, false);
  rope(a->k.data(), n, Hkv, D, c.n_rot, c.rope_type, rope_cache, false);
  zero(&a->P, static_cast<size_t>(H) * N * N), zero(&a->attn, N * Eq);
  attention_fwd(a->q.data(), a->k.data(), a->v.data(), n, H, Hkv, D, a->P.data(), a->attn.data(), pool);
  zero(&a->x_mid, N * E);
  pr.fwd(il, 3, a->attn.data(), n, a->x_mid.data(), &a->u[3]);
  for (size_t i = 0; i < N * E; ++i) a->x_mid[i] += x_in[i];
  zero(&a->rstd2, N), zero(&a->xn2, N * E);
  rmsnorm_fwd(a->x_mid.data(), L.ffn_norm, n, E, c.rms_eps, a->xn2.data(), a->rstd2.data());
  zero(&a->gate, N * F), zero(&a->up, N * F), zero(&a->h, N * F);
  pr.fwd(il, 4, a->xn2.data(), n, a->gate.data(), &a->u[4]);
  pr.fwd(il, 5, a->xn2.data(), n, a->up.data(), &a->u[5]);
  swiglu_fwd(a->gate.data(), a->up.data(), n * F, a->h.data());
  pr.fwd(il, 6, a->h.data(), n, x_out, &a->u[6]);
  for (size_t i = 0; i < N * E; ++i) x_out[i] += a->x_mid[i];
}

template <typename T>
void block_bwd(const Model& model, int64_t il, const LoraSet<T>& lora, const float* rope_cache, const BlockActs<T>& a,
               int64_t n, const T* dx_out, T* dx_in, LoraSet<T>* grad, ThreadPool& pool, BlockScratch<T>* scratch) {
  const ModelConfig& c = model.config();
  const LayerWeights& L = model.weights().layers[static_cast<size_t>(il)];
  const int64_t E = c.n_embd, Eq = c.n_embd_q(), Ekv = c.n_embd_kv(), F = c.n_ff, H = c.n_head, Hkv = c.n_head_kv,
                D = c.head_dim;
  const size_t N = static_cast<size_t>(n);
  BlockScratch<T> local;
  BlockScratch<T>& ws = scratch ? *scratch : local;
  Proj1<T> pr{model, lora, pool, ws.w, ws.du};
  // FFN: x_out = x_mid + down(swiglu(gate(xn2), up(xn2))). Gradient buffers accumulate: zeroed.
  std::vector<T>&dx_mid = ws.dx_mid, &dh = ws.dh, &dg = ws.dg, &du = ws.dup, &dxn = ws.dxn;
  dx_mid.assign(dx_out, dx_out + N * E);
  dh.assign(N * F, T(0)), dg.assign(N * F, T(0)), du.assign(N * F, T(0));
  pr.bwd(il, 6, a.h.data(), a.u[6], dx_out, n, dh.data(), grad);
  swiglu_bwd(a.gate.data(), a.up.data(), dh.data(), n * F, dg.data(), du.data());
  dxn.assign(N * E, T(0));
  pr.bwd(il, 4, a.xn2.data(), a.u[4], dg.data(), n, dxn.data(), grad);
  pr.bwd(il, 5, a.xn2.data(), a.u[5], du.data(), n, dxn.data(), grad);
  rmsnorm_bwd(a.x_mid.data(), L.ffn_norm, a.rstd2.data(), dxn.data(), n, E, dx_mid.data());
  // Attention: x_mid = x_in + o(attn(rope(norm(q(xn1))), rope(norm(k(xn1))), v(xn1)))
  std::vector<T>&dattn = ws.dattn, &dq = ws.dq, &dk = ws.dk, &dv = ws.dv;
  dattn.assign(N * Eq, T(0)), dq.assign(N * Eq, T(0)), dk.assign(N * Ekv, T(0)), dv.assign(N * Ekv, T(0));
  pr.bwd(il, 3, a.attn.data(), a.u[3], dx_mid.data(), n, dattn.data(), grad);
  attention_bwd(a.q.data(), a.k.data(), a.v.data(), a.P.data(), dattn.data(), n, H, Hkv, D, dq.data(), dk.data(),
                dv.data(), pool);
  rope(dq.data(), n, H, D, c.n_rot, c.rope_type, rope_cache, true);
  rope(dk.data(), n, Hkv, D, c.n_rot, c.rope_type, rope_cache, true);
  if (L.attn_q_norm) {
    std::vector<T>&dq_raw = ws.dq_raw, &dk_raw = ws.dk_raw;
    dq_raw.assign(N * Eq, T(0)), dk_raw.assign(N * Ekv, T(0));
    rmsnorm_bwd(a.q_raw.data(), L.attn_q_norm, a.q_rstd.data(), dq.data(), n * H, D, dq_raw.data());
    rmsnorm_bwd(a.k_raw.data(), L.attn_k_norm, a.k_rstd.data(), dk.data(), n * Hkv, D, dk_raw.data());
    dq.swap(dq_raw);
    dk.swap(dk_raw);
  }
  std::fill(dxn.begin(), dxn.end(), T(0));
  pr.bwd(il, 0, a.xn1.data(), a.u[0], dq.data(), n, dxn.data(), grad);
  pr.bwd(il, 1, a.xn1.data(), a.u[1], dk.data(), n, dxn.data(), grad);
  pr.bwd(il, 2, a.xn1.data(), a.u[2], dv.data(), n, dxn.data(), grad);
  std::copy(dx_mid.begin(), dx_mid.end(), dx_in);
  rmsnorm_bwd(a.x_in.data(), L.attn_norm, a.rstd1.data(), dxn.data(), n, E, dx_in);
}

template <typename T>
Status lora_loss_grad(const Model& model, const LoraSet<T>& lora, const int32_t* tokens, const int32_t* labels,
                      int64_t n, double weight, double* nll_sum, LoraSet<T>* grad, ThreadPool& pool,
                      DistillTerm* distill, bool recompute, LossScratch<T>* scratch) {
  const ModelConfig& c = model.config();
  const ModelWeights& W = model.weights();
  if (n < 1 || !tokens || !labels || !nll_sum || (distill && !distill->teacher))
    return make_error(Code::InvalidArgument, "lora_loss_grad: empty sequence or null pointer");
  if (lora.mats.size() != static_cast<size_t>(c.n_layer * kLoraProjs))
    return make_error(Code::InvalidArgument, "lora_loss_grad: the LoRA set was made for another model");
  if (grad && (grad->mats.size() != lora.mats.size() || grad->size() != lora.size()))
    return make_error(Code::InvalidArgument, "lora_loss_grad: the gradient set has another shape than the LoRA set");
  // Training dequantizes each frozen matrix; a low-rank factored or CSR one has no dense rows to read.
  for (const LayerWeights& L : W.layers)
    for (const MatrixView* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down}) {
      if (m->lr_rank > 0)
        return make_error(Code::InvalidArgument,
                          "finetune needs dense weight matrices; this model holds low-rank factored ones "
                          "(llmserve compress --lowrank): train on the original model");
      if (m->is_csr())
        return make_error(Code::InvalidArgument,
                          "finetune needs dense weight matrices; this model holds CSR sparse ones "
                          "(llmserve compress --format csr): train on the original model");
    }
  for (int64_t t = 0; t < n; ++t) {
    if (tokens[t] < 0 || tokens[t] >= c.n_vocab || labels[t] < -1 || labels[t] >= c.n_vocab)
      return make_error(Code::InvalidArgument, "token or label id at index " + std::to_string(t) + " is outside [0, " +
                                                   std::to_string(c.n_vocab) + ")");
  }
  const int64_t E = c.n_embd, V = c.n_vocab;
  const size_t N = static_cast<size_t>(n);
  LossScratch<T> local;
  LossScratch<T>& ws = scratch ? *scratch : local;
  BlockScratch<T>* bs = &ws.block;
  std::vector<float>& cache = ws.cache;
  cache.resize(N * static_cast<size_t>(c.n_rot));
  rope_cache_f32(c, W.rope_freqs, 0, n, cache.data());
  // Embedding lookup (frozen: no gradient flows past it).
  std::vector<T>& x = ws.x;
  x.resize(N * E);
  std::vector<float>& row = ws.row;
  row.resize(static_cast<size_t>(E));
  for (int64_t t = 0; t < n; ++t) {
    dequantize_row(W.tok_embd.type, W.tok_embd.row(tokens[t]), row.data(), E);
    std::copy(row.begin(), row.end(), x.begin() + t * E);
  }
  // recompute: keep only each layer's input (n·E values) and one layer's activations, run that
  // layer's forward again right before its backward (same inputs, same fixed-order kernels: the
  // same bits, so the same gradients).
  const bool again = recompute && grad;
  std::vector<BlockActs<T>>& acts = ws.acts;
  acts.resize(again ? 1 : static_cast<size_t>(c.n_layer));
  std::vector<std::vector<T>>& inputs = ws.inputs;
  inputs.resize(again ? static_cast<size_t>(c.n_layer) : 0);
  std::vector<T>& next = ws.next;
  next.resize(N * E);
  for (int64_t il = 0; il < c.n_layer; ++il) {
    if (again) inputs[static_cast<size_t>(il)] = x;
    block_fwd(model, il, lora, cache.data(), x.data(), n, &acts[again ? 0 : static_cast<size_t>(il)], next.data(), pool,
              bs);
    x.swap(next);
  }
  // (with recompute, acts[0] holds the last layer's activations: rebuilt in the backward like the others)
  // Head: logits [n, V] = rmsnorm(x)·outputᵀ, then cross-entropy.
  std::vector<T>&rstd = ws.rstd, &xf = ws.xf, &w = bs->w, &logits = ws.logits, &dlogits = ws.dlogits;
  rstd.resize(N), xf.resize(N * E), logits.resize(N * V);
  rmsnorm_fwd(x.data(), W.output_norm, n, E, c.rms_eps, xf.data(), rstd.data());
  dequant_matrix(W.output, &w, pool);
  mm_nt(xf.data(), w.data(), n, E, V, logits.data(), pool);
  if (grad) dlogits.assign(N * V, T(0));
  *nll_sum = distill ? distill_loss(logits.data(), labels, n, V, weight, grad ? dlogits.data() : nullptr, distill, pool)
                     : cross_entropy(logits.data(), labels, n, V, weight, grad ? dlogits.data() : nullptr, pool);
  if (!grad) return Status::ok();
  std::vector<T>&dxf = ws.dxf, &dx = ws.dx;
  dxf.assign(N * E, T(0)), dx.assign(N * E, T(0));
  mm_nn_acc(dlogits.data(), w.data(), n, V, E, dxf.data(), pool);
  rmsnorm_bwd(x.data(), W.output_norm, rstd.data(), dxf.data(), n, E, dx.data());
  std::vector<T>& dprev = ws.dprev;
  dprev.resize(N * E);
  for (int64_t il = c.n_layer - 1; il >= 0; --il) {
    if (again)
      block_fwd(model, il, lora, cache.data(), inputs[static_cast<size_t>(il)].data(), n, &acts[0], dprev.data(), pool,
                bs);
    block_bwd(model, il, lora, cache.data(), acts[again ? 0 : static_cast<size_t>(il)], n, dx.data(), dprev.data(),
              grad, pool, bs);
    dx.swap(dprev);
  }
  return Status::ok();
}

#define LLMSERVE_LORA_TRAIN(T)                                                                                         \
  template struct LoraSet<T>;                                                                                          \
  template Status lora_zeros<T>(const ModelConfig&, int64_t, double, uint32_t, LoraSet<T>*);                           \
  template void block_fwd<T>(const Model&, int64_t, const LoraSet<T>&, const float*, const T*, int64_t, BlockActs<T>*, \
                             T*, ThreadPool&, BlockScratch<T>*);                                                       \
  template void block_bwd<T>(const Model&, int64_t, const LoraSet<T>&, const float*, const BlockActs<T>&, int64_t,     \
                             const T*, T*, LoraSet<T>*, ThreadPool&, BlockScratch<T>*);                                \
  template Status lora_loss_grad<T>(const Model&, const LoraSet<T>&, const int32_t*, const int32_t*, int64_t, double,  \
                                    double*, LoraSet<T>*, ThreadPool&, DistillTerm*, bool, LossScratch<T>*);

LLMSERVE_LORA_TRAIN(float)
LLMSERVE_LORA_TRAIN(double)

}  // namespace llmserve
