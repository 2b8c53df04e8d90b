#include "kv_cache.h"

#include <algorithm>

namespace llmserve {

Status KvCache::create(const KvShape& shape, const KvCacheOptions& options, std::unique_ptr<KvCache>* out) {
  if (options.n_ctx < 1 || options.n_ctx > (int64_t(1) << 24)) {
    return make_error(Code::InvalidArgument,
                      "Expected n_ctx in [1, 16777216] but received " + std::to_string(options.n_ctx));
  }
  std::unique_ptr<KvCache> kv(new KvCache());
  kv->n_ctx_ = options.n_ctx;
  KvPoolOptions po;
  po.block_size = 16;
  po.n_blocks = (options.n_ctx + po.block_size - 1) / po.block_size;
  po.type = options.type;
  LLMS_RETURN_IF_ERROR(KvPool::create(shape, po, &kv->pool_));
  kv->blocks_.resize(static_cast<size_t>(po.n_blocks));
  for (size_t i = 0; i < kv->blocks_.size(); ++i) kv->blocks_[i] = static_cast<int32_t>(i);
  *out = std::move(kv);
  return Status::ok();
}

void KvCache::truncate(int64_t n) { n_past_ = std::clamp<int64_t>(n, 0, n_past_); }

}  // namespace llmserve
