#include "cpu_executor.h"

#include <algorithm>
#include <atomic>
#include <new>
#include <unordered_map>

#include "../gguf/gguf.h"
#include "../model/csr.h"
#include "../model/matmul.h"
#include "../os/os.h"
#include "../quant/quant.h"

namespace llmserve {

Status CpuExecutor::load(const std::string& path, const ExecutorOptions& opts,
                         const std::function<void(double)>& progress, std::unique_ptr<CpuExecutor>* out) {
  std::unique_ptr<GgufFile> f;
  LLMS_RETURN_IF_ERROR(GgufFile::open(path, &f));
  std::unique_ptr<CpuExecutor> x(new CpuExecutor());
  x->file_ = std::shared_ptr<GgufFile>(std::move(f));
  LLMS_RETURN_IF_ERROR(Model::load(x->file_, &x->model_));
  const ModelConfig& cfg = x->model_->config();
  x->n_ctx_ = opts.n_ctx == 0 ? std::max<int64_t>(cfg.n_ctx_train, 1) : opts.n_ctx;
  x->model_->use_context_size(x->n_ctx_);  // phi3 LongRoPE: short or long factors, as llama.cpp
  x->kv_type_ = opts.kv_type;
  x->adapter_storage_ = opts.adapter_storage;
  x->pool_ = std::make_unique<ThreadPool>(opts.threads);
  x->expand_dense_csr();
  x->prepare_weights(opts.repack, progress);

  KvPoolOptions po;
  po.block_size = opts.block_size;
  const int64_t kv_tokens = opts.kv_tokens == 0 ? x->n_ctx_ : opts.kv_tokens;
  po.n_blocks = (kv_tokens + po.block_size - 1) / std::max<int32_t>(po.block_size, 1);
  po.type = opts.kv_type;
  // The first context's blocks are mapped at load, as llama.cpp's context is (kv_pool.h).
  po.prefault_blocks = (x->n_ctx_ + po.block_size - 1) / std::max<int32_t>(po.block_size, 1);
  x->n_blocks_ = po.n_blocks;
  x->block_size_ = po.block_size;
  int64_t n_local = 0;
  for (int64_t il = 0; opts.local_kv_tokens >= 0 && il < cfg.n_layer; ++il) n_local += cfg.is_swa(il) ? 1 : 0;
  KvShape shape = kv_shape(cfg);
  if (n_local == 0) {
    LLMS_RETURN_IF_ERROR(KvPool::create(shape, po, &x->kv_));
  } else {
    // Sliding-window layers get their own pool (KvPools): the scheduler frees their blocks once
    // they leave every window, so that pool stays small however long the context.
    if (n_local < cfg.n_layer) {
      shape.n_layer = cfg.n_layer - n_local;
      LLMS_RETURN_IF_ERROR(KvPool::create(shape, po, &x->kv_));
    }
    KvPoolOptions lo = po;
    const int64_t auto_tokens =
        std::max<int64_t>(opts.max_sequences, 1) * (cfg.n_swa + 2 * int64_t(po.block_size)) + opts.max_batch_tokens;
    const int64_t local_tokens = opts.local_kv_tokens > 0 ? opts.local_kv_tokens : std::min(kv_tokens, auto_tokens);
    lo.n_blocks = (local_tokens + po.block_size - 1) / std::max<int32_t>(po.block_size, 1);
    shape.n_layer = n_local;
    LLMS_RETURN_IF_ERROR(KvPool::create(shape, lo, &x->kv_local_));
  }
  x->pools_ = KvPools{x->kv_.get(), x->kv_local_.get()};
  if (progress) progress(1.0);
  *out = std::move(x);
  return Status::ok();
}

CpuExecutor::~CpuExecutor() {
  // The packed and expanded arenas are referenced by the model's views: drop the model first.
  model_.reset();
}

void CpuExecutor::expand_dense_csr() {
  std::vector<MatrixView*> dense;
  size_t bytes = 0;
  for (LayerWeights& L : model_->mutable_weights().layers) {
    for (MatrixView* v : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down}) {
      if (!v->is_csr()) continue;
      // Entries of this view (a fused matrix's row view starts at sp_ptr[0] > 0).
      const double density =
          static_cast<double>(v->sp_ptr[v->n_out] - v->sp_ptr[0]) / static_cast<double>(v->n_in * v->n_out);
      if (density <= kCsrMaxDensity) {
        ++csr_sparse_;
        continue;
      }
      dense.push_back(v);
      bytes += (static_cast<size_t>(v->n_in * v->n_out) * (v->sp_f32 ? 4 : 2) + 63) / 64 * 64;
    }
  }
  if (dense.empty()) return;
  csr_dense_arena_.reset(os::alloc_huge(bytes));
  if (!csr_dense_arena_) {
    csr_sparse_ += static_cast<int64_t>(dense.size());
    return;
  }
  std::vector<uint8_t*> dst(dense.size());
  size_t off = 0;
  for (size_t k = 0; k < dense.size(); ++k) {
    dst[k] = csr_dense_arena_.get() + off;
    off += (static_cast<size_t>(dense[k]->n_in * dense[k]->n_out) * (dense[k]->sp_f32 ? 4 : 2) + 63) / 64 * 64;
  }
  pool_->parallel_for(static_cast<int64_t>(dense.size()), [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      MatrixView& v = *dense[static_cast<size_t>(k)];
      CsrMatrix m;
      m.ptr = v.sp_ptr, m.col = v.sp_col, m.val = v.sp_val, m.f32 = v.sp_f32, m.n_in = v.n_in, m.n_out = v.n_out;
      csr_to_dense(m, dst[static_cast<size_t>(k)]);
      v.data = dst[static_cast<size_t>(k)];
      v.type = v.sp_f32 ? GgmlType::F32 : GgmlType::F16;
      v.row_bytes = static_cast<size_t>(v.n_in) * (v.sp_f32 ? 4 : 2);
      v.sp_ptr = nullptr, v.sp_col = nullptr, v.sp_val = nullptr;
    }
  });
  csr_dense_ = static_cast<int64_t>(dense.size());
}

void CpuExecutor::prepare_weights(bool repack, const std::function<void(double)>& progress) {
  uint64_t total = 0, next_report = 0;
  for (auto& t : file_->tensors()) total += t.nbytes;
  auto report = [&](uint64_t done) {  // calling thread only (progress is not thread-safe)
    if (progress && done >= next_report) {
      progress(total ? (double)done / (double)total : 1.0);
      next_report = done + total / 100;
    }
  };
  ModelWeights& W = model_->mutable_weights();
  // Each distinct raw matrix is packed once (views may share data: a tied output is never packed
  // twice); the arena slice of each, 64-byte aligned.
  std::vector<MatrixView*> views;
  for (LayerWeights& L : W.layers) {
    for (MatrixView* v : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down}) views.push_back(v);
    // Experts: each expert's slice of the 3-D tensors packs as its own matrix.
    for (auto* exps : {&L.gate_exps, &L.up_exps, &L.down_exps})
      for (MatrixView& v : *exps) views.push_back(&v);
  }
  views.push_back(&W.output);
  std::unordered_map<const uint8_t*, size_t> slot;  // raw data -> index in todo
  std::vector<MatrixView*> todo;
  std::vector<size_t> offset;
  size_t arena_bytes = 0;
  if (repack) {
    for (MatrixView* v : views) {
      const size_t n = packed_bytes(*v);
      if (n == 0 || slot.count(v->data)) continue;
      slot[v->data] = todo.size();
      todo.push_back(v);
      offset.push_back(arena_bytes);
      arena_bytes += (n + 63) / 64 * 64;
    }
    // One huge-page arena for every packed matrix (per-matrix 2 MiB rounding would waste ~1 MiB each).
    if (!todo.empty()) packed_arena_.reset(os::alloc_huge(arena_bytes));
    if (!packed_arena_) todo.clear(), slot.clear();  // no memory: serve from the mapping
  }
  std::atomic<uint64_t> done{0};
  pool_->parallel_for_chunked(static_cast<int64_t>(todo.size()), [&](int64_t b, int64_t end, int chunk) {
    for (int64_t i = b; i < end; ++i) {
      MatrixView& v = *todo[static_cast<size_t>(i)];
      pack_matrix(&v, packed_arena_.get() + offset[static_cast<size_t>(i)]);
      const size_t raw = v.row_bytes * static_cast<size_t>(v.n_out);
      // The embedding table is read row by row from the mapping even when the output shares it.
      if (v.data != W.tok_embd.data) file_->release_pages(v.data, raw);
      done += raw;
    }
    if (chunk == 0) report(done.load());
  });
  // Views sharing a packed matrix's data get its copy too.
  for (MatrixView* v : views) {
    auto it = slot.find(v->data);
    if (it != slot.end() && !v->packed) v->packed = todo[it->second]->packed;
  }
  for (MatrixView* v : todo) packed_bytes_ += packed_bytes(*v);
  // Touch every other weight page once (volatile read) so weights are resident before the first
  // request.
  for (auto& t : file_->tensors()) {
    if (slot.count(t.data)) continue;
    volatile uint8_t sink = 0;
    for (uint64_t off = 0; off < t.nbytes; off += 4096) sink = static_cast<uint8_t>(sink ^ t.data[off]);
    (void)sink;
    report(done += t.nbytes);
  }
}

KvLayout CpuExecutor::kv_layout() const {
  KvLayout l;
  l.n_blocks = n_blocks_;
  l.block_size = block_size_;
  l.type = kv_type_;
  l.global_bytes = kv_ ? kv_->bytes() : 0;
  l.local_n_blocks = kv_local_ ? kv_local_->n_blocks() : 0;
  l.local_bytes = kv_local_ ? kv_local_->bytes() : 0;
  l.bytes = l.global_bytes + l.local_bytes;
  return l;
}

std::string CpuExecutor::kernels() const { return kernel_isa(); }

Status CpuExecutor::forward(const int32_t* tokens, const BatchSeq* seqs, int64_t n_seqs, std::vector<float>* logits) {
  bool any = false;
  for (int64_t s = 0; seqs && s < n_seqs; ++s) any = any || seqs[s].adapter != 0;
  if (!any) return forward_batch(*model_, pools_, tokens, seqs, n_seqs, logits, *pool_, scratch_);
  std::vector<std::shared_ptr<const LoraAdapter>> hold(static_cast<size_t>(n_seqs));
  std::vector<const ProjectionDelta*> deltas(static_cast<size_t>(n_seqs), nullptr);
  {
    std::lock_guard<std::mutex> lock(adapters_mu_);
    for (int64_t s = 0; s < n_seqs; ++s) {
      if (seqs[s].adapter == 0) continue;
      auto it = adapters_.find(seqs[s].adapter);
      if (it == adapters_.end()) {
        return make_error(Code::InvalidArgument,
                          "no LoRA adapter is loaded with id " + std::to_string(seqs[s].adapter));
      }
      hold[static_cast<size_t>(s)] = it->second;
      deltas[static_cast<size_t>(s)] = it->second.get();
    }
  }
  return forward_batch(*model_, pools_, tokens, seqs, n_seqs, logits, *pool_, scratch_, deltas.data());
}

Status CpuExecutor::load_adapter(uint64_t id, const std::string& path, float scale) {
  if (id == 0) return make_error(Code::InvalidArgument, "adapter id 0 is the base model");
  std::unique_ptr<LoraAdapter> a;
  LLMS_RETURN_IF_ERROR(LoraAdapter::load(path, *model_, scale, &a));
  if (adapter_storage_ == AdapterStorage::Q8_0) a->store_as(GgmlType::Q8_0);
  if (adapter_storage_ == AdapterStorage::Q4_0) a->store_as(GgmlType::Q4_0);
  std::lock_guard<std::mutex> lock(adapters_mu_);
  adapters_[id] = std::shared_ptr<const LoraAdapter>(std::move(a));
  return Status::ok();
}

bool CpuExecutor::has_adapter(uint64_t id) const {
  if (id == 0) return true;
  std::lock_guard<std::mutex> lock(adapters_mu_);
  return adapters_.count(id) != 0;
}

Status CpuExecutor::unload_adapter(uint64_t id) {
  std::lock_guard<std::mutex> lock(adapters_mu_);
  if (adapters_.erase(id) == 0)
    return make_error(Code::AdapterNotFound, "no LoRA adapter is loaded with id " + std::to_string(id));
  return Status::ok();
}

size_t CpuExecutor::adapter_bytes() const {
  std::lock_guard<std::mutex> lock(adapters_mu_);
  size_t n = 0;
  for (auto& [id, a] : adapters_) n += a->bytes();
  return n;
}

void CpuExecutor::copy_block(int32_t src, int32_t dst, int64_t n_slots) {
  if (kv_) kv_->copy_block(src, dst, n_slots);
}

void CpuExecutor::copy_local_block(int32_t src, int32_t dst, int64_t n_slots) {
  if (kv_local_) kv_local_->copy_block(src, dst, n_slots);
}

Status CpuExecutor::evaluate(const int32_t* tokens, int64_t n, int64_t logits_from, int64_t n_batch,
                             std::vector<float>* logits, bool hidden, uint64_t adapter) {
  if (n < 1 || logits_from < 0 || logits_from >= n || n_batch < 0)
    return make_error(Code::InvalidArgument, "evaluate: bad token count, logits_from or n_batch");
  std::shared_ptr<const LoraAdapter> delta;  // held for the whole evaluation
  if (adapter != 0) {
    std::lock_guard<std::mutex> lock(adapters_mu_);
    auto it = adapters_.find(adapter);
    if (it == adapters_.end())
      return make_error(Code::AdapterNotFound, "No LoRA adapter is loaded with id " + std::to_string(adapter));
    delta = it->second;
  }
  // A fresh single sequence in a private cache: evaluation never touches the serving pool.
  LLMS_RETURN_IF_ERROR(ensure_eval_kv());
  eval_kv_->truncate(0);
  // Passes of at most n_batch tokens, cut at logits_from: a pass before it only fills the cache
  // (its one logits row is dropped), a pass from it on returns its rows. The last token alone
  // needs no cut: the final pass returns just its last row (logits_all = false).
  const int64_t step = n_batch > 0 ? n_batch : n;
  const bool last_only = logits_from == n - 1;
  const size_t row = static_cast<size_t>(hidden ? model_->config().n_embd : model_->config().n_vocab);
  Status s = Status::ok();
  try {
    logits->clear();
    logits->reserve(static_cast<size_t>(n - logits_from) * row);
    std::vector<float> part;
    for (int64_t pos = 0; pos < n && s.is_ok();) {
      int64_t end = std::min(n, pos + step);
      if (!last_only && pos < logits_from && end > logits_from) end = logits_from;
      const bool out = last_only ? end == n : end > logits_from;
      s = llmserve::forward(*model_, *eval_kv_, tokens + pos, end - pos, out && !last_only, &part, *pool_, &scratch_,
                            delta.get(), hidden);
      if (s.is_ok() && out) logits->insert(logits->end(), part.begin(), part.end());
      pos = end;
    }
  } catch (const std::bad_alloc&) { s = make_error(Code::OutOfMemory, "evaluate: could not allocate logits"); }
  eval_kv_->truncate(0);
  return s;
}

Status CpuExecutor::ensure_eval_kv() {
  if (eval_kv_) return Status::ok();
  KvCacheOptions o;
  o.n_ctx = n_ctx_;
  o.type = kv_type_;
  return KvCache::create(kv_shape(model_->config()), o, &eval_kv_);
}

Status CpuExecutor::evaluate_batch(const EvalSeq* seqs, int64_t n_seqs, bool hidden, int64_t max_pass_tokens,
                                   std::vector<float>* rows, int64_t* passes) {
  *passes = 0;
  for (int64_t i = 0; i < n_seqs; ++i)
    if (!seqs[i].tokens || seqs[i].n < 1 || seqs[i].n > n_ctx_)
      return make_error(Code::InvalidArgument, "evaluate: bad token count");
  LLMS_RETURN_IF_ERROR(ensure_eval_kv());
  // Sequences are packed in order into passes of at most max_pass_tokens tokens whose block runs
  // fit the cache's n_ctx positions (each sequence starts on a fresh block; one sequence always
  // fits, n <= n_ctx). Positions start at 0 in every pass: nothing is kept between passes.
  const int64_t bs = eval_kv_->pool().block_size();
  const int64_t cache_blocks = (n_ctx_ + bs - 1) / bs;
  std::vector<int32_t> tokens;
  std::vector<BatchSeq> batch;
  std::vector<float> part;
  Status s = Status::ok();
  try {
    rows->clear();
    for (int64_t i = 0; i < n_seqs && s.is_ok();) {
      tokens.clear();
      batch.clear();
      int64_t n_tok = 0, n_blk = 0;
      for (; i < n_seqs; ++i) {
        const EvalSeq& q = seqs[i];
        const int64_t nb = (q.n + bs - 1) / bs;
        if (!batch.empty() && (n_tok + q.n > max_pass_tokens || n_blk + nb > cache_blocks)) break;
        BatchSeq b;
        b.blocks = eval_kv_->blocks() + n_blk;
        b.n_blocks = nb;
        b.pos0 = 0;
        b.n_tokens = q.n;
        b.out = q.all_rows ? 2 : 1;
        batch.push_back(b);
        tokens.insert(tokens.end(), q.tokens, q.tokens + q.n);
        n_tok += q.n;
        n_blk += nb;
      }
      s = forward_batch(*model_, eval_kv_->pool(), tokens.data(), batch.data(), (int64_t)batch.size(), &part, *pool_,
                        scratch_, nullptr, hidden);
      if (s.is_ok()) rows->insert(rows->end(), part.begin(), part.end());
      ++*passes;
    }
  } catch (const std::bad_alloc&) { s = make_error(Code::OutOfMemory, "evaluate: could not allocate rows"); }
  return s;
}

Status load_executor(const std::string& path, const ExecutorOptions& opts, const std::function<void(double)>& progress,
                     std::unique_ptr<Executor>* out) {
  std::unique_ptr<CpuExecutor> cpu;
  LLMS_RETURN_IF_ERROR(CpuExecutor::load(path, opts, progress, &cpu));
  *out = std::move(cpu);
  return Status::ok();
}

}  // namespace llmserve
