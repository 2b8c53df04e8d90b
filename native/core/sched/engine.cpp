// Engine lifecycle and the caller-facing API: load, submit, cancel, sessions, stats, shutdown.
// The scheduling step itself is in step.cpp.
#include "engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <unordered_set>

#include "../quant/gemm.h"
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
  if (opts.threads < 1 || opts.threads > 512) return bad("Expected threads in [1, 512] but received " + std::to_string(opts.threads));
  if (opts.n_ctx < 0) return bad("Expected a non-negative integer for contextSize but received " + std::to_string(opts.n_ctx));
  if (opts.kv_tokens < 0) return bad("Expected a non-negative integer for kvCacheTokens but received " + std::to_string(opts.kv_tokens));
  if (opts.block_size < 1 || opts.block_size > 4096) return bad("Expected kvBlockSize in [1, 4096] but received " + std::to_string(opts.block_size));
  if (opts.max_batch_tokens < 1) return bad("Expected a positive integer for maxBatchTokens but received " + std::to_string(opts.max_batch_tokens));
  if (opts.max_sequences < 1) return bad("Expected a positive integer for maxSequences but received " + std::to_string(opts.max_sequences));
  if (opts.max_queue < 1) return bad("Expected a positive integer for maxQueue but received " + std::to_string(opts.max_queue));
  std::unique_ptr<GgufFile> f;
  LLMS_RETURN_IF_ERROR(GgufFile::open(path, &f));
  std::unique_ptr<Engine> e(new Engine());
  e->opts_ = opts;
  e->file_ = std::shared_ptr<GgufFile>(std::move(f));
  LLMS_RETURN_IF_ERROR(Model::load(e->file_, &e->model_));
  const ModelConfig& cfg = e->model_->config();
  if (e->opts_.n_ctx == 0) e->opts_.n_ctx = std::max<int64_t>(cfg.n_ctx_train, 1);
  if (e->opts_.kv_tokens == 0) e->opts_.kv_tokens = e->opts_.n_ctx;

  // Repack the matmul weights (their raw pages are then released; in parallel on the engine's
  // threads), and touch every other weight page once (volatile read) so weights are resident before
  // the first request.
  e->pool_ = std::make_unique<ThreadPool>(e->opts_.threads);
  uint64_t total = 0, next_report = 0;
  for (auto& t : e->file_->tensors()) total += t.nbytes;
  auto report = [&](uint64_t done) {  // calling thread only (progress is not thread-safe)
    if (progress && done >= next_report) {
      progress(total ? (double)done / (double)total : 1.0);
      next_report = done + total / 100;
    }
  };
  std::unordered_set<const uint8_t*> packed;
  std::atomic<uint64_t> done{0};
  if (e->opts_.repack) {
    const ModelWeights& W = e->model_->weights();
    std::vector<const MatrixView*> mats;
    for (const LayerWeights& L : W.layers)
      for (const MatrixView* v : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down}) mats.push_back(v);
    mats.push_back(&W.output);
    std::vector<const MatrixView*> todo;
    std::vector<size_t> offset;
    size_t arena_bytes = 0;
    for (const MatrixView* v : mats) {
      const size_t n = PackedWeights::bytes_for(*v);
      if (n == 0 || !packed.insert(v->data).second) continue;
      todo.push_back(v);
      offset.push_back(arena_bytes);
      arena_bytes += (n + 63) / 64 * 64;
    }
    // One huge-page arena for every packed matrix (per-matrix 2 MiB rounding would waste ~1 MiB each).
    if (!todo.empty()) e->packed_arena_.reset(PackedWeights::alloc_huge(arena_bytes));
    if (!e->packed_arena_) todo.clear(), packed.clear();  // no memory: serve from the mapping
    std::vector<std::unique_ptr<PackedWeights>> made(todo.size());
    e->pool_->parallel_for_chunked(static_cast<int64_t>(todo.size()), [&](int64_t b, int64_t end, int slot) {
      for (int64_t i = b; i < end; ++i) {
        const MatrixView& v = *todo[static_cast<size_t>(i)];
        made[static_cast<size_t>(i)] = PackedWeights::create(v, e->packed_arena_.get() + offset[static_cast<size_t>(i)]);
        const size_t raw = v.row_bytes * static_cast<size_t>(v.n_out);
        // The embedding table is read row by row from the mapping even when the output shares it.
        if (made[static_cast<size_t>(i)] && v.data != W.tok_embd.data) e->file_->release_pages(v.data, raw);
        done += raw;
      }
      if (slot == 0) report(done.load());
    });
    for (size_t i = 0; i < todo.size(); ++i) {
      if (!made[i]) {  // allocation failed: this matrix stays in the mapping
        packed.erase(todo[i]->data);
        continue;
      }
      e->packed_bytes_ += made[i]->bytes();
      e->packed_.push_back(std::move(made[i]));
    }
  }
  for (auto& t : e->file_->tensors()) {
    if (packed.count(t.data)) continue;
    volatile uint8_t sink = 0;
    for (uint64_t off = 0; off < t.nbytes; off += 4096) sink ^= t.data[off];
    (void)sink;
    report(done += t.nbytes);
  }

  KvPoolOptions po;
  po.block_size = e->opts_.block_size;
  po.n_blocks = (e->opts_.kv_tokens + po.block_size - 1) / po.block_size;
  po.type = e->opts_.kv_type;
  LLMS_RETURN_IF_ERROR(KvPool::create(cfg, po, &e->kv_));
  e->alloc_ = std::make_unique<BlockAllocator>(static_cast<int32_t>(po.n_blocks));
  e->st_.blocks_total = po.n_blocks;
  e->st_.block_size = po.block_size;
  e->publish_stats();
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
      return make_error(Code::InvalidArgument, "Token id " + std::to_string(t) + " is outside the vocabulary [0, " + std::to_string(cfg.n_vocab) + ").");
  const int64_t capacity = kv_->n_blocks() * kv_->block_size();
  if ((int64_t)req->prompt.size() >= opts_.n_ctx)
    return make_error(Code::ContextOverflow, "The prompt has " + std::to_string(req->prompt.size()) + " tokens but the context holds " +
                                                 std::to_string(opts_.n_ctx) + " (and at least one must be generated). Shorten the prompt or load the model with a larger contextSize.");
  if ((int64_t)req->prompt.size() >= capacity)
    return make_error(Code::ContextOverflow, "The prompt has " + std::to_string(req->prompt.size()) + " tokens but the KV cache holds " +
                                                 std::to_string(capacity) + " in all. Load the model with a larger kvCacheTokens.");
  // temperature: the range users get from JS (lib/limits.ts = napi/limits.h kTemperature; test_engine.cpp checks this line against it).
  if (!(req->sampling.temperature >= 0.0f && req->sampling.temperature <= 100.0f))
    return make_error(Code::InvalidArgument, "Expected a number in [0, 100] for temperature but received " + std::to_string(req->sampling.temperature));
  LLMS_RETURN_IF_ERROR(validate(req->sampling));
  if (req->max_tokens < 0)
    return make_error(Code::InvalidArgument, "Expected a non-negative integer for maxTokens but received " + std::to_string(req->max_tokens));
  auto s = std::make_unique<Sequence>();
  s->req = std::move(req);
  s->tokens = s->req->prompt;
  s->n_prompt = (int64_t)s->tokens.size();
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
  const ModelConfig& cfg = model_->config();
  if (req->tokens.empty()) return make_error(Code::InvalidArgument, "evaluate needs at least one token");
  if ((int64_t)req->tokens.size() > opts_.n_ctx)
    return make_error(Code::ContextOverflow, "evaluate got " + std::to_string(req->tokens.size()) + " tokens but the context holds " +
                                                 std::to_string(opts_.n_ctx) + "; load the model with a larger contextSize.");
  for (int32_t t : req->tokens)
    if (t < 0 || t >= cfg.n_vocab)
      return make_error(Code::InvalidArgument, "Token id " + std::to_string(t) + " is outside the vocabulary [0, " + std::to_string(cfg.n_vocab) + ").");
  std::lock_guard<std::mutex> lk(mu_);
  if (stopping_) return make_error(Code::Disposed, "The model has been disposed; load it again.");
  eval_inbox_.push_back(std::move(req));
  cv_.notify_one();
  return Status::ok();
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
  std::lock_guard<std::mutex> lk(mu_);
  return published_;
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
  // Tokens stored in used blocks: a block shared by several sequences (prefix cache) counts once,
  // with the most slots any holder has filled.
  const int64_t bs = kv_->block_size();
  if (block_fill_.size() != (size_t)kv_->n_blocks()) block_fill_.assign((size_t)kv_->n_blocks(), 0);
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

void Engine::run_eval(EvalRequest& req) {
  // A fresh single sequence in a private cache: evaluation never touches the serving pool.
  if (!eval_kv_) {
    KvCacheOptions o;
    o.n_ctx = opts_.n_ctx;
    o.type = opts_.kv_type;
    Status s = KvCache::create(model_->config(), o, &eval_kv_);
    if (!s) { req.on_done(s, {}); return; }
  }
  eval_kv_->truncate(0);
  std::vector<float> logits;
  Status s = forward(*model_, *eval_kv_, req.tokens.data(), (int64_t)req.tokens.size(), req.logits_all, &logits, *pool_);
  eval_kv_->truncate(0);
  req.on_done(s, std::move(logits));
}

void Engine::run() {
  bool progress = true;
  for (;;) {
    std::vector<std::shared_ptr<EvalRequest>> evals;
    bool stopping;
    {
      std::unique_lock<std::mutex> lk(mu_);
      const bool idle = running_.empty() && waiting_.empty();
      if (idle || !progress) {
        cv_.wait(lk, [&] {
          return stopping_ || !inbox_.empty() || !eval_inbox_.empty() || !cancel_inbox_.empty() || !end_session_inbox_.empty() ||
                 (progress && !(running_.empty() && waiting_.empty()));
        });
      }
      stopping = stopping_;
      evals.swap(eval_inbox_);
    }
    for (auto& e : evals) {
      if (stopping) e->on_done(make_error(Code::Cancelled, "cancelled: the model was disposed"), {});
      else run_eval(*e);
    }
    drain_inbox();
    progress = step();
    if (stopping && running_.empty() && waiting_.empty()) {
      std::lock_guard<std::mutex> lk(mu_);
      if (inbox_.empty()) break;
    }
  }
  for (auto& [id, ss] : sessions_)
    for (int32_t b : ss->blocks) alloc_->unref(b);
  sessions_.clear();
  publish_stats();
}

}  // namespace llmserve
