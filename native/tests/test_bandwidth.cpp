// The read-bandwidth probe (machine/bandwidth.h): typed errors for bad arguments, and a plausible
// number (its value is the machine's; the benchmarks compare decode speed against it).
#include "machine/bandwidth.h"
#include "testing.h"
#include "threadpool/thread_pool.h"

using namespace llmserve;

TEST(bandwidth_rejects_a_buffer_under_1_mib_or_no_pass) {
  ThreadPool pool(1);
  double gbs = -1;
  CHECK(measure_read_bandwidth(pool, (size_t(1) << 20) - 8, 1, &gbs).code == Code::InvalidArgument);
  CHECK(measure_read_bandwidth(pool, size_t(1) << 20, 0, &gbs).code == Code::InvalidArgument);
  CHECK(measure_read_bandwidth(pool, size_t(1) << 20, 1, nullptr).code == Code::InvalidArgument);
  CHECK(gbs == -1);
}

TEST(bandwidth_reads_every_counted_word_once_per_pass_with_every_thread_count) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    // 64 MiB + 40 bytes: the words counted (the buffer split into whole 16-word steps per thread)
    // hold 0 .. N-1, so the checksum of 3 passes is 3 * N(N-1)/2 only if each was read once.
    const size_t bytes = (size_t(64) << 20) + 40;
    const uint64_t per = bytes / 8 / static_cast<uint64_t>(threads) / 16 * 16;
    const uint64_t n = per * static_cast<uint64_t>(threads);
    double gbs = 0;
    uint64_t sum = 0;
    CHECK(measure_read_bandwidth(pool, bytes, 3, &gbs, &sum).is_ok());
    CHECK_EQ(sum, 3 * (n * (n - 1) / 2));
    // Any machine that runs the tests reads 64 MiB faster than 0.2 GB/s and slower than 10 TB/s.
    CHECK(gbs > 0.2);
    CHECK(gbs < 10000);
  }
}
