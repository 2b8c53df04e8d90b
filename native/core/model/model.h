// Model: a loaded llama (Mixtral too) / qwen2 / qwen3 / qwen3moe / gemma2 / gemma3 / phi3 GGUF: validated hyperparameters plus views of every weight,
// used in place from the file's mmap (no copy). The Model shares ownership of the GgufFile so the
// mapping outlives every view.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../attention/attention.h"
#include "../gguf/gguf.h"
#include "../kv/kv_pool.h"
#include "../quant/quant.h"
#include "../status.h"
#include "model_config.h"

namespace llmserve {

// A 2-D weight matrix in ggml layout: n_out rows of n_in contiguous elements of `type`
// (ggml ne = [n_in, n_out]); row r starts at data + r * row_bytes.
struct MatrixView {
  const uint8_t* data = nullptr;
  GgmlType type = GgmlType::F32;
  int64_t n_in = 0;
  int64_t n_out = 0;
  size_t row_bytes = 0;
  // gemm's 16-row interleaved copy of data (quant/gemm.h), made at load by the executor
  // (pack_matrix in matmul.h), or null: matmul then packs tiles on the fly. Same results either way.
  const uint8_t* packed = nullptr;
  // 2:4 sparse (model/sparse24.h): data holds the kept values ([n_out, n_in/2] of type F16 or
  // Q8_0, row_bytes = one row's values) and this the 2-bit positions; null for a dense matrix.
  const uint8_t* s24_idx = nullptr;
  // Low-rank factored, W ≈ U·V (+ S) (model/factored.h): lr_rank > 0, data null, the factors and
  // the optional CSR residual here; matmul runs them, nothing reads rows.
  int64_t lr_rank = 0;
  bool lr_f16 = true;
  const void* lr_v = nullptr;   // [lr_rank, n_in]
  const void* lr_ut = nullptr;  // [lr_rank, n_out]
  // CSR (model/csr.h): the residual of a factored matrix, or with lr_rank == 0 and data null the
  // whole matrix (unstructured pruning, `compress --format csr`); matmul runs it.
  const int32_t* sp_ptr = nullptr;  // [n_out + 1] or null
  const int32_t* sp_col = nullptr;  // [nnz]
  const void* sp_val = nullptr;     // [nnz] f16, or f32 with sp_f32
  bool sp_f32 = false;
  bool is_csr() const { return sp_ptr && lr_rank == 0 && !data; }
  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_bytes; }
};

struct LayerWeights {
  const float* attn_norm = nullptr;       // [n_embd]
  MatrixView wq;                          // [n_embd] -> [n_head * head_dim]
  MatrixView wk;                          // [n_embd] -> [n_head_kv * head_dim]
  MatrixView wv;                          // [n_embd] -> [n_head_kv * head_dim]
  MatrixView wo;                          // [n_head * head_dim] -> [n_embd]
  const float* bq = nullptr;              // [n_head * head_dim] or null
  const float* bk = nullptr;              // [n_head_kv * head_dim] or null
  const float* bv = nullptr;              // [n_head_kv * head_dim] or null
  const float* bo = nullptr;              // [n_embd] or null (llama only, optional)
  const float* attn_q_norm = nullptr;     // [head_dim] or null (qwen3: RMSNorm of each Q head before RoPE)
  const float* attn_k_norm = nullptr;     // [head_dim] or null (qwen3: the same for each K head)
  const float* attn_post_norm = nullptr;  // [n_embd] or null (gemma: RMSNorm of the attention output)
  const float* ffn_norm = nullptr;        // [n_embd]
  const float* ffn_post_norm = nullptr;   // [n_embd] or null (gemma: RMSNorm of the FFN output)
  MatrixView ffn_gate;                    // [n_embd] -> [n_ff]
  MatrixView ffn_up;                      // [n_embd] -> [n_ff]
  MatrixView ffn_down;                    // [n_ff] -> [n_embd]
  const float* ffn_gate_b = nullptr;      // [n_ff] or null (llama only, optional)
  const float* ffn_up_b = nullptr;        // [n_ff] or null
  const float* ffn_down_b = nullptr;      // [n_embd] or null
  // Mixture of experts (config.is_moe(); ffn_gate/up/down are then empty): the router and one view
  // per expert of the 3-D ffn_{gate,up,down}_exps tensors (ggml ne [n_embd, n_ff_exp, n_expert]
  // and [n_ff_exp, n_embd, n_expert]: expert e is the 2-D slice e, rows e*n_out .. (e+1)*n_out).
  MatrixView ffn_gate_inp;            // [n_embd] -> [n_expert] (router logits)
  std::vector<MatrixView> gate_exps;  // [n_expert] x ([n_embd] -> [n_ff_exp])
  std::vector<MatrixView> up_exps;    // [n_expert] x ([n_embd] -> [n_ff_exp])
  std::vector<MatrixView> down_exps;  // [n_expert] x ([n_ff_exp] -> [n_embd])
};

struct ModelWeights {
  MatrixView tok_embd;                 // [n_embd] x n_vocab rows (embedding lookup dequantizes a row)
  const float* output_norm = nullptr;  // [n_embd]
  MatrixView output;                   // [n_embd] -> [n_vocab]; == tok_embd when tied
  const float* rope_freqs = nullptr;   // [n_rot / 2] or null: the factors RoPE divides by
  // phi3 LongRoPE factors ([n_rot / 2] each, or null); rope_freqs points at the short ones after
  // load and at the long ones once use_context_size() sees a context beyond rope_n_ctx_orig.
  const float* rope_short = nullptr;
  const float* rope_long = nullptr;
  std::vector<LayerWeights> layers;
};

// The KV and attention shapes of a model's layers.
inline KvShape kv_shape(const ModelConfig& c) { return KvShape{c.n_layer, c.n_head_kv, c.head_dim}; }
// The attention of layer il: gemma pre-scales Q (scale 1) and may soft-cap; local layers have a window.
inline AttnShape attn_shape(const ModelConfig& c, int64_t il = -1) {
  AttnShape s{c.n_head, c.n_head_kv, c.head_dim};
  s.kq_scale = c.q_scale != 0.0f ? 1.0f : 0.0f;
  s.softcap = c.attn_softcap;
  s.window = il >= 0 && c.is_swa(il) ? c.n_swa : 0;
  return s;
}

class Model {
 public:
  // Validates the architecture (kSupportedArchs; else UnsupportedArch), hyperparameters (BadShape /
  // GgufCorrupt naming the key), every tensor's presence (MissingTensor), shape (BadShape: tensor,
  // expected vs found), type (UnsupportedType: tensor and type) and that its data lies inside the
  // file (GgufCorrupt). Takes shared ownership of the file.
  static Status load(std::shared_ptr<GgufFile> file, std::unique_ptr<Model>* out);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  // For the executor that owns this model: attaches load-time packed copies (MatrixView::packed).
  ModelWeights& mutable_weights() { return weights_; }
  // The context size per sequence the model serves: picks phi3's LongRoPE factor set as llama.cpp
  // does (get_rope_factors: long when n_ctx_seq > rope_n_ctx_orig, else short; llama.cpp pads the
  // context to a multiple of 256 first). No effect on other models.
  void use_context_size(int64_t n_ctx) {
    const int64_t padded = (n_ctx + 255) / 256 * 256;
    if (config_.has_longrope)
      weights_.rope_freqs = padded > config_.rope_n_ctx_orig ? weights_.rope_long : weights_.rope_short;
  }
  const GgufFile& file() const { return *file_; }

 private:
  Model() = default;
  std::shared_ptr<GgufFile> file_;
  ModelConfig config_;
  ModelWeights weights_;
};

}  // namespace llmserve
