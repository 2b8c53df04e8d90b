#include "kv_pool.h"

#include <cstring>
#include <new>

namespace llmserve {

Status KvPool::create(const ModelConfig& config, const KvPoolOptions& o, std::unique_ptr<KvPool>* out) {
  if (o.block_size < 1 || o.block_size > 4096)
    return make_error(Code::InvalidArgument, "Expected kvBlockSize in [1, 4096] but received " + std::to_string(o.block_size));
  if (o.n_blocks < 1 || o.n_blocks > (int64_t(1) << 24))
    return make_error(Code::InvalidArgument, "Expected a KV block count in [1, 16777216] but received " + std::to_string(o.n_blocks));
  if (o.type != GgmlType::F16 && o.type != GgmlType::F32 && o.type != GgmlType::Q8_0)
    return make_error(Code::InvalidArgument, std::string("Expected kvType f16, f32 or q8_0 but received ") + type_traits(o.type).name);
  if (o.type == GgmlType::Q8_0 && config.head_dim % 32 != 0)
    return make_error(Code::InvalidArgument, "kvType q8_0 needs a head size that is a multiple of 32 (this model's is " +
                                                 std::to_string(config.head_dim) + "); use kvType f16");
  if (config.n_layer < 1 || config.n_embd_kv() < 1)
    return make_error(Code::InvalidArgument, "KvPool::create: model config has no layers");
  std::unique_ptr<KvPool> p(new KvPool());
  p->n_blocks_ = o.n_blocks;
  p->block_size_ = o.block_size;
  p->n_layer_ = config.n_layer;
  p->n_embd_kv_ = config.n_embd_kv();
  p->type_ = o.type;
  const unsigned __int128 per = static_cast<unsigned __int128>(p->block_bytes()) * static_cast<uint64_t>(o.n_blocks) *
                                static_cast<uint64_t>(config.n_layer);
  if (per > static_cast<unsigned __int128>(SIZE_MAX / 4))
    return make_error(Code::OutOfMemory, "a KV cache of " + std::to_string((uint64_t)(per >> 20)) + " MiB per tensor is too large");
  const size_t bytes = static_cast<size_t>(per);
  // Pages are not touched here (no zero fill): only slots a sequence has written are ever read.
  p->k_.reset(new (std::nothrow) uint8_t[bytes]);
  p->v_.reset(new (std::nothrow) uint8_t[bytes]);
  if (!p->k_ || !p->v_)
    return make_error(Code::OutOfMemory, "could not allocate the KV cache (2 x " + std::to_string(bytes >> 20) +
                                             " MiB); lower kvCacheTokens / contextSize");
  *out = std::move(p);
  return Status::ok();
}

void KvPool::copy_block(int64_t src, int64_t dst, int64_t n) {
  if (src == dst || n <= 0) return;
  const size_t len = static_cast<size_t>(n) * row_bytes();
  for (int64_t l = 0; l < n_layer_; ++l) {
    std::memcpy(k_row(l, dst, 0), k_row(l, src, 0), len);
    std::memcpy(v_row(l, dst, 0), v_row(l, src, 0), len);
  }
}

uint8_t* KvPool::scratch(size_t bytes) {
  if (bytes > scratch_bytes_) {
    scratch_.reset();
    scratch_bytes_ = 0;
    scratch_.reset(new (std::nothrow) uint8_t[bytes]);
    if (!scratch_) return nullptr;
    scratch_bytes_ = bytes;
  }
  return scratch_.get();
}

}  // namespace llmserve
