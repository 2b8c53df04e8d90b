// Engine: one loaded model, a paged KV pool shared by every sequence, a thread pool, and one
// engine thread running step() while work exists. Callers (the N-API layer) only submit, cancel
// and receive events; all compute happens on the engine thread and the pool.
//
// step(): admit waiting requests (priority, then FCFS; prefix-cache hits reuse KV blocks) and pick
// each running sequence's next tokens under max_batch_tokens / max_sequences — one decode token,
// or a chunk of its prompt (chunked prefill) — forward the flattened batch once, sample every
// sequence whose chunk reached its end, emit tokens. When KV blocks run out, idle sessions are
// evicted first, then the lowest-priority newest sequence is preempted (its KV dropped; it is
// recomputed later and its user only waits).
#pragma once
#include <atomic>
#include <cstdlib>
#include <condition_variable>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "../gguf/gguf.h"
#include "../kv/block_allocator.h"
#include "../kv/kv_pool.h"
#include "../model/forward.h"
#include "../model/kv_cache.h"
#include "../model/matmul.h"
#include "../model/model.h"
#include "../sampling/sampler.h"
#include "../status.h"
#include "../threadpool/thread_pool.h"
#include "request.h"

namespace llmserve {

struct EngineOptions {
  int threads = 2;
  int64_t n_ctx = 4096;           // most positions one sequence may use; 0 = the model's training context
  int64_t kv_tokens = 0;          // KV pool size in tokens (0 = n_ctx)
  int32_t block_size = 16;        // tokens per KV block
  GgmlType kv_type = GgmlType::F16;  // F16, F32 or Q8_0
  int64_t max_batch_tokens = 512; // tokens per step (decode tokens + prompt chunks)
  // Prompt tokens per step while some sequence is generating (0 = no separate limit): a long
  // prompt then arrives in smaller chunks, so the generating sequences' steps stay short (lower
  // inter-token latency) at little cost in prefill throughput. Steps with nothing generating use
  // all of max_batch_tokens.
  int64_t prefill_chunk = 128;
  int64_t max_sequences = 64;     // sequences running at once
  int64_t max_queue = 1024;       // waiting requests before submit() fails with QueueFull
  bool prefix_cache = true;
  bool static_batching = false;   // benchmark baseline: a batch is formed once and run to completion
  // Copy quantized matrices at load into the GEMM kernels' 16-row interleaved layout (matmul.h
  // PackedWeights) and release the file's pages for them: the same memory, faster decode.
  // false keeps every weight in the file's mapping (faster load, pages shared between processes).
  bool repack = true;
};

class Engine {
 public:
  // Loads weights (mmap), repacks the quantized matrices (opts.repack) and touches every other
  // weight page once so the first request does not stall on page faults (progress reports
  // fractions in [0, 1]), and starts the engine thread.
  static Status load(const std::string& path, const EngineOptions& opts,
                     const std::function<void(double)>& progress, std::unique_ptr<Engine>* out);
  ~Engine();

  const ModelConfig& config() const { return model_->config(); }
  const EngineOptions& options() const { return opts_; }
  const GgufFile& file() const { return *file_; }
  // Bytes of weights repacked at load (0 with repack off or no packable type).
  size_t repacked_bytes() const { return packed_bytes_; }
  // The KV pool as allocated (not as asked for): its element type and total K+V bytes.
  GgmlType kv_type() const { return kv_->type(); }
  size_t kv_bytes() const { return kv_->bytes(); }

  // Validates and queues; returns the request id, or an error status (nothing queued).
  Status submit(std::shared_ptr<GenerateRequest> req, int64_t* id);
  Status submit_eval(std::shared_ptr<EvalRequest> req);
  void cancel(int64_t id);
  // Releases a session's (or pinned prefix's) KV; its next turn, if any, recomputes.
  void end_session(int64_t session);
  EngineStats stats();
  // Cancels everything queued or running (each gets its final event) and joins the thread.
  void shutdown();

 // Engine-private state (defined in sequence.h), named here so the step's helpers can use it.
  struct Sequence;
  struct Session;

 private:
  Engine() = default;
  void run();
  bool step();  // false when nothing could be scheduled
  bool schedule_and_run();
  void drain_inbox();
  bool admit(Sequence& s);
  void release_blocks(Sequence& s);
  bool ensure_blocks(Sequence& s, int64_t n_tokens, std::vector<Sequence*>& order, size_t self_index);
  bool evict_one_session();
  void preempt(Sequence& s);
  void finish(Sequence& s, FinishReason r, Status error = Status::ok());
  void register_full_blocks(Sequence& s);
  void run_eval(EvalRequest& req);
  void publish_stats();

  EngineOptions opts_;
  std::shared_ptr<GgufFile> file_;
  std::unique_ptr<Model> model_;
  struct FreeDeleter {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, FreeDeleter> packed_arena_;    // their bytes (declared first: freed last)
  std::vector<std::unique_ptr<PackedWeights>> packed_;  // load-time repacked matrices
  size_t packed_bytes_ = 0;
  std::unique_ptr<KvPool> kv_;
  std::unique_ptr<BlockAllocator> alloc_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<KvCache> eval_kv_;  // lazily made for evaluate()

  // Engine-thread state.
  std::list<std::unique_ptr<Sequence>> running_;
  std::deque<std::unique_ptr<Sequence>> waiting_;  // kept sorted: priority desc, then arrival
  std::map<int64_t, std::unique_ptr<Session>> sessions_;
  uint64_t session_clock_ = 0;
  EngineStats st_;
  std::vector<float> logits_;
  std::vector<int32_t> block_fill_, touched_;  // scratch of publish_stats()
  std::vector<std::pair<std::shared_ptr<GenerateRequest>, GenEvent>> outbox_;  // emitted after each step

  // Shared with callers.
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Sequence>> inbox_;
  std::vector<std::shared_ptr<EvalRequest>> eval_inbox_;
  std::vector<int64_t> cancel_inbox_, end_session_inbox_;
  int64_t queued_ = 0;  // requests in inbox + waiting (for max_queue)
  EngineStats published_;
  bool stopping_ = false;
  int64_t next_id_ = 1;
  uint64_t arrival_ = 0;
  std::thread thread_;
};

}  // namespace llmserve
