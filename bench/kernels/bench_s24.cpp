// The 2:4 sparse kernels (native/core/model/sparse24*.cpp) against the dense product of the same
// value type, through matmul() as a forward pass runs them: f16 values against the dense f16
// matrix, q8_0 values against the dense q8_0 matrix (packed at load, as the executor does). Each
// configuration is validated first (token n-1 alone bit-identical to its row of the batch), then
// timed on rotating copies of the weights (>= 256 MiB in all, so they come from DRAM).
//
//   llmserve_bench_kernels --s24 [--quick] [--types f16,q8_0] [--tokens 1,64]
//                                [--shapes 5632x2048,...] [--threads 2] [--min-time 0.3]
//
// Per (shape, type, tokens): median ms of the dense product and of the 2:4 one, and dense / 2:4
// (1 token: the decode GEMV; more: the prefill GEMM).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "isa/isa.h"
#include "model/matmul.h"
#include "model/sparse24.h"
#include "quant/quant.h"
#include "threadpool/thread_pool.h"

using namespace llmserve;

namespace {

// One 2:4 matrix: dense rows of type vt holding its values (zeros elsewhere), and the 2:4 encoding.
struct Matrix {
  std::vector<uint8_t> dense, vals, idx;
};

Matrix make_matrix(GgmlType vt, int64_t n_out, int64_t n_in, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 0.05f);
  Matrix m;
  const size_t rs = row_size(vt, n_in), vb = sparse24_values_row_bytes(vt, n_in);
  const int64_t ib = sparse24_index_bytes_per_row(n_in);
  m.dense.resize(rs * static_cast<size_t>(n_out));
  m.vals.resize(vb * static_cast<size_t>(n_out));
  m.idx.resize(static_cast<size_t>(ib * n_out));
  std::vector<float> w(static_cast<size_t>(n_in)), scratch(static_cast<size_t>(n_in / 2));
  for (int64_t r = 0; r < n_out; ++r) {
    std::fill(w.begin(), w.end(), 0.0f);
    for (int64_t c = 0; c < n_in; c += 4) {
      const int a = static_cast<int>(rng() % 4), b = (a + 1 + static_cast<int>(rng() % 3)) % 4;
      w[static_cast<size_t>(c + a)] = g(rng), w[static_cast<size_t>(c + b)] = g(rng);
    }
    sparse24_encode_row(vt, w.data(), n_in, m.vals.data() + static_cast<size_t>(r) * vb, m.idx.data() + r * ib,
                        scratch.data());
    sparse24_decode_row(vt, m.vals.data() + static_cast<size_t>(r) * vb, m.idx.data() + r * ib, n_in, w.data());
    quantize_row_weights(vt, w.data(), m.dense.data() + static_cast<size_t>(r) * rs, n_in);
  }
  return m;
}

}  // namespace

int run_s24_bench(int argc, char** argv) {
  std::vector<GgmlType> types = {GgmlType::F16, GgmlType::Q8_0};
  std::vector<int64_t> tokens = {1, 64};
  std::vector<std::pair<int64_t, int64_t>> shapes = {{2048, 2048}, {5632, 2048}, {2048, 5632}};
  int threads = 2;
  double min_time = 0.3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--s24") continue;
    if (a == "--quick") {
      shapes = {{5632, 2048}};
      min_time = 0.15;
    } else if (a == "--types") {
      types.clear();
      for (auto& s : bench::split_list(next())) {
        if (s != "f16" && s != "q8_0") {
          std::fprintf(stderr, "Expected value types f16 or q8_0 but received %s\n", s.c_str());
          return 2;
        }
        types.push_back(s == "f16" ? GgmlType::F16 : GgmlType::Q8_0);
      }
    } else if (a == "--tokens") {
      tokens.clear();
      for (auto& s : bench::split_list(next())) tokens.push_back(std::atoll(s.c_str()));
    } else if (a == "--shapes") {
      shapes.clear();
      for (auto& s : bench::split_list(next())) {
        int64_t n_out = 0, n_in = 0;
        if (!bench::parse_shape(s, &n_out, &n_in) || n_in % 64 != 0) {
          std::fprintf(stderr, "Expected shapes like 5632x2048 (n_out x n_in, n_in a multiple of 64) but received %s\n",
                       s.c_str());
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
                   "usage: %s --s24 [--quick] [--types f16,q8_0] [--tokens 1,64] [--shapes NxK,...] [--threads 2] "
                   "[--min-time S]\n",
                   argv[0]);
      return a == "--help" ? 0 : 2;
    }
  }
  std::printf("cpu     : %s\n", bench::cpu_name().c_str());
  std::printf("kernels : %s\n", isa_name(active_isa()));
  std::printf(
      "threads : %d   (dense = matmul() on the matrix with its zeros, packed as at load; 2:4 = values + "
      "2-bit positions)\n",
      threads);
  std::printf("%-11s %5s %6s | %10s %10s | %8s\n", "n_out x n_in", "type", "tokens", "dense ms", "2:4 ms", "x dense");
  ThreadPool pool(threads);
  int failures = 0;
  for (const auto& shape : shapes) {
    const int64_t n_out = shape.first, n_in = shape.second;
    for (GgmlType vt : types) {
      const Matrix m = make_matrix(vt, n_out, n_in, static_cast<uint32_t>(n_out + n_in));
      const int copies = static_cast<int>(std::max<size_t>(2, (size_t(256) << 20) / m.vals.size() + 1));
      std::vector<Matrix> cp(static_cast<size_t>(copies), m);
      std::vector<MatrixView> dense(static_cast<size_t>(copies)), s24(static_cast<size_t>(copies));
      std::vector<std::vector<uint8_t>> packed(static_cast<size_t>(copies));
      for (int k = 0; k < copies; ++k) {
        MatrixView& d = dense[static_cast<size_t>(k)];
        d.data = cp[static_cast<size_t>(k)].dense.data(), d.type = vt, d.n_in = n_in, d.n_out = n_out;
        d.row_bytes = row_size(vt, n_in);
        if (packed_bytes(d) > 0) {
          packed[static_cast<size_t>(k)].resize(packed_bytes(d));
          pack_matrix(&d, packed[static_cast<size_t>(k)].data());
          cp[static_cast<size_t>(k)].dense.clear();
          cp[static_cast<size_t>(k)].dense.shrink_to_fit();
        }
        MatrixView& s = s24[static_cast<size_t>(k)];
        s.data = cp[static_cast<size_t>(k)].vals.data(), s.type = vt, s.n_in = n_in, s.n_out = n_out;
        s.row_bytes = sparse24_values_row_bytes(vt, n_in), s.s24_idx = cp[static_cast<size_t>(k)].idx.data();
      }
      for (int64_t n : tokens) {
        std::mt19937 rng(7);
        std::uniform_real_distribution<float> u(-1.0f, 1.0f);
        std::vector<float> x(static_cast<size_t>(n * n_in)), y(static_cast<size_t>(n * n_out)),
            y1(static_cast<size_t>(n_out));
        for (float& v : x) v = u(rng);
        MatmulTask all{&s24[0], nullptr, y.data(), n_out}, one{&s24[0], nullptr, y1.data(), n_out};
        matmul(&all, 1, x.data(), n, pool);
        matmul(&one, 1, x.data() + (n - 1) * n_in, 1, pool);
        if (std::memcmp(y1.data(), y.data() + (n - 1) * n_out, static_cast<size_t>(n_out) * 4) != 0) ++failures;
        const auto timed = [&](std::vector<MatrixView>& views) {
          return bench::median_ms(
              [&](int k) {
                MatmulTask t{&views[static_cast<size_t>(k)], nullptr, y.data(), n_out};
                matmul(&t, 1, x.data(), n, pool);
              },
              copies, min_time);
        };
        const double dense_ms = timed(dense), s24_ms = timed(s24);
        std::printf("%5lldx%-5lld %5s %6lld | %10.3f %10.3f | %7.2fx\n", static_cast<long long>(n_out),
                    static_cast<long long>(n_in), type_traits(vt).name, static_cast<long long>(n), dense_ms, s24_ms,
                    dense_ms / s24_ms);
        std::fflush(stdout);
      }
    }
  }
  if (failures) std::printf("VALIDATION FAILED: %d checks\n", failures);
  return failures ? 1 : 0;
}
