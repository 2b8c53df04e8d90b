// Helpers shared by the kernel benchmarks (bench_matmul.cpp, bench_csr.cpp, bench_s24.cpp,
// bench_lowrank.cpp): list parsing, the CPU's name, the median time of a call over rotating copies
// of its weights, and the machine's read bandwidth.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "machine/bandwidth.h"
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

// The machine's read bandwidth (native/core/machine/bandwidth.h, the probe `llmserve info --bandwidth`
// and bench:e2e use too): each thread sums its own part of a 1 GiB buffer, best of 5 passes; 0
// when the buffer cannot be allocated. (A streaming kernel that computes between its loads can beat
// a plain sum slightly, so GEMV fractions a little above 100% are possible.)
inline double read_bandwidth_gbs(llmserve::ThreadPool& pool) {
  double gbs = 0;
  if (!llmserve::measure_read_bandwidth(pool, size_t(1) << 30, 5, &gbs)) return 0;
  return gbs;
}

}  // namespace bench
