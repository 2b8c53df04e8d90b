#include "kv_pool.h"

#include <algorithm>
#include <cstring>
#include <new>

namespace llmserve {

Status KvPool::create(const KvShape& shape, const KvPoolOptions& o, std::unique_ptr<KvPool>* out) {
  if (o.block_size < 1 || o.block_size > 4096)
    return make_error(Code::InvalidArgument,
                      "Expected kvBlockSize in [1, 4096] but received " + std::to_string(o.block_size));
  if (o.n_blocks < 1 || o.n_blocks > (int64_t(1) << 24))
    return make_error(Code::InvalidArgument,
                      "Expected a KV block count in [1, 16777216] but received " + std::to_string(o.n_blocks));
  if (o.type != GgmlType::F16 && o.type != GgmlType::F32 && o.type != GgmlType::Q8_0)
    return make_error(Code::InvalidArgument,
                      std::string("Expected kvType f16, f32 or q8_0 but received ") + type_traits(o.type).name);
  if (o.type == GgmlType::Q8_0 && shape.head_dim % 32 != 0)
    return make_error(Code::InvalidArgument,
                      "kvType q8_0 needs a head size that is a multiple of 32 (this model's is " +
                          std::to_string(shape.head_dim) + "); use kvType f16");
  if (shape.n_layer < 1 || shape.n_head_kv < 1 || shape.head_dim < 1)
    return make_error(Code::InvalidArgument, "KvPool::create: the KV shape has no layers or heads");
  std::unique_ptr<KvPool> p(new KvPool());
  p->n_blocks_ = o.n_blocks;
  p->block_size_ = o.block_size;
  p->n_layer_ = shape.n_layer;
  p->n_embd_kv_ = shape.n_embd_kv();
  p->type_ = o.type;
  const unsigned __int128 per = static_cast<unsigned __int128>(p->block_bytes()) * static_cast<uint64_t>(o.n_blocks) *
                                static_cast<uint64_t>(shape.n_layer);
  if (per > static_cast<unsigned __int128>(SIZE_MAX / 4))
    return make_error(Code::OutOfMemory,
                      "a KV cache of " + std::to_string((uint64_t)(per >> 20)) + " MiB per tensor is too large");
  const size_t bytes = static_cast<size_t>(per);
  // Pages are not touched here (no zero fill): only slots a sequence has written are ever read.
  p->k_.reset(new (std::nothrow) uint8_t[bytes]);
  p->v_.reset(new (std::nothrow) uint8_t[bytes]);
  if (!p->k_ || !p->v_)
    return make_error(Code::OutOfMemory, "could not allocate the KV cache (2 x " + std::to_string(bytes >> 20) +
                                             " MiB); lower kvCacheTokens / contextSize");
  // A page's first write faults into the kernel, which maps and zeroes it: inside a prefill's
  // stores that was ~10% of a Qwen3-0.6B pp512 on a VM. llama.cpp clears its whole cache when a
  // context is created; we do it for the blocks the first context will use.
  const size_t per_block = 2 * p->block_bytes() * static_cast<size_t>(shape.n_layer);
  const int64_t pre = std::min<int64_t>(std::clamp<int64_t>(o.prefault_blocks, 0, o.n_blocks),
                                        static_cast<int64_t>(KvPoolOptions::kMaxPrefaultBytes / per_block));
  for (int64_t l = 0; pre > 0 && l < shape.n_layer; ++l) {
    std::memset(p->k_layer(l), 0, static_cast<size_t>(pre) * p->block_bytes());
    std::memset(p->v_layer(l), 0, static_cast<size_t>(pre) * p->block_bytes());
  }
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

void KvPool::store(int64_t layer, const int32_t* blocks, int64_t pos, const float* k, const float* v) {
  const int64_t blk = blocks[pos / block_size_], slot = pos % block_size_;
  quantize_row(type_, k, k_row(layer, blk, slot), n_embd_kv_);
  quantize_row(type_, v, v_row(layer, blk, slot), n_embd_kv_);
}

}  // namespace llmserve
