// Engine: owns one loaded model, its KV cache and thread pool, and one engine thread that runs
// requests. JS (or any caller) only submits, cancels and receives events; all compute happens on
// the engine thread and the pool.
//
// This first engine serves requests one at a time with a contiguous KV cache, reusing the KV of
// the longest common prefix with the previous request. The paged-KV continuous-batching step
// replaces the run loop later without changing this interface.
#pragma once
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../gguf/gguf.h"
#include "../model/forward.h"
#include "../model/kv_cache.h"
#include "../model/model.h"
#include "../sampling/sampler.h"
#include "../status.h"
#include "../threadpool/thread_pool.h"

namespace llmserve {

struct EngineOptions {
  int threads = 2;
  int64_t n_ctx = 4096;  // 0 = the model's training context
  bool kv_f16 = true;
};

struct Timings {
  double prompt_ms = 0, generate_ms = 0;
  int64_t prompt_tokens = 0, generated_tokens = 0, reused_tokens = 0;
};

enum class FinishReason { None, Length, Eos, Abort };
const char* finish_reason_name(FinishReason r);

// One batch of output for a request. The last event of a request has done = true (and either a
// finish reason or an error), so every request ends with output or an error.
struct GenEvent {
  std::vector<int32_t> tokens;
  std::vector<SampleResult> logprobs;  // parallel to tokens when logprobs were requested
  bool done = false;
  FinishReason finish = FinishReason::None;
  Status error;
  Timings timings;
};

struct GenerateRequest {
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int64_t max_tokens = 256;
  std::vector<int32_t> stop_tokens;  // end-of-generation ids (EOS/EOT)
  bool want_logprobs = false;
  std::function<void(GenEvent&&)> on_event;  // called on the engine thread
};

struct EvalRequest {
  std::vector<int32_t> tokens;
  bool logits_all = false;
  std::function<void(Status, std::vector<float>&&)> on_done;  // called on the engine thread
};

class Engine {
 public:
  // Loads weights (mmap), touches every weight page once so the first request does not stall on
  // page faults (progress reports fractions in [0, 1]), and starts the engine thread.
  static Status load(const std::string& path, const EngineOptions& opts,
                     const std::function<void(double)>& progress, std::unique_ptr<Engine>* out);
  ~Engine();

  const ModelConfig& config() const { return model_->config(); }
  const EngineOptions& options() const { return opts_; }
  const GgufFile& file() const { return *file_; }

  // Validates and queues; returns the request id, or an error status (nothing queued).
  Status submit(std::shared_ptr<GenerateRequest> req, int64_t* id);
  Status submit_eval(std::shared_ptr<EvalRequest> req);
  void cancel(int64_t id);
  // Cancels everything queued or running (each gets its final event) and joins the thread.
  void shutdown();

 private:
  Engine() = default;
  void run();
  void run_generate(int64_t id, GenerateRequest& req, const std::atomic<bool>& cancelled);
  void run_eval(EvalRequest& req);
  // Makes the KV hold exactly `tokens[0..n)` reusing the common prefix; returns tokens reused.
  Status prefill(const int32_t* tokens, int64_t n, std::vector<float>* last_logits, int64_t* reused,
                 const std::atomic<bool>& cancelled);

  struct Job {
    int64_t id = 0;
    std::shared_ptr<GenerateRequest> gen;
    std::shared_ptr<EvalRequest> eval;
    std::shared_ptr<std::atomic<bool>> cancelled;
  };

  EngineOptions opts_;
  std::shared_ptr<GgufFile> file_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<KvCache> kv_;
  std::unique_ptr<ThreadPool> pool_;
  std::vector<int32_t> kv_tokens_;  // tokens whose K/V the cache holds, in order

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  Job current_;
  bool stopping_ = false;
  int64_t next_id_ = 1;
  std::thread thread_;
};

}  // namespace llmserve
