// Engine-private state of one request (Sequence) and of a kept conversation (Session).
#pragma once
#include <memory>
#include <vector>

#include "engine.h"

namespace llmserve {

// Keeps a LoRA adapter loaded in the executor while anything uses it: the engine's table holds one
// reference until unload_adapter(), each request with that adapter holds one from submit() until it
// ends. The last one to go unloads it from the executor.
struct Engine::AdapterLease {
  Executor* executor = nullptr;
  uint64_t id = 0;
  AdapterLease(Executor* x, uint64_t i) : executor(x), id(i) {}
  AdapterLease(const AdapterLease&) = delete;
  AdapterLease& operator=(const AdapterLease&) = delete;
  ~AdapterLease() { (void)executor->unload_adapter(id); }
};

struct Engine::Sequence {
  int64_t id = 0;
  uint64_t arrival = 0;
  std::shared_ptr<GenerateRequest> req;
  std::shared_ptr<AdapterLease> adapter;  // null for the base model
  bool cancelled = false;
  bool done = false;
  std::vector<int32_t> tokens;  // prompt, then every generated token
  int64_t n_prompt = 0;
  bool tiled = false;           // every token uses the prompt arithmetic (prompt_tiled, kv/batch.h)
  int64_t n_computed = 0;       // tokens[0, n_computed) have K/V in `blocks`
  std::vector<int32_t> blocks;  // block table
  // Local layers' table (only with a split KV pool): same indexing; -1 for blocks freed once out of
  // the window (always a leading run).
  std::vector<int32_t> lblocks;
  int64_t n_registered = 0;  // leading full blocks whose prefix key is known
  uint64_t last_key = 0;     // key of block n_registered - 1 (0 = root)
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<GrammarMatcher> grammar;  // with req->grammar: its state after the generated tokens
  std::vector<uint8_t> allowed;             // grammar mask scratch [n_vocab]
  Status mask_status;                       // this step's grammar mask (computed in parallel)
  int64_t n_generated = 0;
  Timings tm;
  double t_submit = 0, t_first_step = -1, t_first_token = -1;
};

struct Engine::Session {
  std::vector<int32_t> tokens;  // what the KV holds (tokens[0, n_computed)) and the next token
  int64_t n_computed = 0;
  std::vector<int32_t> blocks;
  std::vector<int32_t> lblocks;
  int64_t n_registered = 0;
  uint64_t last_key = 0;
  bool pinned = false;
  uint64_t last_used = 0;
  uint64_t adapter = 0;  // the adapter its KV was computed under: only a turn with the same one adopts it
  bool tiled = false;    // computed with the prompt arithmetic: only a turn that uses it too adopts it
};

double engine_now_ms();

// Waiting and scheduling order: higher priority first, then arrival (FCFS).
inline bool ranks_before(const Engine::Sequence& a, const Engine::Sequence& b) {
  if (a.req->priority != b.req->priority) return a.req->priority > b.req->priority;
  return a.arrival < b.arrival;
}

}  // namespace llmserve
