// A fake Executor for scheduler tests (test_scheduler.cpp): no weights and no math, but a KV pool
// that really is paged. forward() writes each token id into the slot its sequence's block table
// names, then derives the next token of every output row from *all* the token ids read back
// through the table for positions [0, pos] (a hash). So a sequence whose table points at a wrong,
// stale or half-copied block (broken prefix reuse, session adoption, copy-on-write or preemption)
// samples different tokens than the same prompt computed alone: expected() is that reference.
// It also records every step (which sequences ran, from which position, how many tokens) for
// assertions on admission, chunked prefill budgets and preemption.
#pragma once
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "backend/executor.h"

namespace llmserve_test {

using namespace llmserve;

// The fake model's next token after a context (deterministic, spread over [3, n_vocab)).
inline int32_t fake_next(const std::vector<int32_t>& ctx, int64_t n_vocab) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t t : ctx) h = (h ^ static_cast<uint32_t>(t)) * 1099511628211ull;
  h ^= h >> 29;
  return 3 + static_cast<int32_t>(h % static_cast<uint64_t>(n_vocab - 3));
}

// The greedy continuation of prompt (max_tokens tokens) by the fake model, computed directly.
inline std::vector<int32_t> expected(std::vector<int32_t> ctx, int64_t max_tokens, int64_t n_vocab) {
  std::vector<int32_t> out;
  for (int64_t i = 0; i < max_tokens; ++i) {
    const int32_t t = fake_next(ctx, n_vocab);
    out.push_back(t);
    ctx.push_back(t);
  }
  return out;
}

struct SeqRecord {
  int32_t id;        // the token at the sequence's position 0 (tests give each prompt its own)
  int64_t pos0;      // positions already computed
  int64_t n_tokens;  // tokens this step
  bool out;          // logits wanted
  int32_t first_block;
};
using StepRecord = std::vector<SeqRecord>;

class FakeExecutor final : public Executor {
 public:
  FakeExecutor(int64_t n_blocks, int32_t block_size, int64_t n_vocab = 97, int64_t n_ctx = 4096)
      : n_blocks_(n_blocks),
        block_size_(block_size),
        n_ctx_(n_ctx),
        slots_(static_cast<size_t>(n_blocks * block_size), -1) {
    cfg_.arch = "fake";
    cfg_.n_vocab = n_vocab;
    cfg_.n_ctx_train = n_ctx;
  }

  const ModelConfig& config() const override { return cfg_; }
  const GgufFile* file() const override { return nullptr; }
  KvLayout kv_layout() const override { return KvLayout{n_blocks_, block_size_, GgmlType::F16, 0}; }
  int64_t n_ctx() const override { return n_ctx_; }
  std::string kernels() const override { return "fake"; }
  size_t repacked_bytes() const override { return 0; }

  Status forward(const int32_t* tokens, const BatchSeq* seqs, int64_t n_seqs, std::vector<float>* logits) override {
    bool pause;
    {
      std::lock_guard<std::mutex> lk(mu_);
      pause = static_cast<int64_t>(steps_.size()) == pause_at_;
    }
    wait_gate(pause);
    std::lock_guard<std::mutex> lk(mu_);
    StepRecord rec;
    std::vector<std::vector<int32_t>> rows;
    const int32_t* tok = tokens;
    for (int64_t i = 0; i < n_seqs; ++i) {
      const BatchSeq& q = seqs[i];
      const int64_t end = q.pos0 + q.n_tokens;
      if ((end + block_size_ - 1) / block_size_ > q.n_blocks)
        return make_error(Code::Internal, "fake: block table too short");
      for (int64_t p = q.pos0; p < end; ++p) slot(q.blocks, p) = *tok++;
      // Everything the sequence attends to, read back through its table (positions [0, end)).
      std::vector<int32_t> ctx;
      for (int64_t p = 0; p < end; ++p) {
        const int32_t t = slot(q.blocks, p);
        if (t < 0) return make_error(Code::Internal, "fake: read an empty KV slot at position " + std::to_string(p));
        ctx.push_back(t);
      }
      rec.push_back({ctx[0], q.pos0, q.n_tokens, q.out != 0, q.blocks[0]});
      if (q.out == 1) rows.push_back(ctx);
      else if (q.out == 2) return make_error(Code::Internal, "fake: the scheduler never asks for every row");
    }
    logits->assign(rows.size() * static_cast<size_t>(cfg_.n_vocab), 0.0f);
    for (size_t r = 0; r < rows.size(); ++r)
      (*logits)[r * static_cast<size_t>(cfg_.n_vocab) + static_cast<size_t>(fake_next(rows[r], cfg_.n_vocab))] = 1.0f;
    if (on_forward) on_forward(tok - tokens, static_cast<int64_t>(rows.size()));
    steps_.push_back(std::move(rec));
    return Status::ok();
  }

  // Called by forward() with the step's token and output-row counts (tests advance a fake clock
  // by a modelled step cost). Set before the engine runs.
  std::function<void(int64_t tokens, int64_t rows)> on_forward;

  void copy_block(int32_t src, int32_t dst, int64_t n_slots) override {
    std::lock_guard<std::mutex> lk(mu_);
    for (int64_t i = 0; i < n_slots; ++i)
      slots_[static_cast<size_t>(dst) * block_size_ + i] = slots_[static_cast<size_t>(src) * block_size_ + i];
  }

  Status evaluate(const int32_t*, int64_t, int64_t, int64_t, std::vector<float>*, bool, uint64_t) override {
    return make_error(Code::InvalidArgument, "fake: no evaluate");
  }

  std::vector<StepRecord> steps() {
    std::lock_guard<std::mutex> lk(mu_);
    return steps_;
  }

  // forward() waits before running step `step` (0-based) until open_gate() has been called (after
  // pause_at; it may already have been): the test acts between two known steps.
  void pause_at(int64_t step) {
    {
      std::lock_guard<std::mutex> lk(gate_mu_);
      released_ = false;
    }
    std::lock_guard<std::mutex> lk(mu_);
    pause_at_ = step;
  }

  // While closed, forward() waits (so a test can queue requests before the first step runs).
  void close_gate() {
    std::lock_guard<std::mutex> lk(gate_mu_);
    gate_open_ = false;
  }
  void open_gate() {
    {
      std::lock_guard<std::mutex> lk(gate_mu_);
      gate_open_ = true;
      released_ = true;
    }
    gate_cv_.notify_all();
  }

 private:
  int32_t& slot(const int32_t* blocks, int64_t p) {
    return slots_[static_cast<size_t>(blocks[p / block_size_]) * block_size_ + static_cast<size_t>(p % block_size_)];
  }
  void wait_gate(bool pause) {
    std::unique_lock<std::mutex> lk(gate_mu_);
    gate_cv_.wait(lk, [&] { return gate_open_ && (!pause || released_); });
  }

  ModelConfig cfg_;
  int64_t n_blocks_;
  int32_t block_size_;
  int64_t n_ctx_;
  std::mutex mu_;
  std::vector<int32_t> slots_;
  std::vector<StepRecord> steps_;
  std::mutex gate_mu_;
  std::condition_variable gate_cv_;
  bool gate_open_ = true;
  bool released_ = true;
  int64_t pause_at_ = -1;
};

}  // namespace llmserve_test
