#include "optim.h"

#include <cmath>
#include <numbers>
#include <string>

namespace llmserve {

namespace {

double norm2(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

bool ok_num(double v) { return std::isfinite(v) && v >= 0; }

uint64_t splitmix64(uint64_t* s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void zero_like(const LoraSet<float>& p, LoraSet<float>* out) {
  *out = p;
  for (auto& m : out->mats) m.a.assign(m.a.size(), 0.0f), m.b.assign(m.b.size(), 0.0f);
}

}  // namespace

Status Optimizer::create(const OptimOptions& o, const LoraSet<float>& params, Optimizer* out) {
  if (!ok_num(o.weight_decay) || !ok_num(o.eps) || !ok_num(o.momentum) || !ok_num(o.lars_eta) || o.beta1 < 0 ||
      o.beta1 >= 1 || o.beta2 < 0 || o.beta2 >= 1 || o.momentum >= 1) {
    return make_error(Code::InvalidArgument,
                      "optimizer: weight decay, eps, eta must be finite and >= 0; betas and momentum in [0, 1)");
  }
  out->o_ = o;
  out->t_ = 0;
  zero_like(params, &out->m_);
  if (o.kind == OptimKind::AdamW) zero_like(params, &out->v_);
  return Status::ok();
}

void Optimizer::step(LoraSet<float>* params, const LoraSet<float>& grad, double lr, std::vector<double>* trust) {
  ++t_;
  if (trust) trust->assign(2 * params->mats.size(), 0.0);
  const double wd = o_.weight_decay;
  const double bc1 = 1.0 - std::pow(o_.beta1, static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(o_.beta2, static_cast<double>(t_));
  for (size_t i = 0; i < params->mats.size(); ++i) {
    for (int ab = 0; ab < 2; ++ab) {
      std::vector<float>& w = ab ? params->mats[i].b : params->mats[i].a;
      const std::vector<float>& g = ab ? grad.mats[i].b : grad.mats[i].a;
      std::vector<float>& m = ab ? m_.mats[i].b : m_.mats[i].a;
      if (w.empty()) continue;
      if (o_.kind == OptimKind::AdamW) {
        std::vector<float>& v = ab ? v_.mats[i].b : v_.mats[i].a;
        for (size_t j = 0; j < w.size(); ++j) {
          m[j] = static_cast<float>(o_.beta1 * m[j] + (1 - o_.beta1) * g[j]);
          v[j] = static_cast<float>(o_.beta2 * v[j] + (1 - o_.beta2) * static_cast<double>(g[j]) * g[j]);
          const double upd = (m[j] / bc1) / (std::sqrt(v[j] / bc2) + o_.eps) + wd * w[j];
          w[j] = static_cast<float>(w[j] - lr * upd);
        }
        continue;
      }
      const double wn = norm2(w), gn = norm2(g);
      const double tr = wn > 0 && gn > 0 ? o_.lars_eta * wn / (gn + wd * wn) : 1.0;
      if (trust) (*trust)[2 * i + static_cast<size_t>(ab)] = tr;
      for (size_t j = 0; j < w.size(); ++j) {
        m[j] = static_cast<float>(o_.momentum * m[j] + lr * tr * (g[j] + wd * w[j]));
        w[j] -= m[j];
      }
    }
  }
}

double lr_at(int64_t step, int64_t total, int64_t warmup, double lr, double min_lr) {
  if (step < warmup) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (total <= warmup) return lr;
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(total - warmup));
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
}

double clip_grad_norm(LoraSet<float>* grad, double max_norm) {
  double s = 0;
  for (const auto& m : grad->mats) {
    for (float x : m.a) s += static_cast<double>(x) * x;
    for (float x : m.b) s += static_cast<double>(x) * x;
  }
  const double norm = std::sqrt(s);
  if (max_norm > 0 && norm > max_norm) {
    const float k = static_cast<float>(max_norm / norm);
    for (auto& m : grad->mats) {
      for (float& x : m.a) x *= k;
      for (float& x : m.b) x *= k;
    }
  }
  return norm;
}

void lora_init(LoraSet<float>* lora, uint64_t seed) {
  uint64_t s = seed;
  for (auto& m : lora->mats) {
    if (m.a.empty()) continue;
    const double bound = 1.0 / std::sqrt(static_cast<double>(m.n_in));
    for (float& x : m.a) {
      const double u = static_cast<double>(splitmix64(&s) >> 11) * 0x1.0p-53;  // [0, 1)
      x = static_cast<float>((2 * u - 1) * bound);
    }
    m.b.assign(m.b.size(), 0.0f);
  }
}

}  // namespace llmserve
