#include "adaptive_rank.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>

namespace llmserve {

namespace {

uint64_t splitmix64(uint64_t* s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// count vectors of len values each (v [count, len]) made orthonormal in order by modified
// Gram–Schmidt in f64; vectors past the len-th cannot be orthogonal to the earlier ones, so they
// are only normalised.
void orthonormalize(std::vector<double>* v, int64_t count, int64_t len) {
  for (int64_t k = 0; k < count; ++k) {
    double* x = v->data() + k * len;
    for (int64_t prev = 0; k < len && prev < k; ++prev) {
      const double* y = v->data() + prev * len;
      double d = 0;
      for (int64_t j = 0; j < len; ++j) d += x[j] * y[j];
      for (int64_t j = 0; j < len; ++j) x[j] -= d * y[j];
    }
    double n = 0;
    for (int64_t j = 0; j < len; ++j) n += x[j] * x[j];
    n = std::sqrt(n);
    for (int64_t j = 0; j < len; ++j) x[j] = n > 0 ? x[j] / n : 0;
  }
}

bool kept(const RankMask& mask, size_t i, int64_t k) {
  return mask.keep.empty() || mask.keep[i].empty() || mask.keep[i][static_cast<size_t>(k)] != 0;
}

template <typename T>
void zero_all(LoraSet<T>* s) {
  for (auto& m : s->mats) std::fill(m.a.begin(), m.a.end(), T(0)), std::fill(m.b.begin(), m.b.end(), T(0));
}

}  // namespace

int64_t RankMask::rank(size_t i) const {
  int64_t r = 0;
  for (uint8_t k : keep[i]) r += k != 0;
  return r;
}

int64_t RankMask::total() const {
  int64_t t = 0;
  for (size_t i = 0; i < keep.size(); ++i) t += rank(i);
  return t;
}

void ada_init(const LoraSet<float>& plain, uint64_t seed, AdaParams<float>* out) {
  const size_t M = plain.mats.size();
  const int64_t r = plain.rank;
  out->rank = r;
  out->scale = plain.scale;
  out->mats.assign(2 * M, LoraMatrix<float>{});
  uint64_t s = seed;
  auto uniforms = [&](int64_t count) {
    std::vector<double> v(static_cast<size_t>(count));
    for (double& x : v) x = 2.0 * static_cast<double>(splitmix64(&s) >> 11) * 0x1.0p-53 - 1.0;  // [-1, 1)
    return v;
  };
  for (size_t i = 0; i < M; ++i) {
    const LoraMatrix<float>& m = plain.mats[i];
    LoraMatrix<float>&pq = out->mats[i], &lam = out->mats[M + i];
    pq.n_in = m.n_in, pq.n_out = m.n_out;
    lam.n_in = r, lam.n_out = 0;
    if (!m.on()) continue;
    std::vector<double> q = uniforms(r * m.n_in), p = uniforms(r * m.n_out);  // p: P's columns, [r, n_out]
    orthonormalize(&q, r, m.n_in);
    orthonormalize(&p, r, m.n_out);
    pq.a.assign(q.begin(), q.end());
    pq.b.assign(static_cast<size_t>(m.n_out * r), 0.0f);
    for (int64_t k = 0; k < r; ++k)
      for (int64_t j = 0; j < m.n_out; ++j)
        pq.b[static_cast<size_t>(j * r + k)] = static_cast<float>(p[static_cast<size_t>(k * m.n_out + j)]);
    lam.a.assign(static_cast<size_t>(r), 0.0f);
  }
}

template <typename T>
void ada_materialize(const AdaParams<T>& params, const RankMask& mask, LoraSet<T>* plain) {
  const size_t M = plain->mats.size();
  const int64_t r = params.rank;
  for (size_t i = 0; i < M; ++i) {
    LoraMatrix<T>& pm = plain->mats[i];
    if (!pm.on()) continue;
    const std::vector<T>&q = params.mats[i].a, &lam = params.mats[M + i].a;
    for (int64_t k = 0; k < r; ++k) {
      const T l = kept(mask, i, k) ? lam[static_cast<size_t>(k)] : T(0);
      for (int64_t j = 0; j < pm.n_in; ++j)
        pm.a[static_cast<size_t>(k * pm.n_in + j)] = l * q[static_cast<size_t>(k * pm.n_in + j)];
    }
    pm.b = params.mats[i].b;
  }
}

template <typename T>
void ada_chain_grad(const AdaParams<T>& params, const RankMask& mask, const LoraSet<T>& plain_grad,
                    AdaParams<T>* grad) {
  const size_t M = plain_grad.mats.size();
  const int64_t r = params.rank;
  for (size_t i = 0; i < M; ++i) {
    const LoraMatrix<T>& g = plain_grad.mats[i];
    if (!g.on()) continue;
    const std::vector<T>&q = params.mats[i].a, &lam = params.mats[M + i].a;
    std::vector<T>&dq = grad->mats[i].a, &dp = grad->mats[i].b, &dlam = grad->mats[M + i].a;
    for (int64_t k = 0; k < r; ++k) {
      if (!kept(mask, i, k)) continue;  // A's row k is 0 whatever λ_k and Q's row: no gradient
      const T l = lam[static_cast<size_t>(k)];
      double s = 0;
      for (int64_t j = 0; j < g.n_in; ++j) {
        const size_t e = static_cast<size_t>(k * g.n_in + j);
        dq[e] += l * g.a[e];
        s += static_cast<double>(g.a[e]) * static_cast<double>(q[e]);
      }
      dlam[static_cast<size_t>(k)] += static_cast<T>(s);
    }
    for (size_t e = 0; e < g.b.size(); ++e) dp[e] += g.b[e];
  }
}

template <typename T>
double orth_penalty(const AdaParams<T>& params, double weight, AdaParams<T>* grad) {
  const size_t M = params.mats.size() / 2;
  const int64_t r = params.rank;
  int64_t on = 0;
  for (size_t i = 0; i < M; ++i) on += params.mats[i].on();
  if (on == 0) return 0;
  const double w = weight / static_cast<double>(on);
  double total = 0;
  std::vector<double> D(static_cast<size_t>(r * r));
  for (size_t i = 0; i < M; ++i) {
    const LoraMatrix<T>& m = params.mats[i];
    if (!m.on()) continue;
    // P [n_out, r]: D = PᵀP − I [r, r]; d‖D‖²/dP = 4·P·D (D symmetric).
    for (int64_t a = 0; a < r; ++a)
      for (int64_t b = 0; b < r; ++b) {
        double s = 0;
        for (int64_t j = 0; j < m.n_out; ++j)
          s += static_cast<double>(m.b[static_cast<size_t>(j * r + a)]) * m.b[static_cast<size_t>(j * r + b)];
        D[static_cast<size_t>(a * r + b)] = s - (a == b ? 1.0 : 0.0);
      }
    for (double d : D) total += d * d;
    if (grad)
      for (int64_t j = 0; j < m.n_out; ++j)
        for (int64_t a = 0; a < r; ++a) {
          double s = 0;
          for (int64_t b = 0; b < r; ++b)
            s += static_cast<double>(m.b[static_cast<size_t>(j * r + b)]) * D[static_cast<size_t>(b * r + a)];
          grad->mats[i].b[static_cast<size_t>(j * r + a)] += static_cast<T>(4 * w * s);
        }
    // Q [r, n_in]: E = QQᵀ − I [r, r]; d‖E‖²/dQ = 4·E·Q.
    for (int64_t a = 0; a < r; ++a)
      for (int64_t b = 0; b < r; ++b) {
        double s = 0;
        for (int64_t j = 0; j < m.n_in; ++j)
          s += static_cast<double>(m.a[static_cast<size_t>(a * m.n_in + j)]) * m.a[static_cast<size_t>(b * m.n_in + j)];
        D[static_cast<size_t>(a * r + b)] = s - (a == b ? 1.0 : 0.0);
      }
    for (double d : D) total += d * d;
    if (grad)
      for (int64_t a = 0; a < r; ++a)
        for (int64_t j = 0; j < m.n_in; ++j) {
          double s = 0;
          for (int64_t b = 0; b < r; ++b)
            s += D[static_cast<size_t>(a * r + b)] * static_cast<double>(m.a[static_cast<size_t>(b * m.n_in + j)]);
          grad->mats[i].a[static_cast<size_t>(a * m.n_in + j)] += static_cast<T>(4 * w * s);
        }
  }
  return w * total;
}

int64_t rank_budget(int64_t done, int64_t total, int64_t t_init, int64_t t_final, int64_t b0, int64_t b_target) {
  if (done >= total - t_final) return b_target;  // first: the last step always has the target budget
  if (done <= t_init) return b0;
  const double span = static_cast<double>(total - t_final - t_init);
  const double c = 1.0 - static_cast<double>(done - t_init) / span;
  const double b = static_cast<double>(b_target) + static_cast<double>(b0 - b_target) * c * c * c;
  return std::clamp(static_cast<int64_t>(std::floor(b)), b_target, b0);
}

int64_t prune_to_budget(const std::vector<std::vector<double>>& score, int64_t budget, RankMask* mask) {
  const int64_t excess = mask->total() - budget;
  if (excess <= 0) return 0;
  std::vector<std::tuple<double, size_t, size_t>> cand;
  for (size_t i = 0; i < mask->keep.size(); ++i)
    for (size_t k = 0; k < mask->keep[i].size(); ++k)
      if (mask->keep[i][k]) cand.emplace_back(score[i][k], i, k);
  std::sort(cand.begin(), cand.end());
  for (int64_t e = 0; e < excess; ++e) {
    const auto& c = cand[static_cast<size_t>(e)];
    mask->keep[std::get<1>(c)][std::get<2>(c)] = 0;
  }
  return excess;
}

Status AdaptiveRank::create(const LoraSet<float>& plain, const AdaOptions& o, const OptimOptions& optim, uint64_t seed,
                            AdaptiveRank* out) {
  if (o.target_rank < 1 || o.target_rank > plain.rank)
    return make_error(Code::InvalidArgument,
                      "adaptive rank: the target rank must be in [1, rank = " + std::to_string(plain.rank) + "], got " +
                          std::to_string(o.target_rank));
  if (!(o.orth_weight >= 0 && std::isfinite(o.orth_weight)) || !(o.beta1 >= 0 && o.beta1 < 1) ||
      !(o.beta2 >= 0 && o.beta2 < 1) || o.t_init < 0 || o.t_final < 0)
    return make_error(Code::InvalidArgument,
                      "adaptive rank: the penalty weight must be finite and >= 0, the betas in [0, 1), the initial "
                      "and final step counts >= 0");
  AdaptiveRank a;
  a.o_ = o;
  ada_init(plain, seed, &a.params_);
  a.grad_ = a.params_;
  zero_all(&a.grad_);
  a.ipt_ = a.grad_, a.unc_ = a.grad_;
  a.mask_.keep.assign(plain.mats.size(), {});
  int64_t on = 0;
  for (size_t i = 0; i < plain.mats.size(); ++i)
    if (plain.mats[i].on()) a.mask_.keep[i].assign(static_cast<size_t>(plain.rank), 1), ++on;
  a.b0_ = plain.rank * on, a.bt_ = o.target_rank * on;
  LLMS_RETURN_IF_ERROR(Optimizer::create(optim, a.params_, &a.optim_));
  *out = std::move(a);
  return Status::ok();
}

std::vector<std::vector<double>> AdaptiveRank::scores() const {
  const size_t M = mask_.keep.size();
  const int64_t r = params_.rank;
  std::vector<std::vector<double>> s(M);
  auto el = [&](const std::vector<float>& ipt, const std::vector<float>& unc, size_t e) {
    return static_cast<double>(ipt[e]) * unc[e];
  };
  for (size_t i = 0; i < M; ++i) {
    if (mask_.keep[i].empty()) continue;
    const LoraMatrix<float>&I = ipt_.mats[i], &U = unc_.mats[i];
    s[i].assign(static_cast<size_t>(r), 0.0);
    for (int64_t k = 0; k < r; ++k) {
      double sq = 0, sp = 0;
      for (int64_t j = 0; j < I.n_in; ++j) sq += el(I.a, U.a, static_cast<size_t>(k * I.n_in + j));
      for (int64_t j = 0; j < I.n_out; ++j) sp += el(I.b, U.b, static_cast<size_t>(j * r + k));
      s[i][static_cast<size_t>(k)] = el(ipt_.mats[M + i].a, unc_.mats[M + i].a, static_cast<size_t>(k)) +
                                     sq / static_cast<double>(I.n_in) + sp / static_cast<double>(I.n_out);
    }
  }
  return s;
}

double AdaptiveRank::step(const LoraSet<float>& plain_grad, int64_t step, int64_t total, double lr, double clip,
                          double* penalty) {
  const size_t M = mask_.keep.size();
  zero_all(&grad_);
  ada_chain_grad(params_, mask_, plain_grad, &grad_);
  // Sensitivity of the loss alone (AdaLoRA's I = |w·∂L/∂w|), smoothed: Ī = β1·Ī + (1 − β1)·I,
  // Ū = β2·Ū + (1 − β2)·|I − Ī| (with the new Ī).
  for (size_t t = 0; t < params_.mats.size(); ++t)
    for (int ab = 0; ab < 2; ++ab) {
      const std::vector<float>& w = ab ? params_.mats[t].b : params_.mats[t].a;
      const std::vector<float>& g = ab ? grad_.mats[t].b : grad_.mats[t].a;
      std::vector<float>& I = ab ? ipt_.mats[t].b : ipt_.mats[t].a;
      std::vector<float>& U = ab ? unc_.mats[t].b : unc_.mats[t].a;
      for (size_t e = 0; e < w.size(); ++e) {
        const double sens = std::fabs(static_cast<double>(w[e]) * g[e]);
        I[e] = static_cast<float>(o_.beta1 * I[e] + (1 - o_.beta1) * sens);
        U[e] = static_cast<float>(o_.beta2 * U[e] + (1 - o_.beta2) * std::fabs(sens - I[e]));
      }
    }
  *penalty = orth_penalty(params_, o_.orth_weight, &grad_);
  for (size_t i = 0; i < M; ++i)
    for (size_t k = 0; k < mask_.keep[i].size(); ++k)
      if (!mask_.keep[i][k]) grad_.mats[M + i].a[k] = 0.0f;  // masked λ stay 0 and out of the norm
  const double norm = clip_grad_norm(&grad_, clip);
  optim_.step(&params_, grad_, lr);
  const int64_t budget = rank_budget(step + 1, total, o_.t_init, o_.t_final, b0_, bt_);
  if (mask_.total() > budget) prune_to_budget(scores(), budget, &mask_);
  for (size_t i = 0; i < M; ++i)
    for (size_t k = 0; k < mask_.keep[i].size(); ++k)
      if (!mask_.keep[i][k]) params_.mats[M + i].a[k] = 0.0f;
  return norm;
}

#define LLMSERVE_ADA(T)                                                                                    \
  template void ada_materialize<T>(const AdaParams<T>&, const RankMask&, LoraSet<T>*);                     \
  template void ada_chain_grad<T>(const AdaParams<T>&, const RankMask&, const LoraSet<T>&, AdaParams<T>*); \
  template double orth_penalty<T>(const AdaParams<T>&, double, AdaParams<T>*);

LLMSERVE_ADA(float)
LLMSERVE_ADA(double)

}  // namespace llmserve
