// Training ops: forward and backward of every op of a llama / qwen2 / qwen3 block, for LoRA
// fine-tuning (the base weights frozen, gradients only for activations and LoRA A/B).
//
// Templated on the scalar T: float is what training runs; double is instantiated for the gradient
// checks (native/tests/test_train_grad.cpp), which compare the analytic backward against central
// differences of the same forward in f64. Row-major throughout: a matrix [rows, cols] has `cols`
// contiguous elements per row. Backward ops ACCUMULATE (+=) into their input gradients, so a
// tensor read by several ops (the normed input of Q, K and V) sums its gradients; callers zero
// them first. These ops run on fixed sequences (positions 0..n-1, no KV cache, no paging).
#pragma once
#include <cstdint>
#include <vector>

#include "../model/model.h"
#include "../threadpool/thread_pool.h"

namespace llmserve {

// out [n_out, n_in] <- the frozen weight dequantized (any weight type; QLoRA-style: done when the
// projection runs, so only one dequantized matrix is alive at a time). Parallel over rows.
template <typename T>
void dequant_matrix(const MatrixView& m, std::vector<T>* out, ThreadPool& pool);

// ---- dense products (threaded; each output element is one fixed-order sum) ----
// y [n, m] = x [n, k] · wᵀ (w [m, k]); parallel over m.
template <typename T>
void mm_nt(const T* x, const T* w, int64_t n, int64_t k, int64_t m, T* y, ThreadPool& pool);
// dx [n, k] += dy [n, m] · w (w [m, k]); parallel over n.
template <typename T>
void mm_nn_acc(const T* dy, const T* w, int64_t n, int64_t m, int64_t k, T* dx, ThreadPool& pool);
// g [m, k] += dyᵀ · x (dy [n, m], x [n, k]); parallel over m.
template <typename T>
void mm_tn_acc(const T* dy, const T* x, int64_t n, int64_t m, int64_t k, T* g, ThreadPool& pool);

// ---- linear with LoRA: y = x·Wᵀ + bias + s·(x·Aᵀ)·Bᵀ ----
// W [n_out, n_in] (dequantized), A [r, n_in], B [n_out, r] (llama.cpp's GGUF LoRA: lora_a ne
// [n_in, r], lora_b ne [r, n_out]); A = null: no LoRA term. x [n, n_in] -> y [n, n_out],
// u [n, r] = x·Aᵀ kept for the backward.
template <typename T>
void linear_fwd(const T* W, const float* bias, const T* A, const T* B, int64_t r, T s, const T* x, int64_t n,
                int64_t n_in, int64_t n_out, T* y, T* u, ThreadPool& pool);
// dy [n, n_out] -> dx [n, n_in] += dy·W + (s·dy·B)·A; dA [r, n_in] += (s·dy·B)ᵀ·x;
// dB [n_out, r] += s·dyᵀ·u. dx / dA, dB may be null (not needed). du_tmp: scratch.
template <typename T>
void linear_bwd(const T* W, const T* A, const T* B, int64_t r, T s, const T* x, const T* u, const T* dy, int64_t n,
                int64_t n_in, int64_t n_out, T* dx, T* dA, T* dB, std::vector<T>* du_tmp, ThreadPool& pool);

// ---- RMSNorm: y = x·ρ·w, ρ = 1/sqrt(mean(x²) + eps), per row of d values ----
// x [rows, d] -> y [rows, d], rstd [rows] = ρ (kept).
template <typename T>
void rmsnorm_fwd(const T* x, const float* w, int64_t rows, int64_t d, float eps, T* y, T* rstd);
// dx += ρ·(g∘w) − x·ρ³/d·Σ(g∘w∘x)   (w frozen: no gradient).
template <typename T>
void rmsnorm_bwd(const T* x, const float* w, const T* rstd, const T* dy, int64_t rows, int64_t d, T* dx);

// ---- RoPE over x [n, heads, head_dim] at positions 0..n-1, cache [n, n_rot] (cos, sin) pairs
// from rope_cache_f32. NORM (rope_type 0) rotates pairs (i0, i0+1), NEOX (2) (i0/2, i0/2 + n_rot/2).
// The rotation is orthogonal (times YaRN's mscale), so the backward is the transpose: the same
// rotation with −sin. inverse = false: forward; true: backward (applied to the gradient in place).
template <typename T>
void rope(T* x, int64_t n, int64_t heads, int64_t head_dim, int64_t n_rot, int rope_type, const float* cache,
          bool inverse);

// ---- causal attention with GQA ----
// q [n, H, D], k, v [n, Hkv, D]; query head h reads KV head h / (H / Hkv).
// S = q·kᵀ/√D (j <= t; each q·k a dot8, as mm_nt), P = softmax(S) per row, o [n, H, D] = P·v; P [H, n, n] kept (zero above
// the diagonal). Parallel over query heads.
template <typename T>
void attention_fwd(const T* q, const T* k, const T* v, int64_t n, int64_t H, int64_t Hkv, int64_t D, T* P, T* o,
                   ThreadPool& pool);
// dP = do·vᵀ (dot8), dS = P∘(dP − rowsum(P∘dP)), dq += dS·k/√D, dk += dSᵀ·q/√D, dv += Pᵀ·do.
// Parallel over KV heads (each owns its dk, dv rows).
template <typename T>
void attention_bwd(const T* q, const T* k, const T* v, const T* P, const T* dout, int64_t n, int64_t H, int64_t Hkv,
                   int64_t D, T* dq, T* dk, T* dv, ThreadPool& pool);

// ---- SwiGLU: h = silu(g)·u, silu(g) = g·σ(g) ----
template <typename T>
void swiglu_fwd(const T* g, const T* u, int64_t count, T* h);
// dg += dh·u·σ(g)·(1 + g·(1 − σ(g))), du += dh·silu(g).
template <typename T>
void swiglu_bwd(const T* g, const T* u, const T* dh, int64_t count, T* dg, T* du);

// ---- cross-entropy: Σ over rows with labels[t] >= 0 of −log softmax(logits[t])[labels[t]] ----
// logits [n, V]; returns that sum (in double); dlogits [n, V] = weight·(softmax − onehot) on
// labelled rows, 0 on the others (weight = 1/#labelled for a mean). dlogits may be null.
template <typename T>
double cross_entropy(const T* logits, const int32_t* labels, int64_t n, int64_t V, double weight, T* dlogits,
                     ThreadPool& pool);

}  // namespace llmserve
