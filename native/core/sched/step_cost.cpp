#include "step_cost.h"

#include <algorithm>
#include <cmath>

namespace llmserve {

void StepCostModel::observe(int64_t tokens, int64_t rows, double ms) {
  if (tokens < 1 || !(ms >= 0) || !std::isfinite(ms)) return;
  const double x[3] = {1.0, (double)tokens, (double)rows};
  for (auto& row : s_)
    for (double& v : row) v *= decay_;
  for (double& v : r_) v *= decay_;
  w_ *= decay_;
  p1_ *= decay_;
  p2_ *= decay_;
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) s_[i][j] += x[i] * x[j];
    r_[i] += x[i] * ms;
  }
  w_ += 1;
  const double p = (double)(tokens - rows);
  p1_ += p;
  p2_ += p * p;
  refit();
}

bool StepCostModel::ready() const {
  if (w_ < 4) return false;
  const double mean = p1_ / w_;
  return p2_ / w_ - mean * mean >= 16.0;  // prompt tokens spread by at least ~4 between steps
}

// Ridge-regularised normal equations (a tiny ridge keeps decode-only stretches, where tokens and
// rows move together, solvable), Gaussian elimination with partial pivoting; b and c clamped to
// >= 0 (a cost cannot fall as work grows).
void StepCostModel::refit() {
  double m[3][4];
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) m[i][j] = s_[i][j] + (i == j && i > 0 ? 1e-6 * w_ : 0.0);
    m[i][3] = r_[i];
  }
  for (int col = 0; col < 3; ++col) {
    int piv = col;
    for (int i = col + 1; i < 3; ++i)
      if (std::fabs(m[i][col]) > std::fabs(m[piv][col])) piv = i;
    if (std::fabs(m[piv][col]) < 1e-12) return;  // keep the previous fit
    for (int j = 0; j < 4; ++j) std::swap(m[col][j], m[piv][j]);
    for (int i = 0; i < 3; ++i) {
      if (i == col) continue;
      const double f = m[i][col] / m[col][col];
      for (int j = col; j < 4; ++j) m[i][j] -= f * m[col][j];
    }
  }
  for (int i = 0; i < 3; ++i) coef_[i] = m[i][3] / m[i][i];
  coef_[1] = std::max(coef_[1], 0.0);
  coef_[2] = std::max(coef_[2], 0.0);
}

double StepCostModel::predict(int64_t tokens, int64_t rows) const {
  return coef_[0] + coef_[1] * (double)tokens + coef_[2] * (double)rows;
}

int64_t StepCostModel::prefill_budget(double target_ms, int64_t n_decode, int64_t min_chunk, int64_t max_chunk) const {
  const double left = target_ms - predict(n_decode, n_decode + 1);
  double n = coef_[1] > 1e-9 ? std::floor(left / coef_[1]) : (double)max_chunk;
  n = std::clamp(n, (double)min_chunk, (double)std::max(min_chunk, max_chunk));
  return (int64_t)n;
}

}  // namespace llmserve
