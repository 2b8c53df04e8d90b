// KvPool: paged K/V storage shared by every sequence of an engine.
//   K: [n_layer][n_blocks][block_size][n_embd_kv]   (one row per token slot)
//   V: [n_layer][n_blocks][block_size][n_embd_kv]
// A sequence's position p lives in block table[p / block_size], slot p % block_size. Blocks are
// handed out by BlockAllocator; this class only owns the bytes. Elements are f16 (default, like
// llama.cpp's default KV type) or f32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "../model/model_config.h"
#include "../status.h"

namespace llmserve {

struct KvPoolOptions {
  int64_t n_blocks = 0;
  int32_t block_size = 16;
  bool f16 = true;
};

class KvPool {
 public:
  // OutOfMemory if allocation fails; InvalidArgument for non-positive or absurd sizes.
  static Status create(const ModelConfig& config, const KvPoolOptions& options, std::unique_ptr<KvPool>* out);

  int64_t n_blocks() const { return n_blocks_; }
  int32_t block_size() const { return block_size_; }
  int64_t n_layer() const { return n_layer_; }
  int64_t n_embd_kv() const { return n_embd_kv_; }
  bool f16() const { return f16_; }
  size_t elem_size() const { return f16_ ? 2 : 4; }
  size_t row_bytes() const { return static_cast<size_t>(n_embd_kv_) * elem_size(); }
  size_t block_bytes() const { return row_bytes() * static_cast<size_t>(block_size_); }
  // Total bytes of K and V storage.
  size_t bytes() const { return 2 * block_bytes() * static_cast<size_t>(n_blocks_) * static_cast<size_t>(n_layer_); }

  // Storage of one layer: block b's slot s row is at base + b * block_bytes() + s * row_bytes().
  uint8_t* k_layer(int64_t layer) { return k_.get() + static_cast<size_t>(layer) * block_bytes() * n_blocks_; }
  uint8_t* v_layer(int64_t layer) { return v_.get() + static_cast<size_t>(layer) * block_bytes() * n_blocks_; }
  uint8_t* k_row(int64_t layer, int64_t block, int64_t slot) {
    return k_layer(layer) + static_cast<size_t>(block) * block_bytes() + static_cast<size_t>(slot) * row_bytes();
  }
  uint8_t* v_row(int64_t layer, int64_t block, int64_t slot) {
    return v_layer(layer) + static_cast<size_t>(block) * block_bytes() + static_cast<size_t>(slot) * row_bytes();
  }
  // Copies every layer's K/V of block `src` slots [0, n) to block `dst` (copy-on-write).
  void copy_block(int64_t src, int64_t dst, int64_t n);

  // Scratch arena reused across forward calls (grown on demand; contents undefined).
  // Returns nullptr if the allocation fails.
  uint8_t* scratch(size_t bytes);

 private:
  KvPool() = default;
  int64_t n_blocks_ = 0, n_layer_ = 0, n_embd_kv_ = 0;
  int32_t block_size_ = 16;
  bool f16_ = true;
  std::unique_ptr<uint8_t[]> k_, v_;
  std::unique_ptr<uint8_t[]> scratch_;
  size_t scratch_bytes_ = 0;
};

}  // namespace llmserve
