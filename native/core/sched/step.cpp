// Engine::step(): one scheduling round and one forward pass over a flattened batch.
#include <algorithm>

#include "sequence.h"

namespace llmserve {

// Waiting and scheduling order: higher priority first, then arrival (FCFS).
static bool ranks_before(const Engine::Sequence& a, const Engine::Sequence& b) {
  if (a.req->priority != b.req->priority) return a.req->priority > b.req->priority;
  return a.arrival < b.arrival;
}

void Engine::drain_inbox() {
  std::vector<std::unique_ptr<Sequence>> fresh;
  std::vector<int64_t> cancels, ends;
  bool stopping;
  {
    std::lock_guard<std::mutex> lk(mu_);
    fresh.swap(inbox_);
    cancels.swap(cancel_inbox_);
    ends.swap(end_session_inbox_);
    stopping = stopping_;
  }
  for (auto& s : fresh) {
    // The chosen token's logprob costs a full log-softmax per token: only compute it when asked.
    s->req->sampling.compute_logprob = s->req->want_logprobs;
    s->sampler = std::make_unique<Sampler>(s->req->sampling, (int32_t)model_->config().n_vocab);
    for (int32_t t : s->tokens) s->sampler->accept(t);
    auto it = std::upper_bound(waiting_.begin(), waiting_.end(), s,
                               [](const std::unique_ptr<Sequence>& a, const std::unique_ptr<Sequence>& b) { return ranks_before(*a, *b); });
    waiting_.insert(it, std::move(s));
    ++st_.requests;
  }
  auto mark = [&](int64_t id) {
    for (auto& s : waiting_) if (s->id == id) s->cancelled = true;
    for (auto& s : running_) if (s->id == id) s->cancelled = true;
  };
  for (int64_t id : cancels) mark(id);
  if (stopping) {
    for (auto& s : waiting_) s->cancelled = true;
    for (auto& s : running_) s->cancelled = true;
  }
  for (int64_t sid : ends) {
    auto it = sessions_.find(sid);
    if (it == sessions_.end()) continue;
    for (int32_t b : it->second->blocks) alloc_->unref(b);
    sessions_.erase(it);
  }
}

void Engine::release_blocks(Sequence& s) {
  for (int32_t b : s.blocks) alloc_->unref(b);
  s.blocks.clear();
  s.n_computed = 0;
  s.n_registered = 0;
  s.last_key = 0;
}

bool Engine::evict_one_session() {
  auto victim = sessions_.end();
  for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
    if (it->second->pinned) continue;
    if (victim == sessions_.end() || it->second->last_used < victim->second->last_used) victim = it;
  }
  if (victim == sessions_.end()) return false;
  for (int32_t b : victim->second->blocks) alloc_->unref(b);
  sessions_.erase(victim);
  ++st_.session_evictions;
  return true;
}

void Engine::preempt(Sequence& s) {
  // Recompute later: the sequence keeps its tokens (prompt + what it generated so far) and its
  // sampler state; only its KV goes. Its user just waits.
  release_blocks(s);
  ++st_.preemptions;
  for (auto it = running_.begin(); it != running_.end(); ++it) {
    if (it->get() != &s) continue;
    std::unique_ptr<Sequence> owned = std::move(*it);
    running_.erase(it);
    auto pos = std::upper_bound(waiting_.begin(), waiting_.end(), owned,
                                [](const std::unique_ptr<Sequence>& a, const std::unique_ptr<Sequence>& b) { return ranks_before(*a, *b); });
    waiting_.insert(pos, std::move(owned));
    return;
  }
}

// Grows s's block table to hold n_tokens more positions. Frees memory by evicting idle sessions,
// then by preempting the lowest-ranked running sequences after s in `order` (never one already in
// this step's batch). Returns false if s cannot run this step.
bool Engine::ensure_blocks(Sequence& s, int64_t n_tokens, std::vector<Sequence*>& order, size_t self_index) {
  const int64_t bs = kv_->block_size();
  const int64_t need = (s.n_computed + n_tokens + bs - 1) / bs - (int64_t)s.blocks.size();
  for (int64_t k = 0; k < need; ++k) {
    int32_t b = alloc_->allocate();
    while (b < 0) {
      if (evict_one_session()) {
      } else if (order.size() > self_index + 1) {
        Sequence* victim = order.back();
        order.pop_back();
        preempt(*victim);
      } else {
        return false;
      }
      b = alloc_->allocate();
    }
    s.blocks.push_back(b);
  }
  return true;
}

bool Engine::admit(Sequence& s) {
  const int64_t bs = kv_->block_size();
  const uint64_t adapter = s.req->adapter;
  // A session's previous turn: adopt its KV if this prompt extends what it holds.
  if (s.req->session != 0) {
    auto it = sessions_.find(s.req->session);
    if (it != sessions_.end()) {
      Session& ss = *it->second;
      const bool extends = (int64_t)s.tokens.size() > ss.n_computed &&
                           std::equal(ss.tokens.begin(), ss.tokens.begin() + ss.n_computed, s.tokens.begin());
      if (extends) {
        s.blocks = std::move(ss.blocks);
        s.n_computed = ss.n_computed;
        s.n_registered = ss.n_registered;
        s.last_key = ss.last_key;
      } else {
        for (int32_t b : ss.blocks) alloc_->unref(b);
      }
      sessions_.erase(it);
    }
  }
  // Prefix cache: reuse every leading full block already computed by anyone (refcount, no copy).
  // The block holding the last token is never reused: its logits are needed.
  if (opts_.prefix_cache && s.blocks.empty()) {
    const int64_t max_full = ((int64_t)s.tokens.size() - 1) / bs;
    uint64_t key = 0;
    for (int64_t i = 0; i < max_full; ++i) {
      key = BlockAllocator::hash_block(key, s.tokens.data() + i * bs, (int32_t)bs, adapter);
      const int32_t b = alloc_->lookup(key);
      if (b < 0) break;
      alloc_->ref(b);
      s.blocks.push_back(b);
      s.n_computed += bs;
      s.n_registered = i + 1;
      s.last_key = key;
    }
  }
  // The partial last block of a kept sequence (a pinned prefix or an idle session) that this prompt
  // extends: copy it (copy-on-write) rather than recompute up to block_size - 1 tokens. Its full
  // blocks were matched above; identical tokens give bit-identical K/V (batch invariance).
  if (opts_.prefix_cache && s.n_computed % bs == 0) {
    for (auto& [sid, ssp] : sessions_) {
      const Session& ss = *ssp;
      const int64_t full = ss.n_computed / bs;
      if (full * bs != s.n_computed || ss.n_computed == s.n_computed || ss.n_computed >= (int64_t)s.tokens.size()) continue;
      if (!std::equal(ss.tokens.begin(), ss.tokens.begin() + ss.n_computed, s.tokens.begin())) continue;
      const int32_t b = alloc_->allocate();
      if (b < 0) break;
      kv_->copy_block(ss.blocks[(size_t)full], b, ss.n_computed - full * bs);
      s.blocks.push_back(b);
      s.n_computed = ss.n_computed;
      break;
    }
  }
  s.tm.reused_tokens = std::max(s.tm.reused_tokens, s.n_computed);
  return true;
}

void Engine::register_full_blocks(Sequence& s) {
  if (!opts_.prefix_cache) return;
  const int64_t bs = kv_->block_size();
  while ((s.n_registered + 1) * bs <= s.n_computed) {
    const int64_t i = s.n_registered;
    const uint64_t key = BlockAllocator::hash_block(s.last_key, s.tokens.data() + i * bs, (int32_t)bs, s.req->adapter);
    const int32_t b = s.blocks[(size_t)i];
    if (!alloc_->registered(b)) alloc_->register_block(b, key);  // false if another block holds it: fine
    s.last_key = key;
    s.n_registered = i + 1;
  }
}

void Engine::finish(Sequence& s, FinishReason r, Status error) {
  const double now = engine_now_ms();
  GenEvent fin;
  fin.done = true;
  fin.error = error;
  fin.finish = error.is_ok() ? r : FinishReason::None;
  s.tm.generated_tokens = s.n_generated;
  if (s.t_first_token >= 0) s.tm.generate_ms = now - s.t_first_token;
  else if (s.t_first_step >= 0) s.tm.prompt_ms = now - s.t_first_step;
  fin.timings = s.tm;
  if (!error.is_ok()) ++st_.errors;
  else if (r == FinishReason::Abort) ++st_.aborted;
  else ++st_.finished;
  // A session keeps its KV for the next turn (an aborted or failed turn leaves nothing behind).
  if (s.req->session != 0 && error.is_ok() && r != FinishReason::Abort && !s.blocks.empty()) {
    auto ss = std::make_unique<Session>();
    ss->tokens = s.tokens;
    ss->n_computed = s.n_computed;
    ss->blocks = std::move(s.blocks);
    ss->n_registered = s.n_registered;
    ss->last_key = s.last_key;
    ss->pinned = s.req->pin;
    ss->last_used = ++session_clock_;
    auto old = sessions_.find(s.req->session);
    if (old != sessions_.end()) for (int32_t b : old->second->blocks) alloc_->unref(b);
    sessions_[s.req->session] = std::move(ss);
    s.blocks.clear();
  } else {
    release_blocks(s);
  }
  s.done = true;
  outbox_.emplace_back(s.req, std::move(fin));
}

bool Engine::step() {
  const bool progress = schedule_and_run();
  // Stats first, then events: whoever sees an event also sees the stats that include it.
  publish_stats();
  for (auto& [req, ev] : outbox_) req->on_event(std::move(ev));
  outbox_.clear();
  return progress;
}

bool Engine::schedule_and_run() {
  // Cancelled requests leave at once (waiting ones too), with their final event.
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if ((*it)->cancelled) {
      finish(**it, FinishReason::Abort);
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& s : running_) if (s->cancelled) finish(*s, FinishReason::Abort);
  running_.remove_if([](const std::unique_ptr<Sequence>& s) { return s->done; });
  {
    std::lock_guard<std::mutex> lk(mu_);
    queued_ = (int64_t)waiting_.size() + (int64_t)inbox_.size();
  }

  const double now = engine_now_ms();
  const int64_t ctx_limit = std::min<int64_t>(opts_.n_ctx, kv_->n_blocks() * kv_->block_size());
  int64_t budget = opts_.max_batch_tokens;
  // Prompt tokens this step may take: capped while anything is generating (see EngineOptions).
  int64_t prefill_left = INT64_MAX;
  if (opts_.prefill_chunk > 0 && !opts_.static_batching) {
    for (auto& s : running_)
      if ((int64_t)s->tokens.size() - s->n_computed <= 1) { prefill_left = opts_.prefill_chunk; break; }
  }
  struct Pick { Sequence* s; int64_t chunk; bool out; };
  std::vector<Pick> picks;

  // 1. Running sequences, highest rank first: a decode token or the next prompt chunk each.
  std::vector<Sequence*> order;
  for (auto& s : running_) order.push_back(s.get());
  std::sort(order.begin(), order.end(), [](Sequence* a, Sequence* b) { return ranks_before(*a, *b); });
  for (size_t i = 0; i < order.size() && budget > 0; ++i) {
    Sequence& s = *order[i];
    const int64_t pending = (int64_t)s.tokens.size() - s.n_computed;
    const int64_t chunk = pending > 1 ? std::min({pending, budget, prefill_left}) : std::min(pending, budget);
    if (chunk <= 0) continue;  // a prompt waiting for the next step's prefill budget
    if (!ensure_blocks(s, chunk, order, i)) {
      if (i == 0 && picks.empty()) {  // alone and still no room: pinned prefixes hold the memory
        finish(s, FinishReason::None, make_error(Code::KvExhausted, "The KV cache is full (pinned prefixes hold " +
                    std::to_string(alloc_->n_used()) + " blocks). Release pinned prefixes or load with a larger kvCacheTokens."));
      } else {
        preempt(s);
      }
      order.resize(i);  // everything after s was already preempted or is s
      break;
    }
    picks.push_back({&s, chunk, chunk == pending});
    budget -= chunk;
    if (pending > 1) prefill_left -= chunk;
  }

  // Sequences that failed above (KvExhausted) leave now, so admission sees their slots and the
  // "nothing runs" case (else a waiting request could stall with no step left to run it; found by
  // fuzz_engine).
  running_.remove_if([](const std::unique_ptr<Sequence>& s) { return s->done; });

  // 2. Admission (priority, then FCFS) while budget, sequence slots and memory allow.
  // Static batching (a benchmark baseline) forms its whole batch at once, up to max_sequences, even
  // past this step's token budget; later prompt chunks run in the following steps.
  const bool may_admit = !opts_.static_batching || running_.empty();
  const bool batch_running = !running_.empty();
  while (may_admit && (budget > 0 || opts_.static_batching) && prefill_left > 0 && !waiting_.empty() &&
         (int64_t)running_.size() < opts_.max_sequences) {
    Sequence& s = *waiting_.front();
    admit(s);
    const int64_t pending = (int64_t)s.tokens.size() - s.n_computed;
    const int64_t chunk = pending > 1 ? std::min({pending, budget, prefill_left}) : std::min(pending, budget);
    std::vector<Sequence*> none;
    if (!ensure_blocks(s, chunk, none, 0)) {
      release_blocks(s);  // head-of-line waits for memory (FCFS)
      if (running_.empty() && picks.empty()) {
        // Nothing runs and nothing can be evicted: only pinned prefixes hold the memory.
        finish(s, FinishReason::None, make_error(Code::KvExhausted, "The KV cache is full: pinned prefixes hold " +
                    std::to_string(alloc_->n_used()) + " of " + std::to_string(alloc_->n_blocks()) +
                    " blocks. Release pinned prefixes or load the model with a larger kvCacheTokens."));
        waiting_.pop_front();
        continue;
      }
      break;
    }
    if (s.t_first_step < 0) s.t_first_step = now, s.tm.queue_ms = now - s.t_submit;
    if (batch_running) ++st_.joined_running;
    if (chunk > 0) picks.push_back({&s, chunk, chunk == pending});
    budget -= chunk;
    if (pending > 1 && prefill_left != INT64_MAX) prefill_left -= chunk;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
  running_.remove_if([](const std::unique_ptr<Sequence>& s) { return s->done; });
  if (picks.empty()) return false;

  // 3. One forward pass over the flattened batch.
  std::vector<int32_t> tokens;
  std::vector<BatchSeq> seqs;
  tokens.reserve((size_t)(opts_.max_batch_tokens - budget));
  for (auto& p : picks) {
    Sequence& s = *p.s;
    tokens.insert(tokens.end(), s.tokens.begin() + s.n_computed, s.tokens.begin() + s.n_computed + p.chunk);
    BatchSeq b;
    b.blocks = s.blocks.data();
    b.n_blocks = (int64_t)s.blocks.size();
    b.pos0 = s.n_computed;
    b.n_tokens = p.chunk;
    b.out = p.out ? 1 : 0;
    seqs.push_back(b);
    if (s.n_computed < s.n_prompt) st_.prefill_tokens += std::min(p.chunk, s.n_prompt - s.n_computed);
  }
  ++st_.steps;
  st_.batch_tokens += (int64_t)tokens.size();
  st_.batch_seqs += (int64_t)picks.size();
  st_.max_batch_tokens_seen = std::max<int64_t>(st_.max_batch_tokens_seen, (int64_t)tokens.size());
  st_.max_batch_seqs_seen = std::max<int64_t>(st_.max_batch_seqs_seen, (int64_t)picks.size());
  Status fs = forward_batch(*model_, *kv_, tokens.data(), seqs.data(), (int64_t)seqs.size(), &logits_, *pool_);
  if (!fs) {
    for (auto& p : picks) finish(*p.s, FinishReason::None, fs);
    running_.remove_if([](const std::unique_ptr<Sequence>& s) { return s->done; });
    return true;
  }

  // 4. Sample each sequence whose chunk reached the end of its known tokens; emit.
  const int64_t n_vocab = model_->config().n_vocab;
  int64_t row = 0;
  const double t_done = engine_now_ms();
  for (auto& p : picks) {
    Sequence& s = *p.s;
    s.n_computed += p.chunk;
    register_full_blocks(s);
    if (!p.out) continue;
    const float* lg = logits_.data() + (row++) * n_vocab;
    if (s.t_first_token < 0) {
      s.t_first_token = t_done;
      s.tm.prompt_ms = t_done - s.t_first_step;
      s.tm.prompt_tokens = s.n_prompt;
      st_.prompt_tokens += s.n_prompt;
      st_.reused_tokens += s.tm.reused_tokens;
    }
    if (s.n_generated >= s.req->max_tokens) {  // max_tokens 0: prefill only
      finish(s, FinishReason::Length);
      continue;
    }
    SampleResult r = s.sampler->sample(lg);
    const int32_t tok = r.token;
    s.sampler->accept(tok);
    const auto& stops = s.req->stop_tokens;
    if (std::find(stops.begin(), stops.end(), tok) != stops.end()) {
      finish(s, FinishReason::Eos);  // the end-of-generation token itself is not emitted
      continue;
    }
    s.tokens.push_back(tok);
    ++s.n_generated;
    ++st_.generated_tokens;
    GenEvent ev;
    ev.tokens.push_back(tok);
    if (s.req->want_logprobs) ev.logprobs.push_back(std::move(r));
    outbox_.emplace_back(s.req, std::move(ev));
    // The last token needs no KV: a context of n positions can hold n + 1 tokens.
    if (s.n_generated >= s.req->max_tokens || (int64_t)s.tokens.size() > ctx_limit) finish(s, FinishReason::Length);
  }
  running_.remove_if([](const std::unique_ptr<Sequence>& s) { return s->done; });
  return true;
}

}  // namespace llmserve
