// KvCache: one sequence's KV over a private KvPool with an identity block table: the eval-only
// cache (Model.evaluate's perplexity/logits runs never touch the serving pool) and tests' single
// sequence; the engine serves many sequences from one shared pool (forward_batch).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "../status.h"
#include "kv_pool.h"

namespace llmserve {

struct KvCacheOptions {
  int64_t n_ctx = 0;
  GgmlType type = GgmlType::F16;  // llama.cpp's default KV type; F32 and Q8_0 too
};

class KvCache {
 public:
  // OutOfMemory if allocation fails; InvalidArgument if n_ctx < 1 or absurd.
  static Status create(const KvShape& shape, const KvCacheOptions& options, std::unique_ptr<KvCache>* out);

  int64_t n_ctx() const { return n_ctx_; }
  int64_t n_past() const { return n_past_; }
  GgmlType type() const { return pool_->type(); }
  // Keeps the first n positions (n clamped to [0, n_past]); later positions are overwritten.
  void truncate(int64_t n);

  int64_t n_layer() const { return pool_->n_layer(); }
  int64_t n_embd_kv() const { return pool_->n_embd_kv(); }
  void set_n_past(int64_t n) { n_past_ = n; }
  KvPool& pool() { return *pool_; }
  const int32_t* blocks() const { return blocks_.data(); }

 private:
  KvCache() = default;
  int64_t n_ctx_ = 0, n_past_ = 0;
  std::unique_ptr<KvPool> pool_;
  std::vector<int32_t> blocks_;
};

}  // namespace llmserve
