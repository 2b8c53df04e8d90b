// CpuExecutor: the executor of this machine's CPU. It owns the Model (weights used in place from
// the file's mapping), the load-time packed copies of the quantized matrices (one huge-page arena;
// each MatrixView::packed points into it), the paged KV pool, the forward pass's scratch, the
// thread pool, and the eval-only single-sequence cache. forward() is model/forward_batch().
#pragma once
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>

#include "../kv/kv_cache.h"
#include "../kv/kv_pool.h"
#include "../lora/lora.h"
#include "../model/forward.h"
#include "../model/model.h"
#include "../os/os.h"
#include "../threadpool/thread_pool.h"
#include "executor.h"

namespace llmserve {

class CpuExecutor final : public Executor {
 public:
  // Opens the file, validates the model, repacks (opts.repack) and touches every other weight page
  // once so the first request does not stall on page faults, and allocates the KV pool.
  static Status load(const std::string& path, const ExecutorOptions& opts, const std::function<void(double)>& progress,
                     std::unique_ptr<CpuExecutor>* out);
  ~CpuExecutor() override;

  const ModelConfig& config() const override { return model_->config(); }
  const GgufFile* file() const override { return file_.get(); }
  KvLayout kv_layout() const override;
  int64_t n_ctx() const override { return n_ctx_; }
  std::string kernels() const override;
  size_t repacked_bytes() const override { return packed_bytes_; }
  int64_t csr_sparse_matrices() const override { return csr_sparse_; }
  int64_t csr_dense_matrices() const override { return csr_dense_; }

  Status forward(const int32_t* tokens, const BatchSeq* seqs, int64_t n_seqs, std::vector<float>* logits) override;
  void copy_block(int32_t src, int32_t dst, int64_t n_slots) override;
  void copy_local_block(int32_t src, int32_t dst, int64_t n_slots) override;
  Status evaluate(const int32_t* tokens, int64_t n, int64_t logits_from, int64_t n_batch, std::vector<float>* logits,
                  bool hidden, uint64_t adapter) override;
  Status evaluate_batch(const EvalSeq* seqs, int64_t n_seqs, bool hidden, int64_t max_pass_tokens,
                        std::vector<float>* rows, int64_t* passes) override;
  // Loads (or replaces) adapter id; errors: InvalidArgument (id 0), LoraAdapter::load's.
  Status load_adapter(uint64_t id, const std::string& path, float scale) override;
  bool has_adapter(uint64_t id) const override;
  Status unload_adapter(uint64_t id) override;
  size_t adapter_bytes() const override;
  void parallel_for(int64_t n, const std::function<void(int64_t)>& fn) override {
    pool_->parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) fn(i);
    });
  }

 private:
  CpuExecutor() = default;
  // Repacks every packable matmul weight into one arena (in parallel) and releases the raw pages;
  // touches the rest. Reports progress by bytes.
  void prepare_weights(bool repack, const std::function<void(double)>& progress);
  // Expands the CSR matrices denser than kCsrMaxDensity into dense rows (csr_dense_arena_) so the
  // dense kernels run them (f16 rows, f32 when the values are f32); counts both kinds. When memory
  // is short they stay CSR (correct, slower).
  void expand_dense_csr();

  struct FreeDeleter {
    void operator()(uint8_t* p) const { os::aligned_free(p); }
  };
  std::shared_ptr<GgufFile> file_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<uint8_t, FreeDeleter> packed_arena_;  // the packed copies' bytes
  size_t packed_bytes_ = 0;
  std::unique_ptr<uint8_t, FreeDeleter> csr_dense_arena_;  // expanded CSR matrices
  int64_t csr_sparse_ = 0, csr_dense_ = 0;
  AdapterStorage adapter_storage_ = AdapterStorage::File;  // ExecutorOptions::adapter_storage
  int64_t n_ctx_ = 0;
  GgmlType kv_type_ = GgmlType::F16;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<KvPool> kv_;        // every layer, or the global layers (null when all are local)
  std::unique_ptr<KvPool> kv_local_;  // the sliding-window layers when the model has any, else null
  KvPools pools_;
  int64_t n_blocks_ = 0;  // block ids the scheduler may hand out for the global table
  int32_t block_size_ = 16;
  ForwardScratch scratch_;
  // The private evaluation cache (made on first use): evaluate() runs one sequence over its
  // identity block table; evaluate_batch() hands each packed sequence its own run of those blocks.
  std::unique_ptr<KvCache> eval_kv_;
  Status ensure_eval_kv();
  // Loaded adapters by id. forward() copies the shared pointers it needs under the lock, so an
  // adapter replaced while a pass runs lives until that pass ends.
  mutable std::mutex adapters_mu_;
  std::map<uint64_t, std::shared_ptr<const LoraAdapter>> adapters_;
};

}  // namespace llmserve
