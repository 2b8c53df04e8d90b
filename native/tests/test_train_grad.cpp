// Gradient checks of the LoRA training backward (native/core/train): each backward op alone, a whole
// transformer block (llama NORM RoPE, qwen2 NEOX + biases, qwen3 head norms; GQA with
// n_head != n_head_kv; odd shapes), then the whole model's loss wrt LoRA A and B. The analytic
// backward run in f64 must match central differences of the same forward in f64 to ~1e-6
// (relative), and the f32 backward training runs must match the f64 one to ~1e-3.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kv/kv_cache.h"
#include "model/forward.h"
#include "model/ops.h"
#include "model_test_util.h"
#include "synth/synth.h"
#include "testing.h"
#include "train/lora_train.h"
#include "train/train_ops.h"
#include "train/trainer.h"
#include "train_test_util.h"

using namespace llmserve;
using namespace llmserve_train_test;

TEST(train_grad_rmsnorm) {
  const int64_t rows = 3, d = 7;
  Vd x = randv(rows * d, 1), r = randv(rows * d, 2);
  const std::vector<float> w = to_f(randv(d, 3));
  auto loss = [&] {
    Vd y(x.size()), rs(rows);
    rmsnorm_fwd(x.data(), w.data(), rows, d, 1e-5f, y.data(), rs.data());
    return dotv(y, r);
  };
  Vd y(x.size()), rs(rows), dx(x.size(), 0.0);
  rmsnorm_fwd(x.data(), w.data(), rows, d, 1e-5f, y.data(), rs.data());
  rmsnorm_bwd(x.data(), w.data(), rs.data(), r.data(), rows, d, dx.data());
  CHECK(fd_check("rmsnorm dx", x, dx, loss) < 1e-6);
}

TEST(train_grad_rope_norm_and_neox) {
  const int64_t n = 5, heads = 3, hd = 6, n_rot = 4;  // dims 4, 5 of each head pass through
  ModelConfig c;
  c.n_rot = n_rot, c.head_dim = hd, c.rope_freq_base = 100.0f;
  std::vector<float> cache(static_cast<size_t>(n * n_rot));
  rope_cache_f32(c, nullptr, 0, n, cache.data());
  for (int type : {0, 2}) {
    Vd x = randv(n * heads * hd, 4), r = randv(n * heads * hd, 5);
    auto loss = [&] {
      Vd y = x;
      rope(y.data(), n, heads, hd, n_rot, type, cache.data(), false);
      return dotv(y, r);
    };
    Vd dx = r;  // backward: the transposed rotation applied to the upstream gradient
    rope(dx.data(), n, heads, hd, n_rot, type, cache.data(), true);
    CHECK(fd_check(type ? "rope neox dx" : "rope norm dx", x, dx, loss) < 1e-6);
  }
}

TEST(train_grad_attention_gqa) {
  const int64_t n = 5, H = 6, Hkv = 2, D = 3;
  Vd q = randv(n * H * D, 6), k = randv(n * Hkv * D, 7), v = randv(n * Hkv * D, 8), r = randv(n * H * D, 9);
  auto loss = [&] {
    Vd P(static_cast<size_t>(H * n * n)), o(q.size());
    attention_fwd(q.data(), k.data(), v.data(), n, H, Hkv, D, P.data(), o.data(), pool());
    return dotv(o, r);
  };
  Vd P(static_cast<size_t>(H * n * n)), o(q.size()), dq(q.size(), 0.0), dk(k.size(), 0.0), dv(v.size(), 0.0);
  attention_fwd(q.data(), k.data(), v.data(), n, H, Hkv, D, P.data(), o.data(), pool());
  attention_bwd(q.data(), k.data(), v.data(), P.data(), r.data(), n, H, Hkv, D, dq.data(), dk.data(), dv.data(),
                pool());
  CHECK(fd_check("attention dq", q, dq, loss) < 1e-6);
  CHECK(fd_check("attention dk", k, dk, loss) < 1e-6);
  CHECK(fd_check("attention dv", v, dv, loss) < 1e-6);
}

TEST(train_grad_swiglu) {
  const int64_t count = 11;
  Vd g = randv(count, 10, 2.0), u = randv(count, 11), r = randv(count, 12);
  auto loss = [&] {
    Vd h(count);
    swiglu_fwd(g.data(), u.data(), count, h.data());
    return dotv(h, r);
  };
  Vd dg(count, 0.0), du(count, 0.0);
  swiglu_bwd(g.data(), u.data(), r.data(), count, dg.data(), du.data());
  CHECK(fd_check("swiglu dg", g, dg, loss) < 1e-6);
  CHECK(fd_check("swiglu du", u, du, loss) < 1e-6);
}

TEST(train_grad_linear_lora) {
  const int64_t n = 3, n_in = 5, n_out = 7, r = 2;
  const double s = 1.5;
  Vd x = randv(n * n_in, 13), W = randv(n_out * n_in, 14), A = randv(r * n_in, 15), B = randv(n_out * r, 16),
     ry = randv(n * n_out, 17);
  const std::vector<float> bias = to_f(randv(n_out, 18));
  auto loss = [&] {
    Vd y(static_cast<size_t>(n * n_out)), u(static_cast<size_t>(n * r));
    linear_fwd(W.data(), bias.data(), A.data(), B.data(), r, s, x.data(), n, n_in, n_out, y.data(), u.data(), pool());
    return dotv(y, ry);
  };
  Vd y(static_cast<size_t>(n * n_out)), u(static_cast<size_t>(n * r)), dx(x.size(), 0.0), dA(A.size(), 0.0),
      dB(B.size(), 0.0), tmp;
  linear_fwd(W.data(), bias.data(), A.data(), B.data(), r, s, x.data(), n, n_in, n_out, y.data(), u.data(), pool());
  linear_bwd(W.data(), A.data(), B.data(), r, s, x.data(), u.data(), ry.data(), n, n_in, n_out, dx.data(), dA.data(),
             dB.data(), &tmp, pool());
  CHECK(fd_check("linear dx", x, dx, loss) < 1e-6);
  CHECK(fd_check("linear dA", A, dA, loss) < 1e-6);
  CHECK(fd_check("linear dB", B, dB, loss) < 1e-6);
}

TEST(train_grad_cross_entropy) {
  const int64_t n = 4, V = 9;
  Vd z = randv(n * V, 19, 2.0);
  const int32_t labels[n] = {3, -1, 8, 0};  // row 1 carries no loss
  const double weight = 1.0 / 3;
  auto loss = [&] {
    return weight * cross_entropy(z.data(), labels, n, V, weight, static_cast<double*>(nullptr), pool());
  };
  Vd dz(z.size());
  cross_entropy(z.data(), labels, n, V, weight, dz.data(), pool());
  CHECK(fd_check("cross-entropy dz", z, dz, loss) < 1e-6);
  for (int64_t i = 0; i < V; ++i) CHECK(dz[V + i] == 0.0);
}

namespace {

void check_block(const std::string& arch, GgmlType type) {
  TmpFile f;
  auto model = tiny_model(arch, type, 1, &f);
  CHECK(model != nullptr);
  if (!model) return;
  const ModelConfig& c = model->config();
  const int64_t n = 5, E = c.n_embd;
  std::vector<float> cache(static_cast<size_t>(n * c.n_rot));
  rope_cache_f32(c, model->weights().rope_freqs, 0, n, cache.data());
  LoraSet<double> lora = random_lora<double>(c, 20);
  Vd x = randv(n * E, 21), r = randv(n * E, 22);
  auto loss = [&] {
    BlockActs<double> a;
    Vd y(x.size());
    block_fwd(*model, 0, lora, cache.data(), x.data(), n, &a, y.data(), pool());
    return dotv(y, r);
  };
  BlockActs<double> a;
  Vd y(x.size()), dx(x.size());
  LoraSet<double> grad = zeros_like(lora);
  block_fwd(*model, 0, lora, cache.data(), x.data(), n, &a, y.data(), pool());
  block_bwd(*model, 0, lora, cache.data(), a, n, r.data(), dx.data(), &grad, pool());
  const std::string tag = arch + "/" + type_traits(type).name;
  CHECK(fd_check((tag + " block dx").c_str(), x, dx, loss) < 1e-6);
  for (int p = 0; p < kLoraProjs; ++p) {
    auto& m = lora.at(0, p);
    CHECK(fd_check((tag + " block dA" + std::to_string(p)).c_str(), m.a, grad.at(0, p).a, loss, 8) < 1e-6);
    CHECK(fd_check((tag + " block dB" + std::to_string(p)).c_str(), m.b, grad.at(0, p).b, loss, 8) < 1e-6);
  }
}

}  // namespace

// llama: NORM RoPE; qwen2: NEOX RoPE + Q/K/V biases; qwen3: per-head Q/K RMSNorm; Q4_0 weights are
// dequantized on the fly (the check holds for any weight type since both sides use the same W).
TEST(train_grad_block_llama) { check_block("llama", GgmlType::F32); }
TEST(train_grad_block_qwen2) { check_block("qwen2", GgmlType::F32); }
TEST(train_grad_block_qwen3_q8_0) { check_block("qwen3", GgmlType::Q8_0); }

TEST(train_grad_model_loss_wrt_lora) { check_model_lora_grad("model", 40, nullptr); }

TEST(train_loss_grad_rejects_bad_input) {
  TmpFile f;
  auto model = tiny_model("llama", GgmlType::F32, 1, &f);
  CHECK(model != nullptr);
  if (!model) return;
  LoraSet<float> l;
  CHECK(lora_zeros(model->config(), 0, 1.0, kAllBlockProjs, &l).code == Code::InvalidArgument);
  CHECK(lora_zeros(model->config(), 2, 1.0, 0u, &l).code == Code::InvalidArgument);
  CHECK(lora_zeros(model->config(), 2, 1.0, kAllBlockProjs, &l).is_ok());
  const int32_t tok[2] = {1, 300}, lab[2] = {2, -1};
  double s = 0;
  CHECK(lora_loss_grad(*model, l, tok, lab, 2, 1.0, &s, static_cast<LoraSet<float>*>(nullptr), pool()).code ==
        Code::InvalidArgument);
  CHECK(lora_loss_grad(*model, l, tok, lab, 0, 1.0, &s, static_cast<LoraSet<float>*>(nullptr), pool()).code ==
        Code::InvalidArgument);
}

// The training forward is the model: its loss with a zero adapter equals the inference forward's
// (forward(), f32 KV) log-softmax at the same labels, for each architecture. The gradient checks
// above only tie the backward to this forward; this ties the forward to the engine's.
TEST(train_forward_matches_inference_forward) {
  for (const char* arch : {"llama", "qwen2", "qwen3"}) {
    TmpFile f;
    auto model = tiny_model(arch, GgmlType::F32, 2, &f);
    CHECK(model != nullptr);
    if (!model) continue;
    const ModelConfig& c = model->config();
    const std::vector<int32_t> tokens = {1, 17, 250, 3, 99, 42, 7, 123, 5};
    const int64_t n = static_cast<int64_t>(tokens.size());
    std::unique_ptr<KvCache> kv;
    KvCacheOptions ko;
    ko.n_ctx = 16, ko.type = GgmlType::F32;
    CHECK(KvCache::create(kv_shape(c), ko, &kv).is_ok());
    std::vector<float> logits;
    CHECK(forward(*model, *kv, tokens.data(), n, true, &logits, pool()).is_ok());
    LoraSet<float> zero;
    CHECK(lora_zeros(c, 2, 2.0, kAllBlockProjs, &zero).is_ok());
    for (int k = 0; k < 6; ++k) {
      std::vector<int32_t> labels(tokens.size());
      double want = 0;
      for (int64_t t = 0; t < n; ++t) {
        labels[t] = static_cast<int32_t>((t * 37 + k * 53) % c.n_vocab);
        const float* z = logits.data() + t * c.n_vocab;
        double mx = -INFINITY, sum = 0;
        for (int64_t i = 0; i < c.n_vocab; ++i) mx = std::max(mx, double(z[i]));
        for (int64_t i = 0; i < c.n_vocab; ++i) sum += std::exp(z[i] - mx);
        want += mx + std::log(sum) - z[labels[t]];
      }
      double got = 0;
      CHECK(lora_loss_grad(*model, zero, tokens.data(), labels.data(), n, 1.0, &got,
                           static_cast<LoraSet<float>*>(nullptr), pool())
                .is_ok());
      if (std::fabs(got - want) > 2e-3 * n)
        std::fprintf(stderr, "  %s labels %d: training %.6f vs inference %.6f\n", arch, k, got, want);
      CHECK_NEAR(got, want, 2e-3 * n);
    }
  }
}

// Activation recomputation per layer gives the same loss and the same gradient bits as keeping every
// layer's activations (f32, what training runs, and f64), with distillation too; and the trainer
// switches to it by the kept-activation estimate (same adapter either way).
TEST(train_recompute_bit_exact) {
  TmpFile f;
  auto model = tiny_model("qwen3", GgmlType::F32, 3, &f);
  CHECK(model != nullptr);
  if (!model) return;
  const ModelConfig& c = model->config();
  const std::vector<int32_t> tokens = {1, 17, 250, 3, 99, 42, 7, 8, 200};
  std::vector<int32_t> labels(tokens.size(), -1);
  for (size_t t = 0; t + 1 < tokens.size(); ++t) labels[t] = tokens[t + 1];
  const int64_t n = static_cast<int64_t>(tokens.size());
  const std::vector<float> teacher = to_f(randv(static_cast<size_t>(n * c.n_vocab), 81));
  auto same = [](const auto& a, const auto& b) {
    bool eq = a.mats.size() == b.mats.size();
    for (size_t i = 0; eq && i < a.mats.size(); ++i) eq = a.mats[i].a == b.mats[i].a && a.mats[i].b == b.mats[i].b;
    return eq;
  };
  for (bool distill : {false, true}) {
    LoraSet<float> lf = random_lora<float>(c, 60), g0 = zeros_like(lf), g1 = zeros_like(lf);
    DistillTerm d0, d1;
    d0.teacher = d1.teacher = teacher.data(), d0.alpha = d1.alpha = 0.4, d0.temperature = d1.temperature = 1.5;
    double l0 = 0, l1 = 0;
    CHECK(lora_loss_grad(*model, lf, tokens.data(), labels.data(), n, 0.125, &l0, &g0, pool(), distill ? &d0 : nullptr,
                         false)
              .is_ok());
    CHECK(lora_loss_grad(*model, lf, tokens.data(), labels.data(), n, 0.125, &l1, &g1, pool(), distill ? &d1 : nullptr,
                         true)
              .is_ok());
    CHECK(l0 == l1);
    CHECK(same(g0, g1));
  }
  LoraSet<double> ld = random_lora<double>(c, 61), h0 = zeros_like(ld), h1 = zeros_like(ld);
  double m0 = 0, m1 = 0;
  CHECK(lora_loss_grad(*model, ld, tokens.data(), labels.data(), n, 1.0, &m0, &h0, pool(), nullptr, false).is_ok());
  CHECK(lora_loss_grad(*model, ld, tokens.data(), labels.data(), n, 1.0, &m1, &h1, pool(), nullptr, true).is_ok());
  CHECK(m0 == m1);
  CHECK(same(h0, h1));
  // The trainer: recompute_above 0 (always) and the default (never, for this size): same adapter.
  TrainData data;
  data.tokens = tokens, data.labels = labels, data.offsets = {0, 4, n};
  TrainOptions o;
  o.rank = 3, o.steps = 2, o.lr = 1e-2;
  LoraSet<float> a0, a1;
  CHECK(kept_activation_bytes(c, n, o.rank) > 0 && kept_activation_bytes(c, n, o.rank) < o.recompute_above);
  CHECK(train_lora(*model, data, o, pool(), {}, nullptr, &a0).is_ok());
  int64_t recomputed = 0;
  o.recompute_above = 0;
  CHECK(train_lora(
            *model, data, o, pool(), [&](const StepEvent& e) { recomputed += e.recomputed; }, nullptr, &a1)
            .is_ok());
  CHECK(same(a0, a1));
  CHECK(recomputed == 2);  // each step's one sequence
  // A negative, NaN or infinite threshold: a typed error, not a silent default.
  for (double bad : {-1.0, std::nan(""), static_cast<double>(INFINITY)}) {
    o.recompute_above = bad;
    CHECK(train_lora(*model, data, o, pool(), {}, nullptr, &a1).code == Code::InvalidArgument);
  }
  // A scratch reused across calls (another length in between, recompute on and off) changes nothing.
  LossScratch<float> ws;
  for (bool rc : {false, true}) {
    LoraSet<float> lf = random_lora<float>(c, 62), g0 = zeros_like(lf), g1 = zeros_like(lf), g2 = zeros_like(lf);
    double l0 = 0, l1 = 0, l2 = 0;
    CHECK(lora_loss_grad(*model, lf, tokens.data(), labels.data(), n, 0.5, &l0, &g0, pool(), nullptr, rc).is_ok());
    CHECK(lora_loss_grad(*model, lf, tokens.data(), labels.data(), n - 2, 0.5, &l1, &g1, pool(), nullptr, !rc, &ws)
              .is_ok());
    CHECK(lora_loss_grad(*model, lf, tokens.data(), labels.data(), n, 0.5, &l2, &g2, pool(), nullptr, rc, &ws).is_ok());
    CHECK(l0 == l2);
    CHECK(same(g0, g2));
  }
}
