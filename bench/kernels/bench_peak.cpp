// Compute peaks of this machine, the ceilings of the roofline table in bench/README.md (issue 18):
// the int8 dot-product rate each GEMM tier builds on, and the f32 FMA rate attention runs on.
//
//   llmserve_bench_kernels --peak [--threads 1,2] [--min-time 0.3]
//
// Each test runs, on every thread of a pool, a loop of 12 independent accumulator chains of one
// instruction mix (no loads: register operands only), so it measures issue throughput, not latency
// or memory. Rows (per available instruction set):
//   int8 vpdpbusd zmm   AVX-512 VNNI: 64 u8 x s8 multiply-adds into int32 per instruction
//   int8 vpdpbusd ymm   AVX-VNNI (or AVX-512 VL VNNI): 32 per instruction
//   int8 maddubs+add16  AVX2, what the AVX2 GEMMs do per 32 multiply-adds: vpmaddubsw then vpaddw
//   f32 fma zmm / ymm   16 / 8 multiply-adds per vfmadd
// GMAC/s = multiply-adds per second over all threads (1 MAC = 2 FLOP / OP).
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "threadpool/thread_pool.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kChains = 12;
constexpr int64_t kIters = 1 << 16;

// Each kernel: kIters iterations of kChains independent instructions; returns a value depending on
// every chain (so nothing is optimized away) and the multiply-adds done.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) int64_t vnni_zmm(int64_t* macs) {
  __m512i a[kChains];
  __m512i x = _mm512_set1_epi8(3);
  const __m512i y = _mm512_set1_epi8(-2);
  for (int c = 0; c < kChains; ++c) a[c] = _mm512_set1_epi32(c);
  for (int64_t i = 0; i < kIters; ++i) {
    __asm__ volatile("" : "+v"(x));  // an opaque input: nothing is hoisted or folded
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) a[c] = _mm512_dpbusd_epi32(a[c], x, y);
  }
  *macs = kIters * kChains * 64;
  int64_t s = 0;
  for (int c = 0; c < kChains; ++c) s += _mm512_reduce_add_epi32(a[c]);
  return s;
}

__attribute__((target("avx512f,avx512vl,avx512vnni"))) int64_t vnni_ymm(int64_t* macs) {
  __m256i a[kChains];
  __m256i x = _mm256_set1_epi8(3);
  const __m256i y = _mm256_set1_epi8(-2);
  for (int c = 0; c < kChains; ++c) a[c] = _mm256_set1_epi32(c);
  for (int64_t i = 0; i < kIters; ++i) {
    __asm__ volatile("" : "+v"(x));
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) a[c] = _mm256_dpbusd_epi32(a[c], x, y);
  }
  *macs = kIters * kChains * 32;
  alignas(32) int32_t v[8];
  int64_t s = 0;
  for (int c = 0; c < kChains; ++c) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(v), a[c]);
    for (int k = 0; k < 8; ++k) s += v[k];
  }
  return s;
}

__attribute__((target("avx2"))) int64_t maddubs_add16(int64_t* macs) {
  __m256i a[kChains];
  __m256i x = _mm256_set1_epi8(3);
  const __m256i y = _mm256_set1_epi8(-2);
  for (int c = 0; c < kChains; ++c) a[c] = _mm256_set1_epi16(static_cast<int16_t>(c));
  for (int64_t i = 0; i < kIters; ++i) {
    __asm__ volatile("" : "+x"(x));  // maddubs(x, y) must be recomputed every iteration
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) a[c] = _mm256_add_epi16(a[c], _mm256_maddubs_epi16(x, y));
  }
  *macs = kIters * kChains * 32;
  alignas(32) int16_t v[16];
  int64_t s = 0;
  for (int c = 0; c < kChains; ++c) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(v), a[c]);
    for (int k = 0; k < 16; ++k) s += v[k];
  }
  return s;
}

__attribute__((target("avx512f"))) int64_t fma_zmm(int64_t* macs) {
  __m512 a[kChains];
  __m512 x = _mm512_set1_ps(0.999f);
  const __m512 y = _mm512_set1_ps(1e-7f);
  for (int c = 0; c < kChains; ++c) a[c] = _mm512_set1_ps(static_cast<float>(c));
  for (int64_t i = 0; i < kIters; ++i) {
    __asm__ volatile("" : "+v"(x));
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) a[c] = _mm512_fmadd_ps(a[c], x, y);
  }
  *macs = kIters * kChains * 16;
  float s = 0;
  for (int c = 0; c < kChains; ++c) s += _mm512_reduce_add_ps(a[c]);
  return static_cast<int64_t>(s);
}

__attribute__((target("avx2,fma"))) int64_t fma_ymm(int64_t* macs) {
  __m256 a[kChains];
  __m256 x = _mm256_set1_ps(0.999f);
  const __m256 y = _mm256_set1_ps(1e-7f);
  for (int c = 0; c < kChains; ++c) a[c] = _mm256_set1_ps(static_cast<float>(c));
  for (int64_t i = 0; i < kIters; ++i) {
    __asm__ volatile("" : "+x"(x));
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) a[c] = _mm256_fmadd_ps(a[c], x, y);
  }
  *macs = kIters * kChains * 8;
  alignas(32) float v[8];
  float s = 0;
  for (int c = 0; c < kChains; ++c) {
    _mm256_store_ps(v, a[c]);
    for (int k = 0; k < 8; ++k) s += v[k];
  }
  return static_cast<int64_t>(s);
}

struct Test {
  const char* name;
  const char* isa;
  bool available;
  int64_t (*fn)(int64_t*);
};

// Multiply-adds per second with every thread of `pool` running fn back to back for min_time
// seconds; best of 3.
double rate(llmserve::ThreadPool& pool, int64_t (*fn)(int64_t*), double min_time) {
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<int64_t> macs(64, 0), sink(64, 0);
    const auto t0 = Clock::now();
    pool.parallel_for_chunked(
        pool.size(),
        [&](int64_t b, int64_t e, int slot) {
          for (int64_t c = b; c < e; ++c) {
            const auto start = Clock::now();
            do {
              int64_t m = 0;
              sink[static_cast<size_t>(slot)] += fn(&m);
              macs[static_cast<size_t>(slot)] += m;
            } while (std::chrono::duration<double>(Clock::now() - start).count() < min_time);
          }
        },
        1);
    const double t = std::chrono::duration<double>(Clock::now() - t0).count();
    int64_t total = 0, s = 0;
    for (size_t i = 0; i < macs.size(); ++i) total += macs[i], s += sink[i];
    if (s == 42) std::printf(" ");
    best = std::max(best, static_cast<double>(total) / t);
  }
  return best;
}

std::vector<int> parse_list(const char* s) {
  std::vector<int> v;
  std::string str(s);
  size_t p = 0;
  while (p <= str.size()) {
    const size_t q = str.find(',', p);
    const std::string item = str.substr(p, q == std::string::npos ? std::string::npos : q - p);
    if (!item.empty()) v.push_back(std::atoi(item.c_str()));
    if (q == std::string::npos) break;
    p = q + 1;
  }
  return v;
}

}  // namespace

int run_peak_bench(int argc, char** argv) {
  std::vector<int> threads = {1, 2};
  double min_time = 0.3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--peak") continue;
    if (a == "--threads" && i + 1 < argc) {
      threads = parse_list(argv[++i]);
    } else if (a == "--min-time" && i + 1 < argc) {
      min_time = std::atof(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s --peak [--threads 1,2] [--min-time S]\n", argv[0]);
      return a == "--help" ? 0 : 2;
    }
  }
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  const bool vnni512 = avx512 && __builtin_cpu_supports("avx512vnni");
  const bool vnni256 = vnni512 && __builtin_cpu_supports("avx512vl");
  const Test tests[] = {
      {"int8 vpdpbusd zmm", "AVX-512 VNNI", vnni512, vnni_zmm},
      {"int8 vpdpbusd ymm", "AVX-512 VL VNNI", vnni256, vnni_ymm},
      {"int8 maddubs+add16", "AVX2", avx2, maddubs_add16},
      {"f32 fma zmm", "AVX-512 F", avx512, fma_zmm},
      {"f32 fma ymm", "AVX2 + FMA", avx2, fma_ymm},
  };
  std::printf("Compute peaks (register-only loops, %d independent chains; GMAC/s over all threads)\n\n", kChains);
  std::printf("| instruction mix | needs | threads | GMAC/s |\n|---|---|---:|---:|\n");
  for (const Test& t : tests) {
    if (!t.available) {
      std::printf("| %s | %s | - | not on this CPU |\n", t.name, t.isa);
      continue;
    }
    for (int th : threads) {
      llmserve::ThreadPool pool(th);
      std::printf("| %s | %s | %d | %.1f |\n", t.name, t.isa, th, rate(pool, t.fn, min_time) / 1e9);
    }
  }
  return 0;
}
