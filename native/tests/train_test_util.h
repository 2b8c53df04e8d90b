// Helpers of the training gradient checks (test_train_grad.cpp, test_train_distill.cpp): random
// f64 vectors, central-difference checks, tiny synth models and random LoRA sets.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "model_test_util.h"
#include "synth/synth.h"
#include "testing.h"
#include "train/lora_train.h"

namespace llmserve_train_test {

using namespace llmserve;

using Vd = std::vector<double>;

struct TmpFile {
  std::string path;
  ~TmpFile() {
    if (!path.empty()) std::remove(path.c_str());
  }
};

inline Vd randv(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 g(seed);
  std::normal_distribution<double> d(0.0, scale);
  Vd v(n);
  for (double& x : v) x = d(g);
  return v;
}

inline std::vector<float> to_f(const Vd& v) { return std::vector<float>(v.begin(), v.end()); }

// Compares analytic[i] with the central difference (loss(p_i + h) − loss(p_i − h)) / 2h for up to
// `samples` indices spread over p (all when p is small). Returns the worst relative error.
inline double fd_check(const char* what, Vd& p, const Vd& analytic, const std::function<double()>& loss,
                       int samples = 24, double h = 1e-5) {
  double worst = 0;
  const size_t n = p.size(), step = n <= static_cast<size_t>(samples) ? 1 : n / samples;
  for (size_t i = 0; i < n; i += step) {
    const double keep = p[i];
    p[i] = keep + h;
    const double lp = loss();
    p[i] = keep - h;
    const double lm = loss();
    p[i] = keep;
    const double fd = (lp - lm) / (2 * h);
    const double err = std::fabs(fd - analytic[i]) / std::max(1e-3, std::fabs(fd));
    if (err > worst) worst = err;
    if (err > 1e-5)
      std::fprintf(stderr, "  %s[%zu]: analytic %.10g vs central difference %.10g\n", what, i, analytic[i], fd);
  }
  return worst;
}

// ‖a − b‖ / ‖b‖.
inline double rel_diff(const std::vector<float>& a, const Vd& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
  return std::sqrt(num / std::max(den, 1e-300));
}

inline double dotv(const Vd& a, const Vd& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

inline ThreadPool& pool() {
  static ThreadPool p(2);
  return p;
}

// A tiny synth model of `arch` (GQA: 4 query heads over 2 KV heads, head_dim 6, odd n_ff) written to
// a temp file; null on failure.
inline std::unique_ptr<Model> tiny_model(const std::string& arch, GgmlType type, int64_t layers, TmpFile* file) {
  SynthOptions o;
  o.arch = arch, o.type = type, o.dim = 24, o.layers = layers, o.heads = 4, o.kv_heads = 2, o.ffn = 37;
  o.context = 64, o.vocab_size = 300, o.seed = 3;
  file->path = "/tmp/llmserve_test_train_" + std::to_string(static_cast<long>(::getpid())) + "_" + arch + "_" +
               type_traits(type).name + ".gguf";
  Status st = synth_model(o, file->path);
  if (!st.is_ok()) {
    std::fprintf(stderr, "  synth_model: %s\n", st.message.c_str());
    return nullptr;
  }
  return llmserve_test::load_model(file->path);
}

// LoRA of rank 3 on every projection, A and B random (B nonzero so that A gets a gradient too).
template <typename T>
LoraSet<T> random_lora(const ModelConfig& c, uint32_t seed) {
  LoraSet<T> l;
  CHECK(lora_zeros(c, 3, 5.0, kAllBlockProjs, &l).is_ok());
  for (auto& m : l.mats) {
    const Vd a = randv(m.a.size(), seed++, 0.3), b = randv(m.b.size(), seed++, 0.3);
    m.a.assign(a.begin(), a.end());
    m.b.assign(b.begin(), b.end());
  }
  return l;
}

template <typename T>
LoraSet<T> zeros_like(const LoraSet<T>& l) {
  LoraSet<T> z = l;
  for (auto& m : z.mats) std::fill(m.a.begin(), m.a.end(), T(0)), std::fill(m.b.begin(), m.b.end(), T(0));
  return z;
}

// A distillation term for check_model_lora_grad: α, T, and the seed and scale of the random
// teacher logits.
struct DistillSpec {
  double alpha, temperature;
  uint32_t teacher_seed;
  double teacher_scale;
};

// The whole model's loss (a 2-layer llama, 7 tokens, each labelled with the next; position 0 and
// the last masked; with a distillation term against random teacher logits when distill is given)
// wrt every LoRA A and B (random, from lora_seed): the analytic gradient matches central
// differences in f64, and the f32 path training runs gives the same loss and gradient within f32
// rounding. tag prefixes the names of the checked parameters in failure messages.
inline void check_model_lora_grad(const std::string& tag, uint32_t lora_seed, const DistillSpec* distill) {
  TmpFile f;
  auto model = tiny_model("llama", GgmlType::F32, 2, &f);
  CHECK(model != nullptr);
  if (!model) return;
  const ModelConfig& c = model->config();
  const std::vector<int32_t> tokens = {1, 17, 250, 3, 99, 42, 7};
  std::vector<int32_t> labels(tokens.size(), -1);
  for (size_t t = 1; t + 1 < tokens.size(); ++t) labels[t] = tokens[t + 1];
  const int64_t n = static_cast<int64_t>(tokens.size());
  const double weight = 1.0 / 5;
  const std::vector<float> teacher =
      distill ? to_f(randv(static_cast<size_t>(n * c.n_vocab), distill->teacher_seed, distill->teacher_scale))
              : std::vector<float>();
  // A fresh term per call (lora_loss_grad accumulates its ce_sum / kl_sum); null without distill.
  const auto term = [&](DistillTerm* d) -> DistillTerm* {
    if (!distill) return nullptr;
    d->teacher = teacher.data(), d->alpha = distill->alpha, d->temperature = distill->temperature;
    return d;
  };
  LoraSet<double> lora = random_lora<double>(c, lora_seed);
  auto loss = [&] {
    double s = 0;
    DistillTerm d;
    CHECK(lora_loss_grad<double>(*model, lora, tokens.data(), labels.data(), n, weight, &s, nullptr, pool(), term(&d))
              .is_ok());
    return s * weight;
  };
  LoraSet<double> grad = zeros_like(lora);
  double l = 0;
  DistillTerm d;
  CHECK(lora_loss_grad(*model, lora, tokens.data(), labels.data(), n, weight, &l, &grad, pool(), term(&d)).is_ok());
  CHECK(l > 0);
  if (distill) CHECK(d.kl_sum > 0 && d.ce_sum > 0);
  for (int64_t il = 0; il < c.n_layer; ++il)
    for (int p = 0; p < kLoraProjs; ++p) {
      const std::string name = tag + " l" + std::to_string(il) + " p" + std::to_string(p);
      CHECK(fd_check((name + " dA").c_str(), lora.at(il, p).a, grad.at(il, p).a, loss, 6) < 1e-6);
      CHECK(fd_check((name + " dB").c_str(), lora.at(il, p).b, grad.at(il, p).b, loss, 6) < 1e-6);
    }
  LoraSet<float> lf = random_lora<float>(c, lora_seed), gf = zeros_like(lf);
  double lf32 = 0;
  DistillTerm df;
  CHECK(lora_loss_grad(*model, lf, tokens.data(), labels.data(), n, weight, &lf32, &gf, pool(), term(&df)).is_ok());
  CHECK_NEAR(lf32, l, 1e-4 * l);
  for (size_t i = 0; i < gf.mats.size(); ++i) {
    CHECK(rel_diff(gf.mats[i].a, grad.mats[i].a) < 1e-3);
    CHECK(rel_diff(gf.mats[i].b, grad.mats[i].b) < 1e-3);
  }
}

}  // namespace llmserve_train_test
