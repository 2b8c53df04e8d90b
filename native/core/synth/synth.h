// synth: writes random-weight GGUF models (llama incl. Mixtral / qwen2 / qwen3 / qwen3moe / gemma2 / gemma3 / phi3) that llama.cpp loads, for tests,
// parity checks and benchmarks without downloading real weights.
//
// Weights are deterministic in (options, seed): the same options give a byte-identical file.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "../quant/quant.h"
#include "../status.h"

namespace llmserve {

struct SynthOptions {
  std::string arch = "llama";  // "llama", "qwen2" (Q/K/V biases) or "qwen3" (per-head Q/K RMSNorm)
  int64_t dim = 256, layers = 4, heads = 8, kv_heads = 2, ffn = 768, context = 2048;
  int64_t head_dim = 0;           // 0: dim / heads; else written as attention.key_length / value_length
  std::string vocab_from;         // path of a GGUF whose tokenizer.* metadata is copied
                                  // (vocab size = its token count)
  int64_t vocab_size = 512;       // used when vocab_from is empty: generate a SentencePiece-style vocab
  GgmlType type = GgmlType::F32;  // one of synth_types()
  uint64_t seed = 7;
  float rope_freq_base = 10000.0f;
  float rms_eps = 1e-5f;
  bool tied_output = false;  // omit output.weight (llama.cpp then reuses token_embd.weight)
  // llama only: a rope_freqs.weight tensor with Llama 3's per-frequency factors (the converter's
  // "llama3" rope: factor 8, low/high frequency factors 1 and 4), its original context = context.
  bool rope_freqs = false;
  // "" writes no rope.scaling keys; "none", "linear" or "yarn" writes rope.scaling.type, and
  // rope.scaling.factor = rope_scale (yarn also rope.scaling.original_context_length = context).
  std::string rope_scaling;
  float rope_scale = 1.0f;
  // gemma2 / gemma3 hyperparameters; 0 = key not written (llama.cpp's default for the arch applies).
  int64_t sliding_window = 0;       // {arch}.attention.sliding_window
  int64_t swa_pattern = 0;          // {arch}.attention.sliding_window_pattern
  float attn_softcap = 0.0f;        // gemma2.attn_logit_softcapping
  float final_softcap = 0.0f;       // {arch}.final_logit_softcapping
  float rope_freq_base_swa = 0.0f;  // {arch}.rope.freq_base_swa
  // phi3 only: LongRoPE as Phi-3.5's converter writes it: rope_factors_short/long.weight (short
  // 1..1.2, long 1..4 over the pairs), rope.scaling.original_context_length = context / 2 and
  // rope.scaling.attn_factor = sqrt(1 + ln 2 / ln(context / 2)).
  bool long_rope = false;
  // Mixture of experts: llama (Mixtral) or qwen3moe (which needs experts >= 1). experts = 0: dense.
  // Writes {arch}.expert_count / expert_used_count (qwen3moe also expert_feed_forward_length =
  // ffn), an f32 router ffn_gate_inp [dim, experts] and 3-D ffn_{gate,up}_exps [dim, ffn,
  // experts] and ffn_down_exps [ffn, dim, experts] in `type` instead of the dense FFN.
  int64_t experts = 0;
  int64_t experts_used = 0;  // in [1, experts] when experts > 0, else 0
};

// The architectures synth writes (lib/synth.ts SYNTH_ARCHS order).
inline constexpr const char* kSynthArchs[] = {"llama", "qwen2", "qwen3", "qwen3moe", "gemma2", "gemma3", "phi3"};
// The rope_scaling values synth accepts ("" = no keys).
inline constexpr const char* kSynthRopeScalings[] = {"", "none", "linear", "yarn"};

// Writes the model to out_path (via temp file + rename). progress(f) is called with f in [0, 1]
// from the calling thread as tensors are generated; notes (optional) receives one line per
// per-tensor type fallback, e.g. "blk.0.ffn_down.weight: q4_k needs ne[0] % 256 == 0 (ne[0]=96), using q8_0".
Status synth_model(const SynthOptions& opt, const std::string& out_path, std::function<void(double)> progress = {},
                   std::vector<std::string>* notes = nullptr);

// A random LoRA adapter for a base model, in llama.cpp's GGUF adapter format (general.type
// "adapter", adapter.type "lora", adapter.lora.alpha, "<base tensor>.lora_a" ne [n_in, rank] and
// ".lora_b" ne [rank, n_out]). Deterministic in (base file's tensor shapes, options).
struct SynthLoraOptions {
  int64_t rank = 4;
  // Base tensor kinds of every layer: attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up,
  // ffn_down; "output" for output.weight (the base must have one).
  std::vector<std::string> targets = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
  uint64_t seed = 1;
  float alpha = 0.0f;             // adapter.lora.alpha (0: written as 0, scale = user scale)
  GgmlType type = GgmlType::F32;  // F32, F16, BF16, Q8_0, Q4_0 (rows must fit its block)
  // Entries: a ~ N(0, 1/n_in), b ~ N(0, (std_b)^2 / rank), so scale·B·A·x is about std_b times
  // the size of a unit-variance projection of x.
  float std_b = 0.5f;
};
// Errors: the reader's errors for base_path, InvalidArgument (rank < 1, unknown target, type),
// MissingTensor (the base has no such tensor), Io (writing).
Status synth_lora(const std::string& base_path, const SynthLoraOptions& opt, const std::string& out_path);

// The weight types synth writes, in lib/synth.ts SYNTH_TYPES order: every type the engine's
// matmuls run (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K, Q4_1, Q5_0, Q5_1, IQ4_NL, Q5_K, Q3_K, Q2_K,
// IQ4_XS), quantized with the reference quantizers (quantize_row_ref: ggml's bytes).
const std::vector<GgmlType>& synth_types();

// Checks every option; InvalidArgument messages name the offending option.
// Does not open vocab_from (synth_model does).
Status validate_synth_options(const SynthOptions& opt);

// The type a matrix with row length ne0 is stored in when `want` is requested, following
// llama.cpp's quantizer fallbacks: k-quants (block 256) -> Q8_0 when ne0 % 32 == 0, else F16;
// Q4_0/Q8_0 (block 32) -> F16.
GgmlType synth_matrix_type(GgmlType want, int64_t ne0);

// llama_ftype value for general.file_type (ALL_F32=0, MOSTLY_F16=1, MOSTLY_Q4_0=2, MOSTLY_Q8_0=7,
// MOSTLY_Q4_K_M=15, MOSTLY_Q6_K=18, MOSTLY_BF16=32, ...; Q3_K and Q5_K as their _M mixes); -1 for
// a type synth does not produce.
int synth_file_type(GgmlType t);

// Generated SentencePiece ("llama") vocabulary of n tokens: <unk>, <s>, </s>, 256 byte tokens
// <0x00>..<0xFF>, then n-259 distinct pieces with decreasing scores. Every multi-character piece's
// prefix (one UTF-8 character shorter) is also in the vocabulary, so SentencePiece's bigram merges
// can reach it. Requires 259 < n <= kSynthMaxGeneratedVocab.
struct SynthVocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;  // llama_token_type: 1 normal, 2 unknown, 3 control, 6 byte
};
constexpr int64_t kSynthMinGeneratedVocab = 300;
constexpr int64_t kSynthMaxGeneratedVocab = 262144;
SynthVocab synth_generate_vocab(int64_t n);

}  // namespace llmserve
