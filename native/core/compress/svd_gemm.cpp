// svd_gemm.h: the blocked driver and the scalar reference.
#include "svd_gemm.h"

#include <algorithm>
#include <vector>

#include "../isa/isa.h"

namespace llmserve {

namespace {
// Columns per block: the [l, kCols] output tile (l ~ 270 rows: ~140 KiB) stays in L2 while every
// row of b streams past it once.
constexpr int64_t kCols = 64;

void axpy_rows_scalar(const double* s, int64_t rows, const double* brow, int64_t cols, double* o, int64_t ldo) {
  for (int64_t i = 0; i < rows; ++i) {
    const double si = s[i];
    double* oi = o + i * ldo;
    for (int64_t c = 0; c < cols; ++c) oi[c] += si * brow[c];
  }
}
}  // namespace

void svd_nn_ref(const double* q, int64_t l, int64_t k, const double* b, int64_t n, double* out) {
  for (int64_t i = 0; i < l; ++i)
    for (int64_t c = 0; c < n; ++c) {
      double s = 0;
      for (int64_t j = 0; j < k; ++j) s += q[i * k + j] * b[j * n + c];
      out[i * n + c] = s;
    }
}

void svd_nn_qt(const double* qt, int64_t l, int64_t k, const double* b, int64_t n, double* out) {
  std::fill(out, out + l * n, 0.0);
  svd_nn_qt_acc(qt, l, k, b, n, out);
}

void svd_nn_qt_acc(const double* qt, int64_t l, int64_t k, const double* b, int64_t n, double* out) {
  if (l <= 0 || k <= 0 || n <= 0) return;
  auto axpy_rows = axpy_rows_scalar;
#if defined(LLMSERVE_X86)
  if (active_isa() >= Isa::Avx2) axpy_rows = svd_axpy_rows_avx2;
#endif
  for (int64_t c0 = 0; c0 < n; c0 += kCols) {
    const int64_t cn = std::min(kCols, n - c0);
    for (int64_t j = 0; j < k; ++j) axpy_rows(qt + j * l, l, b + j * n + c0, cn, out + c0, n);
  }
}

void svd_nn(const double* q, int64_t l, int64_t k, const double* b, int64_t n, double* out) {
  // qt [k, l]: the coefficients of one row of b for every output row, contiguous.
  std::vector<double> qt(static_cast<size_t>(std::max<int64_t>(0, k * l)));
  for (int64_t i = 0; i < l; ++i)
    for (int64_t j = 0; j < k; ++j) qt[j * l + i] = q[i * k + j];
  svd_nn_qt(qt.data(), l, k, b, n, out);
}

}  // namespace llmserve
