#include "thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#define LLMS_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define LLMS_CPU_RELAX() asm volatile("yield")
#else
#define LLMS_CPU_RELAX() ((void)0)
#endif

namespace llmserve {

namespace {
// Slot of the thread while it runs a chunk (-1 outside): nested parallel_for calls run inline
// with the same slot instead of deadlocking on the busy pool.
thread_local int t_slot = -1;

// How long a waiting thread spins before it sleeps. Back-to-back kernels (a decode step issues a
// few hundred) hand off within this window without a futex round trip; an idle or oversubscribed
// machine gets its cores back quickly.
constexpr std::chrono::microseconds kSpin{50};
constexpr int64_t kChunksPerThread = 4;

uint64_t gen_of(uint64_t state) { return state >> 32; }
int64_t next_of(uint64_t state) { return static_cast<int64_t>(state & 0xffffffffu); }

// Spins until done() or the spin window ends; returns done().
template <typename Done>
bool spin_until(Done done) {
  if (done()) return true;
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      LLMS_CPU_RELAX();
      if (done()) return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) return done();
  }
}
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::thread::hardware_concurrency());
  n_threads_ = std::max(1, n_threads);
  workers_.reserve(n_threads_ - 1);
  for (int w = 1; w < n_threads_; ++w) workers_.emplace_back([this, w] { worker_loop(w); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_.store(true);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks(uint64_t gen, int slot) {
  for (;;) {
    uint64_t s = state_.load(std::memory_order_acquire);
    int64_t c;
    do {
      if (gen_of(s) != gen) return;
      c = next_of(s);
      // job_chunks_ was stored before `gen` was published; if a newer job has replaced it since,
      // the CAS below fails on the generation and we return.
      if (c >= job_chunks_.load(std::memory_order_acquire)) return;
    } while (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire));
    const int64_t n = job_n_, k = job_chunks_.load(std::memory_order_relaxed);
    const int64_t b = n * c / k, e = n * (c + 1) / k;
    const int prev_slot = t_slot;
    t_slot = slot;
    try {
      if (b < e) (*job_)(b, e, slot);
    } catch (...) {
      std::lock_guard<std::mutex> lk(error_mu_);
      if (!job_error_) job_error_ = std::current_exception();
    }
    t_slot = prev_slot;
    // seq_cst pairs with the caller's store to caller_sleeping_ (see parallel_for_chunked).
    if (finished_.fetch_add(1) + 1 == k && caller_sleeping_.load()) {
      std::lock_guard<std::mutex> lk(done_mu_);
      done_cv_.notify_one();
    }
  }
}

void ThreadPool::worker_loop(int slot) {
  uint64_t seen = 0;
  for (;;) {
    auto fresh = [&] { return stop_.load() || gen_of(state_.load(std::memory_order_acquire)) != seen; };
    if (!spin_until(fresh)) {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, fresh);
    }
    if (stop_.load()) return;
    seen = gen_of(state_.load(std::memory_order_acquire));
    run_chunks(seen, slot);
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  parallel_for_chunked(
      n, [&fn](int64_t b, int64_t e, int) { fn(b, e); }, grain);
}

void ThreadPool::parallel_for_chunked(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t grain) {
  if (n <= 0) return;
  const int64_t by_grain = std::max<int64_t>(1, n / std::max<int64_t>(1, grain));
  const int64_t k = std::min<int64_t>({n, by_grain, kChunksPerThread * n_threads_, 0x7fffffff});
  if (k == 1 || n_threads_ == 1 || t_slot >= 0) {
    // Same chunk boundaries as the parallel path, run in order on this thread.
    const int slot = t_slot >= 0 ? t_slot : 0;
    for (int64_t c = 0; c < k; ++c) {
      const int64_t b = n * c / k, e = n * (c + 1) / k;
      if (b < e) fn(b, e, slot);
    }
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mu_);
  // Close the previous job first: a worker still looping on it must not claim a "chunk" of the
  // previous generation that is in range of this job's larger chunk count (it would run a chunk of
  // this job twice and push finished_ past k, leaving the caller waiting forever).
  state_.store(state_.load() | 0xffffffffull);
  job_ = &fn;
  job_n_ = n;
  job_chunks_.store(k, std::memory_order_release);
  job_error_ = nullptr;
  finished_.store(0);
  uint64_t gen;
  {
    std::lock_guard<std::mutex> lk(mu_);
    gen = gen_of(state_.load()) + 1;
    state_.store(gen << 32, std::memory_order_release);  // publishes the job, chunk 0 next
  }
  cv_.notify_all();
  run_chunks(gen, 0);
  auto all_done = [&] { return finished_.load() == k; };
  if (!spin_until(all_done)) {
    std::unique_lock<std::mutex> lk(done_mu_);
    caller_sleeping_.store(true);
    done_cv_.wait(lk, all_done);
    caller_sleeping_.store(false);
  }
  job_ = nullptr;
  if (job_error_) {
    std::exception_ptr e = job_error_;
    job_error_ = nullptr;
    std::rethrow_exception(e);
  }
}

}  // namespace llmserve
