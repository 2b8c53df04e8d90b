// What callers submit to the Engine and what they get back.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../grammar/gbnf.h"
#include "../sampling/sampler.h"
#include "../status.h"

namespace llmserve {

struct Timings {
  double prompt_ms = 0, generate_ms = 0, queue_ms = 0;
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
  // On the event of a request's first token: its prompt tokens whose KV was reused (prefix cache,
  // session, pinned prefix) instead of computed; -1 on every other event. Timings carry the same
  // number only on the done event, which a request cut short by a stop string never waits for.
  int64_t reused_tokens = -1;
};

struct GenerateRequest {
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int64_t max_tokens = 256;          // 0: prefill only (pins a prefix / warms a session)
  std::vector<int32_t> stop_tokens;  // end-of-generation ids (EOS/EOT)
  bool want_logprobs = false;
  int32_t priority = 0;  // higher runs first and is preempted last
  int64_t session = 0;   // != 0: keep this sequence's KV for the session's next turn
  bool pin = false;      // with session: never evicted under memory pressure
  uint64_t adapter = 0;  // LoRA adapter id (0: the base model; Engine::load_adapter)
  // Constrained decoding: only tokens this grammar accepts are sampled; the stop tokens only where
  // it can end. Needs Engine::set_grammar_vocab first. Belongs to the request: preemption and
  // sessions leave it alone (only sampled tokens advance it).
  std::shared_ptr<const Grammar> grammar;
  std::function<void(GenEvent&&)> on_event;  // called on the engine thread
};

struct EvalRequest {
  std::vector<int32_t> tokens;
  int64_t logits_from = 0;  // first position whose logits are returned (tokens.size() - 1: the last only)
  int64_t n_batch = 0;      // most tokens per forward pass (0: all at once)
  bool hidden = false;      // final hidden states after output_norm ([rows, n_embd]) instead of logits
  uint64_t adapter = 0;     // LoRA adapter id to evaluate under (0: the base model); runs unpacked
  std::shared_ptr<const void> adapter_hold;  // set by the engine: keeps that adapter loaded until the evaluation ran
  std::function<void(Status, std::vector<float>&&)> on_done;  // called on the engine thread
};

// Counters since load plus the current KV state (engine thread writes, readers get a copy).
struct EngineStats {
  int64_t steps = 0, batch_tokens = 0, batch_seqs = 0, max_batch_tokens_seen = 0, max_batch_seqs_seen = 0;
  int64_t prompt_tokens = 0, prefill_tokens = 0, reused_tokens = 0, generated_tokens = 0;
  int64_t requests = 0, finished = 0, aborted = 0, errors = 0, preemptions = 0, session_evictions = 0;
  int64_t prefix_lookups = 0, prefix_hits = 0;
  // Evaluations (embeddings, Model.evaluate) and the runs they took: a packed pass of several, or
  // one evaluation that cannot be packed (n_batch, rows from the middle).
  int64_t eval_sequences = 0, eval_passes = 0;
  // Steps whose prompt tokens the dynamic policy chose (target_step_ms), and the cost model's
  // latest fit: ms per step ≈ step_ms_base + step_ms_per_token·tokens + step_ms_per_row·rows.
  int64_t dynamic_steps = 0;
  double step_ms_base = 0, step_ms_per_token = 0, step_ms_per_row = 0;
  int64_t running = 0, waiting = 0, sessions = 0;
  int64_t blocks_total = 0, blocks_used = 0, blocks_cached = 0, blocks_free = 0, block_size = 0;
  int64_t kv_tokens_held = 0;  // tokens stored in used blocks (the rest of those blocks is waste)
  // Sliding-window models (KvPools split): the local layers' pool, whose used blocks stay bounded
  // by the window (blocks out of every sequence's window are freed), and the bytes of each kind.
  // local_blocks_total 0: one pool holds every layer.
  int64_t local_blocks_total = 0, local_blocks_used = 0, local_blocks_cached = 0, local_blocks_free = 0;
  int64_t kv_bytes_global = 0, kv_bytes_local = 0;
  // Prefix-cache and session reuse cut short because the local layers' blocks of the window before
  // the reuse point were freed or evicted (the rest of the prompt is recomputed).
  int64_t prefix_window_misses = 0;
  // Requests admitted while other sequences were running (joining a running batch: continuous
  // batching; always 0 with static batching).
  int64_t joined_running = 0;
  // Fixed batching: pad tokens computed (prompt padding plus one per finished member per step
  // until its batch ends: the mode's waste), and pad tokens skipped for want of free KV blocks.
  int64_t padded_tokens = 0, pad_skipped_tokens = 0;
  // LoRA adapters loaded (Engine::load_adapter, not yet unloaded) and the bytes of adapter weights
  // held, including unloaded adapters that requests still in flight keep alive.
  int64_t adapters = 0;
  int64_t adapter_bytes = 0;
};

}  // namespace llmserve
