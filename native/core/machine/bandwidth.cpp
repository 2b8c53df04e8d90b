#include "machine/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "isa/isa.h"
#include "threadpool/thread_pool.h"

namespace llmserve {
namespace {

// Sums n 64-bit words (n a multiple of 16) with 4 independent vector chains (GCC/Clang vector
// types: the baseline ISA's registers, SSE2 or NEON). The probe must not be the limit: on one Zen 5
// core plain scalar loads read ~25 GB/s, 16-byte vectors ~36 and 32-byte ones the ~41 of memory,
// so x86 CPUs with AVX2 take the 32-byte version (the same source compiled for AVX2).
typedef uint64_t u64x2 __attribute__((vector_size(16)));
typedef uint64_t u64x4 __attribute__((vector_size(32)));

// s += the vector at p (by reference: a 32-byte vector returned by value would change the ABI of a
// function compiled without AVX, -Wpsabi).
template <class Vec>
inline void add_vec(Vec& s, const uint64_t* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(Vec));
  s += v;
}

template <class Vec>
inline uint64_t sum_vectors(const uint64_t* p, int64_t n) {
  constexpr int kLanes = sizeof(Vec) / 8;
  Vec s0 = {}, s1 = {}, s2 = {}, s3 = {};
  for (int64_t i = 0; i + 4 * kLanes <= n; i += 4 * kLanes) {
    add_vec(s0, p + i);
    add_vec(s1, p + i + kLanes);
    add_vec(s2, p + i + 2 * kLanes);
    add_vec(s3, p + i + 3 * kLanes);
  }
  const Vec t = (s0 + s1) + (s2 + s3);
  uint64_t r = 0;
  for (int l = 0; l < kLanes; ++l) r += t[l];
  return r;
}

#if defined(__x86_64__) || defined(_M_X64)
__attribute__((target("avx2"))) uint64_t sum_words_avx2(const uint64_t* p, int64_t n) {
  return sum_vectors<u64x4>(p, n);
}
#endif

uint64_t sum_words(const uint64_t* p, int64_t n) {
#if defined(__x86_64__) || defined(_M_X64)
  static const bool avx2 = cpu_supports(Isa::Avx2);
  if (avx2) return sum_words_avx2(p, n);
#endif
  return sum_vectors<u64x2>(p, n);
}

}  // namespace

Status measure_read_bandwidth(ThreadPool& pool, size_t bytes, int reps, double* gbs) {
  if (bytes < (size_t(1) << 20) || reps < 1 || !gbs)
    return Status{Code::InvalidArgument, "measure_read_bandwidth: at least 1 MiB and 1 pass"};
  const size_t words = bytes / sizeof(uint64_t);
  std::unique_ptr<uint64_t[]> buf(new (std::nothrow) uint64_t[words]);
  if (!buf) return Status{Code::OutOfMemory, "read-bandwidth probe: could not allocate its buffer"};
  // Written in parallel too, so the first-touch pages lie near the threads that read them.
  const int64_t chunks = pool.size();
  const int64_t per = static_cast<int64_t>(words) / chunks / 16 * 16;  // words per thread, whole steps
  pool.parallel_for_chunked(
      chunks,
      [&](int64_t b, int64_t e, int) {
        for (int64_t c = b; c < e; ++c)
          for (int64_t i = 0; i < per; ++i) buf[c * per + i] = static_cast<uint64_t>(c * per + i);
      },
      1);
  std::vector<uint64_t> partial(static_cast<size_t>(pool.size()), 0);
  double best = 0;
  for (int rep = 0; rep < reps; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for_chunked(
        chunks,
        [&](int64_t b, int64_t e, int slot) {
          for (int64_t c = b; c < e; ++c) partial[static_cast<size_t>(slot)] += sum_words(buf.get() + c * per, per);
        },
        1);
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (t > 0) best = std::max(best, static_cast<double>(per * chunks) * sizeof(uint64_t) / t / 1e9);
  }
  // A volatile store of the sums keeps the reads from being optimized away.
  uint64_t sink = 0;
  for (uint64_t v : partial) sink += v;
  volatile uint64_t keep = sink;
  (void)keep;
  *gbs = best;
  return Status::ok();
}

}  // namespace llmserve
