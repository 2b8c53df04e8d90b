#include "distill.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace llmserve {

namespace {

// log Σ exp(x_i / temp) for a row of V values, in double.
template <typename X>
double lse_scaled(const X* x, int64_t V, double inv_temp) {
  double mx = -INFINITY, sum = 0;
  for (int64_t i = 0; i < V; ++i) mx = std::max(mx, static_cast<double>(x[i]) * inv_temp);
  for (int64_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(x[i]) * inv_temp - mx);
  return mx + std::log(sum);
}

}  // namespace

template <typename T>
double distill_loss(const T* logits, const int32_t* labels, int64_t n, int64_t V, double weight, T* dlogits,
                    DistillTerm* d, ThreadPool& pool) {
  const double a = d->alpha, temp = d->temperature, inv = 1.0 / temp;
  std::vector<double> ce(static_cast<size_t>(n), 0.0), kl(static_cast<size_t>(n), 0.0);
  pool.parallel_for(n, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const T* z = logits + t * V;
      const float* s = d->teacher + t * V;
      T* dz = dlogits ? dlogits + t * V : nullptr;
      if (labels[t] < 0) {
        if (dz) std::fill(dz, dz + V, T(0));
        continue;
      }
      const double lse = lse_scaled(z, V, 1.0);    // the plain softmax of the CE term
      const double lse_q = lse_scaled(z, V, inv);  // student at temperature T
      const double lse_p = lse_scaled(s, V, inv);  // teacher at temperature T
      ce[static_cast<size_t>(t)] = lse - static_cast<double>(z[labels[t]]);
      double k = 0;
      for (int64_t i = 0; i < V; ++i) {
        const double log_p = static_cast<double>(s[i]) * inv - lse_p;
        const double log_q = static_cast<double>(z[i]) * inv - lse_q;
        const double p = std::exp(log_p);
        k += p * (log_p - log_q);  // p = 0 (underflow) adds 0, as the limit p·log p does
        if (dz)
          dz[i] = static_cast<T>(
              weight * ((1 - a) * std::exp(static_cast<double>(z[i]) - lse) + a * temp * (std::exp(log_q) - p)));
      }
      kl[static_cast<size_t>(t)] = k;
      if (dz) dz[labels[t]] -= static_cast<T>(weight * (1 - a));
    }
  });
  double ce_sum = 0, kl_sum = 0;
  for (size_t t = 0; t < ce.size(); ++t) ce_sum += ce[t], kl_sum += kl[t];  // fixed order
  d->ce_sum = ce_sum, d->kl_sum = kl_sum;
  return (1 - a) * ce_sum + a * temp * temp * kl_sum;
}

template double distill_loss<float>(const float*, const int32_t*, int64_t, int64_t, double, float*, DistillTerm*,
                                    ThreadPool&);
template double distill_loss<double>(const double*, const int32_t*, int64_t, int64_t, double, double*, DistillTerm*,
                                     ThreadPool&);

}  // namespace llmserve
