// Helpers shared by the kernel benchmarks (bench_matmul.cpp, bench_csr.cpp, bench_s24.cpp,
// bench_lowrank.cpp): list parsing, the CPU's name, the median time of a call over rotating copies
// of its weights, and the machine's read bandwidth.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "threadpool/thread_pool.h"

namespace bench {

inline std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// "1,16,64" -> positive integers; false when the list is empty or an item is not a positive number.
inline bool parse_counts(const std::string& s, std::vector<int64_t>* out) {
  out->clear();
  for (auto& e : split_list(s)) {
    const long long n = std::atoll(e.c_str());
    if (n <= 0) return false;
    out->push_back(n);
  }
  return !out->empty();
}

// "5632x2048" (n_out x n_in) -> the pair; false when it is not two positive numbers around an 'x'.
inline bool parse_shape(const std::string& s, int64_t* n_out, int64_t* n_in) {
  const auto x = s.find('x');
  if (x == std::string::npos) return false;
  *n_out = std::atoll(s.substr(0, x).c_str());
  *n_in = std::atoll(s.substr(x + 1).c_str());
  return *n_out > 0 && *n_in > 0;
}

inline std::string cpu_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

// Median ms of call(copy) over at least 5 calls and min_time seconds; copy cycles through [0, copies)
// so each call reads weights that are not in cache.
template <class F>
double median_ms(F call, int copies, double min_time) {
  using Clock = std::chrono::steady_clock;
  std::vector<double> ts;
  const auto start = Clock::now();
  for (int i = 0; ts.size() < 5 || std::chrono::duration<double>(Clock::now() - start).count() < min_time; ++i) {
    const auto t0 = Clock::now();
    call(i % copies);
    ts.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    if (ts.size() > 2000) break;
  }
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

// Sums [p, p + n) 64-bit words; AVX2 when the CPU has it (four independent accumulators).
__attribute__((target("avx2"))) inline uint64_t sum_avx2(const uint64_t* p, int64_t n) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
  for (int64_t i = 0; i + 16 <= n; i += 16) {
    s0 = _mm256_add_epi64(s0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    s1 = _mm256_add_epi64(s1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
    s2 = _mm256_add_epi64(s2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    s3 = _mm256_add_epi64(s3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
  }
  alignas(32) uint64_t v[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(v),
                     _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3)));
  return v[0] + v[1] + v[2] + v[3];
}
inline uint64_t sum_scalar(const uint64_t* p, int64_t n) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (int64_t i = 0; i + 4 <= n; i += 4) {
    s0 += p[i];
    s1 += p[i + 1];
    s2 += p[i + 2];
    s3 += p[i + 3];
  }
  return s0 + s1 + s2 + s3;
}

// Read bandwidth: each thread sums its own contiguous part of a buffer 16x the LLC; best of 5.
// (A streaming kernel that computes between its loads can beat a plain sum slightly, so GEMV
// fractions a little above 100% are possible.)
inline double read_bandwidth_gbs(llmserve::ThreadPool& pool, const std::vector<uint64_t>& buf) {
  const bool avx2 = __builtin_cpu_supports("avx2");
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<uint64_t> partial(64, 0);
    const int64_t chunks = pool.size();
    const int64_t per = static_cast<int64_t>(buf.size()) / chunks;
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for_chunked(
        chunks,
        [&](int64_t b, int64_t e, int slot) {
          for (int64_t c = b; c < e; ++c) {
            const uint64_t* p = buf.data() + c * per;
            partial[static_cast<size_t>(slot)] += avx2 ? sum_avx2(p, per) : sum_scalar(p, per);
          }
        },
        1);
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    uint64_t sink = 0;
    for (uint64_t v : partial) sink += v;
    if (sink == 42) std::printf(" ");
    best = std::max(best, static_cast<double>(buf.size()) * 8 / t / 1e9);
  }
  return best;
}

}  // namespace bench
