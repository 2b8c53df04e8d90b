// Internal to the q8_0 2:4 kernels (sparse24_q8_*.cpp): the loop every one of them runs over a row
// tile and the tokens. Tokens outer, rows inner (as the f16 kernels): 4 tokens' activations stay
// in L1 while the tile's rows pass over them. row(std::integral_constant<int, T>, v, idx, t, bias, r)
// computes row r against tokens [t, t + T) (v / idx: the row's values and positions).
#pragma once
#include <cstdint>
#include <type_traits>

#include "sparse24.h"

namespace llmserve {
namespace {

template <class Row>
void sparse24_q8_drive(const Sparse24Matrix& w, int64_t n, int64_t r0, int64_t r1, const float* bias, Row&& row) {
  const int64_t ib = sparse24_index_bytes_per_row(w.n_in);
  const size_t vb = sparse24_values_row_bytes(GgmlType::Q8_0, w.n_in);
  for (int64_t t = 0; t < n;) {
    const int64_t tn = n - t >= 4 ? 4 : 1;
    for (int64_t r = r0; r < r1; ++r) {
      const float* b = bias ? bias + r : nullptr;
      const uint8_t* v = w.vals + static_cast<size_t>(r) * vb;
      if (tn == 4) row(std::integral_constant<int, 4>{}, v, w.idx + r * ib, t, b, r);
      else row(std::integral_constant<int, 1>{}, v, w.idx + r * ib, t, b, r);
    }
    t += tn;
  }
}

}  // namespace
}  // namespace llmserve
