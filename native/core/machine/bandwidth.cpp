#include "machine/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "isa/isa.h"
#include "os/os.h"
#include "threadpool/thread_pool.h"

namespace llmserve {

#if defined(LLMSERVE_X86)
uint64_t bandwidth_sum_avx2(const uint64_t* p, int64_t n);  // bandwidth_avx2.cpp
#endif

namespace {

// Sums n 64-bit words (n a multiple of 16) in the baseline ISA: 16-byte vectors (SSE2 / NEON,
// GCC/Clang vector types) in four independent chains; x86 CPUs with AVX2 take bandwidth_avx2.cpp.
uint64_t sum_words(const uint64_t* p, int64_t n) {
#if defined(LLMSERVE_X86)
  static const bool avx2 = cpu_supports(Isa::Avx2);
  if (avx2) return bandwidth_sum_avx2(p, n);
#endif
  typedef uint64_t u64x2 __attribute__((vector_size(16)));
  u64x2 s0 = {0, 0}, s1 = s0, s2 = s0, s3 = s0, v0, v1, v2, v3;
  for (int64_t i = 0; i + 8 <= n; i += 8) {
    std::memcpy(&v0, p + i, 16);
    std::memcpy(&v1, p + i + 2, 16);
    std::memcpy(&v2, p + i + 4, 16);
    std::memcpy(&v3, p + i + 6, 16);
    s0 += v0;
    s1 += v1;
    s2 += v2;
    s3 += v3;
  }
  const u64x2 s = (s0 + s1) + (s2 + s3);
  return s[0] + s[1];
}

std::mutex g_probe_mu;  // one probe at a time

}  // namespace

Status measure_read_bandwidth(ThreadPool& pool, size_t bytes, int reps, double* gbs, uint64_t* checksum) {
  if (bytes < (size_t(1) << 20) || reps < 1 || !gbs)
    return Status{Code::InvalidArgument, "measure_read_bandwidth: at least 1 MiB and 1 pass"};
  std::lock_guard<std::mutex> lock(g_probe_mu);
  // Huge pages as the engine's packed weights (os::alloc_huge), so both see the same TLB.
  std::unique_ptr<uint8_t, os::AlignedFree> buf(os::alloc_huge(bytes));
  if (!buf)
    return Status{Code::OutOfMemory, "read-bandwidth probe: could not allocate " + std::to_string(bytes >> 20) +
                                         " MiB; measure with a smaller buffer (megabytes)"};
  uint64_t* const words = reinterpret_cast<uint64_t*>(buf.get());
  const int64_t chunks = pool.size();
  // Words per thread, whole steps of both sums; the bytes counted are exactly the words read.
  const int64_t per = static_cast<int64_t>(bytes / sizeof(uint64_t)) / chunks / 16 * 16;
  const int64_t n = per * chunks;
  // Written by the pool too (the pages are faulted in by several threads at once).
  pool.parallel_for_chunked(
      chunks,
      [&](int64_t b, int64_t e, int) {
        for (int64_t i = b * per; i < e * per; ++i) words[i] = static_cast<uint64_t>(i);
      },
      1);
  std::vector<uint64_t> partial(static_cast<size_t>(pool.size()), 0);
  double best = 0;
  for (int rep = 0; rep < reps; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for_chunked(
        chunks,
        [&](int64_t b, int64_t e, int slot) {
          for (int64_t c = b; c < e; ++c) partial[static_cast<size_t>(slot)] += sum_words(words + c * per, per);
        },
        1);
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (t > 0) best = std::max(best, static_cast<double>(n) * sizeof(uint64_t) / t / 1e9);
  }
  // The sums leave through *checksum or a volatile store, so the reads cannot be optimized away.
  uint64_t sum = 0;
  for (uint64_t v : partial) sum += v;
  if (checksum) *checksum = sum;
  volatile uint64_t keep = sum;
  (void)keep;
  *gbs = best;
  return Status::ok();
}

}  // namespace llmserve
