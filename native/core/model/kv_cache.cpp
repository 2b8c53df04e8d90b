#include "kv_cache.h"

#include <algorithm>
#include <new>

namespace llmserve {

Status KvCache::create(const ModelConfig& config, const KvCacheOptions& options,
                       std::unique_ptr<KvCache>* out) {
  if (options.n_ctx < 1 || options.n_ctx > (int64_t(1) << 24)) {
    return make_error(Code::InvalidArgument, "Expected n_ctx in [1, 16777216] but received " +
                                                 std::to_string(options.n_ctx));
  }
  if (config.n_layer < 1 || config.n_embd_kv() < 1) {
    return make_error(Code::InvalidArgument, "KvCache::create: model config has no layers");
  }
  std::unique_ptr<KvCache> kv(new KvCache());
  kv->n_ctx_ = options.n_ctx;
  kv->n_layer_ = config.n_layer;
  kv->n_embd_kv_ = config.n_embd_kv();
  kv->f16_ = options.f16;
  const unsigned __int128 elems = static_cast<unsigned __int128>(config.n_layer) *
                                  static_cast<uint64_t>(options.n_ctx) *
                                  static_cast<uint64_t>(config.n_embd_kv());
  const unsigned __int128 bytes = elems * kv->elem_size();
  if (bytes > static_cast<unsigned __int128>(SIZE_MAX / 4)) {
    return make_error(Code::OutOfMemory, "KV cache of " + std::to_string((uint64_t)(bytes >> 20)) +
                                             " MiB per tensor is too large");
  }
  // Pages are not touched here (no zero fill): only positions < n_past are ever read.
  kv->k_.reset(new (std::nothrow) uint8_t[static_cast<size_t>(bytes)]);
  kv->v_.reset(new (std::nothrow) uint8_t[static_cast<size_t>(bytes)]);
  if (!kv->k_ || !kv->v_) {
    return make_error(Code::OutOfMemory, "could not allocate the KV cache (2 x " +
                                             std::to_string(static_cast<uint64_t>(bytes) >> 20) +
                                             " MiB for n_ctx " + std::to_string(options.n_ctx) + ")");
  }
  *out = std::move(kv);
  return Status::ok();
}

void KvCache::truncate(int64_t n) { n_past_ = std::clamp<int64_t>(n, 0, n_past_); }

uint8_t* KvCache::scratch(size_t bytes) {
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
