// Optimizer steps of LoRA training against hand computations (AdamW, LARS trust ratio with
// momentum and weight decay), the warm-up + cosine schedule, gradient clipping and the seeded init.
#include <cmath>
#include <cstring>
#include <vector>

#include "testing.h"
#include "train/optim.h"

using namespace llmserve;

namespace {

// One "projection" with A = a, B = b (shapes do not matter to the optimizers).
LoraSet<float> one(std::vector<float> a, std::vector<float> b) {
  LoraSet<float> s;
  s.rank = 1;
  s.mats.resize(1);
  s.mats[0].n_in = static_cast<int64_t>(a.size());
  s.mats[0].n_out = static_cast<int64_t>(b.size());
  s.mats[0].a = std::move(a);
  s.mats[0].b = std::move(b);
  return s;
}

}  // namespace

TEST(train_optim_lars_matches_hand_computation) {
  LoraSet<float> w = one({3, 4}, {0, 0});
  const LoraSet<float> g = one({0.6f, 0.8f}, {1, -2});
  OptimOptions o;
  o.kind = OptimKind::Lars, o.lars_eta = 0.01, o.weight_decay = 0.1, o.momentum = 0.9;
  Optimizer opt;
  CHECK(Optimizer::create(o, w, &opt).is_ok());
  std::vector<double> trust;
  opt.step(&w, g, 0.5, &trust);
  // A: ‖w‖ = 5, ‖g‖ = 1: trust = 0.01·5 / (1 + 0.1·5) = 1/30; u = 0.5·(1/30)·(g + 0.1·w) = (0.015, 0.02)
  CHECK_NEAR(trust[0], 1.0 / 30, 1e-8);  // ‖g‖ of f32 (0.6, 0.8) is 1 within 1e-8
  CHECK_NEAR(w.mats[0].a[0], 2.985, 1e-6);
  CHECK_NEAR(w.mats[0].a[1], 3.98, 1e-6);
  // B: ‖w‖ = 0, so trust = 1: u = 0.5·g
  CHECK_NEAR(trust[1], 1.0, 0);
  CHECK_NEAR(w.mats[0].b[0], -0.5, 1e-7);
  CHECK_NEAR(w.mats[0].b[1], 1.0, 1e-7);
  // Second step, same gradient: the momentum carries 0.9 of the first update.
  const double wn = std::sqrt(2.985 * 2.985 + 3.98 * 3.98), tr2 = 0.01 * wn / (1 + 0.1 * wn);
  const double u0 = 0.9 * 0.015 + 0.5 * tr2 * (0.6 + 0.1 * 2.985);
  opt.step(&w, g, 0.5, &trust);
  CHECK_NEAR(trust[0], tr2, 1e-7);
  CHECK_NEAR(w.mats[0].a[0], 2.985 - u0, 1e-6);
}

TEST(train_optim_adamw_matches_hand_computation) {
  LoraSet<float> w = one({3}, {0});
  const LoraSet<float> g = one({0.6f}, {-2});
  OptimOptions o;
  o.kind = OptimKind::AdamW, o.weight_decay = 0.01;
  Optimizer opt;
  CHECK(Optimizer::create(o, w, &opt).is_ok());
  opt.step(&w, g, 0.1);
  // t = 1: m̂ = g, v̂ = g², so the step is lr·(sign(g) + wd·w) (eps aside).
  CHECK_NEAR(w.mats[0].a[0], 3 - 0.1 * (1 + 0.01 * 3), 1e-6);
  CHECK_NEAR(w.mats[0].b[0], 0.1, 1e-6);
  // t = 2 with g = 0: m = 0.9·0.06 = 0.054, v = 0.999·0.00036; bias corrections 0.19 and 0.001999.
  const double w1 = 3 - 0.1 * 1.03, m = 0.054 / 0.19, v = 0.999 * 0.00036 / (1 - 0.999 * 0.999);
  opt.step(&w, one({0}, {0}), 0.1);
  CHECK_NEAR(w.mats[0].a[0], w1 - 0.1 * (m / (std::sqrt(v) + 1e-8) + 0.01 * w1), 1e-6);
  CHECK_EQ(opt.steps(), 2);
  OptimOptions bad;
  bad.beta1 = 1.0;
  CHECK(Optimizer::create(bad, w, &opt).code == Code::InvalidArgument);
}

TEST(train_optim_schedule_and_clipping) {
  CHECK_NEAR(lr_at(0, 10, 2, 1.0, 0.0), 0.5, 1e-12);  // warm-up
  CHECK_NEAR(lr_at(1, 10, 2, 1.0, 0.0), 1.0, 1e-12);
  CHECK_NEAR(lr_at(2, 10, 2, 1.0, 0.0), 1.0, 1e-12);   // cosine starts at the peak
  CHECK_NEAR(lr_at(6, 10, 2, 1.0, 0.1), 0.55, 1e-12);  // half way: (lr + min) / 2
  CHECK_NEAR(lr_at(9, 10, 2, 1.0, 0.0), 0.5 * (1 + std::cos(M_PI * 7 / 8)), 1e-12);
  LoraSet<float> g = one({3}, {4});
  CHECK_NEAR(clip_grad_norm(&g, 1.0), 5.0, 1e-9);
  CHECK_NEAR(g.mats[0].a[0], 0.6, 1e-7);
  CHECK_NEAR(g.mats[0].b[0], 0.8, 1e-7);
  CHECK_NEAR(clip_grad_norm(&g, 10.0), 1.0, 1e-6);  // under the limit: unchanged
  CHECK_NEAR(g.mats[0].a[0], 0.6, 1e-7);
}

TEST(train_lora_init_seeded_like_peft) {
  LoraSet<float> a = one(std::vector<float>(400), std::vector<float>(50, 1.0f)), b = a, c = a;
  lora_init(&a, 1);
  lora_init(&b, 1);
  lora_init(&c, 2);
  CHECK(std::memcmp(a.mats[0].a.data(), b.mats[0].a.data(), 400 * sizeof(float)) == 0);
  CHECK(a.mats[0].a != c.mats[0].a);
  double mx = 0, mean = 0;
  for (float x : a.mats[0].a) mx = std::max(mx, std::fabs(double(x))), mean += x / 400.0;
  CHECK(mx <= 1.0 / 20 && mx > 0.9 / 20);  // U(±1/√n_in), n_in = 400
  CHECK(std::fabs(mean) < 0.01);
  for (float x : a.mats[0].b) CHECK(x == 0.0f);  // B = 0: the adapter starts as no change
}
