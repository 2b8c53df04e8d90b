// Engine::step(): one scheduling round and one forward pass over a flattened batch. The stages, in
// order: retire cancelled requests, schedule the running sequences (a decode token or the next
// prompt chunk each; preemption.cpp frees memory), admit waiting requests (admission.cpp), run the
// batch on the executor, sample and emit.
#include <algorithm>

#include "chunked_prefill.h"
#include "sequence.h"

namespace llmserve {

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
  if (trie_ == nullptr)
    for (auto& s : fresh)
      if (s->req->grammar) {
        // First grammar request: build the vocabulary trie here, off the JS thread, once per model.
        std::vector<std::string> pieces;
        {
          std::lock_guard<std::mutex> lk(mu_);
          pieces = grammar_pieces_;
        }
        trie_ = std::make_shared<const TokenTrie>(std::move(pieces));
        break;
      }
  for (auto& s : fresh) {
    if (s->req->grammar) {
      s->grammar = std::make_unique<GrammarMatcher>(grammar_masks(s->req->grammar));
      s->allowed.resize((size_t)executor_->config().n_vocab);
    }
    // The chosen token's logprob costs a full log-softmax per token: only compute it when asked.
    s->req->sampling.compute_logprob = s->req->want_logprobs;
    s->sampler = std::make_unique<Sampler>(s->req->sampling, (int32_t)executor_->config().n_vocab);
    for (int32_t t : s->tokens) s->sampler->accept(t);
    auto it = std::upper_bound(
        waiting_.begin(), waiting_.end(), s,
        [](const std::unique_ptr<Sequence>& a, const std::unique_ptr<Sequence>& b) { return ranks_before(*a, *b); });
    waiting_.insert(it, std::move(s));
    ++st_.requests;
  }
  auto mark = [&](int64_t id) {
    for (auto& s : waiting_)
      if (s->id == id) s->cancelled = true;
    for (auto& s : running_)
      if (s->id == id) s->cancelled = true;
  };
  for (int64_t id : cancels) mark(id);
  if (stopping) {
    for (auto& s : waiting_) s->cancelled = true;
    for (auto& s : running_) s->cancelled = true;
  }
  for (int64_t sid : ends) {
    auto it = sessions_.find(sid);
    if (it == sessions_.end()) continue;
    drop_tables(it->second->blocks, it->second->lblocks);
    sessions_.erase(it);
  }
}

// The shared masks of `g`'s rule table: requests with the same grammar (the same JSON schema)
// share computed masks. The last kMaxGrammarMasks grammars are kept, most recent last.
std::shared_ptr<GrammarMasks> Engine::grammar_masks(const std::shared_ptr<const Grammar>& g) {
  for (size_t i = 0; i < grammar_masks_.size(); ++i)
    if (grammar_masks_[i]->grammar() == g || same_grammar(*grammar_masks_[i]->grammar(), *g)) {
      auto m = grammar_masks_[i];
      grammar_masks_.erase(grammar_masks_.begin() + (ptrdiff_t)i);
      grammar_masks_.push_back(m);
      return m;
    }
  if (grammar_masks_.size() >= kMaxGrammarMasks) grammar_masks_.erase(grammar_masks_.begin());
  grammar_masks_.push_back(std::make_shared<GrammarMasks>(g, trie_));
  return grammar_masks_.back();
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
    ss->lblocks = std::move(s.lblocks);
    ss->n_registered = s.n_registered;
    ss->last_key = s.last_key;
    ss->pinned = s.req->pin;
    ss->adapter = s.req->adapter;
    ss->tiled = s.tiled;
    ss->last_used = ++session_clock_;
    auto old = sessions_.find(s.req->session);
    if (old != sessions_.end()) drop_tables(old->second->blocks, old->second->lblocks);
    sessions_[s.req->session] = std::move(ss);
    s.blocks.clear();
    s.lblocks.clear();
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
  retire_cancelled();
  StepPlan plan;
  plan.now = engine_now_ms();
  plan.budget = opts_.max_batch_tokens;
  int64_t n_decode = 0;
  for (auto& s : running_) n_decode += (int64_t)s->tokens.size() - s->n_computed <= 1 ? 1 : 0;
  const bool generating = n_decode > 0;
  plan.prefill_left = prefill_allowance(opts_.prefill_chunk, batch_only(), generating);
  if (generating && opts_.target_step_ms > 0 && !batch_only() && step_cost_.ready()) {
    // The dynamic policy: as many prompt tokens as the fitted cost leaves room for next to the
    // decode tokens (at least one block's worth, so a prompt always advances).
    plan.prefill_left =
        step_cost_.prefill_budget(opts_.target_step_ms, n_decode, kv_.block_size, opts_.max_batch_tokens);
    ++st_.dynamic_steps;
  }
  schedule_running(plan);
  // Sequences that failed above (KvExhausted) leave now, so admission sees their slots and the
  // "nothing runs" case (else a waiting request could stall with no step left to run it; found by
  // fuzz_engine).
  running_.remove_if([](const std::unique_ptr<Sequence>& s) { return s->done; });
  if (opts_.fixed_batching && running_.empty()) end_fixed_batch();  // the batch drained: free its pads
  admit_waiting(plan);
  if (plan.picks.empty()) return false;
  if (opts_.fixed_batching) plan_padding(plan);
  const double t0 = opts_.step_clock ? opts_.step_clock() : engine_now_ms();
  if (run_batch(plan)) {
    sample_and_emit(plan);
    int64_t tokens = 0, rows = 0;
    for (auto& p : plan.picks) {
      tokens += p.chunk;
      rows += p.out ? 1 : 0;
    }
    for (auto& p : plan.pads) tokens += p.n;
    step_cost_.observe(tokens, rows, (opts_.step_clock ? opts_.step_clock() : engine_now_ms()) - t0);
    st_.step_ms_base = step_cost_.a();
    st_.step_ms_per_token = step_cost_.b();
    st_.step_ms_per_row = step_cost_.c();
  }
  running_.remove_if([](const std::unique_ptr<Sequence>& s) { return s->done; });
  if (opts_.fixed_batching && running_.empty()) end_fixed_batch();
  return true;
}

// Cancelled requests leave at once (waiting ones too), with their final event.
void Engine::retire_cancelled() {
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if ((*it)->cancelled) {
      finish(**it, FinishReason::Abort);
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& s : running_)
    if (s->cancelled) finish(*s, FinishReason::Abort);
  running_.remove_if([](const std::unique_ptr<Sequence>& s) { return s->done; });
  std::lock_guard<std::mutex> lk(mu_);
  queued_ = (int64_t)waiting_.size() + (int64_t)inbox_.size();
}

// Running sequences, highest rank first: a decode token or the next prompt chunk each, while the
// budget lasts. A sequence that cannot get memory preempts lower-ranked ones (ensure_blocks) or is
// preempted itself.
void Engine::schedule_running(StepPlan& plan) {
  std::vector<Sequence*> order;
  for (auto& s : running_) order.push_back(s.get());
  std::sort(order.begin(), order.end(), [](Sequence* a, Sequence* b) { return ranks_before(*a, *b); });
  for (size_t i = 0; i < order.size() && plan.budget > 0; ++i) {
    Sequence& s = *order[i];
    const int64_t pending = (int64_t)s.tokens.size() - s.n_computed;
    const int64_t chunk = chunk_size(pending, plan.budget, plan.prefill_left);
    if (chunk <= 0) continue;  // a prompt waiting for the next step's prefill budget
    if (!ensure_blocks(s, chunk, order, i)) {
      if (i == 0 && plan.picks.empty()) {  // alone and still no room: pinned prefixes hold the memory
        finish(s, FinishReason::None,
               make_error(Code::KvExhausted,
                          "The KV cache is full (pinned prefixes hold " + std::to_string(alloc_->n_used()) +
                              " blocks). Release pinned prefixes or load with a larger kvCacheTokens."));
      } else {
        preempt(s);
      }
      order.resize(i);  // everything after s was already preempted or is s
      break;
    }
    plan.picks.push_back({&s, chunk, chunk == pending});
    plan.budget -= chunk;
    if (pending > 1) plan.prefill_left -= chunk;
  }
}

// One forward pass over the flattened batch. False if it failed (its sequences are finished with
// the error).
bool Engine::run_batch(StepPlan& plan) {
  std::vector<int32_t> tokens;
  std::vector<BatchSeq> seqs;
  int64_t n_tokens = 0;
  for (auto& p : plan.picks) n_tokens += p.chunk;
  for (auto& p : plan.pads) n_tokens += p.n;
  tokens.reserve((size_t)n_tokens);
  for (auto& p : plan.picks) {
    Sequence& s = *p.s;
    tokens.insert(tokens.end(), s.tokens.begin() + s.n_computed, s.tokens.begin() + s.n_computed + p.chunk);
    BatchSeq b;
    b.blocks = s.blocks.data();
    b.local_blocks = lalloc_ ? s.lblocks.data() : nullptr;
    b.n_blocks = (int64_t)s.blocks.size();
    b.pos0 = s.n_computed;
    b.n_tokens = p.chunk;
    b.out = p.out ? 1 : 0;
    b.adapter = s.req->adapter;
    b.tiled = s.tiled;
    seqs.push_back(b);
    if (s.n_computed < s.n_prompt) st_.prefill_tokens += std::min(p.chunk, s.n_prompt - s.n_computed);
  }
  // Fixed batching's padding: real compute whose outputs nothing reads (no logits row).
  for (auto& pp : plan.pads) {
    tokens.insert(tokens.end(), (size_t)pp.n, kPadToken);
    BatchSeq b;
    b.blocks = pp.p->blocks.data();
    b.local_blocks = lalloc_ ? pp.p->lblocks.data() : nullptr;
    b.n_blocks = (int64_t)pp.p->blocks.size();
    b.pos0 = pp.p->n_computed;
    b.n_tokens = pp.n;
    b.out = 0;
    b.adapter = 0;
    seqs.push_back(b);
  }
  ++st_.steps;
  st_.batch_tokens += (int64_t)tokens.size();
  st_.batch_seqs += (int64_t)plan.picks.size();
  st_.max_batch_tokens_seen = std::max<int64_t>(st_.max_batch_tokens_seen, (int64_t)tokens.size());
  st_.max_batch_seqs_seen = std::max<int64_t>(st_.max_batch_seqs_seen, (int64_t)plan.picks.size());
  Status fs = executor_->forward(tokens.data(), seqs.data(), (int64_t)seqs.size(), &logits_);
  if (fs) {
    for (auto& pp : plan.pads) {
      pp.p->n_computed += pp.n;
      st_.padded_tokens += pp.n;
      trim_local(pp.p->lblocks, pp.p->n_computed);
    }
    return true;
  }
  for (auto& p : plan.picks) finish(*p.s, FinishReason::None, fs);
  return false;
}

// Each sequence whose chunk reached the end of its known tokens samples its next token; emit.
void Engine::sample_and_emit(StepPlan& plan) {
  const int64_t n_vocab = executor_->config().n_vocab;
  const int64_t ctx_limit = std::min<int64_t>(opts_.n_ctx, kv_.n_blocks * kv_.block_size);
  int64_t row = 0;
  const double t_done = engine_now_ms();
  // The grammar masks of every constrained sequence that samples this step: cached ones copied
  // here, the rest walked in parallel on the executor's threads (waking the pool for copies only
  // costs more than it saves). Each depends only on its own matcher (the shared cache locks), so
  // the split changes no mask.
  std::vector<Sequence*> walk;
  for (auto& p : plan.picks) {
    Sequence& s = *p.s;
    if (!p.out || !s.grammar || s.n_generated >= s.req->max_tokens) continue;
    s.mask_status = Status::ok();
    if (!s.grammar->mask_cached(s.allowed.data())) walk.push_back(&s);
  }
  executor_->parallel_for((int64_t)walk.size(), [&](int64_t i) {
    Sequence& s = *walk[(size_t)i];
    s.mask_status = s.grammar->mask(s.allowed.data());
  });
  for (auto& p : plan.picks) {
    Sequence& s = *p.s;
    s.n_computed += p.chunk;
    register_full_blocks(s);
    trim_local(s.lblocks, s.n_computed);
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
    SampleResult r;
    const auto& stops = s.req->stop_tokens;
    if (s.grammar) {
      int st = grammar_mask(s);
      if (st > 0) finish(s, FinishReason::Eos);  // the grammar is complete and nothing else fits
      if (st != 0) continue;
      s.sampler->sample_masked(lg, s.allowed.data(), &r);
    } else {
      s.sampler->sample(lg, &r);
    }
    const int32_t tok = r.token;
    s.sampler->accept(tok);
    if (std::find(stops.begin(), stops.end(), tok) != stops.end()) {
      finish(s, FinishReason::Eos);  // the end-of-generation token itself is not emitted
      continue;
    }
    if (s.grammar) {
      Status as = s.grammar->accept(tok);
      if (!as) {
        finish(s, FinishReason::None, as);
        continue;
      }
    }
    s.tokens.push_back(tok);
    ++s.n_generated;
    ++st_.generated_tokens;
    GenEvent ev;
    ev.tokens.push_back(tok);
    if (s.req->want_logprobs) ev.logprobs.push_back(std::move(r));
    if (s.n_generated == 1) ev.reused_tokens = s.tm.reused_tokens;
    outbox_.emplace_back(s.req, std::move(ev));
    // The last token needs no KV: a context of n positions can hold n + 1 tokens.
    if (s.n_generated >= s.req->max_tokens || (int64_t)s.tokens.size() > ctx_limit) finish(s, FinishReason::Length);
  }
}

// Completes s.allowed (the mask computed in sample_and_emit) for sampling; the stop tokens are allowed exactly when the grammar can end.
// 0: sample under the mask; 1: nothing but the end fits and there is no stop token (finish as
// Eos); -1: s was finished with an error (no token continues the grammar, or it is too ambiguous).
int Engine::grammar_mask(Sequence& s) {
  Status ms = std::move(s.mask_status);
  if (!ms) {
    finish(s, FinishReason::None, ms);
    return -1;
  }
  const bool end = s.grammar->can_end();
  for (int32_t t : s.req->stop_tokens)
    if (t >= 0 && (size_t)t < s.allowed.size()) s.allowed[(size_t)t] = end ? 1 : 0;
  if (std::find(s.allowed.begin(), s.allowed.end(), (uint8_t)1) != s.allowed.end()) return 0;
  if (end) return 1;
  finish(s, FinishReason::None,
         make_error(Code::Grammar, "Grammar: no token of this model's vocabulary continues the grammar after " +
                                       std::to_string(s.n_generated) +
                                       " generated tokens. The grammar needs characters the vocabulary cannot spell "
                                       "(or only as part of longer tokens); loosen it."));
  return -1;
}

}  // namespace llmserve
