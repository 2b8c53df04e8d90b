#include "pooling.h"

#include <cmath>

namespace llmserve {

int64_t pooling_first_row(Pooling p, int64_t n) { return p == Pooling::Last ? n - 1 : 0; }

Status pool_hidden(Pooling p, const float* rows, int64_t n_rows, int64_t n_embd, bool normalize,
                   std::vector<float>* out) {
  if (!rows || n_rows < 1 || n_embd < 1 || (p == Pooling::Last && n_rows != 1))
    return make_error(Code::InvalidArgument, "pooling: bad hidden-state rows");
  std::vector<double> acc(static_cast<size_t>(n_embd), 0.0);
  // CLS: the first row only (the executor returns every row for it: evaluate's rows start at 0).
  const int64_t used = p == Pooling::Mean ? n_rows : 1;
  for (int64_t r = 0; r < used; ++r)
    for (int64_t i = 0; i < n_embd; ++i) acc[i] += rows[r * n_embd + i];
  double scale = 1.0 / static_cast<double>(used);
  if (normalize) {
    double ss = 0;
    for (double v : acc) ss += v * v;
    // llama.cpp leaves an all-zero vector as it is rather than dividing by zero.
    scale = ss > 0 ? 1.0 / std::sqrt(ss) : 0.0;
  }
  out->resize(static_cast<size_t>(n_embd));
  for (int64_t i = 0; i < n_embd; ++i) (*out)[i] = static_cast<float>(acc[i] * scale);
  return Status::ok();
}

}  // namespace llmserve
