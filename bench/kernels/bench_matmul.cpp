// Kernel microbenchmark for matmul() (native/core/model/matmul.cpp + quant/gemm*.cpp), llm.c style:
// every configuration is first validated (outputs vs vec_dot_ref within 1e-5 * sum|w x|, and bit
// identical to the 1-token result), then timed.
//
//   llmserve_bench_kernels [--quick] [--types q4_0,q8_0,...] [--tokens 1,8,64,512]
//                          [--shapes 2048x2048,...] [--threads 1,2] [--min-time 0.3]
//
// Shapes are n_out x n_in (TinyLlama-1.1B: wq/wo 2048x2048, gate/up 5632x2048, down 2048x5632,
// output 32000x2048). Per (type, shape, tokens, threads) it prints, for weights packed on the fly
// ("raw") and packed at load ("packed"): median ms per call, GFLOP/s (2 * n_out * n_in * tokens / time),
// effective GB/s (weight bytes / time; weights are read once per call) and, for one token, that
// as a fraction of this machine's read bandwidth (measured first, over a buffer 16x the LLC), plus
// the speed-up over the pre-GEMM path (one vec_dot per (token, row), timed on the same machine
// over a sample of rows). Prints the CPU model and the kernel ISA chosen.
// With --csr it runs bench_csr.cpp instead (CSR kernels against the dense f16 product), with --s24
// bench_s24.cpp (2:4 kernels against the dense product of their value type), with --peak
// bench_peak.cpp (the machine's int8 dot-product and f32 FMA peaks), with --attn bench_attn.cpp (one
// attention_group call), with --lowrank bench_lowrank.cpp (one projection's batched LoRA update).
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench_util.h"
#include "model/matmul.h"
#include "os/os.h"
#include "quant/gemm.h"
#include "quant/quant.h"
#include "threadpool/thread_pool.h"

using namespace llmserve;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto p = line.find(':');
      if (p != std::string::npos) return line.substr(p + 2);
    }
  }
  return "unknown CPU";
}

std::vector<std::string> split(const std::string& s, char c) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, c))
    if (!item.empty()) out.push_back(item);
  return out;
}

// Any weight type gemm runs, by its lowercase ggml name (q4_0, q5_k, iq4_xs, ...).
bool parse_type(const std::string& s, GgmlType* t) {
  for (uint32_t id = 0; id < kGgmlTypeCount; ++id) {
    const GgmlType c = static_cast<GgmlType>(id);
    if (!gemm_supported(c)) continue;
    std::string name = type_traits(c).name;
    std::string lower = s;
    for (auto& ch : lower) ch = static_cast<char>(std::tolower(ch));
    for (auto& ch : name) ch = static_cast<char>(std::tolower(ch));
    if (name == lower) {
      *t = c;
      return true;
    }
  }
  return false;
}

// Random weights: quantized blocks with random bytes and sane scales (f16 scale fields set to
// small values), float weights gaussian. Fast to build for the 32000-row shapes.
std::vector<uint8_t> random_weights(GgmlType t, int64_t n_in, int64_t n_out, uint32_t seed) {
  const size_t rb = row_size(t, n_in);
  std::vector<uint8_t> w(rb * static_cast<size_t>(n_out));
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i + 8 <= w.size(); i += 8) {
    const uint64_t v = rng();
    std::memcpy(&w[i], &v, 8);
  }
  std::normal_distribution<float> g(0.0f, 0.05f);
  auto put16 = [&](uint8_t* p, uint16_t h) { std::memcpy(p, &h, 2); };
  const int64_t nb = n_in / type_traits(t).block_size;
  const size_t ts = type_traits(t).type_size;
  for (int64_t r = 0; r < n_out; ++r) {
    uint8_t* row = w.data() + r * rb;
    switch (t) {
      case GgmlType::Q4_0:
      case GgmlType::Q8_0:
      case GgmlType::Q5_0:
      case GgmlType::IQ4_NL:
        for (int64_t b = 0; b < nb; ++b) put16(row + b * ts, fp32_to_fp16(0.002f + std::fabs(g(rng)) * 0.05f));
        break;
      case GgmlType::Q4_1:
      case GgmlType::Q5_1:
        for (int64_t b = 0; b < nb; ++b) {
          put16(row + b * ts, fp32_to_fp16(0.002f + std::fabs(g(rng)) * 0.05f));
          put16(row + b * ts + 2, fp32_to_fp16(-0.01f - std::fabs(g(rng))));
        }
        break;
      case GgmlType::Q5_K:
      case GgmlType::Q2_K:
        for (int64_t b = 0; b < nb; ++b) {
          const size_t o = t == GgmlType::Q2_K ? 80 : 0;
          put16(row + b * ts + o, fp32_to_fp16(0.0005f));
          put16(row + b * ts + o + 2, fp32_to_fp16(0.0003f));
        }
        break;
      case GgmlType::Q3_K:
        for (int64_t b = 0; b < nb; ++b) put16(row + b * ts + 108, fp32_to_fp16(0.0005f));
        break;
      case GgmlType::IQ4_XS:
        for (int64_t b = 0; b < nb; ++b) put16(row + b * ts, fp32_to_fp16(0.0005f));
        break;
      case GgmlType::Q4_K:
        for (int64_t b = 0; b < nb; ++b) {
          put16(row + b * ts, fp32_to_fp16(0.0005f));
          put16(row + b * ts + 2, fp32_to_fp16(0.0003f));
        }
        break;
      case GgmlType::Q6_K:
        for (int64_t b = 0; b < nb; ++b) put16(row + b * ts + 208, fp32_to_fp16(0.0005f));
        break;
      case GgmlType::F16:
        for (int64_t i = 0; i < n_in; ++i) put16(row + 2 * i, fp32_to_fp16(g(rng)));
        break;
      case GgmlType::BF16:
        for (int64_t i = 0; i < n_in; ++i) put16(row + 2 * i, fp32_to_bf16(g(rng)));
        break;
      case GgmlType::F32:
        for (int64_t i = 0; i < n_in; ++i) {
          const float v = g(rng);
          std::memcpy(row + 4 * i, &v, 4);
        }
        break;
      default: break;
    }
  }
  return w;
}

struct Options {
  std::vector<GgmlType> types = {GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K,
                                 GgmlType::Q6_K, GgmlType::F16,  GgmlType::BF16};
  std::vector<std::pair<int64_t, int64_t>> shapes = {{2048, 2048}, {5632, 2048}, {2048, 5632}, {32000, 2048}};
  std::vector<int64_t> tokens = {1, 8, 64, 512};
  std::vector<int> threads = {1, 2};
  double min_time = 0.3;
  bool baseline = true;
};

// Times fn: one warm-up, then repeats until min_time has passed (at least 5 runs); the median
// per call (robust to the odd preempted or lucky run on a shared machine).
template <typename Fn>
double time_median(Fn fn, double min_time) {
  fn();
  std::vector<double> ts;
  double total = 0;
  while (ts.size() < 5 || total < min_time) {
    auto t0 = Clock::now();
    fn();
    const double t = seconds_since(t0);
    ts.push_back(t);
    total += t;
    if (ts.size() >= 2000) break;
  }
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

}  // namespace

// bench_csr.cpp: the CSR kernels against the dense f16 product (--csr).
int run_csr_bench(int argc, char** argv);

// bench_peak.cpp: this machine's int8 dot-product and f32 FMA peaks (--peak).
int run_peak_bench(int argc, char** argv);

// bench_s24.cpp: the 2:4 sparse kernels against the dense product of the same value type (--s24).
int run_s24_bench(int argc, char** argv);

// bench_attn.cpp: one attention_group call, the dispatched kernel (--attn).
int run_attn_bench(int argc, char** argv);

// bench_lowrank.cpp: the batched LoRA update of one projection against the read bandwidth (--lowrank).
int run_lowrank_bench(int argc, char** argv);

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--csr") return run_csr_bench(argc, argv);
    if (std::string(argv[i]) == "--peak") return run_peak_bench(argc, argv);
    if (std::string(argv[i]) == "--s24") return run_s24_bench(argc, argv);
    if (std::string(argv[i]) == "--attn") return run_attn_bench(argc, argv);
    if (std::string(argv[i]) == "--lowrank") return run_lowrank_bench(argc, argv);
  }
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--quick") {
      o.tokens = {1, 64};
      o.shapes = {{2048, 2048}, {5632, 2048}};
      o.min_time = 0.15;
    } else if (a == "--types") {
      o.types.clear();
      for (auto& s : split(next(), ',')) {
        GgmlType t;
        if (!parse_type(s, &t)) {
          std::fprintf(stderr,
                       "Expected a type among f32,f16,bf16,q8_0,q4_0,q4_1,q5_0,q5_1,iq4_nl,q2_k,q3_k,q4_k,q5_k,q6_k,"
                       "iq4_xs but received %s\n",
                       s.c_str());
          return 2;
        }
        o.types.push_back(t);
      }
    } else if (a == "--tokens") {
      o.tokens.clear();
      for (auto& s : split(next(), ',')) o.tokens.push_back(std::atoll(s.c_str()));
    } else if (a == "--threads") {
      o.threads.clear();
      for (auto& s : split(next(), ',')) o.threads.push_back(std::atoi(s.c_str()));
    } else if (a == "--shapes") {
      o.shapes.clear();
      for (auto& s : split(next(), ',')) {
        auto p = s.find('x');
        if (p == std::string::npos) {
          std::fprintf(stderr, "Expected shapes like 2048x5632 (n_out x n_in) but received %s\n", s.c_str());
          return 2;
        }
        o.shapes.push_back({std::atoll(s.substr(0, p).c_str()), std::atoll(s.substr(p + 1).c_str())});
      }
    } else if (a == "--min-time") {
      o.min_time = std::atof(next().c_str());
    } else if (a == "--no-baseline") {
      o.baseline = false;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--quick] [--types q4_0,...] [--tokens 1,8,64,512] [--shapes NxK,...] "
                   "[--threads 1,2] [--min-time S] [--no-baseline]\n",
                   argv[0]);
      return a == "--help" ? 0 : 2;
    }
  }

  std::printf("cpu     : %s, %u logical CPUs\n", cpu_model().c_str(), std::thread::hardware_concurrency());
  std::printf("kernels : %s%s\n", kernel_isa(),
              std::getenv("LLMSERVE_FORCE_SCALAR") ? " (LLMSERVE_FORCE_SCALAR set)" : "");
  double bw[9] = {0};
  for (int th : o.threads) {
    ThreadPool pool(th);
    bw[std::min(th, 8)] = bench::read_bandwidth_gbs(pool);
    std::printf("memory  : read bandwidth %.1f GB/s with %d thread%s (sum over 1 GiB)\n", bw[std::min(th, 8)], th,
                th == 1 ? "" : "s");
  }
  std::printf(
      "\n| type | n_out x n_in | tokens | thr | raw ms | raw GFLOP/s | packed ms | packed GFLOP/s | "
      "packed GB/s | %%BW (1 tok) | x vec_dot |\n");
  std::printf(
      "|------|--------------|--------|-----|--------|-------------|-----------|----------------|"
      "-------------|-------------|-----------|\n");

  int failures = 0;
  for (GgmlType t : o.types) {
    for (const auto& shape : o.shapes) {
      // Plain locals, not a structured binding: the lambdas below capture them (clang < 16 can't).
      const int64_t n_out = shape.first, n_in = shape.second;
      if (n_in % type_traits(t).block_size != 0) continue;
      // Enough copies of the matrix that one pass over them (256 MiB) is far larger than the LLC,
      // so every timed call reads its weights from memory as a forward pass does.
      const size_t one = row_size(t, n_in) * static_cast<size_t>(n_out);
      const int n_copies = static_cast<int>(std::max<size_t>(1, (size_t(256) << 20) / one + 1));
      std::vector<std::vector<uint8_t>> wcopies;
      std::vector<MatrixView> views;
      for (int c = 0; c < n_copies; ++c) {
        wcopies.push_back(c == 0 ? random_weights(t, n_in, n_out, 1234) : wcopies[0]);
        MatrixView v;
        v.data = wcopies.back().data();
        v.type = t;
        v.n_in = n_in;
        v.n_out = n_out;
        v.row_bytes = row_size(t, n_in);
        views.push_back(v);
      }
      const MatrixView& w = views[0];
      const double weight_bytes = static_cast<double>(one);
      const int64_t max_n = *std::max_element(o.tokens.begin(), o.tokens.end());
      std::vector<float> x(static_cast<size_t>(max_n * n_in));
      {
        std::mt19937 rng(99);
        std::normal_distribution<float> g(0.0f, 1.0f);
        for (auto& v : x) v = g(rng);
      }
      // Validation: tokens and rows sampled, n = max_n with 2 threads, vs vec_dot_ref and vs n = 1.
      {
        ThreadPool pool(2);
        std::vector<float> y(static_cast<size_t>(max_n * n_out)), y1(static_cast<size_t>(n_out));
        MatmulTask task{&w, nullptr, y.data(), n_out};
        matmul(&task, 1, x.data(), max_n, pool);
        const GgmlType vt = type_traits(t).vec_dot_type;
        std::vector<uint8_t> xq(row_size(vt, n_in));
        std::vector<float> wf(static_cast<size_t>(n_in)), xf(static_cast<size_t>(n_in));
        int bad = 0;
        for (int64_t tok : {int64_t(0), max_n / 2, max_n - 1}) {
          MatmulTask t1{&w, nullptr, y1.data(), n_out};
          matmul(&t1, 1, x.data() + tok * n_in, 1, pool);
          quantize_row_ref(vt, x.data() + tok * n_in, xq.data(), n_in);
          dequantize_row_ref(vt, xq.data(), xf.data(), n_in);
          for (int64_t r = 0; r < n_out; r += std::max<int64_t>(1, n_out / 61)) {
            const float ref = vec_dot_ref(t, n_in, w.row(r), xq.data());
            dequantize_row_ref(t, w.row(r), wf.data(), n_in);
            double mag = 0;
            for (int64_t i = 0; i < n_in; ++i) mag += std::fabs(static_cast<double>(wf[i]) * xf[i]);
            const float got = y[tok * n_out + r];
            if (!(std::fabs(double(got) - ref) <= 1e-5 * mag + 1e-6)) ++bad;
            if (std::memcmp(&got, &y1[r], 4) != 0) ++bad;
          }
        }
        if (bad) {
          std::printf("VALIDATION FAILED: %s %lldx%lld: %d sampled outputs wrong\n", type_traits(t).name,
                      (long long)n_out, (long long)n_in, bad);
          ++failures;
          continue;
        }
      }
      for (int th : o.threads) {
        ThreadPool pool(th);
        for (int64_t n : o.tokens) {
          std::vector<float> y(static_cast<size_t>(n * n_out));
          int next_copy = 0;
          auto run = [&] {
            MatmulTask task{&views[static_cast<size_t>(next_copy)], nullptr, y.data(), n_out};
            next_copy = (next_copy + 1) % n_copies;
            matmul(&task, 1, x.data(), n, pool);
          };
          const double t_raw = time_median(run, o.min_time);
          double t_packed = -1;
          // This host's bandwidth moves within minutes (50 <-> 85 GB/s seen on one VM): a 1-token
          // row is judged against a probe taken just before it, not the one at the start.
          double bw_row = bw[std::min(th, 8)];
          if (n == 1) {
            const double b = bench::read_bandwidth_gbs(pool);
            if (b > 0) bw_row = b;
          }
          {
            std::vector<uint8_t*> arenas;
            for (MatrixView& v : views) {
              uint8_t* a = os::alloc_huge(packed_bytes(v));
              if (a && pack_matrix(&v, a)) arenas.push_back(a);
              else os::aligned_free(a);
            }
            if (views[0].packed) t_packed = time_median(run, o.min_time);
            for (MatrixView& v : views) v.packed = nullptr;
            for (uint8_t* a : arenas) os::aligned_free(a);
          }
          // Baseline: the pre-GEMM matmul (one vec_dot per token and row) over a sample of rows.
          double speedup = -1;
          if (o.baseline) {
            const GgmlType vt = type_traits(t).vec_dot_type;
            const size_t xs = row_size(vt, n_in);
            std::vector<uint8_t> xq(xs * static_cast<size_t>(n));
            const int64_t rows = std::min<int64_t>(n_out, std::max<int64_t>(64, (1 << 22) / (n_in * n)));
            int64_t row0 = 0;
            const double t_base =
                time_median(
                    [&] {
                      pool.parallel_for(n, [&](int64_t b, int64_t e) {
                        for (int64_t i = b; i < e; ++i) quantize_row(vt, x.data() + i * n_in, xq.data() + i * xs, n_in);
                      });
                      // Rows [row0, row0 + rows) of the next copy: the sample walks over all the weights.
                      pool.parallel_for((rows + 15) / 16, [&](int64_t b, int64_t e) {
                        for (int64_t tile = b; tile < e; ++tile)
                          for (int64_t r = row0 + tile * 16; r < row0 + std::min(rows, tile * 16 + 16); ++r)
                            for (int64_t i = 0; i < n; ++i)
                              y[i * n_out + r] =
                                  vec_dot(t, n_in, views[static_cast<size_t>(next_copy)].row(r), xq.data() + i * xs);
                      });
                      next_copy = (next_copy + 1) % n_copies;
                      row0 = row0 + 2 * rows <= n_out ? row0 + rows : 0;
                    },
                    o.min_time / 2) *
                static_cast<double>(n_out) / static_cast<double>(rows);
            speedup = t_base / (t_packed > 0 ? std::min(t_raw, t_packed) : t_raw);
          }
          const double flop = 2.0 * static_cast<double>(n_out) * n_in * n;
          const double tp = t_packed > 0 ? t_packed : t_raw;
          char pct[32] = "";
          if (n == 1 && bw_row > 0)
            std::snprintf(pct, sizeof pct, "%.0f%% of %.0f", 100 * weight_bytes / tp / 1e9 / bw_row, bw_row);
          char packed_ms[32] = "-", packed_gf[32] = "-";
          if (t_packed > 0) {
            std::snprintf(packed_ms, sizeof packed_ms, "%.3f", t_packed * 1e3);
            std::snprintf(packed_gf, sizeof packed_gf, "%.1f", flop / t_packed / 1e9);
          }
          char sp[32] = "-";
          if (speedup > 0) std::snprintf(sp, sizeof sp, "%.1fx", speedup);
          std::printf("| %s | %lldx%lld | %lld | %d | %.3f | %.1f | %s | %s | %.1f | %s | %s |\n", type_traits(t).name,
                      (long long)n_out, (long long)n_in, (long long)n, th, t_raw * 1e3, flop / t_raw / 1e9, packed_ms,
                      packed_gf, weight_bytes / tp / 1e9, pct, sp);
          std::fflush(stdout);
        }
      }
    }
  }
  if (failures) std::printf("\n%d configuration(s) failed validation\n", failures);
  return failures ? 1 : 0;
}
