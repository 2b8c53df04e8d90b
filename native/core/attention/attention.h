// Paged causal attention with grouped-query heads (GQA), prefill and decode alike: every query
// row attends to its own sequence's positions through that sequence's block table in the shared
// KV pool. A scalar reference (attention_group_ref) defines the numbers; the AVX2 kernel
// (attention_avx2.cpp) is bit-identical to it and chosen by isa/ (active_isa()).
#pragma once
#include <cstddef>
#include <cstdint>

#include "../kv/batch.h"
#include "../kv/kv_pool.h"
#include "../quant/quant.h"
#include "../threadpool/thread_pool.h"

namespace llmserve {

// The attention heads of one layer: n_head query heads share n_head_kv K/V heads (n_head a
// multiple of n_head_kv), each head_dim wide.
struct AttnShape {
  int64_t n_head = 0, n_head_kv = 0, head_dim = 0;
  // Score scale; 0 means 1/sqrt(head_dim). Gemma scales Q itself beforehand and passes 1.
  float kq_scale = 0.0f;
  // Attention logit soft-capping (gemma2): s = softcap * tanh(s * kq_scale / softcap); 0 = off,
  // as ggml's flash attention (logit_softcap folded into the scale, then tanhf).
  float softcap = 0.0f;
  // Sliding window of this layer: a query at position p sees keys in (p - window, p]
  // (llama.cpp is_masked_swa, LLAMA_SWA_TYPE_STANDARD); 0 = full causal attention.
  int64_t window = 0;
  int64_t n_gqa() const { return n_head / n_head_kv; }
  int64_t n_embd_q() const { return n_head * head_dim; }
};

// Positions one attention tile covers: the softmax factors of a tile are computed together (one
// vector exp), then each head's accumulator walks the tile's V rows in order.
constexpr int64_t kAttnTile = 32;

// Per-thread scratch bytes attention_f32 needs (index with the chunk id of parallel_for_chunked).
size_t attention_scratch_bytes(const AttnShape& s, GgmlType kv_type);

// The query heads that share one KV head (GQA group) of one token, against positions [0, len) of
// that KV head (positions [begin, len) under a sliding window), with the semantics of ggml's CPU flash attention
// (ggml_compute_forward_flash_attn_ext_f16_one_chunk), llama.cpp's default on CPU. Per head:
//   s_j = vec_dot(K_j, q) * scale  (q converted to K's vec_dot type: f16, q8_0 or f32), then
//   s_j = softcap * tanhf(s_j) when soft-capping;
//   online softmax with running max M and sum S: on a new maximum ms = exp(Mold - M), vs = 1,
//   else ms = 1, vs = exp(s_j - M); acc = acc * ms; acc = fma(V_j, vs, acc); S = fma(S, ms, vs);
//   with an f16 cache the accumulator itself is f16 (rounded after every step), as in ggml; q8_0
//   V rows are dequantized to f32 first; out = acc / S.
// exp is fast_exp (ops_exp.h), not libm's expf: within 2 ulp of it, and vectorizable.
// Paged: position j's row is at k + blocks[j / block_size] * block_stride + (j % block_size) *
// row_stride (same for V). Positions are visited in order and each head's arithmetic is the same
// whichever heads share the call, so neither paging nor grouping changes a result.
struct AttnGroup {
  const uint8_t* k;       // the layer's K storage + this KV head's byte offset
  const uint8_t* v;       // the layer's V storage + this KV head's byte offset
  const int32_t* blocks;  // block table
  int64_t block_size;     // slots per block
  size_t row_stride;      // bytes between slots
  size_t block_stride;    // bytes between blocks
  GgmlType kv_type;       // F16, F32 or Q8_0
  const uint8_t* q;       // [n_q][q_stride] query rows converted to K's vec_dot type
  size_t q_stride;
  int64_t n_q;    // query heads in the group (<= kMaxAttnGroup)
  int64_t begin;  // first position attended (> 0 only under a sliding window)
  int64_t len;    // positions attended: [begin, len)
  int64_t hd;     // head size
  float scale;    // kq_scale (1 / sqrt(hd) by default), divided by softcap when softcap != 0
  float softcap;  // 0, or s = softcap * tanhf(s) after the scale (ggml flash attention)
  float* out;     // [n_q][out_stride] f32
  int64_t out_stride;
  float* work;  // attention_group_work_floats(n_tok * n_q, hd) floats, 64-byte aligned
  // Several consecutive tokens of one sequence in one call (prefill): token i (0 <= i < n_tok) is
  // at position len - 1 + i, so it attends to [begin_i, len + i), with begin_i = max(0, len + i -
  // window) when window > 0, else begin. Its query heads are rows i * n_q .. i * n_q + n_q - 1 of
  // q (q_stride apart), its outputs out + i * out_tok_stride + h * out_stride. Every row is
  // computed exactly as a call of its own would (the tokens only share the K/V rows' conversion
  // and cache residency), so grouping tokens changes no bit.
  int64_t n_tok = 1;
  int64_t window = 0;
  int64_t out_tok_stride = 0;
  int64_t row_begin(int64_t i) const { return window > 0 ? (len + i > window ? len + i - window : 0) : begin; }
};
// Rows (n_tok * n_q) of one call at most: per-row softmax state lives in stack arrays.
constexpr int64_t kMaxAttnGroup = 64;
// Scratch floats one attention_group call with n_rows = n_tok * n_q rows needs.
size_t attention_group_work_floats(int64_t n_rows, int64_t hd);
// Byte offset of position j's K (and V) row from a.k (a.v) through the block table.
inline size_t attn_row_offset(const AttnGroup& a, int64_t j) {
  return static_cast<size_t>(a.blocks[j / a.block_size]) * a.block_stride +
         static_cast<size_t>(j % a.block_size) * a.row_stride;
}
// The tiled kernels' last step: row r (token r / n_q, head r % n_q) of acc ([rows][acc_stride])
// times 1 / S[r] (0 when S[r] is 0) to its place in a.out.
inline void attn_store_rows(const AttnGroup& a, const float* acc, int64_t acc_stride, const float* S, int64_t rows) {
  for (int64_t r = 0; r < rows; ++r) {
    const float S_inv = S[r] == 0.0f ? 0.0f : 1.0f / S[r];
    const float* ar = acc + r * acc_stride;
    float* out = a.out + (r / a.n_q) * a.out_tok_stride + (r % a.n_q) * a.out_stride;
    for (int64_t d = 0; d < a.hd; ++d) out[d] = ar[d] * S_inv;
  }
}
void attention_group(const AttnGroup& a);      // dispatched
void attention_group_ref(const AttnGroup& a);  // scalar reference
#if defined(LLMSERVE_X86)
void attention_group_avx2(const AttnGroup& a);    // AVX2 + FMA + F16C, bit-identical to the reference
void attention_group_avx512(const AttnGroup& a);  // AVX-512 F, bit-identical to the reference
#endif

// ---- Prompt rows: the arithmetic of llama.cpp's tiled prompt kernel ----
// llama.cpp (ggml_compute_forward_flash_attn_ext_tiled) runs prompt batches of at least 64 tokens
// with an f32 accumulator instead of the f16 one of its decode path; which rows use this
// arithmetic: kv/batch.h (kPromptTiledMinTokens, BatchLayout::tiled). Per row, over its positions
// [begin, len) in tiles of kAttnTile absolute positions ([32k, 32k + 32)):
//   s_j = q . K_j summed in order d = 0, 1, .. with fmaf (q f32, K_j f32 or f16 -> f32), times
//     scale (then softcap * tanhf(s_j) when soft-capping, as attention_group);
//   m = max(M, the tile's s_j); if m > M: ms = fast_exp(M - m), S = S * ms, acc = acc * ms, M = m;
//   then for each position in order: p = fast_exp(s_j - M), S = S + p, acc = fma(V_j, p, acc) (f32);
//   out = acc * (1 / S).
// The call is attention_group's (AttnGroup; q rows f32, kv_type F16 or F32 only; rows flagged
// tiled over a q8_0 cache keep the decode arithmetic, as llama.cpp's tiled kernel takes f16 / f32).
// Whether attention_prompt handles this K/V type (F16, F32).
inline bool prompt_tiled_kv(GgmlType t) { return t == GgmlType::F16 || t == GgmlType::F32; }
// Scratch floats one attention_prompt call with n_rows rows needs.
size_t attention_prompt_work_floats(int64_t n_rows, int64_t hd);
void attention_prompt(const AttnGroup& a);      // dispatched
void attention_prompt_ref(const AttnGroup& a);  // scalar reference
#if defined(LLMSERVE_X86)
void attention_prompt_avx2(const AttnGroup& a);    // bit-identical to the reference
void attention_prompt_avx512(const AttnGroup& a);  // bit-identical to the reference
#endif

// q: [n_tokens, n_head, head_dim] f32 (after RoPE) for batch rows r0 .. r0 + m - 1 (q points at row
// r0); out: the same shape. Row t attends causally to positions [0, pos[t]] of its sequence
// (only (pos[t] - s.window, pos[t]] with a window; masked keys are skipped, as ggml does), whose
// K/V for this layer are already stored; the heads h of KV head g = h / n_gqa form one
// attention_group() call per token, so the result does not depend on the batch.
// scratch: pool.size() * attention_scratch_bytes(s, kv type).
void attention_f32(const AttnShape& s, KvPool& kv, int64_t layer, const float* q, const BatchLayout& bl, int64_t r0,
                   int64_t m, float* out, uint8_t* scratch, ThreadPool& pool);

}  // namespace llmserve
