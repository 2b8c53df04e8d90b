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

// The output type of every tensor (same order as `tensors`) for `mix`. Tensors llama.cpp does not
// quantize (fewer than 2 dimensions, norms, names not ending in "weight") keep their input type.
// notes (optional) gets one line per tensor whose type fell back because its rows do not fit the
// type's block, e.g. "blk.0.ffn_down.weight: q4_K needs rows of a multiple of 256 (ne[0]=96), using q5_0".
std::vector<GgmlType> plan_tensor_types(const QuantMix& mix, const RecipeModel& model,
                                        const std::vector<RecipeTensor>& tensors,
                                        std::vector<std::string>* notes = nullptr);

// llama.cpp's fallback when a row of ne0 elements does not fit the block of `want` (k-quants need
// ne0 % 256 == 0): IQ4_XS -> IQ4_NL, Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0;
// F16 when even that block does not fit.
GgmlType fallback_type(GgmlType want, int64_t ne0);

}  // namespace llmserve
