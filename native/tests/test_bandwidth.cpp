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

TEST(bandwidth_measures_a_plausible_rate_with_every_thread_count) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    double gbs = 0;
    CHECK(measure_read_bandwidth(pool, size_t(64) << 20, 2, &gbs).is_ok());
    // Any machine that runs the tests reads 64 MiB faster than 0.2 GB/s and slower than 10 TB/s.
    CHECK(gbs > 0.2);
    CHECK(gbs < 10000);
  }
}
