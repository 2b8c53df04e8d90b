// ThreadPool stress: back-to-back jobs whose chunk counts alternate small/large must each run every
// chunk exactly once (a stale worker of the previous job must never claim a chunk of the next).
#include <atomic>
#include <vector>

#include "testing.h"
#include "threadpool/thread_pool.h"

using namespace llmserve;

TEST(thread_pool_alternating_jobs_run_each_chunk_once) {
  ThreadPool pool(2);
  std::vector<std::atomic<int>> hits(64);
  int64_t bad = 0;
  for (int job = 0; job < 200000; ++job) {
    const int64_t n = (job & 1) ? 64 : 2;  // grain 1: chunks = min(n, chunks per thread * threads)
    for (int64_t i = 0; i < n; ++i) hits[(size_t)i].store(0, std::memory_order_relaxed);
    pool.parallel_for(
        n,
        [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) hits[(size_t)i].fetch_add(1, std::memory_order_relaxed);
        },
        1);
    for (int64_t i = 0; i < n; ++i) bad += hits[(size_t)i].load() != 1;
    if (bad) break;
  }
  CHECK_EQ(bad, (int64_t)0);
}
