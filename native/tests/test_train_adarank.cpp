// Adaptive rank (native/core/train/adaptive_rank.*): the orthogonality penalty (value by hand,
// gradient by central differences in f64), the whole model's loss through the P·diag(λ)·Q
// parameterisation with a partial mask, the budget schedule, pruning of the least important
// components (constructed scores, and importance built from a constructed gradient), and the
// trainer: ranks reach the target exactly at the end, the same seed gives the same adapter, and
// the exported per-matrix ranks give the trained product when loaded as a LoRA adapter.
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "lora/lora.h"
#include "testing.h"
#include "train/adaptive_rank.h"
#include "train/trainer.h"
#include "train_test_util.h"

using namespace llmserve;
using namespace llmserve_train_test;

namespace {

// P, λ, Q random (nonzero λ so that P and Q get a gradient) for plain's shape.
template <typename T>
AdaParams<T> random_ada(const LoraSet<T>& plain, uint32_t seed) {
  const size_t M = plain.mats.size();
  AdaParams<T> p;
  p.rank = plain.rank, p.scale = plain.scale;
  p.mats.assign(2 * M, LoraMatrix<T>{});
  for (size_t i = 0; i < M; ++i) {
    const LoraMatrix<T>& m = plain.mats[i];
    p.mats[i].n_in = m.n_in, p.mats[i].n_out = m.n_out, p.mats[M + i].n_in = plain.rank;
    if (!m.on()) continue;
    const Vd q = randv(m.a.size(), seed++, 0.3), pp = randv(m.b.size(), seed++, 0.3), l = randv(3, seed++, 0.8);
    p.mats[i].a.assign(q.begin(), q.end());
    p.mats[i].b.assign(pp.begin(), pp.end());
    p.mats[M + i].a.assign(l.begin(), l.begin() + plain.rank);
  }
  return p;
}

// n_seqs sequences of len random tokens in [0, 300), every next token labelled.
TrainData ada_data(int64_t n_seqs, int64_t len, uint32_t seed) {
  TrainData d;
  std::mt19937 g(seed);
  d.offsets.push_back(0);
  for (int64_t s = 0; s < n_seqs; ++s) {
    for (int64_t t = 0; t < len; ++t) d.tokens.push_back(static_cast<int32_t>(g() % 300));
    for (int64_t t = 0; t < len; ++t)
      d.labels.push_back(t + 1 < len ? d.tokens[static_cast<size_t>(s * len + t + 1)] : -1);
    d.offsets.push_back(static_cast<int64_t>(d.tokens.size()));
  }
  return d;
}

TrainOptions ada_options(int64_t steps) {
  TrainOptions o;
  o.rank = 4, o.alpha = 8, o.steps = steps, o.batch = 1, o.lr = 5e-3, o.warmup = 2, o.seed = 7;
  o.targets = (1u << 0) | (1u << 2) | (1u << 6);  // q, v, down
  o.adaptive = true;
  o.ada.target_rank = 2;
  return o;
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

TEST(train_ada_orth_penalty_value_and_gradient) {
  // By hand: one matrix, P = [[1, 0], [0, 2], [0, 0]] (n_out 3, r 2): PᵀP − I = diag(0, 3) → 9;
  // Q = [[1, 1]; [0, 1]] (n_in 2): QQᵀ − I = [[1, 1], [1, 0]] → 3. Weight 0.5 over 1 matrix: 6.
  AdaParams<double> h;
  h.rank = 2;
  h.mats.assign(2, LoraMatrix<double>{});
  h.mats[0].n_in = 2, h.mats[0].n_out = 3;
  h.mats[0].b = {1, 0, 0, 2, 0, 0};
  h.mats[0].a = {1, 1, 0, 1};
  h.mats[1].a = {0, 0};
  CHECK_NEAR(orth_penalty<double>(h, 0.5, nullptr), 6.0, 1e-12);
  // Gradient on the tiny model's shapes (every projection, GQA sizes, r = 3) against central differences.
  TmpFile f;
  auto model = tiny_model("llama", GgmlType::F32, 1, &f);
  CHECK(model != nullptr);
  if (!model) return;
  LoraSet<double> plain;
  CHECK(lora_zeros(model->config(), 3, 5.0, kAllBlockProjs, &plain).is_ok());
  AdaParams<double> p = random_ada(plain, 11);
  AdaParams<double> g = zeros_like(p);
  const double v = orth_penalty(p, 0.1, &g);
  CHECK(v > 0);
  auto loss = [&] { return orth_penalty<double>(p, 0.1, nullptr); };
  for (size_t i = 0; i < plain.mats.size(); ++i) {
    CHECK(fd_check("orth dQ", p.mats[i].a, g.mats[i].a, loss, 8) < 1e-6);
    CHECK(fd_check("orth dP", p.mats[i].b, g.mats[i].b, loss, 8) < 1e-6);
  }
}

TEST(train_ada_grad_model_loss_wrt_p_lambda_q) {
  TmpFile f;
  auto model = tiny_model("qwen2", GgmlType::F32, 2, &f);
  CHECK(model != nullptr);
  if (!model) return;
  const ModelConfig& c = model->config();
  const std::vector<int32_t> tokens = {1, 17, 250, 3, 99, 42, 7};
  std::vector<int32_t> labels(tokens.size(), -1);
  for (size_t t = 0; t + 1 < tokens.size(); ++t) labels[t] = tokens[t + 1];
  const int64_t n = static_cast<int64_t>(tokens.size());
  const double weight = 1.0 / 6, gamma = 0.3;
  LoraSet<double> plain;
  CHECK(lora_zeros(c, 3, 5.0, kAllBlockProjs, &plain).is_ok());
  AdaParams<double> p = random_ada(plain, 60);
  const size_t M = plain.mats.size();
  RankMask mask;  // component 1 of every other matrix masked: its λ, Q row and P column get no loss gradient
  mask.keep.assign(M, std::vector<uint8_t>{1, 1, 1});
  for (size_t i = 0; i < M; i += 2) mask.keep[i][1] = 0;
  auto loss = [&] {
    LoraSet<double> l = plain;
    ada_materialize(p, mask, &l);
    double s = 0;
    CHECK(lora_loss_grad<double>(*model, l, tokens.data(), labels.data(), n, weight, &s, nullptr, pool()).is_ok());
    return s * weight + orth_penalty<double>(p, gamma, nullptr);
  };
  LoraSet<double> l = plain, gl = zeros_like(plain);
  ada_materialize(p, mask, &l);
  double nll = 0;
  CHECK(lora_loss_grad(*model, l, tokens.data(), labels.data(), n, weight, &nll, &gl, pool()).is_ok());
  AdaParams<double> g = zeros_like(p);
  ada_chain_grad(p, mask, gl, &g);
  orth_penalty(p, gamma, &g);
  for (size_t i = 0; i < M; ++i) {
    const std::string tag = "ada m" + std::to_string(i);
    CHECK(fd_check((tag + " dQ").c_str(), p.mats[i].a, g.mats[i].a, loss, 5) < 1e-6);
    CHECK(fd_check((tag + " dP").c_str(), p.mats[i].b, g.mats[i].b, loss, 5) < 1e-6);
    CHECK(fd_check((tag + " dλ").c_str(), p.mats[M + i].a, g.mats[M + i].a, loss, 3) < 1e-6);
    if (i % 2 == 0) CHECK(g.mats[M + i].a[1] == 0.0);  // masked: no gradient reaches λ_1
  }
}

TEST(train_ada_budget_schedule) {
  // total 20, 2 warm-up steps, the last 4 at the target; b0 = 56 (14 matrices × 4), target 14.
  for (int64_t d = 0; d <= 2; ++d) CHECK_EQ(rank_budget(d, 20, 2, 4, 56, 14), 56);
  const double c = 1.0 - 1.0 / 14;
  CHECK_EQ(rank_budget(3, 20, 2, 4, 56, 14), static_cast<int64_t>(std::floor(14 + 42 * c * c * c)));
  CHECK_EQ(rank_budget(9, 20, 2, 4, 56, 14), static_cast<int64_t>(std::floor(14 + 42 * 0.125)));  // half way: 1/8
  int64_t prev = 56;
  for (int64_t d = 0; d <= 20; ++d) {
    const int64_t b = rank_budget(d, 20, 2, 4, 56, 14);
    CHECK(b <= prev && b >= 14);
    prev = b;
  }
  for (int64_t d = 16; d <= 20; ++d) CHECK_EQ(rank_budget(d, 20, 2, 4, 56, 14), 14);
  // No room between warm-up and the end: the last step still has the target.
  CHECK_EQ(rank_budget(3, 3, 5, 0, 56, 14), 14);
}

TEST(train_ada_prune_keeps_most_important) {
  // Global selection across matrices, so ranks differ per matrix; the untargeted matrix is skipped.
  RankMask m;
  m.keep = {{1, 1, 1}, {}, {1, 1, 1}};
  const std::vector<std::vector<double>> s = {{5, 1, 4}, {}, {0.5, 3, 2}};
  CHECK_EQ(prune_to_budget(s, 3, &m), 3);
  CHECK(m.keep[0] == (std::vector<uint8_t>{1, 0, 1}));
  CHECK(m.keep[2] == (std::vector<uint8_t>{0, 1, 0}));
  CHECK_EQ(m.rank(0), 2);
  CHECK_EQ(m.rank(2), 1);
  // Masked components stay masked, whatever their score now; a matrix may lose every component.
  CHECK_EQ(prune_to_budget({{5, 100, 4}, {}, {100, 3, 2}}, 2, &m), 1);
  CHECK(m.keep[0] == (std::vector<uint8_t>{1, 0, 1}));
  CHECK(m.keep[2] == (std::vector<uint8_t>{0, 0, 0}));
  CHECK_EQ(m.total(), 2);
  CHECK_EQ(prune_to_budget(s, 5, &m), 0);  // under budget: nothing

  // Importance from a constructed gradient: one matrix (n_in 5, n_out 4, r 4) whose loss gradient
  // reaches only P's column 2 (λ starts at 0, so only P has a sensitivity |P·∂L/∂P| at step 1);
  // a one-step run with target rank 1 must keep component 2 and zero the other λ.
  LoraSet<float> plain;
  plain.rank = 4, plain.scale = 1;
  plain.mats.resize(1);
  plain.mats[0].n_in = 5, plain.mats[0].n_out = 4;
  plain.mats[0].a.assign(20, 0.0f), plain.mats[0].b.assign(16, 0.0f);
  LoraSet<float> g = plain;
  for (int j = 0; j < 4; ++j) g.mats[0].b[static_cast<size_t>(j * 4 + 2)] = 1.0f;
  for (int j = 0; j < 4; ++j) g.mats[0].b[static_cast<size_t>(j * 4 + 0)] = 0.01f;  // a weaker rival
  AdaOptions o;
  o.target_rank = 1;
  AdaptiveRank ar;
  CHECK(AdaptiveRank::create(plain, o, OptimOptions{}, 3, &ar).is_ok());
  double pen = -1;
  ar.step(g, 0, 1, 1e-2, 0, &pen);
  CHECK_NEAR(pen, 0.0, 1e-10);  // orthonormal init
  const std::vector<std::vector<double>> sc = ar.scores();
  CHECK(sc[0][2] > sc[0][0] && sc[0][0] > sc[0][1] && sc[0][1] == 0.0);
  // By hand: I = |P[j,k]·g_k| with g_2 = 1, Ī = 0.15·I, Ū = 0.15·|I − Ī| = 0.1275·I, so
  // s = 0.019125·P[j,k]²·g_k², and the mean over P's column (unit norm: Σⱼ P[j,k]² = 1, 4 rows) is
  // 0.019125·g_k²/4; Q and λ add nothing at step 1 (λ = 0).
  CHECK_NEAR(sc[0][2], 0.15 * 0.1275 / 4, 1e-7);
  CHECK_NEAR(sc[0][0], 0.15 * 0.1275 * 1e-4 / 4, 1e-11);
  CHECK(ar.mask().keep[0] == (std::vector<uint8_t>{0, 0, 1, 0}));
  for (int k : {0, 1, 3}) CHECK(ar.params().mats[1].a[static_cast<size_t>(k)] == 0.0f);
}

TEST(train_ada_trainer_reaches_target_same_bytes_and_exports) {
  TmpFile f;
  auto model = tiny_model("llama", GgmlType::F32, 2, &f);
  CHECK(model != nullptr);
  if (!model) return;
  const TrainData data = ada_data(12, 9, 5);
  const TrainOptions o = ada_options(12);
  std::vector<StepEvent> evs;
  LoraSet<float> out;
  RankMask mask;
  CHECK(train_lora(
            *model, data, o, pool(), [&](const StepEvent& e) { evs.push_back(e); }, nullptr, &out, &mask)
            .is_ok());
  const int64_t M_on = 3 * model->config().n_layer;
  CHECK_EQ(static_cast<int64_t>(evs.size()), 12);
  CHECK_EQ(evs[0].kept_rank, 4 * M_on);  // warm-up: nothing pruned
  CHECK_EQ(evs[1].kept_rank, 4 * M_on);
  for (size_t s = 1; s < evs.size(); ++s) CHECK(evs[s].kept_rank <= evs[s - 1].kept_rank);
  CHECK(evs[5].kept_rank < 4 * M_on && evs[5].kept_rank > 2 * M_on);  // the cubic middle
  CHECK_EQ(evs.back().kept_rank, 2 * M_on);
  CHECK_EQ(mask.total(), 2 * M_on);
  CHECK(evs.back().orth >= 0 && evs.back().loss > 0);
  // The plain result has zero rows of A for the masked components.
  for (size_t i = 0; i < out.mats.size(); ++i)
    for (size_t k = 0; k < mask.keep[i].size(); ++k)
      if (!mask.keep[i][k])
        for (int64_t j = 0; j < out.mats[i].n_in; ++j)
          CHECK(out.mats[i].a[static_cast<size_t>(static_cast<int64_t>(k) * out.mats[i].n_in + j)] == 0.0f);

  TmpFile g1, g2;
  g1.path = f.path + ".ada1.gguf", g2.path = f.path + ".ada2.gguf";
  CHECK(write_lora_gguf(*model, out, o.alpha, g1.path, &mask).is_ok());
  // Same seed, one thread: the same bytes.
  LoraSet<float> out2;
  RankMask mask2;
  ThreadPool one(1);
  CHECK(train_lora(*model, data, o, one, nullptr, nullptr, &out2, &mask2).is_ok());
  CHECK(write_lora_gguf(*model, out2, o.alpha, g2.path, &mask2).is_ok());
  CHECK(read_all(g1.path) == read_all(g2.path));

  // The file: per-matrix ranks (ne [n_in, r_i] / [r_i, n_out]), no tensors for a rank-0 matrix,
  // and loaded as a LoRA adapter it adds exactly (alpha / rank)·B·A of the trained plain factors.
  std::unique_ptr<GgufFile> gf;
  CHECK(GgufFile::open(g1.path, &gf).is_ok());
  std::unique_ptr<LoraAdapter> ad;
  CHECK(LoraAdapter::load(g1.path, *model, 1.0f, &ad).is_ok());
  if (!gf || !ad) return;
  for (int64_t il = 0; il < model->config().n_layer; ++il)
    for (int p : {0, 2, 6}) {
      const size_t i = static_cast<size_t>(il * kLoraProjs + p);
      const LoraMatrix<float>& m = out.at(il, p);
      const int64_t r = mask.rank(i);
      const GgufTensorInfo* ta = gf->find_tensor(lora_tensor_base(il, p) + ".lora_a");
      CHECK_EQ(ta != nullptr, r > 0);
      if (r == 0) continue;
      CHECK(ta->ne[0] == m.n_in && ta->ne[1] == r);
      const GgufTensorInfo* tb = gf->find_tensor(lora_tensor_base(il, p) + ".lora_b");
      CHECK(tb && tb->ne[0] == r && tb->ne[1] == m.n_out);
      const Vd xv = randv(static_cast<size_t>(m.n_in), 90 + static_cast<uint32_t>(i));
      const std::vector<float> x = to_f(xv);
      std::vector<float> y(static_cast<size_t>(m.n_out), 0.0f);
      ad->add(il, static_cast<Proj>(p), x.data(), 1, y.data(), m.n_out, pool());
      double worst = 0, big = 0;
      for (int64_t o2 = 0; o2 < m.n_out; ++o2) {
        double ref = 0;
        for (int64_t k = 0; k < o.rank; ++k) {
          double ax = 0;
          for (int64_t j = 0; j < m.n_in; ++j)
            ax += m.a[static_cast<size_t>(k * m.n_in + j)] * xv[static_cast<size_t>(j)];
          ref += m.b[static_cast<size_t>(o2 * o.rank + k)] * ax;
        }
        ref *= o.alpha / static_cast<double>(o.rank);
        worst = std::max(worst, std::fabs(ref - y[static_cast<size_t>(o2)]));
        big = std::max(big, std::fabs(ref));
      }
      CHECK(big > 0);
      CHECK(worst <= 1e-4 * big);
    }
}

// With LARS, a distillation teacher and a rank above a matrix's size (K's n_out is 12 < 14, so its
// P cannot be orthonormal: the penalty starts above 0): still finite, and at the target at the end.
TEST(train_ada_lars_distill_rank_above_size) {
  TmpFile f;
  auto model = tiny_model("llama", GgmlType::F32, 1, &f);
  CHECK(model != nullptr);
  if (!model) return;
  const TrainData data = ada_data(6, 7, 9);
  TrainOptions o = ada_options(6);
  o.rank = 14, o.ada.target_rank = 3, o.targets = (1u << 1) | (1u << 4);  // k, gate
  o.optim.kind = OptimKind::Lars, o.lr = 0.05;
  o.teacher = model.get(), o.distill = 0.5, o.temperature = 2;
  std::vector<StepEvent> evs;
  LoraSet<float> out;
  RankMask mask;
  CHECK(train_lora(
            *model, data, o, pool(), [&](const StepEvent& e) { evs.push_back(e); }, nullptr, &out, &mask)
            .is_ok());
  CHECK_EQ(static_cast<int64_t>(evs.size()), 6);
  CHECK(evs[0].orth > 0.0);  // K's 14 columns of length 12 cannot be orthonormal
  for (const StepEvent& e : evs) CHECK(std::isfinite(e.loss) && std::isfinite(e.orth) && std::isfinite(e.grad_norm));
  CHECK(evs[0].kl >= 0.0);
  CHECK_EQ(mask.total(), 3 * 2);
  double norm = 0;
  for (const auto& m : out.mats)
    for (float x : m.a) norm += static_cast<double>(x) * x;
  CHECK(std::isfinite(norm) && norm > 0);
}

TEST(train_ada_rejects_bad_options) {
  TmpFile f;
  auto model = tiny_model("llama", GgmlType::F32, 1, &f);
  CHECK(model != nullptr);
  if (!model) return;
  const TrainData data = ada_data(2, 5, 1);
  LoraSet<float> out;
  RankMask mask;
  for (int64_t target : {0, 5, -1}) {  // rank 4: the target must be in [1, 4]
    TrainOptions o = ada_options(2);
    o.ada.target_rank = target;
    CHECK(train_lora(*model, data, o, pool(), nullptr, nullptr, &out, &mask).code == Code::InvalidArgument);
  }
  TrainOptions plain = ada_options(2);
  plain.adaptive = false;  // a target rank alone
  CHECK(train_lora(*model, data, plain, pool(), nullptr, nullptr, &out).code == Code::InvalidArgument);
  TrainOptions nomask = ada_options(2);
  CHECK(train_lora(*model, data, nomask, pool(), nullptr, nullptr, &out).code == Code::InvalidArgument);
  TrainOptions neg = ada_options(2);
  neg.ada.orth_weight = -1;
  CHECK(train_lora(*model, data, neg, pool(), nullptr, nullptr, &out, &mask).code == Code::InvalidArgument);
}
