// Engine: the scheduler of one loaded model. It owns the requests, the KV block allocator (which
// block ids each sequence's table holds) and one engine thread running step() while work exists;
// the math, the weights, the KV bytes and the threads belong to an Executor (backend/executor.h),
// the only thing the scheduler calls to run a batch. Callers (the N-API layer) only submit, cancel
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
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "../backend/executor.h"
#include "../grammar/matcher.h"
#include "../kv/block_allocator.h"
#include "../sampling/sampler.h"
#include "../status.h"
#include "request.h"
#include "step_cost.h"

namespace llmserve {

struct EngineOptions {
  int threads = 2;
  int64_t n_ctx = 4096;   // most positions one sequence may use; 0 = the model's training context
  int64_t kv_tokens = 0;  // KV pool size in tokens (0 = n_ctx)
  // Models with sliding-window layers: tokens of the local layers' pool (0 = enough for
  // max_sequences windows plus a full batch, at most kv_tokens; -1 = no second pool: every layer
  // keeps every position, the full cache; see docs/design.md).
  int64_t local_kv_tokens = 0;
  int32_t block_size = 16;           // tokens per KV block
  GgmlType kv_type = GgmlType::F16;  // F16, F32 or Q8_0
  int64_t max_batch_tokens = 512;    // tokens per step (decode tokens + prompt chunks)
  // Prompt tokens per step while some sequence is generating (0 = no separate limit): a long
  // prompt then arrives in smaller chunks, so the generating sequences' steps stay short (lower
  // inter-token latency) at little cost in prefill throughput. Steps with nothing generating use
  // all of max_batch_tokens.
  int64_t prefill_chunk = 128;
  // Dynamic batching policy (0 = off): while some sequence is generating, each step's prompt
  // tokens are chosen from the measured step cost (StepCostModel) so the step is predicted to take
  // at most this many milliseconds (inter-token latency), in place of prefill_chunk; the fixed
  // prefill_chunk applies until the model has seen enough steps. Steps with nothing generating
  // still use all of max_batch_tokens.
  double target_step_ms = 0;
  // The clock that times steps for the cost model (ms; default: steady clock). Tests drive it.
  std::function<double()> step_clock;
  int64_t max_sequences = 64;  // sequences running at once
  int64_t max_queue = 1024;    // waiting requests before submit() fails with QueueFull
  bool prefix_cache = true;
  bool static_batching = false;  // benchmark baseline: a batch is formed once and run to completion
  // Fixed-length batching (the other classic baseline; fixed_batch.cpp): a batch is formed once,
  // its prompts padded to one length (the longest, rounded up to a multiple of fixed_bucket when
  // > 0) and run whole in one step; it decodes until every member is done, a finished member
  // costing a pad token per step until then. Padding costs compute but changes no output.
  bool fixed_batching = false;
  int64_t fixed_bucket = 0;
  // Copy quantized matrices at load into the GEMM kernels' 16-row interleaved layout (matmul.h
  // PackedWeights) and release the file's pages for them: the same memory, faster decode.
  // false keeps every weight in the file's mapping (faster load, pages shared between processes).
  bool repack = true;
  // Keep every LoRA adapter's factors as q8_0 or q4_0 (LoraAdapter::store_as): about half (q8_0)
  // or 0.28 (q4_0) of the adapter bytes a decode step reads against f16 files, for deltas that
  // differ by the type's rounding.
  AdapterStorage adapter_storage = AdapterStorage::File;
};

class Engine {
 public:
  // Loads the model onto the best backend (load_executor: weights mapped, repacked with
  // opts.repack, pages touched so the first request does not stall; progress reports fractions in
  // [0, 1]) and starts the engine thread.
  static Status load(const std::string& path, const EngineOptions& opts, const std::function<void(double)>& progress,
                     std::unique_ptr<Engine>* out);
  // Schedules onto a given executor (tests drive the scheduler with a fake one).
  static Status create(std::unique_ptr<Executor> executor, const EngineOptions& opts, std::unique_ptr<Engine>* out);
  ~Engine();

  const ModelConfig& config() const { return executor_->config(); }
  const EngineOptions& options() const { return opts_; }
  const Executor& executor() const { return *executor_; }
  // Bytes of weights repacked at load (0 with repack off or no packable type).
  size_t repacked_bytes() const { return executor_->repacked_bytes(); }
  // The KV pool as allocated (not as asked for): its element type and total K+V bytes.
  GgmlType kv_type() const { return kv_.type; }
  size_t kv_bytes() const { return kv_.bytes; }

  // Validates and queues; returns the request id, or an error status (nothing queued).
  Status submit(std::shared_ptr<GenerateRequest> req, int64_t* id);
  Status submit_eval(std::shared_ptr<EvalRequest> req);
  // Queues several at once (all or none: the first invalid one's error), so they share passes
  // from the start. Whole-sequence evaluations (n_batch 0, rows from 0 or the last token's only:
  // embeddings, Model.evaluate) are packed into forward passes of up to max_batch_tokens tokens,
  // one pass between generation steps, so decode keeps its pace while a bulk embedding job runs.
  Status submit_evals(std::vector<std::shared_ptr<EvalRequest>> reqs);
  void cancel(int64_t id);
  // LoRA adapters (lora/): load_adapter reads the adapter at path under id (>= 1, never used before
  // by this engine: prefix-cache keys and kept sessions name adapters by id, so an id is not given
  // to a second adapter). It may run on any thread while requests run. Errors: InvalidArgument (id
  // 0, an id already used), the executor's load errors.
  Status load_adapter(uint64_t id, const std::string& path, float scale);
  // New submits with id are refused (AdapterNotFound) from now on; requests already submitted with
  // it keep it until they end, then the executor drops it. AdapterNotFound when id is not loaded.
  Status unload_adapter(uint64_t id);
  // The ids loaded and not unloaded, ascending.
  std::vector<uint64_t> adapter_ids();
  // Releases a session's (or pinned prefix's) KV; its next turn, if any, recomputes.
  void end_session(int64_t session);
  // The vocabulary's token bytes ([n_vocab], control tokens empty) that grammar masks are built
  // from. Cheap: the trie is built on the engine thread when the first grammar request arrives.
  Status set_grammar_vocab(std::vector<std::string> pieces);
  EngineStats stats();
  // Cancels everything queued or running (each gets its final event) and joins the thread.
  void shutdown();

  // Engine-private state (defined in sequence.h), named here so the step's helpers can use it.
  struct Sequence;
  struct Session;
  struct AdapterLease;

 private:
  Engine() = default;
  // One step's plan: the sequences picked and how many of their tokens run (see step.cpp).
  struct Pick {
    Sequence* s;
    int64_t chunk;  // tokens of s computed this step
    bool out;       // the chunk reaches the end of s's known tokens: sample after it
  };
  // Fixed batching's padding of one member (fixed_batch.cpp): a scratch sequence of pad tokens
  // with its own KV blocks, run beside the batch and its outputs never read.
  struct PadSeq {
    int64_t member = 0;   // the member's sequence id
    int64_t pending = 0;  // prompt padding not yet run (runs in the batch's first step)
    int64_t n_computed = 0;
    std::vector<int32_t> blocks, lblocks;
  };
  static constexpr int32_t kPadToken = 0;  // what padding computes (any id would do: nothing reads it)
  struct PadPick {
    PadSeq* p;
    int64_t n;
  };
  struct StepPlan {
    std::vector<Pick> picks;
    std::vector<PadPick> pads;  // fixed batching: pad work appended to the batch
    int64_t budget = 0;         // tokens left under max_batch_tokens
    int64_t prefill_left = 0;   // prompt tokens left under the chunked-prefill cap
    double now = 0;
  };

  void run();
  bool step();  // false when nothing could be scheduled
  // step.cpp: the step's stages, in order.
  bool schedule_and_run();
  void retire_cancelled();
  void schedule_running(StepPlan& plan);
  bool run_batch(StepPlan& plan);
  void sample_and_emit(StepPlan& plan);
  int grammar_mask(Sequence& s);
  std::shared_ptr<GrammarMasks> grammar_masks(const std::shared_ptr<const Grammar>& g);
  void drain_inbox();
  void finish(Sequence& s, FinishReason r, Status error = Status::ok());
  // admission.cpp: waiting requests join the batch; a session's KV or cached prefix blocks are reused.
  void admit_waiting(StepPlan& plan);
  void admit(Sequence& s);
  // fixed_batch.cpp: the pads of a newly formed batch, each step's pad work, the batch's end.
  bool batch_only() const { return opts_.static_batching || opts_.fixed_batching; }
  void start_fixed_batch();
  void plan_padding(StepPlan& plan);
  void end_fixed_batch();
  bool pad_blocks(PadSeq& p, int64_t n);
  bool drop_one_pad();  // frees one pad's KV blocks for real work (preemption.cpp asks first)
  void register_full_blocks(Sequence& s);
  // preemption.cpp: KV blocks for a step, freed by session eviction, then preemption.
  bool ensure_blocks(Sequence& s, int64_t n_tokens, std::vector<Sequence*>& order, size_t self_index);
  bool evict_one_session();
  void preempt(Sequence& s);
  void release_blocks(Sequence& s);
  // Unrefs every block of a global table and its local table, and clears both.
  void drop_tables(std::vector<int32_t>& blocks, std::vector<int32_t>& lblocks);
  // Frees the local blocks no query at a position >= n_computed can see (out of the window).
  void trim_local(std::vector<int32_t>& lblocks, int64_t n_computed);
  // Prefix reuse of k leading blocks (keys[i] = key of block i) needs the local blocks of the
  // window before position k * block_size: the largest k' <= k whose window blocks are all in the
  // local prefix cache, with those blocks ref'd into lblocks (-1 before the window).
  int64_t adopt_local_window(const std::vector<uint64_t>& keys, int64_t k, std::vector<int32_t>* lblocks);
  // Runs the front evaluation alone, or its packable kind (hidden states or logits) in one packed
  // pass with every other pending one that fits max_batch_tokens.
  void run_eval_pass();
  void publish_stats();

  EngineOptions opts_;
  std::unique_ptr<Executor> executor_;
  KvLayout kv_;  // the executor's KV pool (block ids are [0, kv_.n_blocks))
  std::unique_ptr<BlockAllocator> alloc_;
  std::unique_ptr<BlockAllocator> lalloc_;  // local layers' pool (null: one pool holds every layer)
  int64_t window_ = 0;                      // the local layers' window when lalloc_
  // LoRA adapters by id (declared after executor_: every lease is gone before the executor is).
  std::mutex adapters_mu_;
  std::map<uint64_t, std::shared_ptr<AdapterLease>> adapters_;
  std::set<uint64_t> adapter_ids_used_;  // loaded, loading or unloaded: never given out again
  // A request's hold on loaded adapter id (generate and evaluate requests keep it until they end);
  // AdapterNotFound when no adapter is loaded under id.
  Status hold_adapter(uint64_t id, std::shared_ptr<AdapterLease>* out);

  // Engine-thread state.
  std::list<std::unique_ptr<Sequence>> running_;
  std::deque<std::unique_ptr<Sequence>> waiting_;  // kept sorted: priority desc, then arrival
  std::map<int64_t, std::unique_ptr<Session>> sessions_;
  uint64_t session_clock_ = 0;
  EngineStats st_;
  std::vector<float> logits_;
  std::deque<std::shared_ptr<EvalRequest>> evals_;  // taken from eval_inbox_, not yet run
  std::vector<PadSeq> pads_;                        // fixed batching: one per member of the running batch
  StepCostModel step_cost_;                         // fitted on every step (target_step_ms)
  std::vector<int32_t> block_fill_, touched_;       // scratch of publish_stats()
  std::vector<std::pair<std::shared_ptr<GenerateRequest>, GenEvent>> outbox_;  // emitted after each step

  // Shared with callers.
  std::shared_ptr<const TokenTrie> trie_;  // engine thread; built from grammar_pieces_ on first use
  // Engine thread: recent grammars' shared masks (each capped at GrammarMasks::kDefaultCacheBytes).
  static constexpr size_t kMaxGrammarMasks = 8;
  std::vector<std::shared_ptr<GrammarMasks>> grammar_masks_;
  std::mutex mu_;
  std::vector<std::string> grammar_pieces_;  // under mu_
  bool has_grammar_vocab_ = false;           // under mu_
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
