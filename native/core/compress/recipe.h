// Quantization recipes: which ggml type each tensor of a model gets for a llama.cpp file type
// ("q4_k_m", ...), following llama.cpp's llama-quantize (src/llama-quant.cpp,
// llama_tensor_get_type) for the architectures llmserve runs (llama, qwen2; dense, no experts).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../quant/quant.h"
#include "../status.h"

namespace llmserve {

// One output file type: its name (lowercase, as the CLI takes it), llama.cpp's llama_ftype value
// (written to general.file_type) and the default tensor type of the mix.
struct QuantMix {
  const char* name;
  int ftype;
  GgmlType default_type;
};

// The mixes llmserve writes, in the order messages list them.
const std::vector<QuantMix>& quant_mixes();
// The mix named `name` (lowercase; the aliases q3_k, q4_k, q5_k mean the _m mixes, as
// llama-quantize's), or nullptr.
const QuantMix* find_quant_mix(const std::string& name);
// "q8_0, q4_0, ..." for messages.
std::string quant_mix_names();

// What the recipe needs to know about a model (from its metadata).
struct RecipeModel {
  int64_t n_layer = 0;    // {arch}.block_count
  int64_t n_head = 0;     // {arch}.attention.head_count
  int64_t n_head_kv = 0;  // {arch}.attention.head_count_kv (n_head when absent)
  bool is_70b = false;    // llama.cpp's LLM_TYPE_70B (80 layers, and GQA for llama)
  bool has_imatrix = false;
};

// A tensor as the recipe sees it: its name, shape and the type it has in the input.
struct RecipeTensor {
  std::string name;
  int64_t ne[4] = {1, 1, 1, 1};
  GgmlType type = GgmlType::F32;
};

// llama-quantize's overrides of the recipe (llama_model_quantize_params: pure, output_tensor_type,
// token_embedding_type, tt_overrides), applied as llama_tensor_get_type does:
// - token_embedding_type / output_tensor_type: that type for token_embd.weight / output.weight
//   (for tied embeddings the output type also goes to token_embd), whatever the mix, with no block
//   fallback (a type whose block does not divide the rows is refused by quantize_model);
// - only for quantized mixes: the first tensor_types rule whose pattern (ECMAScript regex, searched
//   in the tensor name) matches sets the type, and pure (or a match) skips the mix's per-tensor rules
//   (a skipped attn_v / ffn_down does not advance llama.cpp's layer count); the block fallback
//   still applies. Tensors llama.cpp never quantizes (norms, biases, 1-D) keep their type.
struct TensorTypeRule {
  std::string pattern;  // lowercased, as llama-quantize's --tensor-type does
  GgmlType type = GgmlType::F32;
};
struct RecipeOverrides {
  bool pure = false;
  bool has_output_type = false, has_token_embd_type = false;
  GgmlType output_type = GgmlType::F32, token_embd_type = GgmlType::F32;
  std::vector<TensorTypeRule> tensor_types;
};
// A type name an override may ask for (ggml's names, any case: "q4_K", "Q8_0", "f16", ...), limited
// to the types quantize writes; InvalidArgument listing them otherwise.
Status parse_override_type(const std::string& name, GgmlType* out);
// "PATTERN=TYPE" (llama-quantize's --tensor-type): InvalidArgument for a missing part, an unknown
// type or a pattern that is not a valid regex (or longer than 1024 bytes).
Status parse_tensor_type_rule(const std::string& spec, TensorTypeRule* out);

// The output type of every tensor (same order as `tensors`) for `mix`. Tensors llama.cpp does not
// quantize (fewer than 2 dimensions, norms, names not ending in "weight") keep their input type.
// notes (optional) gets one line per tensor whose type fell back because its rows do not fit the
// type's block, e.g. "blk.0.ffn_down.weight: q4_K needs rows of a multiple of 256 (ne[0]=96), using q5_0".
// Rules' patterns must have passed parse_tensor_type_rule (an invalid one matches nothing here).
std::vector<GgmlType> plan_tensor_types(const QuantMix& mix, const RecipeModel& model,
                                        const std::vector<RecipeTensor>& tensors,
                                        std::vector<std::string>* notes = nullptr,
                                        const RecipeOverrides& overrides = RecipeOverrides());

// llama.cpp's fallback when a row of ne0 elements does not fit the block of `want` (k-quants need
// ne0 % 256 == 0): IQ4_XS -> IQ4_NL, Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0;
// F16 when even that block does not fit.
GgmlType fallback_type(GgmlType want, int64_t ne0);

}  // namespace llmserve
