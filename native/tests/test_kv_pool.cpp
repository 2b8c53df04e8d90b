// KvPool: the first blocks of every layer are mapped at creation (prefault_blocks), the rest only
// when first written; rows stored in either read back the same.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>
#if defined(__linux__)
#include <sys/resource.h>
#endif

#include "kv/kv_pool.h"
#include "quant/quant.h"
#include "testing.h"

using namespace llmserve;

namespace {

#if defined(__linux__)
long minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}
#endif

// Stores token rows into blocks [0, n) of every layer; returns the minor page faults it took.
long store_blocks(KvPool& pool, int64_t n_layer, int64_t n, const std::vector<float>& row) {
  std::vector<uint8_t> scratch(pool.row_bytes());
  quantize_row(GgmlType::F16, row.data(), scratch.data(), static_cast<int64_t>(row.size()));  // tables first
#if defined(__linux__)
  const long before = minor_faults();
#endif
  std::vector<int32_t> table(static_cast<size_t>(n));
  for (int64_t b = 0; b < n; ++b) table[static_cast<size_t>(b)] = static_cast<int32_t>(b);
  for (int64_t l = 0; l < n_layer; ++l)
    for (int64_t pos = 0; pos < n * pool.block_size(); ++pos) pool.store(l, table.data(), pos, row.data(), row.data());
#if defined(__linux__)
  return minor_faults() - before;
#else
  return 0;
#endif
}

}  // namespace

TEST(kv_pool_prefault_is_capped) {
  // A pool whose first context would take more than kMaxPrefaultBytes maps only that much at
  // creation: 4 layers x (K, V) x 64 KiB blocks = 512 KiB per block, so 512 blocks = 256 MiB; the
  // blocks past the cap fault when first written.
  KvShape shape;
  shape.n_layer = 4, shape.n_head_kv = 8, shape.head_dim = 256;  // 4 KiB f16 rows, 64 KiB blocks
  std::vector<float> row(static_cast<size_t>(shape.n_embd_kv()), 0.5f);
  KvPoolOptions po;
  po.n_blocks = 600, po.block_size = 16, po.type = GgmlType::F16, po.prefault_blocks = 600;
  std::unique_ptr<KvPool> pool;
  CHECK(KvPool::create(shape, po, &pool).is_ok());
  CHECK_EQ(KvPoolOptions::kMaxPrefaultBytes / (2 * pool->block_bytes() * 4), size_t(512));
#if defined(__linux__)
  std::vector<int32_t> table(600);
  for (int32_t b = 0; b < 600; ++b) table[static_cast<size_t>(b)] = b;
  pool->store(0, table.data(), 0, row.data(), row.data());  // first use of the kernel tables
  const long before = minor_faults();
  pool->store(0, table.data(), 511 * 16, row.data(), row.data());  // the last prefaulted block
  const long inside = minor_faults() - before;
  pool->store(0, table.data(), 599 * 16, row.data(), row.data());  // past the cap
  const long past = minor_faults() - before - inside;
  CHECK(inside == 0);
  CHECK(past >= 1);
#endif
}

TEST(kv_pool_prefaults_the_first_blocks_only) {
  KvShape shape;
  shape.n_layer = 4, shape.n_head_kv = 4, shape.head_dim = 256;  // 2 KiB f16 rows, 32 KiB blocks
  std::vector<float> row(static_cast<size_t>(shape.n_embd_kv()));
  for (size_t i = 0; i < row.size(); ++i) row[i] = 0.25f * static_cast<float>(i % 37) - 4.0f;
  const int64_t kPre = 8;
  for (int64_t pre : {int64_t(0), kPre, int64_t(1) << 40}) {  // none, the first 8, more than the pool
    KvPoolOptions po;
    po.n_blocks = 512, po.block_size = 16, po.type = GgmlType::F16, po.prefault_blocks = pre;
    std::unique_ptr<KvPool> pool;
    CHECK(KvPool::create(shape, po, &pool).is_ok());
    const long faults = store_blocks(*pool, shape.n_layer, kPre, row);
#if defined(__linux__)
    // 4 layers x (K, V) x 256 KiB: at least one fault per region when nothing was mapped (64 per
    // region with 4 KiB pages), none when the blocks were written at creation.
    if (pre == 0) CHECK(faults >= 8);
    else CHECK(faults <= 2);
#else
    (void)faults;
#endif
    // The rows read back as their f16 values wherever the pool put them.
    std::vector<uint8_t> want(pool->row_bytes());
    quantize_row(GgmlType::F16, row.data(), want.data(), shape.n_embd_kv());
    CHECK(std::memcmp(pool->k_row(3, 7, 15), want.data(), want.size()) == 0);
    CHECK(std::memcmp(pool->v_row(0, 0, 0), want.data(), want.size()) == 0);
  }
}
