// The executor seam: everything a device owns and does for one loaded model, behind one interface
// the scheduler (sched/Engine) talks to. An executor owns
//   - the weights in their executable layout (CPU: the file's mapping plus load-time packed copies
//     hanging off each MatrixView; a GPU: device buffers),
//   - the KV block storage (the scheduler owns the block *table* and the allocator, the executor
//     owns the bytes the block ids index),
//   - the forward pass's scratch memory and its threads (or streams),
// and runs one batch step: forward(tokens, seqs) appends every token's K/V at its position in the
// blocks its sequence's table names and returns the logits of the rows asked for. The scheduler
// never sees a pointer to weights, KV bytes or threads, so a CUDA executor, per-token LoRA deltas
// (BatchSeq gains an adapter slot; the executor applies it) and a training backward pass slot in
// here without touching sched/ (docs/design.md, "The executor seam").
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../kv/batch.h"
#include "../model/model_config.h"
#include "../quant/quant.h"
#include "../status.h"

namespace llmserve {

class GgufFile;

// How load_adapter keeps an adapter's factors: as the file holds them, or quantized at load
// (LoraAdapter::store_as; Model.load's adapterType "file", "q8_0", "q4_0").
enum class AdapterStorage : uint8_t { File, Q8_0, Q4_0 };

// What an executor is asked to build at load.
struct ExecutorOptions {
  int threads = 2;
  int64_t n_ctx = 4096;   // 0 = the model's training context
  int64_t kv_tokens = 0;  // KV pool size in tokens (0 = n_ctx)
  // Models with sliding-window layers: their K/V goes to a second pool of this many tokens, which
  // only has to hold each sequence's last window (the scheduler frees the rest). 0: enough for
  // max_sequences sequences' windows plus one batch of max_batch_tokens (each sequence holds at
  // most window + 2 blocks beyond its share of the batch), capped at kv_tokens (local blocks in
  // use never outnumber global ones). -1: no second pool, every layer in the one pool of kv_tokens
  // (the full cache, as before the split: a reference for tests and a fallback).
  int64_t local_kv_tokens = 0;
  int64_t max_sequences = 1, max_batch_tokens = 512;
  int32_t block_size = 16;  // tokens per KV block
  GgmlType kv_type = GgmlType::F16;
  bool repack = true;  // CPU: copy quantized matrices into gemm's packed layout at load
  AdapterStorage adapter_storage = AdapterStorage::File;  // EngineOptions::adapter_storage
};

// The KV pool as allocated (not as asked for).
struct KvLayout {
  int64_t n_blocks = 0;
  int32_t block_size = 0;
  GgmlType type = GgmlType::F16;
  size_t bytes = 0;  // K and V of every layer (global_bytes + local_bytes)
  // Split by kind (KvPools) when the model has sliding-window layers: block ids [0, n_blocks) index
  // the global layers' pool (none when every layer is local: then the ids carry positions only),
  // ids [0, local_n_blocks) the local layers' pool. local_n_blocks 0: one pool holds every layer.
  int64_t local_n_blocks = 0;
  size_t global_bytes = 0, local_bytes = 0;
};

class Executor {
 public:
  virtual ~Executor() = default;

  // The model's hyperparameters (the scheduler reads n_vocab; callers show the rest).
  virtual const ModelConfig& config() const = 0;
  // The loaded file (metadata, tensor list), or null for an executor without one (tests' fakes).
  virtual const GgufFile* file() const = 0;
  virtual KvLayout kv_layout() const = 0;
  // The context the options resolved to (n_ctx 0 -> the training context).
  virtual int64_t n_ctx() const = 0;
  // Which kernels run ("avx512", "avx2", "scalar", or a device name) and the bytes of weights
  // moved into an executable layout at load.
  virtual std::string kernels() const = 0;
  virtual size_t repacked_bytes() const = 0;
  // CSR matrices (compress --format csr): how many run the CSR kernels and how many were expanded
  // to dense at load because CSR would be slower at their density (model/csr.h, kCsrMaxDensity).
  virtual int64_t csr_sparse_matrices() const { return 0; }
  virtual int64_t csr_dense_matrices() const { return 0; }

  // One batch step. tokens: [sum of seqs[i].n_tokens] in sequence order; every block id a table
  // names for positions [pos0, pos0 + n_tokens) must be this executor's. Writes logits
  // [n_out, n_vocab] for the requested rows in batch order. Batch invariant: each output row is
  // bit-identical whatever else is in the batch. Errors leave logits unspecified; the scheduler
  // fails the batch's requests with them.
  virtual Status forward(const int32_t* tokens, const BatchSeq* seqs, int64_t n_seqs, std::vector<float>* logits) = 0;
  // Copies block src's slots [0, n_slots) to block dst in every layer (copy-on-write of a shared
  // partial block).
  virtual void copy_block(int32_t src, int32_t dst, int64_t n_slots) = 0;
  // The same in the local layers' pool (only called when kv_layout().local_n_blocks > 0).
  virtual void copy_local_block(int32_t src, int32_t dst, int64_t n_slots) { (void)src, (void)dst, (void)n_slots; }
  // Scores tokens [n] from position 0 in a private cache that never touches the serving pool
  // (Model.evaluate, perplexity): logits [n - logits_from, n_vocab] of positions [logits_from, n)
  // (n - 1: the last token's only; 0: every token's). n_batch > 0 runs at most that many tokens per
  // forward pass (less scratch memory; the logits are the same bits, the passes being batch
  // invariant); 0 runs them all at once. Rows before logits_from get no output head.
  // hidden: the rows' final hidden states after output_norm ([n - logits_from, n_embd]) instead of
  // logits (embeddings, Model.embed). adapter: a loaded LoRA adapter's id to evaluate under (0: the
  // base model; an id not loaded: AdapterNotFound).
  virtual Status evaluate(const int32_t* tokens, int64_t n, int64_t logits_from, int64_t n_batch,
                          std::vector<float>* logits, bool hidden, uint64_t adapter) = 0;
  // Several independent sequences, each scored from position 0, packed into shared forward passes
  // of the private evaluation cache (embeddings and evaluations that arrive together: each weight
  // is read once per pass for all of them, not once per text). A pass holds at most
  // max_pass_tokens tokens, and at least one sequence however long. rows: every sequence's rows in
  // order, each the last token's (all_rows false) or every token's, [.., n_embd] with hidden, else
  // [.., n_vocab]; each row bit-identical to evaluate() of that sequence alone (batch invariance).
  // passes: the forward passes run. Errors as evaluate()'s (rows unspecified).
  struct EvalSeq {
    const int32_t* tokens = nullptr;
    int64_t n = 0;
    bool all_rows = false;
  };
  virtual Status evaluate_batch(const EvalSeq* seqs, int64_t n_seqs, bool hidden, int64_t max_pass_tokens,
                                std::vector<float>* rows, int64_t* passes);

  // LoRA adapters (docs/design.md, "The executor seam"): load_adapter reads the adapter at path for
  // this model under id (>= 1; the id BatchSeq::adapter and GenerateRequest::adapter carry) with
  // the user scale; it may run while forward() runs on another thread. has_adapter(0) is true (the
  // base model). Executors without adapter support refuse every load (InvalidArgument).
  virtual Status load_adapter(uint64_t id, const std::string& path, float scale) {
    (void)id, (void)path, (void)scale;
    return make_error(Code::InvalidArgument, "this executor does not support LoRA adapters");
  }
  virtual bool has_adapter(uint64_t id) const { return id == 0; }
  // Drops adapter id (a forward() already running keeps it until it returns). AdapterNotFound when
  // no adapter has that id.
  virtual Status unload_adapter(uint64_t id) {
    return make_error(Code::AdapterNotFound, "no LoRA adapter is loaded with id " + std::to_string(id));
  }
  // Bytes of adapter weights held (every loaded adapter's A and B matrices).
  virtual size_t adapter_bytes() const { return 0; }

  // Runs fn(i) for i in [0, n) on the executor's CPU threads (the scheduler's per-sequence work,
  // e.g. grammar masks); returns when all are done. Not while forward() runs. fn must not throw.
  virtual void parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
    for (int64_t i = 0; i < n; ++i) fn(i);
  }
};

// Loads the GGUF at path onto the best available backend (the CPU today), reporting progress as
// fractions in [0, 1] on the calling thread. Errors: every GGUF/model validation error, OutOfMemory.
Status load_executor(const std::string& path, const ExecutorOptions& opts, const std::function<void(double)>& progress,
                     std::unique_ptr<Executor>* out);

}  // namespace llmserve
