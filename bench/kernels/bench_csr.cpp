// CSR kernels (native/core/model/csr.cpp) against the dense f16 matmul of the same matrix, llm.c
// style: each configuration is validated first (the CSR product against a double evaluation within
// 1e-5 * sum|w x|, and one token alone bit-identical to its row of the batch), then timed.
//
//   llmserve_bench_kernels --csr [--quick] [--densities 0.5,0.1,0.05] [--tokens 1,64]
//                                [--shapes 5632x2048,...] [--threads 2] [--min-time 0.3]
//
// Per (shape, density, tokens): median ms of the dense f16 product (matmul(), what an unstructured
// pruned matrix costs in a dense file: zeros multiplied) and of the CSR product (f16 values, i32
// columns), and dense / CSR. 1 token is the decode GEMV, more the prefill GEMM. Each timed call
// reads another copy of the weights (copies totalling >= 256 MiB), so they come from DRAM as in a
// forward pass. The break-even density of these numbers is csr.h's kCsrMaxDensity.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "isa/isa.h"
#include "model/csr.h"
#include "model/matmul.h"
#include "quant/quant.h"
#include "threadpool/thread_pool.h"

using namespace llmserve;

namespace {

using bench::cpu_name;
using bench::median_ms;
using bench::split_list;

// One pruned matrix: dense f16 rows with zeros, and the same as CSR.
struct Pruned {
  std::vector<uint16_t> dense;  // [n_out, n_in]
  std::vector<int32_t> ptr, col;
  std::vector<uint16_t> val;
};

Pruned make_pruned(int64_t n_out, int64_t n_in, double density, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 0.05f);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  Pruned p;
  p.dense.assign(static_cast<size_t>(n_out * n_in), 0);
  p.ptr.push_back(0);
  for (int64_t i = 0; i < n_out; ++i) {
    for (int64_t j = 0; j < n_in; ++j) {
      if (u(rng) >= density) continue;
      const uint16_t h = fp32_to_fp16(g(rng));
      p.dense[static_cast<size_t>(i * n_in + j)] = h;
      p.col.push_back(static_cast<int32_t>(j));
      p.val.push_back(h);
    }
    p.ptr.push_back(static_cast<int32_t>(p.col.size()));
  }
  return p;
}

}  // namespace

int run_csr_bench(int argc, char** argv) {
  std::vector<double> densities = {0.5, 0.1, 0.05};
  std::vector<int64_t> tokens = {1, 64};
  std::vector<std::pair<int64_t, int64_t>> shapes = {{2048, 2048}, {5632, 2048}, {2048, 5632}};
  int threads = 2;
  double min_time = 0.3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--csr") continue;
    if (a == "--quick") {
      shapes = {{5632, 2048}};
      min_time = 0.15;
    } else if (a == "--densities") {
      densities.clear();
      for (auto& s : split_list(next())) densities.push_back(std::atof(s.c_str()));
    } else if (a == "--tokens") {
      tokens.clear();
      for (auto& s : split_list(next())) tokens.push_back(std::atoll(s.c_str()));
    } else if (a == "--shapes") {
      shapes.clear();
      for (auto& s : split_list(next())) {
        int64_t n_out = 0, n_in = 0;
        if (!bench::parse_shape(s, &n_out, &n_in)) {
          std::fprintf(stderr, "Expected shapes like 5632x2048 (n_out x n_in) but received %s\n", s.c_str());
          return 2;
        }
        shapes.push_back({n_out, n_in});
      }
    } else if (a == "--threads") {
      threads = std::atoi(next().c_str());
    } else if (a == "--min-time") {
      min_time = std::atof(next().c_str());
    } else {
      std::fprintf(stderr,
                   "usage: %s --csr [--quick] [--densities 0.5,0.1,0.05] [--tokens 1,64] [--shapes NxK,...] "
                   "[--threads 2] [--min-time S]\n",
                   argv[0]);
      return a == "--help" ? 0 : 2;
    }
  }
  for (double d : densities)
    if (!(d > 0 && d <= 1)) {
      std::fprintf(stderr, "Expected densities in (0, 1] but received %g\n", d);
      return 2;
    }
  std::printf("cpu     : %s\n", cpu_name().c_str());
  std::printf("kernels : %s (CSR: %s)\n", isa_name(active_isa()),
              active_isa() == Isa::Avx512 ? "AVX-512 GEMV, 8/16/32-token tiles"
              : active_isa() == Isa::Avx2 ? "AVX2 GEMV, 8-token tiles"
                                          : "scalar reference");
  std::printf("threads : %d   (dense = matmul() on f16 rows with the zeros; CSR = f16 values + i32 columns)\n",
              threads);
  std::printf("%-11s %7s %6s | %10s %10s | %8s\n", "n_out x n_in", "density", "tokens", "dense ms", "CSR ms",
              "x dense");
  ThreadPool pool(threads);
  int failures = 0;
  for (const auto& shape : shapes) {
    const int64_t n_out = shape.first, n_in = shape.second;  // not a structured binding: lambdas capture them
    for (double density : densities) {
      const Pruned p = make_pruned(n_out, n_in, density, static_cast<uint32_t>(n_out + n_in));
      const size_t dense_bytes = p.dense.size() * 2;
      const int copies = static_cast<int>(std::max<size_t>(2, (size_t(256) << 20) / dense_bytes + 1));
      std::vector<std::vector<uint16_t>> dense_copies(static_cast<size_t>(copies), p.dense);
      std::vector<Pruned> csr_copies(static_cast<size_t>(copies));
      for (auto& c : csr_copies) c.ptr = p.ptr, c.col = p.col, c.val = p.val;
      const auto view_csr = [&](int k) {
        CsrMatrix m;
        const Pruned& c = csr_copies[static_cast<size_t>(k)];
        m.ptr = c.ptr.data(), m.col = c.col.data(), m.val = c.val.data(), m.n_in = n_in, m.n_out = n_out;
        return m;
      };
      for (int64_t n : tokens) {
        std::mt19937 rng(7);
        std::uniform_real_distribution<float> u(-1.0f, 1.0f);
        std::vector<float> x(static_cast<size_t>(n * n_in)), y(static_cast<size_t>(n * n_out)),
            y1(static_cast<size_t>(n_out));
        for (float& v : x) v = u(rng);
        // Validate: the CSR product against doubles on sampled rows, and token n-1 alone.
        csr_matmul(view_csr(0), x.data(), n, nullptr, false, y.data(), n_out, pool);
        for (int64_t i = 0; i < n_out; i += 97) {
          for (int64_t t = 0; t < n; t += std::max<int64_t>(1, n / 3)) {
            double want = 0, mag = 0;
            for (int32_t e = p.ptr[i]; e < p.ptr[i + 1]; ++e) {
              const double w = fp16_to_fp32(p.val[e]) * double(x[t * n_in + p.col[e]]);
              want += w, mag += std::fabs(w);
            }
            if (std::fabs(y[t * n_out + i] - want) > 1e-5 * mag + 1e-7) ++failures;
          }
        }
        csr_matmul(view_csr(0), x.data() + (n - 1) * n_in, 1, nullptr, false, y1.data(), n_out, pool);
        if (std::memcmp(y1.data(), y.data() + (n - 1) * n_out, static_cast<size_t>(n_out) * 4) != 0) ++failures;
        const double dense_ms = median_ms(
            [&](int k) {
              MatrixView w;
              w.data = reinterpret_cast<const uint8_t*>(dense_copies[static_cast<size_t>(k)].data());
              w.type = GgmlType::F16, w.n_in = n_in, w.n_out = n_out, w.row_bytes = static_cast<size_t>(n_in) * 2;
              MatmulTask t{&w, nullptr, y.data(), n_out};
              matmul(&t, 1, x.data(), n, pool);
            },
            copies, min_time);
        const double csr_ms =
            median_ms([&](int k) { csr_matmul(view_csr(k), x.data(), n, nullptr, false, y.data(), n_out, pool); },
                      copies, min_time);
        std::printf("%5lldx%-5lld %6.0f%% %6lld | %10.3f %10.3f | %7.2fx\n", static_cast<long long>(n_out),
                    static_cast<long long>(n_in), 100 * density, static_cast<long long>(n), dense_ms, csr_ms,
                    dense_ms / csr_ms);
        std::fflush(stdout);
      }
    }
  }
  if (failures) std::printf("VALIDATION FAILED: %d checks\n", failures);
  return failures ? 1 : 0;
}
