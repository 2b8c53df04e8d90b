// Engine lifecycle and the caller-facing API: load, submit, cancel, sessions, stats, shutdown.
// The scheduling step itself is in step.cpp.
#include "engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>

#include "sequence.h"

namespace llmserve {

double engine_now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Length: return "length";
    case FinishReason::Eos: return "eos";
    case FinishReason::Abort: return "abort";
    default: return "";
  }
}

Status Engine::load(const std::string& path, const EngineOptions& opts, const std::function<void(double)>& progress,
                    std::unique_ptr<Engine>* out) {
  auto bad = [](const std::string& m) { return make_error(Code::InvalidArgument, m); };
  if (opts.threads < 1 || opts.threads > 512)
    return bad("Expected threads in [1, 512] but received " + std::to_string(opts.threads));
  if (opts.n_ctx < 0)
    return bad("Expected a non-negative integer for contextSize but received " + std::to_string(opts.n_ctx));
  if (opts.kv_tokens < 0)
    return bad("Expected a non-negative integer for kvCacheTokens but received " + std::to_string(opts.kv_tokens));
  if (opts.local_kv_tokens < -1)
    return bad("Expected -1, 0 or a positive token count for the local KV pool but received " +
               std::to_string(opts.local_kv_tokens));
  if (opts.block_size < 1 || opts.block_size > 4096)
    return bad("Expected kvBlockSize in [1, 4096] but received " + std::to_string(opts.block_size));
  if (opts.max_batch_tokens < 1)
    return bad("Expected a positive integer for maxBatchTokens but received " + std::to_string(opts.max_batch_tokens));
  if (!(opts.target_step_ms >= 0 && opts.target_step_ms <= 60000))
    return bad("Expected targetStepMs in [0, 60000] (0 = off) but received " + std::to_string(opts.target_step_ms));
  if (opts.fixed_bucket < 0 || opts.fixed_bucket > (1 << 20))
    return bad("Expected fixedBucket in [0, 1048576] (0 = the longest prompt) but received " +
               std::to_string(opts.fixed_bucket));
  if (opts.fixed_batching && opts.static_batching)
    return bad("Static and fixed batching exclude each other; choose one batching mode.");
  if (opts.max_sequences < 1)
    return bad("Expected a positive integer for maxSequences but received " + std::to_string(opts.max_sequences));
  if (opts.max_queue < 1)
    return bad("Expected a positive integer for maxQueue but received " + std::to_string(opts.max_queue));
  ExecutorOptions xo;
  xo.threads = opts.threads;
  xo.n_ctx = opts.n_ctx;
  xo.kv_tokens = opts.kv_tokens;
  xo.local_kv_tokens = opts.local_kv_tokens;
  xo.max_sequences = opts.max_sequences;
  xo.max_batch_tokens = opts.max_batch_tokens;
  xo.block_size = opts.block_size;
  xo.kv_type = opts.kv_type;
  xo.repack = opts.repack;
  xo.adapter_storage = opts.adapter_storage;
  std::unique_ptr<Executor> x;
  LLMS_RETURN_IF_ERROR(load_executor(path, xo, progress, &x));
  return create(std::move(x), opts, out);
}

Status Engine::create(std::unique_ptr<Executor> executor, const EngineOptions& opts, std::unique_ptr<Engine>* out) {
  if (!executor) return make_error(Code::InvalidArgument, "Engine::create: no executor");
  std::unique_ptr<Engine> e(new Engine());
  e->opts_ = opts;
  e->executor_ = std::move(executor);
  e->kv_ = e->executor_->kv_layout();
  e->opts_.n_ctx = e->executor_->n_ctx();
  if (e->opts_.kv_tokens == 0) e->opts_.kv_tokens = e->opts_.n_ctx;
  e->alloc_ = std::make_unique<BlockAllocator>(static_cast<int32_t>(e->kv_.n_blocks));
  if (e->kv_.local_n_blocks > 0) {
    e->lalloc_ = std::make_unique<BlockAllocator>(static_cast<int32_t>(e->kv_.local_n_blocks));
    e->window_ = std::max<int64_t>(e->executor_->config().n_swa, 1);
    e->st_.local_blocks_total = e->kv_.local_n_blocks;
  }
  e->st_.kv_bytes_global = (int64_t)e->kv_.global_bytes;
  e->st_.kv_bytes_local = (int64_t)e->kv_.local_bytes;
  e->st_.blocks_total = e->kv_.n_blocks;
  e->st_.block_size = e->kv_.block_size;
  e->publish_stats();
  e->thread_ = std::thread([eng = e.get()] { eng->run(); });
  *out = std::move(e);
  return Status::ok();
}

Engine::~Engine() { shutdown(); }

Status Engine::submit(std::shared_ptr<GenerateRequest> req, int64_t* id) {
  const ModelConfig& cfg = executor_->config();
  if (req->prompt.empty())
    return make_error(Code::InvalidArgument,
                      "The prompt is empty; pass at least one token (or text that tokenizes to one).");
  for (int32_t t : req->prompt)
    if (t < 0 || t >= cfg.n_vocab)
      return make_error(Code::InvalidArgument, "Token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                                                   std::to_string(cfg.n_vocab) + ").");
  const int64_t capacity = kv_.n_blocks * kv_.block_size;
  if ((int64_t)req->prompt.size() >= opts_.n_ctx)
    return make_error(
        Code::ContextOverflow,
        "The prompt has " + std::to_string(req->prompt.size()) + " tokens but the context holds " +
            std::to_string(opts_.n_ctx) +
            " (and at least one must be generated). Shorten the prompt or load the model with a larger contextSize.");
  if ((int64_t)req->prompt.size() >= capacity)
    return make_error(Code::ContextOverflow, "The prompt has " + std::to_string(req->prompt.size()) +
                                                 " tokens but the KV cache holds " + std::to_string(capacity) +
                                                 " in all. Load the model with a larger kvCacheTokens.");
  // temperature: the range users get from JS (lib/limits.ts = napi/limits.h kTemperature; test_engine.cpp checks this line against it).
  if (!(req->sampling.temperature >= 0.0f && req->sampling.temperature <= 100.0f))
    return make_error(Code::InvalidArgument, "Expected a number in [0, 100] for temperature but received " +
                                                 std::to_string(req->sampling.temperature));
  LLMS_RETURN_IF_ERROR(validate(req->sampling));
  for (const auto& [t, bias] : req->sampling.logit_bias)
    if (t >= cfg.n_vocab)
      return make_error(Code::InvalidArgument, "Token id " + std::to_string(t) +
                                                   " in logitBias is outside the vocabulary [0, " +
                                                   std::to_string(cfg.n_vocab) + ").");
  if (req->grammar) {
    std::lock_guard<std::mutex> lk(mu_);
    if (!has_grammar_vocab_)
      return make_error(Code::InvalidArgument,
                        "A grammar needs the vocabulary's token bytes: call set_grammar_vocab first.");
  }
  if (req->max_tokens < 0)
    return make_error(Code::InvalidArgument,
                      "Expected a non-negative integer for maxTokens but received " + std::to_string(req->max_tokens));
  auto s = std::make_unique<Sequence>();
  if (req->adapter != 0) LLMS_RETURN_IF_ERROR(hold_adapter(req->adapter, &s->adapter));
  s->req = std::move(req);
  s->tokens = s->req->prompt;
  s->n_prompt = (int64_t)s->tokens.size();
  s->tiled = prompt_tiled(s->n_prompt);
  s->t_submit = engine_now_ms();
  std::lock_guard<std::mutex> lk(mu_);
  if (stopping_) return make_error(Code::Disposed, "The model has been disposed; load it again.");
  if (queued_ >= opts_.max_queue)
    return make_error(Code::QueueFull, "The request queue is full (" + std::to_string(opts_.max_queue) +
                                           " waiting). Retry later or raise maxQueue.");
  s->id = next_id_++;
  s->arrival = arrival_++;
  *id = s->id;
  ++queued_;
  inbox_.push_back(std::move(s));
  cv_.notify_one();
  return Status::ok();
}

Status Engine::submit_eval(std::shared_ptr<EvalRequest> req) {
  std::vector<std::shared_ptr<EvalRequest>> one{std::move(req)};
  return submit_evals(std::move(one));
}

Status Engine::submit_evals(std::vector<std::shared_ptr<EvalRequest>> reqs) {
  const ModelConfig& cfg = executor_->config();
  for (auto& req : reqs) {
    if (req->tokens.empty()) return make_error(Code::InvalidArgument, "evaluate needs at least one token");
    if ((int64_t)req->tokens.size() > opts_.n_ctx)
      return make_error(Code::ContextOverflow, "evaluate got " + std::to_string(req->tokens.size()) +
                                                   " tokens but the context holds " + std::to_string(opts_.n_ctx) +
                                                   "; load the model with a larger contextSize.");
    if (req->logits_from < 0 || req->logits_from >= (int64_t)req->tokens.size() || req->n_batch < 0)
      return make_error(Code::InvalidArgument, "evaluate: logits_from must lie in [0, " +
                                                   std::to_string(req->tokens.size()) + ") and n_batch be >= 0");
    for (int32_t t : req->tokens)
      if (t < 0 || t >= cfg.n_vocab)
        return make_error(Code::InvalidArgument, "Token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                                                     std::to_string(cfg.n_vocab) + ").");
    if (req->adapter != 0) {
      std::shared_ptr<AdapterLease> hold;
      LLMS_RETURN_IF_ERROR(hold_adapter(req->adapter, &hold));
      req->adapter_hold = std::move(hold);
    }
  }
  std::lock_guard<std::mutex> lk(mu_);
  if (stopping_) return make_error(Code::Disposed, "The model has been disposed; load it again.");
  for (auto& req : reqs) eval_inbox_.push_back(std::move(req));
  cv_.notify_one();
  return Status::ok();
}

Status Engine::hold_adapter(uint64_t id, std::shared_ptr<AdapterLease>* out) {
  std::lock_guard<std::mutex> lk(adapters_mu_);
  auto it = adapters_.find(id);
  if (it == adapters_.end())
    return make_error(Code::AdapterNotFound,
                      "No LoRA adapter is loaded with id " + std::to_string(id) + "; load it first.");
  *out = it->second;
  return Status::ok();
}

Status Engine::load_adapter(uint64_t id, const std::string& path, float scale) {
  if (id == 0) return make_error(Code::InvalidArgument, "adapter id 0 is the base model; use an id >= 1");
  {
    std::lock_guard<std::mutex> lk(adapters_mu_);
    if (!adapter_ids_used_.insert(id).second)
      return make_error(Code::InvalidArgument,
                        "adapter id " + std::to_string(id) + " was already used by this model; ids are never reused");
  }
  // The file is read and checked outside the lock: submits and steps go on meanwhile.
  Status st = executor_->load_adapter(id, path, scale);
  std::lock_guard<std::mutex> lk(adapters_mu_);
  if (!st) {
    adapter_ids_used_.erase(id);  // nothing was loaded under it
    return st;
  }
  adapters_[id] = std::make_shared<AdapterLease>(executor_.get(), id);
  return Status::ok();
}

Status Engine::unload_adapter(uint64_t id) {
  std::shared_ptr<AdapterLease> lease;  // released after the lock: may unload from the executor
  std::lock_guard<std::mutex> lk(adapters_mu_);
  auto it = adapters_.find(id);
  if (it == adapters_.end())
    return make_error(Code::AdapterNotFound, "No LoRA adapter is loaded with id " + std::to_string(id) + ".");
  lease = std::move(it->second);
  adapters_.erase(it);
  return Status::ok();
}

std::vector<uint64_t> Engine::adapter_ids() {
  std::lock_guard<std::mutex> lk(adapters_mu_);
  std::vector<uint64_t> ids;
  for (auto& [id, lease] : adapters_) ids.push_back(id);
  return ids;
}

void Engine::cancel(int64_t id) {
  std::lock_guard<std::mutex> lk(mu_);
  cancel_inbox_.push_back(id);
  cv_.notify_one();
}

void Engine::end_session(int64_t session) {
  std::lock_guard<std::mutex> lk(mu_);
  end_session_inbox_.push_back(session);
  cv_.notify_one();
}

EngineStats Engine::stats() {
  EngineStats s;
  {
    std::lock_guard<std::mutex> lk(mu_);
    s = published_;
  }
  {
    std::lock_guard<std::mutex> lk(adapters_mu_);
    s.adapters = (int64_t)adapters_.size();
  }
  s.adapter_bytes = (int64_t)executor_->adapter_bytes();
  return s;
}

void Engine::publish_stats() {
  st_.running = (int64_t)running_.size();
  st_.waiting = (int64_t)waiting_.size();
  st_.sessions = (int64_t)sessions_.size();
  st_.blocks_used = alloc_->n_used();
  st_.blocks_cached = alloc_->n_cached();
  st_.blocks_free = alloc_->n_free();
  st_.prefix_lookups = alloc_->stats().lookups;
  st_.prefix_hits = alloc_->stats().hits;
  if (lalloc_) {
    st_.local_blocks_used = lalloc_->n_used();
    st_.local_blocks_cached = lalloc_->n_cached();
    st_.local_blocks_free = lalloc_->n_free();
  }
  // Tokens stored in used blocks: a block shared by several sequences (prefix cache) counts once,
  // with the most slots any holder has filled.
  const int64_t bs = kv_.block_size;
  if (block_fill_.size() != (size_t)kv_.n_blocks) block_fill_.assign((size_t)kv_.n_blocks, 0);
  touched_.clear();
  auto note = [&](const std::vector<int32_t>& blocks, int64_t n_computed) {
    for (size_t i = 0; i < blocks.size(); ++i) {
      const int32_t filled = (int32_t)std::clamp<int64_t>(n_computed - (int64_t)i * bs, 0, bs);
      int32_t& f = block_fill_[(size_t)blocks[i]];
      if (f == 0) touched_.push_back(blocks[i]);
      f = std::max(f, filled);
    }
  };
  for (auto& s : running_) note(s->blocks, s->n_computed);
  for (auto& [id, ss] : sessions_) note(ss->blocks, ss->n_computed);
  int64_t held = 0;
  for (int32_t b : touched_) {
    held += block_fill_[(size_t)b];
    block_fill_[(size_t)b] = 0;
  }
  st_.kv_tokens_held = held;
  std::lock_guard<std::mutex> lk(mu_);
  published_ = st_;
}

void Engine::shutdown() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void Engine::run_eval_pass() {
  if (evals_.empty()) return;
  auto packable = [](const EvalRequest& r) {
    const int64_t n = (int64_t)r.tokens.size();
    return r.n_batch == 0 && (r.logits_from == 0 || r.logits_from == n - 1) && r.adapter == 0;
  };
  std::shared_ptr<EvalRequest> front = evals_.front();
  if (!packable(*front)) {
    evals_.pop_front();
    std::vector<float> rows;
    Status s = executor_->evaluate(front->tokens.data(), (int64_t)front->tokens.size(), front->logits_from,
                                   front->n_batch, &rows, front->hidden, front->adapter);
    front->adapter_hold.reset();
    ++st_.eval_sequences;
    ++st_.eval_passes;
    publish_stats();  // stats first, then the result (as step() does with events)
    front->on_done(s, std::move(rows));
    return;
  }
  // First fit in arrival order: the front always goes, then every pending request of its kind
  // that still fits the pass's token budget.
  std::vector<std::shared_ptr<EvalRequest>> group;
  std::vector<Executor::EvalSeq> seqs;
  int64_t n_tok = 0;
  for (auto it = evals_.begin(); it != evals_.end();) {
    EvalRequest& r = **it;
    const int64_t n = (int64_t)r.tokens.size();
    if (packable(r) && r.hidden == front->hidden && (group.empty() || n_tok + n <= opts_.max_batch_tokens)) {
      seqs.push_back({r.tokens.data(), n, r.logits_from == 0 && n > 1});
      n_tok += n;
      group.push_back(std::move(*it));
      it = evals_.erase(it);
    } else {
      ++it;
    }
  }
  std::vector<float> rows;
  int64_t passes = 0;
  Status s = executor_->evaluate_batch(seqs.data(), (int64_t)seqs.size(), front->hidden, opts_.max_batch_tokens, &rows,
                                       &passes);
  st_.eval_sequences += (int64_t)group.size();
  st_.eval_passes += passes;
  publish_stats();
  const size_t width = (size_t)(front->hidden ? executor_->config().n_embd : executor_->config().n_vocab);
  size_t at = 0;
  for (size_t i = 0; i < group.size(); ++i) {
    std::vector<float> mine;
    Status si = s;
    if (s.is_ok()) {
      const size_t n = (size_t)(seqs[i].all_rows ? seqs[i].n : 1) * width;
      try {
        mine.assign(rows.begin() + (std::ptrdiff_t)at, rows.begin() + (std::ptrdiff_t)(at + n));
      } catch (const std::bad_alloc&) { si = make_error(Code::OutOfMemory, "evaluate: could not allocate rows"); }
      at += n;
    }
    group[i]->on_done(si, std::move(mine));
  }
}

void Engine::run() {
  bool progress = true;
  for (;;) {
    bool stopping;
    {
      std::unique_lock<std::mutex> lk(mu_);
      const bool idle = running_.empty() && waiting_.empty();
      if ((idle || !progress) && evals_.empty()) {
        cv_.wait(lk, [&] {
          return stopping_ || !inbox_.empty() || !eval_inbox_.empty() || !cancel_inbox_.empty() ||
                 !end_session_inbox_.empty() || (progress && !(running_.empty() && waiting_.empty()));
        });
      }
      stopping = stopping_;
      for (auto& e : eval_inbox_) evals_.push_back(std::move(e));
      eval_inbox_.clear();
    }
    if (stopping) {
      for (auto& e : evals_) e->on_done(make_error(Code::Cancelled, "cancelled: the model was disposed"), {});
      evals_.clear();
    }
    // One evaluation pass between generation steps: a bulk embedding job and decode share the
    // engine instead of one waiting for the other to finish.
    run_eval_pass();
    drain_inbox();
    progress = step();
    if (stopping && running_.empty() && waiting_.empty()) {
      std::lock_guard<std::mutex> lk(mu_);
      if (inbox_.empty()) break;
    }
  }
  for (auto& [id, ss] : sessions_) drop_tables(ss->blocks, ss->lblocks);
  sessions_.clear();
  publish_stats();
}

Status Engine::set_grammar_vocab(std::vector<std::string> pieces) {
  if ((int64_t)pieces.size() != executor_->config().n_vocab)
    return make_error(Code::InvalidArgument, "The grammar vocabulary has " + std::to_string(pieces.size()) +
                                                 " tokens but the model has " +
                                                 std::to_string(executor_->config().n_vocab) + ".");
  std::lock_guard<std::mutex> lk(mu_);
  if (has_grammar_vocab_) return Status::ok();  // once per model: the vocabulary never changes
  grammar_pieces_ = std::move(pieces);
  has_grammar_vocab_ = true;
  return Status::ok();
}

}  // namespace llmserve
