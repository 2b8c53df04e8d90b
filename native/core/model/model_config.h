// ModelConfig: the hyperparameters of a decoder-only transformer, read from GGUF metadata the way
// llama.cpp reads them (src/llama-model.cpp load_hparams, src/llama-context.cpp rope setup).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../status.h"

namespace llmserve {

class GgufFile;

enum class RopeScalingType : int { None = 0, Linear = 1, Yarn = 2 };

struct ModelConfig {
  std::string arch;         // one of kSupportedArchs
  int64_t n_vocab = 0;      // rows of token_embd
  int64_t n_embd = 0;       // {arch}.embedding_length
  int64_t n_layer = 0;      // {arch}.block_count
  int64_t n_head = 0;       // {arch}.attention.head_count
  int64_t n_head_kv = 0;    // {arch}.attention.head_count_kv (default n_head)
  int64_t n_ff = 0;         // {arch}.feed_forward_length
  int64_t n_ctx_train = 0;  // {arch}.context_length
  int64_t head_dim = 0;     // {arch}.attention.key_length (default n_embd / n_head)
  int64_t n_rot = 0;        // {arch}.rope.dimension_count (default head_dim); dims >= n_rot pass through

  float rms_eps = 1e-5f;            // {arch}.attention.layer_norm_rms_epsilon
  float rope_freq_base = 10000.0f;  // {arch}.rope.freq_base
  int rope_type = 0;                // 0 = NORM (llama: rotate adjacent pairs), 2 = NEOX (qwen2/3: rotate halves)

  // RoPE scaling ({arch}.rope.scaling.type / .factor / .original_context_length / .attn_factor;
  // old key {arch}.rope.scale_linear). freq_scale = 1/factor unless the type is "none". Llama-3
  // per-frequency scaling comes from the rope_freqs.weight tensor (llama only, as in llama.cpp,
  // whose converter bakes llama3 low/high-freq factors into that tensor); see has_rope_freqs.
  // llama.cpp reads the YaRN beta / log-multiplier keys only for other architectures (deepseek2,
  // grok, mistral3...), so for these three they keep ggml's defaults whatever the file says.
  RopeScalingType rope_scaling = RopeScalingType::Linear;
  float rope_freq_scale = 1.0f;
  int64_t rope_n_ctx_orig = 0;   // YaRN original context (default n_ctx_train)
  float yarn_ext_factor = 0.0f;  // 1 for YaRN, else 0
  float yarn_attn_factor = 1.0f;
  float yarn_beta_fast = 32.0f;
  float yarn_beta_slow = 1.0f;
  bool has_rope_freqs = false;  // rope_freqs.weight present: theta_i /= rope_freqs[i]
  // phi3 LongRoPE: rope_factors_short/long.weight present; which one applies depends on the
  // context size per sequence (llama.cpp get_rope_factors: long when n_ctx_seq > rope_n_ctx_orig).
  bool has_longrope = false;

  bool tied_output = false;   // output.weight absent: logits use token_embd.weight
  bool has_qkv_bias = false;  // attn_{q,k,v}.bias present (required for qwen2)
  bool has_qk_norm = false;   // per-head RMSNorm of Q and K before RoPE (qwen3, gemma3: attn_{q,k}_norm)

  // Gemma family (gemma2, gemma3), as llama.cpp's graphs for them:
  bool embd_scale = false;     // embeddings *= sqrtf(n_embd) (ggml_scale)
  bool post_norms = false;     // attn_post_norm / ffn_post_norm on each block's output before the residual
  bool geglu = false;          // FFN gelu(gate) * up (ggml's f16 GELU table) instead of silu(gate) * up
  float q_scale = 0.0f;        // != 0: Q *= q_scale after RoPE and the attention scale is 1 (gemma, phi3)
  float attn_softcap = 0.0f;   // {arch}.attn_logit_softcapping (gemma2; 0 = off)
  float final_softcap = 0.0f;  // {arch}.final_logit_softcapping: logits = cap * tanh(logits / cap); 0 = off
  // Sliding-window attention: local layers see keys in (p - n_swa, p]; swa_layer[il] = 1 marks
  // them (llama.cpp set_swa_pattern over {arch}.attention.sliding_window_pattern). Local layers
  // rotate with rope_freq_base_swa / rope_freq_scale_swa (llama.cpp get_rope_freq_base).
  int64_t n_swa = 0;
  std::vector<uint8_t> swa_layer;
  float rope_freq_base_swa = 10000.0f;
  float rope_freq_scale_swa = 1.0f;
  bool is_swa(int64_t il) const { return n_swa > 0 && swa_layer[static_cast<size_t>(il)] != 0; }
  // Whether local layers need their own RoPE table (their base or scale differs from the global one).
  bool swa_rope_differs() const {
    return n_swa > 0 && (rope_freq_base_swa != rope_freq_base || rope_freq_scale_swa != rope_freq_scale);
  }

  // Mixture of experts (Mixtral: llama with {arch}.expert_count; qwen3moe), as llama.cpp's
  // build_moe_ffn: a router [n_embd] -> [n_expert], softmax over all experts, the n_expert_used
  // largest probabilities renormalised to sum 1, each chosen expert's SwiGLU FFN ([n_embd] ->
  // [n_ff_exp] -> [n_embd]) weighted by them. n_expert = 0: a dense FFN.
  int64_t n_expert = 0;       // {arch}.expert_count
  int64_t n_expert_used = 0;  // {arch}.expert_used_count
  int64_t n_ff_exp = 0;       // qwen3moe: {arch}.expert_feed_forward_length (default n_ff / n_expert_used); llama: n_ff
  bool is_moe() const { return n_expert > 0; }

  int64_t n_embd_q() const { return n_head * head_dim; }      // width of Q and of attention output
  int64_t n_embd_kv() const { return n_head_kv * head_dim; }  // width of K and V per token
  int64_t n_gqa() const { return n_head / n_head_kv; }        // query heads per KV head
};

// The architectures llmserve runs (general.architecture), in the order error messages list them.
inline constexpr const char* kSupportedArchs[] = {"llama", "qwen2", "qwen3", "qwen3moe", "gemma2", "gemma3", "phi3"};
// At most this many experts (llama.cpp's LLAMA_MAX_EXPERTS).
inline constexpr int64_t kMaxExperts = 512;
// "llama, qwen2, qwen3, qwen3moe, gemma2, gemma3, phi3": for messages.
std::string supported_archs_list();

// Reads and validates hyperparameters (everything except the tensor-derived fields n_vocab,
// tied_output, has_qkv_bias, has_rope_freqs, which Model::load fills; has_qk_norm is the
// architecture's).
// Errors: UnsupportedArch (an architecture not in kSupportedArchs, unsupported rope scaling),
// GgufCorrupt (missing required key or wrong value type, naming the key), BadShape (absurd value,
// naming the key; expert counts as llama.cpp asserts them: expert_count in [0, kMaxExperts],
// qwen3moe > 0, expert_used_count in [1, expert_count] with experts, absent or 0 without).
Status read_model_config(const GgufFile& file, ModelConfig* out);

// Special token ids (tokenizer.ggml.*_token_id) must be integers; BOS/EOS must lie in
// [0, n_vocab). Errors name the key: GgufCorrupt (wrong type), BadShape (out of range).
Status validate_token_ids(const GgufFile& file, int64_t n_vocab);

}  // namespace llmserve
