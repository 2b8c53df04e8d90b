// Engine thread: one request at a time, contiguous KV with longest-common-prefix reuse.
#include "engine.h"

#include <algorithm>
#include <chrono>

namespace llmserve {

namespace {
constexpr int64_t kPrefillChunk = 512;  // bounds activation memory for long prompts

double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}
}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Length: return "length";
    case FinishReason::Eos: return "eos";
    case FinishReason::Abort: return "abort";
    default: return "";
  }
}

Status Engine::load(const std::string& path, const EngineOptions& opts,
                    const std::function<void(double)>& progress, std::unique_ptr<Engine>* out) {
  if (opts.threads < 1 || opts.threads > 512)
    return make_error(Code::InvalidArgument, "threads must be between 1 and 512 but received " + std::to_string(opts.threads));
  if (opts.n_ctx < 0)
    return make_error(Code::InvalidArgument, "contextSize must be a positive integer but received " + std::to_string(opts.n_ctx));
  std::unique_ptr<GgufFile> f;
  LLMS_RETURN_IF_ERROR(GgufFile::open(path, &f));
  std::unique_ptr<Engine> e(new Engine());
  e->opts_ = opts;
  e->file_ = std::shared_ptr<GgufFile>(std::move(f));
  LLMS_RETURN_IF_ERROR(Model::load(e->file_, &e->model_));
  const ModelConfig& cfg = e->model_->config();
  if (e->opts_.n_ctx == 0) e->opts_.n_ctx = std::max<int64_t>(cfg.n_ctx_train, 1);

  // Touch each weight page once (volatile read) so weights are resident before the first request.
  uint64_t total = 0, done = 0;
  for (auto& t : e->file_->tensors()) total += t.nbytes;
  uint64_t next_report = 0;
  for (auto& t : e->file_->tensors()) {
    volatile uint8_t sink = 0;
    for (uint64_t off = 0; off < t.nbytes; off += 4096) sink ^= t.data[off];
    (void)sink;
    done += t.nbytes;
    if (progress && done >= next_report) {
      progress(total ? (double)done / (double)total : 1.0);
      next_report = done + total / 100;
    }
  }

  KvCacheOptions kvo;
  kvo.n_ctx = e->opts_.n_ctx;
  kvo.f16 = e->opts_.kv_f16;
  LLMS_RETURN_IF_ERROR(KvCache::create(cfg, kvo, &e->kv_));
  e->pool_ = std::make_unique<ThreadPool>(e->opts_.threads);
  if (progress) progress(1.0);
  e->thread_ = std::thread([eng = e.get()] { eng->run(); });
  *out = std::move(e);
  return Status::ok();
}

Engine::~Engine() { shutdown(); }

Status Engine::submit(std::shared_ptr<GenerateRequest> req, int64_t* id) {
  const ModelConfig& cfg = model_->config();
  if (req->prompt.empty())
    return make_error(Code::InvalidArgument, "The prompt is empty; pass at least one token (or text that tokenizes to one).");
  for (int32_t t : req->prompt)
    if (t < 0 || t >= cfg.n_vocab)
      return make_error(Code::InvalidArgument, "Token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                                                   std::to_string(cfg.n_vocab) + ").");
  if ((int64_t)req->prompt.size() >= opts_.n_ctx)
    return make_error(Code::ContextOverflow,
                      "The prompt has " + std::to_string(req->prompt.size()) + " tokens but the context holds " +
                          std::to_string(opts_.n_ctx) + " (and at least one must be generated). Shorten the prompt or load the model with a larger contextSize.");
  LLMS_RETURN_IF_ERROR(validate(req->sampling));
  if (req->max_tokens < 0)
    return make_error(Code::InvalidArgument, "maxTokens must be a non-negative integer but received " + std::to_string(req->max_tokens));
  std::lock_guard<std::mutex> lk(mu_);
  if (stopping_) return make_error(Code::Cancelled, "The model has been disposed; load it again to generate.");
  Job j;
  j.id = next_id_++;
  j.gen = std::move(req);
  j.cancelled = std::make_shared<std::atomic<bool>>(false);
  *id = j.id;
  queue_.push_back(std::move(j));
  cv_.notify_one();
  return Status::ok();
}

Status Engine::submit_eval(std::shared_ptr<EvalRequest> req) {
  const ModelConfig& cfg = model_->config();
  if (req->tokens.empty()) return make_error(Code::InvalidArgument, "evaluate needs at least one token");
  if ((int64_t)req->tokens.size() > opts_.n_ctx)
    return make_error(Code::ContextOverflow, "evaluate got " + std::to_string(req->tokens.size()) +
                                                 " tokens but the context holds " + std::to_string(opts_.n_ctx) + "; load the model with a larger contextSize.");
  for (int32_t t : req->tokens)
    if (t < 0 || t >= cfg.n_vocab)
      return make_error(Code::InvalidArgument, "Token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                                                   std::to_string(cfg.n_vocab) + ").");
  std::lock_guard<std::mutex> lk(mu_);
  if (stopping_) return make_error(Code::Cancelled, "The model has been disposed; load it again.");
  Job j;
  j.id = next_id_++;
  j.eval = std::move(req);
  j.cancelled = std::make_shared<std::atomic<bool>>(false);
  queue_.push_back(std::move(j));
  cv_.notify_one();
  return Status::ok();
}

void Engine::cancel(int64_t id) {
  std::lock_guard<std::mutex> lk(mu_);
  if (current_.id == id && current_.cancelled) current_.cancelled->store(true);
  for (auto& j : queue_)
    if (j.id == id) j.cancelled->store(true);
}

void Engine::shutdown() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    if (current_.cancelled) current_.cancelled->store(true);
    for (auto& j : queue_) j.cancelled->store(true);
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void Engine::run() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping with nothing left
      job = std::move(queue_.front());
      queue_.pop_front();
      current_ = job;
    }
    if (job.gen) {
      run_generate(job.id, *job.gen, *job.cancelled);
    } else if (job.eval) {
      if (job.cancelled->load()) job.eval->on_done(make_error(Code::Cancelled, "cancelled: the model was disposed"), {});
      else run_eval(*job.eval);
    }
    std::lock_guard<std::mutex> lk(mu_);
    current_ = Job{};
  }
}

Status Engine::prefill(const int32_t* tokens, int64_t n, std::vector<float>* last_logits, int64_t* reused,
                       const std::atomic<bool>& cancelled) {
  // Reuse the longest common prefix, but always evaluate at least one token to get logits.
  int64_t common = 0;
  int64_t limit = std::min<int64_t>((int64_t)kv_tokens_.size(), n - 1);
  while (common < limit && kv_tokens_[common] == tokens[common]) ++common;
  kv_->truncate(common);
  kv_tokens_.resize(common);
  *reused = common;
  for (int64_t pos = common; pos < n; pos += kPrefillChunk) {
    if (cancelled.load()) return make_error(Code::Cancelled, "cancelled");
    int64_t m = std::min<int64_t>(kPrefillChunk, n - pos);
    Status s = forward(*model_, *kv_, tokens + pos, m, false, last_logits, *pool_);
    if (!s) {
      kv_->truncate(0);
      kv_tokens_.clear();
      return s;
    }
    kv_tokens_.insert(kv_tokens_.end(), tokens + pos, tokens + pos + m);
  }
  return Status::ok();
}

void Engine::run_generate(int64_t, GenerateRequest& req, const std::atomic<bool>& cancelled) {
  GenEvent fin;
  fin.done = true;
  if (cancelled.load()) {
    fin.finish = FinishReason::Abort;
    req.on_event(std::move(fin));
    return;
  }
  const ModelConfig& cfg = model_->config();
  // The chosen token's logprob costs a full log-softmax per token: only compute it when asked.
  req.sampling.compute_logprob = req.want_logprobs;
  Sampler sampler(req.sampling, (int32_t)cfg.n_vocab);
  for (int32_t t : req.prompt) sampler.accept(t);
  Timings tm;
  tm.prompt_tokens = (int64_t)req.prompt.size();
  std::vector<float> logits;
  double t0 = now_ms();
  Status s = prefill(req.prompt.data(), (int64_t)req.prompt.size(), &logits, &tm.reused_tokens, cancelled);
  double t1 = now_ms();
  tm.prompt_ms = t1 - t0;
  if (!s) {
    if (s.code == Code::Cancelled) fin.finish = FinishReason::Abort;
    else fin.error = s;
    fin.timings = tm;
    req.on_event(std::move(fin));
    return;
  }
  FinishReason reason = FinishReason::Length;
  for (int64_t i = 0; i < req.max_tokens; ++i) {
    if (cancelled.load()) { reason = FinishReason::Abort; break; }
    SampleResult r = sampler.sample(logits.data());
    int32_t tok = r.token;
    sampler.accept(tok);
    if (std::find(req.stop_tokens.begin(), req.stop_tokens.end(), tok) != req.stop_tokens.end()) {
      reason = FinishReason::Eos;  // the end-of-generation token itself is not emitted
      break;
    }
    GenEvent ev;
    ev.tokens.push_back(tok);
    if (req.want_logprobs) ev.logprobs.push_back(std::move(r));
    ++tm.generated_tokens;
    req.on_event(std::move(ev));
    if (i + 1 == req.max_tokens) break;
    if ((int64_t)kv_tokens_.size() >= kv_->n_ctx()) break;  // context full: finish with "length"
    s = forward(*model_, *kv_, &tok, 1, false, &logits, *pool_);
    if (!s) {
      kv_->truncate(0);
      kv_tokens_.clear();
      fin.error = s;
      break;
    }
    kv_tokens_.push_back(tok);
  }
  tm.generate_ms = now_ms() - t1;
  if (fin.error.is_ok()) fin.finish = reason;
  fin.timings = tm;
  req.on_event(std::move(fin));
}

void Engine::run_eval(EvalRequest& req) {
  // A fresh sequence: evaluation never reuses or keeps KV (it is for parity checks).
  kv_->truncate(0);
  kv_tokens_.clear();
  std::vector<float> logits;
  Status s = forward(*model_, *kv_, req.tokens.data(), (int64_t)req.tokens.size(), req.logits_all, &logits, *pool_);
  kv_->truncate(0);
  req.on_done(s, std::move(logits));
}

}  // namespace llmserve
