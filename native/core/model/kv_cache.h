// KvCache: contiguous K/V storage for one sequence, plus the reusable scratch arena of forward().
//   K: [n_layer][n_ctx][n_head_kv * head_dim]  (one row per position)
//   V: [n_layer][n_ctx][n_head_kv * head_dim]
// Elements are f16 (default, like llama.cpp's default KV type) or f32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "../status.h"
#include "model_config.h"

namespace llmserve {

struct KvCacheOptions {
  int64_t n_ctx = 0;
  bool f16 = true;  // llama.cpp's default KV type is f16
};

class KvCache {
 public:
  // OutOfMemory if allocation fails; InvalidArgument if n_ctx < 1 or absurd.
  static Status create(const ModelConfig& config, const KvCacheOptions& options,
                       std::unique_ptr<KvCache>* out);

  int64_t n_ctx() const { return n_ctx_; }
  int64_t n_past() const { return n_past_; }
  bool f16() const { return f16_; }
  // Keeps the first n positions (n clamped to [0, n_past]); later positions are overwritten.
  void truncate(int64_t n);

  // --- used by forward() ---
  int64_t n_layer() const { return n_layer_; }
  int64_t n_embd_kv() const { return n_embd_kv_; }
  size_t elem_size() const { return f16_ ? 2 : 4; }
  // K row of (layer, pos): n_embd_kv elements.
  uint8_t* k_row(int64_t layer, int64_t pos) {
    return k_.get() + (static_cast<size_t>(layer) * n_ctx_ + pos) * n_embd_kv_ * elem_size();
  }
  // V row of (layer, pos): n_embd_kv elements.
  uint8_t* v_row(int64_t layer, int64_t pos) {
    return v_.get() + (static_cast<size_t>(layer) * n_ctx_ + pos) * n_embd_kv_ * elem_size();
  }
  void set_n_past(int64_t n) { n_past_ = n; }
  // Scratch arena reused across forward calls (grown on demand; contents undefined).
  // Returns nullptr if the allocation fails.
  uint8_t* scratch(size_t bytes);

 private:
  KvCache() = default;
  int64_t n_ctx_ = 0, n_past_ = 0, n_layer_ = 0, n_embd_kv_ = 0;
  bool f16_ = true;
  std::unique_ptr<uint8_t[]> k_, v_;
  std::unique_ptr<uint8_t[]> scratch_;
  size_t scratch_bytes_ = 0;
};

}  // namespace llmserve
