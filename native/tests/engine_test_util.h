// What the engine-level tests share: a Run records one request's events (tokens, its end, timings)
// and the waits on it; submit_greedy() sends a greedy request with those events recorded.
#pragma once
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "sched/engine.h"
#include "synth/synth.h"

namespace llmserve_test {

// A small synthetic llama (dim 64, 2 layers, 4 heads over 2 KV heads, ffn 128, vocab 300, context
// 1024, f32) written to /tmp/llmserve_test_<name>_<pid>.gguf; returns its path (callers keep it in
// a function-local static so each test file writes its model once).
inline std::string synth_small_model(const std::string& name, uint64_t seed) {
  std::string path = "/tmp/llmserve_test_" + name + "_" + std::to_string(static_cast<long>(::getpid())) + ".gguf";
  llmserve::SynthOptions o;
  o.dim = 64, o.layers = 2, o.heads = 4, o.kv_heads = 2, o.ffn = 128, o.vocab_size = 300, o.context = 1024;
  o.type = llmserve::GgmlType::F32;
  o.seed = seed;
  llmserve::Status st = llmserve::synth_model(o, path);
  if (!st) std::fprintf(stderr, "  synth_model: %s\n", st.message.c_str());
  return path;
}

struct Run {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;  // with want_logprobs: each token's raw-logit logprob
  bool done = false;
  llmserve::FinishReason finish = llmserve::FinishReason::None;
  llmserve::Status error;
  llmserve::Timings tm;
  int64_t done_order = 0;  // 1 for the first run to finish in the process, 2 for the next, ...
};

inline std::atomic<int64_t>& done_count() {
  static std::atomic<int64_t> n{0};
  return n;
}

// A greedy request (temperature 0, no logprobs) for prompt; the caller may set more fields.
inline std::shared_ptr<llmserve::GenerateRequest> greedy_request(const std::vector<int32_t>& prompt,
                                                                 int64_t max_tokens) {
  auto req = std::make_shared<llmserve::GenerateRequest>();
  req->prompt = prompt;
  req->sampling.temperature = 0;
  req->sampling.compute_logprob = false;
  req->max_tokens = max_tokens;
  return req;
}

// Submits req with its events recorded in the returned Run; the submit status goes to *st (a run
// whose submit failed is done at once).
inline std::shared_ptr<Run> submit_recorded(llmserve::Engine& e, std::shared_ptr<llmserve::GenerateRequest> req,
                                            llmserve::Status* st) {
  auto run = std::make_shared<Run>();
  req->on_event = [run](llmserve::GenEvent&& ev) {
    std::lock_guard<std::mutex> lk(run->mu);
    run->tokens.insert(run->tokens.end(), ev.tokens.begin(), ev.tokens.end());
    for (const auto& lp : ev.logprobs) run->logprobs.push_back(lp.logprob);
    if (ev.done) {
      run->done = true;
      run->finish = ev.finish;
      run->error = ev.error;
      run->tm = ev.timings;
      run->done_order = ++done_count();
    }
    run->cv.notify_all();
  };
  int64_t id = 0;
  *st = e.submit(std::move(req), &id);
  if (!*st) run->done = true;
  return run;
}

// Every wait of a test shares one deadline (a stalled scheduler costs one timeout, not many).
using Clock = std::chrono::steady_clock;
inline Clock::time_point deadline(int seconds = 30) { return Clock::now() + std::chrono::seconds(seconds); }

inline bool wait_done(Run& r, Clock::time_point until) {
  std::unique_lock<std::mutex> lk(r.mu);
  return r.cv.wait_until(lk, until, [&] { return r.done; });
}

// Waits until the run has at least n tokens (or is done); false at the deadline.
inline bool wait_tokens(Run& r, size_t n, Clock::time_point until) {
  std::unique_lock<std::mutex> lk(r.mu);
  return r.cv.wait_until(lk, until, [&] { return r.done || r.tokens.size() >= n; });
}

}  // namespace llmserve_test
