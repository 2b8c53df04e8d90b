// LoRA adapters, applied per segment of a batch (no merged weights, the base model is shared by
// every adapter). Two on-disk formats load into the same pairs of views (LoraPair):
//
// 1. llama.cpp's GGUF adapter (convert_lora_to_gguf.py / llama-adapter.cpp): general.type =
// "adapter", adapter.type = "lora", general.architecture = the base model's, adapter.lora.alpha
// (float; 0 or absent: no alpha scaling), and for each target base tensor W (ggml ne = [n_in, n_out])
// a pair
//   "<W name>.lora_a": ne = [n_in, r]  (r rows of n_in: a MatrixView n_in -> r)
//   "<W name>.lora_b": ne = [r, n_out] (n_out rows of r: a MatrixView r -> n_out)
// in f32, f16, bf16, q8_0 or q4_0. The pair adds scale · B·(A·x) to W·x, with
// scale = user_scale × alpha / r (user_scale when alpha is 0), as llama.cpp's get_scale.
//
// 2. A Hugging Face PEFT folder (adapter_config.json + adapter_model.safetensors), read by peft.cpp
// (which holds the one HF -> GGUF name map and the llama q/k row permutation; see its header).
// safetensors' lora_A [r, n_in] and lora_B [n_out, r] are row-major, so they are already the two
// views above; they are used in place from the mapping unless a permutation (or a misaligned
// offset) needs a copy, which the adapter then owns.
//
// Targets: blk.N.attn_q/attn_k/attn_v/attn_output and blk.N.ffn_gate/ffn_up/ffn_down weights, and
// output.weight (when the base has its own output matrix).
#pragma once
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "../gguf/gguf.h"
#include "../model/forward.h"
#include "../model/model.h"
#include "../status.h"

namespace llmserve {

// One target's low-rank pair.
struct LoraPair {
  MatrixView a;                 // [n_in] -> [r]
  MatrixView b;                 // [r] -> [n_out]
  float scale = 0.0f;           // user_scale * alpha / r, or user_scale when alpha is 0
  const uint8_t* bt = nullptr;  // B transposed ([r, n_out], B's type) for lowrank_apply, or null
  // store_as() at a rank that is not a multiple of 32: A ([r, n_in]) and B transposed
  // ([r, n_out]) in q8_0 for lowrank_apply's f32 passes, or null.
  const uint8_t* q8_a = nullptr;
  const uint8_t* q8_bt = nullptr;
  // A ([r, n_in]) and B ([n_out, r]) in gemm_type (q8_0 or q4_0) packed by gemm_pack, for
  // lowrank_apply's Q8_0Gemm / Q4_0Gemm passes (llama.cpp's arithmetic for such a file), or null:
  // made at load for a q8_0 or q4_0 file's pairs, and by store_as() for the others whose rank is a
  // multiple of 32.
  const uint8_t* gemm_a = nullptr;
  const uint8_t* gemm_b = nullptr;
  GgmlType gemm_type = GgmlType::Q8_0;
  bool present() const { return a.data != nullptr; }
};

class SafetensorsFile;

class LoraAdapter final : public ProjectionDelta {
 public:
  // Opens the adapter at path and validates it against base: a PEFT folder, or a path to its
  // adapter_model.safetensors (the folder then holds adapter_config.json), goes to from_peft;
  // anything else is read as a GGUF adapter. GGUF errors, each naming the key or the
  // tensor: FileNotFound / Io / the GGUF reader's errors; InvalidArgument (general.type is not
  // "adapter", adapter.type is not "lora", a tensor name without .lora_a/.lora_b, a base tensor
  // that is not a supported target, no LoRA tensors at all, a non-finite alpha or scale);
  // UnsupportedArch (general.architecture differs from the base's); MissingTensor (the base has no
  // such tensor, or one half of a pair is absent); BadShape (not 2-D, n_in / n_out differ from
  // the base tensor's, the ranks of a and b differ, a row length not a multiple of the type's
  // block); UnsupportedType (a type other than f32, f16, bf16, q8_0, q4_0).
  static Status load(const std::string& path, const Model& base, float user_scale, std::unique_ptr<LoraAdapter>* out);
  // The same over an opened file (tests parse in-memory images); shares ownership of it.
  static Status from_file(std::shared_ptr<GgufFile> file, const Model& base, float user_scale,
                          std::unique_ptr<LoraAdapter>* out);
  // A PEFT adapter: its validated safetensors weights and the text of its adapter_config.json
  // (`where` names the folder in messages). Defined in peft.cpp, which lists its errors.
  static Status from_peft(std::shared_ptr<const SafetensorsFile> weights, const std::string& config_json,
                          const std::string& where, const Model& base, float user_scale,
                          std::unique_ptr<LoraAdapter>* out);

  bool touches(int64_t il, Proj p) const override { return pair(il, p) != nullptr; }
  // y[t] += scale · B·(A·x[t]): t = A·x and B·t are two matmul() calls over the segment's rows
  // (activations converted to each matrix's vec_dot type, as ggml's mul_mat), then the scaled
  // product is added to y (ggml_scale, then ggml_add).
  void add(int64_t il, Proj p, const float* x, int64_t n, float* y, int64_t ldy, ThreadPool& pool) const override;
  // f16 and f32 pairs (the formats convert_lora_to_gguf.py and PEFT write) run batched across
  // adapters through lowrank_apply (model/lowrank.h), on a transposed copy of B made at load; q8_0
  // and q4_0 pairs through its gemm passes on packed copies made at load (bit-identical to add()).
  bool low_rank(int64_t il, Proj p, LowRankFactors* out) const override;

  // Keeps every pair not yet quantized (f16/f32/bf16) whose n_in and n_out are multiples of 32 in
  // t (q8_0 or q4_0; other types convert nothing), quantized from the file's values as
  // llama-quantize writes t, and drops the f16/f32 copy of B transposed (Model.load's adapterType).
  // q8_0 is about half the memory of an f16 adapter, q4_0 about 0.28. A rank that is a multiple of
  // 32 gets A and B as a t adapter file would hold them (B blocked along r), run with llama.cpp's
  // arithmetic for such a file (the Q8_0Gemm / Q4_0Gemm passes: int8 dots on q8_0 activations);
  // other ranks keep the f32 passes over q8_0 A and B transposed (blocked along n_out), whatever t
  // is. Either way the delta differs from the file's by the type's rounding. Call once, before the
  // adapter is shared. Returns how many pairs it converted (a quantized file's pairs stay as
  // stored: 0).
  int64_t store_as(GgmlType t);

  // The pair of projection p of layer il (il ignored for Output), or null.
  const LoraPair* pair(int64_t il, Proj p) const;
  // adapter.lora.alpha (GGUF) or lora_alpha (PEFT; alpha_pattern may override it per module).
  float alpha() const { return alpha_; }
  int64_t n_pairs() const { return n_pairs_; }
  // Bytes of every pair's A and B matrices (as stored in the file) plus the transposed copies of B
  // (f16/f32) or the packed copies (q8_0, q4_0); for a pair store_as() converted, its two
  // quantized matrices instead.
  size_t bytes() const { return bytes_; }

 private:
  LoraAdapter() = default;

 public:
  ~LoraAdapter() override;

 private:
  // load() for a PEFT folder (is_dir) or a path to its adapter_model.safetensors (peft.cpp).
  static Status load_peft(const std::string& path, bool is_dir, const Model& base, float user_scale,
                          std::unique_ptr<LoraAdapter>* out);
  // The base matrix a target adapts (for Output: W.output, which is token_embd when tied).
  static const MatrixView& base_matrix(const Model& base, int64_t il, Proj p);
  void prepare_low_rank();
  // Sets pr.gemm_a / gemm_b to packed copies of rows a ([r, n_in]) and b ([n_out, r]) of type t
  // (q8_0 or q4_0) that the adapter owns, and counts their bytes (lora_store.cpp). Their memory
  // comes from reserve_packed.
  void pack_for_gemm(LoraPair& pr, GgmlType t, const uint8_t* a, const uint8_t* b);
  // Bytes pack_for_gemm takes for pr in type t (64-byte aligned slices).
  static size_t packed_size(const LoraPair& pr, GgmlType t);
  // Room for `bytes` of packed slices in one block: on 2 MiB pages when it is large (a decode step
  // streams every byte of every adapter in the batch; 4 KiB pages cost TLB misses), else plain.
  void reserve_packed(size_t bytes);
  struct PackedBlock {
    uint8_t* p = nullptr;
    size_t cap = 0, used = 0;
  };
  std::vector<PackedBlock> packed_;                // freed with the adapter
  std::shared_ptr<const void> file_;               // the mapping (GgufFile / SafetensorsFile) views point into
  std::vector<std::unique_ptr<uint8_t[]>> owned_;  // permuted / realigned copies (PEFT)
  std::vector<std::array<LoraPair, kProjCount>> layers_;
  LoraPair output_;
  float alpha_ = 0.0f;
  int64_t n_pairs_ = 0;
  size_t bytes_ = 0;
};

}  // namespace llmserve
