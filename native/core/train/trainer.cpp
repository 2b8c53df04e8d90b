#include "trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>

#include "../gguf/gguf.h"

namespace llmserve {

namespace {

// GGUF base-tensor kind of projection p (llama.cpp's names).
const char* kProjNames[kLoraProjs] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};

Status check_data(const TrainData& d) {
  if (d.n_seqs() < 1 || d.offsets.front() != 0 || d.offsets.back() != static_cast<int64_t>(d.tokens.size()) ||
      d.tokens.size() != d.labels.size())
    return make_error(Code::InvalidArgument, "training data: no sequences, or offsets that do not cover the tokens");
  for (int64_t i = 0; i < d.n_seqs(); ++i)
    if (d.offsets[static_cast<size_t>(i + 1)] <= d.offsets[static_cast<size_t>(i)])
      return make_error(Code::InvalidArgument, "training data: sequence " + std::to_string(i) + " is empty");
  return Status::ok();
}

void zero(LoraSet<float>* g) {
  for (auto& m : g->mats) m.a.assign(m.a.size(), 0.0f), m.b.assign(m.b.size(), 0.0f);
}

int64_t longest(const TrainData& d) {
  int64_t n = 0;
  for (int64_t i = 0; i < d.n_seqs(); ++i)
    n = std::max(n, d.offsets[static_cast<size_t>(i + 1)] - d.offsets[static_cast<size_t>(i)]);
  return n;
}

}  // namespace

std::string lora_tensor_base(int64_t il, int p) {
  return "blk." + std::to_string(il) + "." + kProjNames[p] + ".weight";
}

double kept_activation_bytes(const ModelConfig& c, int64_t n, int64_t rank) {
  const double N = static_cast<double>(n);
  const double per_layer =
      N * static_cast<double>(4 * c.n_embd + 4 * c.n_embd_q() + 4 * c.n_embd_kv() + 3 * c.n_ff + 7 * rank) +
      static_cast<double>(c.n_head) * N * N;
  return static_cast<double>(c.n_layer) * per_layer * sizeof(float);
}

Status TeacherRun::create(const Model& teacher, const Model& student, int64_t max_n, std::unique_ptr<TeacherRun>* out) {
  if (teacher.config().n_vocab != student.config().n_vocab)
    return make_error(Code::InvalidArgument,
                      "the distillation teacher has " + std::to_string(teacher.config().n_vocab) +
                          " tokens in its vocabulary and the model " + std::to_string(student.config().n_vocab) +
                          "; the teacher must share the model's vocabulary (use the model it was made from)");
  if (max_n < 1) return make_error(Code::InvalidArgument, "teacher: no tokens to run");
  std::unique_ptr<TeacherRun> t(new TeacherRun(teacher));
  KvCacheOptions ko;
  ko.n_ctx = max_n, ko.type = GgmlType::F32;  // f32: the teacher's distribution as exactly as we can
  LLMS_RETURN_IF_ERROR(KvCache::create(kv_shape(teacher.config()), ko, &t->kv_));
  *out = std::move(t);
  return Status::ok();
}

Status TeacherRun::logits(const int32_t* tokens, int64_t n, ThreadPool& pool, std::vector<float>* out) {
  kv_->truncate(0);  // every sequence starts at position 0, as the student's training forward
  return forward(model_, *kv_, tokens, n, true, out, pool, &scratch_);
}

Status train_lora(const Model& model, const TrainData& data, const TrainOptions& opt, ThreadPool& pool,
                  const std::function<void(const StepEvent&)>& on_step, const std::atomic<bool>* cancel,
                  LoraSet<float>* out, RankMask* mask) {
  LLMS_RETURN_IF_ERROR(check_data(data));
  if (opt.batch < 1 || opt.steps < 1 || !(opt.lr > 0) || opt.warmup < 0 || opt.min_lr < 0)
    return make_error(Code::InvalidArgument, "finetune: batch and steps must be >= 1, lr > 0, warmup and min lr >= 0");
  if (opt.steps > (data.n_seqs() + opt.batch - 1) / opt.batch)
    return make_error(Code::InvalidArgument, "finetune: " + std::to_string(opt.steps) + " steps of batch " +
                                                 std::to_string(opt.batch) + " need more than the " +
                                                 std::to_string(data.n_seqs()) + " sequences given");
  const bool distilling = opt.teacher && opt.distill > 0;
  if (!(opt.distill >= 0 && opt.distill <= 1) || !(opt.temperature > 0 && std::isfinite(opt.temperature)))
    return make_error(Code::InvalidArgument, "finetune: distill must be in [0, 1] and temperature > 0");
  if (opt.distill > 0 && !opt.teacher)
    return make_error(Code::InvalidArgument, "finetune: distill > 0 needs a teacher model");
  if (!opt.adaptive && opt.ada.target_rank != 0)
    return make_error(Code::InvalidArgument, "finetune: a target rank needs adaptive rank (--adaptive-rank)");
  if (opt.adaptive && !mask) return make_error(Code::InvalidArgument, "finetune: adaptive rank needs a rank mask");
  if (!(opt.recompute_above >= 0) || !std::isfinite(opt.recompute_above))
    return make_error(
        Code::InvalidArgument,
        "finetune: the recomputation threshold must be a finite number of bytes >= 0 (0: always recompute)");
  std::unique_ptr<TeacherRun> teacher;
  std::vector<float> teacher_logits;
  if (distilling) LLMS_RETURN_IF_ERROR(TeacherRun::create(*opt.teacher, model, longest(data), &teacher));
  LoraSet<float> lora, grad;
  LLMS_RETURN_IF_ERROR(lora_zeros(model.config(), opt.rank, opt.alpha, opt.targets, &lora));
  lora_init(&lora, opt.seed);
  grad = lora;
  Optimizer optim;
  AdaptiveRank ada;
  if (opt.adaptive) {
    AdaOptions ao = opt.ada;
    if (ao.t_init < 0) ao.t_init = opt.warmup;
    if (ao.t_final < 0) ao.t_final = opt.steps / 5;
    LLMS_RETURN_IF_ERROR(AdaptiveRank::create(lora, ao, opt.optim, opt.seed, &ada));
  } else {
    LLMS_RETURN_IF_ERROR(Optimizer::create(opt.optim, lora, &optim));
  }
  LossScratch<float> scratch;  // activation buffers reused by every sequence of the run
  for (int64_t step = 0; step < opt.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t s0 = step * opt.batch, s1 = std::min(s0 + opt.batch, data.n_seqs());
    int64_t labelled = 0, tokens = 0;
    for (int64_t i = data.offsets[static_cast<size_t>(s0)]; i < data.offsets[static_cast<size_t>(s1)]; ++i)
      labelled += data.labels[static_cast<size_t>(i)] >= 0;
    if (opt.adaptive) ada.materialize(&lora);  // A = diag(λ∘keep)·Q, B = P of the current parameters
    zero(&grad);
    double nll = 0, ce = 0, kl = 0;
    int64_t recomputed = 0;
    for (int64_t s = s0; s < s1 && labelled > 0; ++s) {
      if (cancel && cancel->load()) return make_error(Code::Cancelled, "finetune was cancelled");
      const int64_t a = data.offsets[static_cast<size_t>(s)], n = data.offsets[static_cast<size_t>(s + 1)] - a;
      double part = 0;
      DistillTerm dt;
      if (distilling) {
        // The teacher's logits of this sequence only: used now, overwritten by the next one.
        LLMS_RETURN_IF_ERROR(teacher->logits(data.tokens.data() + a, n, pool, &teacher_logits));
        dt.teacher = teacher_logits.data(), dt.alpha = opt.distill, dt.temperature = opt.temperature;
      }
      const bool recompute = kept_activation_bytes(model.config(), n, opt.rank) > opt.recompute_above;
      recomputed += recompute;
      LLMS_RETURN_IF_ERROR(lora_loss_grad(model, lora, data.tokens.data() + a, data.labels.data() + a, n,
                                          1.0 / static_cast<double>(labelled), &part, &grad, pool,
                                          distilling ? &dt : nullptr, recompute, &scratch));
      nll += part, ce += dt.ce_sum, kl += dt.kl_sum;
      tokens += n;
    }
    StepEvent ev;
    ev.step = step + 1, ev.steps = opt.steps, ev.tokens = tokens, ev.recomputed = recomputed;
    ev.lr = lr_at(step, opt.steps, opt.warmup, opt.lr, opt.min_lr);
    if (labelled > 0) {
      ev.loss = nll / static_cast<double>(labelled);
      ev.ce = ce / static_cast<double>(labelled), ev.kl = kl / static_cast<double>(labelled);
      if (opt.adaptive) {
        ev.grad_norm = ada.step(grad, step, opt.steps, ev.lr, opt.clip, &ev.orth);
      } else {
        ev.grad_norm = clip_grad_norm(&grad, opt.clip);
        optim.step(&lora, grad, ev.lr);
      }
    }
    if (opt.adaptive) ev.kept_rank = ada.mask().total();
    ev.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (on_step) on_step(ev);
  }
  if (opt.adaptive) {
    ada.materialize(&lora);
    *mask = ada.mask();
  }
  *out = std::move(lora);
  return Status::ok();
}

Status lora_eval_loss(const Model& model, const LoraSet<float>& lora, const TrainData& data, ThreadPool& pool,
                      double* mean_nll, const Model* teacher, double* mean_kl) {
  LLMS_RETURN_IF_ERROR(check_data(data));
  std::unique_ptr<TeacherRun> tr;
  std::vector<float> tl;
  if (teacher) LLMS_RETURN_IF_ERROR(TeacherRun::create(*teacher, model, longest(data), &tr));
  double nll = 0, kl = 0;
  int64_t labelled = 0;
  LossScratch<float> scratch;
  for (int64_t s = 0; s < data.n_seqs(); ++s) {
    const int64_t a = data.offsets[static_cast<size_t>(s)], n = data.offsets[static_cast<size_t>(s + 1)] - a;
    double part = 0;
    // α = 1/2 so the term's ce_sum and kl_sum (T = 1) both come out; the loss it returns is unused.
    DistillTerm dt;
    if (tr) {
      LLMS_RETURN_IF_ERROR(tr->logits(data.tokens.data() + a, n, pool, &tl));
      dt.teacher = tl.data(), dt.alpha = 0.5, dt.temperature = 1;
    }
    LLMS_RETURN_IF_ERROR(lora_loss_grad<float>(model, lora, data.tokens.data() + a, data.labels.data() + a, n, 1.0,
                                               &part, nullptr, pool, tr ? &dt : nullptr, false, &scratch));
    nll += tr ? dt.ce_sum : part;
    kl += dt.kl_sum;
    for (int64_t i = a; i < a + n; ++i) labelled += data.labels[static_cast<size_t>(i)] >= 0;
  }
  if (labelled == 0) return make_error(Code::InvalidArgument, "evaluation data has no labelled tokens");
  *mean_nll = nll / static_cast<double>(labelled);
  if (mean_kl) *mean_kl = tr ? kl / static_cast<double>(labelled) : NAN;
  return Status::ok();
}

Status write_lora_gguf(const Model& model, const LoraSet<float>& lora, double alpha, const std::string& path,
                       const RankMask* mask) {
  const ModelConfig& c = model.config();
  GgufWriter w;
  w.set_str("general.architecture", c.arch);
  w.set_str("general.type", "adapter");
  w.set_str("general.name", "llmserve-finetune");
  w.set_str("adapter.type", "lora");
  w.set_f32("adapter.lora.alpha", static_cast<float>(alpha));
  auto bytes = [](const std::vector<float>& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(v.data());
    return std::vector<uint8_t>(p, p + v.size() * sizeof(float));
  };
  for (int64_t il = 0; il < c.n_layer; ++il)
    for (int p = 0; p < kLoraProjs; ++p) {
      const LoraMatrix<float>& m = lora.at(il, p);
      if (!m.on()) continue;
      const std::string name = lora_tensor_base(il, p);
      std::vector<float> a = m.a, b = m.b;
      int64_t r = lora.rank;
      if (mask) {
        const std::vector<uint8_t>& keep = mask->keep[static_cast<size_t>(il * kLoraProjs + p)];
        r = mask->rank(static_cast<size_t>(il * kLoraProjs + p));
        if (r == 0) continue;  // every component pruned: the projection is unchanged
        // The readers scale by alpha / r_i; the trained product is (alpha / rank)·B·A.
        const float fold = static_cast<float>(static_cast<double>(r) / static_cast<double>(lora.rank));
        a.clear(), b.assign(static_cast<size_t>(m.n_out * r), 0.0f);
        int64_t kk = 0;
        for (int64_t k = 0; k < lora.rank; ++k) {
          if (!keep[static_cast<size_t>(k)]) continue;
          for (int64_t j = 0; j < m.n_in; ++j) a.push_back(fold * m.a[static_cast<size_t>(k * m.n_in + j)]);
          for (int64_t j = 0; j < m.n_out; ++j)
            b[static_cast<size_t>(j * r + kk)] = m.b[static_cast<size_t>(j * lora.rank + k)];
          ++kk;
        }
      }
      // Our A [r, n_in] row-major is ggml ne [n_in, r]; B [n_out, r] is ne [r, n_out].
      LLMS_RETURN_IF_ERROR(w.add_tensor(name + ".lora_a", GgmlType::F32, {m.n_in, r}, bytes(a)));
      LLMS_RETURN_IF_ERROR(w.add_tensor(name + ".lora_b", GgmlType::F32, {r, m.n_out}, bytes(b)));
    }
  return w.write(path);
}

}  // namespace llmserve
