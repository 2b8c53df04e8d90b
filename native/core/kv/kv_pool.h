// KvPool: paged K/V storage shared by every sequence of an engine.
//   K: [n_layer][n_blocks][block_size][n_embd_kv]   (one row per token slot)
//   V: [n_layer][n_blocks][block_size][n_embd_kv]
// A sequence's position p lives in block table[p / block_size], slot p % block_size. Blocks are
// handed out by BlockAllocator; this class only owns the bytes. Rows are f16 (default, like
// llama.cpp's default KV type), f32 or q8_0 (blocks of 32 elements: f16 scale + 32 int8, as
// llama.cpp's --cache-type-k/v q8_0; half the bytes of f16, so twice the tokens per MiB).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "../quant/quant.h"
#include "../status.h"

namespace llmserve {

// What one token's K (and V) looks like, per layer: n_head_kv heads of head_dim elements.
struct KvShape {
  int64_t n_layer = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;
  int64_t n_embd_kv() const { return n_head_kv * head_dim; }
};

struct KvPoolOptions {
  int64_t n_blocks = 0;
  int32_t block_size = 16;
  GgmlType type = GgmlType::F16;  // F16, F32 or Q8_0
  // Blocks [0, prefault_blocks) of every layer are written once at creation, so their pages are
  // mapped before the first forward pass stores into them (the block allocator hands blocks out
  // from 0 upwards), at most kMaxPrefaultBytes of them (K and V of all layers). The rest of the
  // pool stays untouched until used.
  int64_t prefault_blocks = 0;
  static constexpr size_t kMaxPrefaultBytes = size_t(256) << 20;
};

class KvPool {
 public:
  // OutOfMemory if allocation fails; InvalidArgument for non-positive or absurd sizes, another
  // element type, or q8_0 with a head size that is not a multiple of 32 (heads must start on a
  // block boundary).
  static Status create(const KvShape& shape, const KvPoolOptions& options, std::unique_ptr<KvPool>* out);

  int64_t n_blocks() const { return n_blocks_; }
  int32_t block_size() const { return block_size_; }
  int64_t n_layer() const { return n_layer_; }
  int64_t n_embd_kv() const { return n_embd_kv_; }
  GgmlType type() const { return type_; }
  size_t row_bytes() const { return row_size(type_, n_embd_kv_); }
  // Byte offset of KV head h's elements inside a row.
  size_t head_offset(int64_t h, int64_t head_dim) const { return row_size(type_, h * head_dim); }
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

  // k, v: [n_embd_kv] f32 of one token -> this layer's slot for position pos of a sequence with
  // block table `blocks`, converted to the cache type (f16 / q8_0: ggml's from_float, as llama.cpp's
  // KV store).
  void store(int64_t layer, const int32_t* blocks, int64_t pos, const float* k, const float* v);

 private:
  KvPool() = default;
  int64_t n_blocks_ = 0, n_layer_ = 0, n_embd_kv_ = 0;
  int32_t block_size_ = 16;
  GgmlType type_ = GgmlType::F16;
  std::unique_ptr<uint8_t[]> k_, v_;
};

// Where a model's K/V lives. One pool of every layer (local == null; layer il at index il), or
// split by kind: global layers in `global`, sliding-window (local) layers in `local`, each at the
// layer's rank among its kind, either null when the model has no layer of that kind. Split, the
// local pool only needs each sequence's last window of positions (BatchSeq::local_blocks), so its
// size does not grow with context length. Both pools share block size and element type.
struct KvPools {
  KvPool* global = nullptr;
  KvPool* local = nullptr;
};

}  // namespace llmserve
