// compress/svd_gemm.h: the SVD's blocked f64 products equal the scalar reference loop bit for bit
// (dispatched: AVX2 where available, scalar under LLMSERVE_KERNELS=scalar; and the AVX2 tile
// kernel directly), on odd shapes across column-block boundaries, with values of mixed magnitude
// (where a reordered or fused sum would show).
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "compress/svd_gemm.h"
#include "isa/isa.h"
#include "testing.h"

using namespace llmserve;

namespace {
std::vector<double> values(int64_t n, uint64_t seed) {
  std::vector<double> v(static_cast<size_t>(n));
  for (auto& x : v) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    const double u = static_cast<double>(seed >> 11) / 9007199254740992.0 - 0.5;
    x = u * ((seed >> 7) % 3 == 0 ? 1e6 : 1.0);  // mixed magnitudes: rounding shows any reordering
  }
  return v;
}
}  // namespace

TEST(svd_gemm_blocked_products_match_reference_bits) {
  int cases = 0;
  for (int64_t l : {1, 3, 4, 7, 9}) {
    for (int64_t k : {1, 5, 13}) {
      for (int64_t n : {1, 3, 8, 63, 64, 65, 130}) {
        const auto q = values(l * k, 11 + l * 7 + k), b = values(k * n, 5 + n);
        std::vector<double> ref(static_cast<size_t>(l * n)), got(ref.size(), -1.0), got_t(ref.size(), -1.0);
        svd_nn_ref(q.data(), l, k, b.data(), n, ref.data());
        svd_nn(q.data(), l, k, b.data(), n, got.data());
        std::vector<double> qt(static_cast<size_t>(k * l));
        for (int64_t i = 0; i < l; ++i)
          for (int64_t j = 0; j < k; ++j) qt[j * l + i] = q[i * k + j];
        svd_nn_qt(qt.data(), l, k, b.data(), n, got_t.data());
        const bool ok = std::memcmp(ref.data(), got.data(), ref.size() * 8) == 0 &&
                        std::memcmp(ref.data(), got_t.data(), ref.size() * 8) == 0;
        if (!ok)
          std::fprintf(stderr, "  l=%lld k=%lld n=%lld: bits differ\n", (long long)l, (long long)k, (long long)n);
        CHECK(ok);
#if defined(LLMSERVE_X86)
        if (cpu_supports(Isa::Avx2)) {  // the AVX2 tile kernel itself, whatever the dispatch chose
          std::vector<double> o(ref.size(), 0.0);
          for (int64_t j = 0; j < k; ++j) svd_axpy_rows_avx2(qt.data() + j * l, l, b.data() + j * n, n, o.data(), n);
          CHECK(std::memcmp(ref.data(), o.data(), ref.size() * 8) == 0);
        }
#endif
        // Accumulating into existing values with negated coefficients: x - s_0·b_0 - s_1·b_1 ...
        std::vector<double> start = values(l * n, 77), acc = start, want = start, neg(qt.size());
        for (size_t i = 0; i < qt.size(); ++i) neg[i] = -qt[i];
        svd_nn_qt_acc(neg.data(), l, k, b.data(), n, acc.data());
        for (int64_t i = 0; i < l; ++i)
          for (int64_t j = 0; j < k; ++j)
            for (int64_t c = 0; c < n; ++c) want[i * n + c] -= q[i * k + j] * b[j * n + c];
        CHECK(std::memcmp(want.data(), acc.data(), want.size() * 8) == 0);
        ++cases;
      }
    }
  }
  CHECK(cases == 5 * 3 * 7);
}
