#include "thread_pool.h"

#include <algorithm>

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
// Set while a thread is running a chunk: nested parallel_for calls then run inline instead of
// deadlocking on the (busy) pool.
thread_local bool t_inside_pool = false;
// Spin iterations before a worker sleeps on the condition variable. Back-to-back kernels (a decode
// step issues a few hundred) then hand off without a futex round trip.
constexpr int kSpinIters = 1 << 15;
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::thread::hardware_concurrency());
  n_threads_ = std::max(1, n_threads);
  workers_.reserve(n_threads_ - 1);
  for (int w = 0; w < n_threads_ - 1; ++w) workers_.emplace_back([this, w] { worker_loop(w); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_.store(true, std::memory_order_release);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunk(int chunk) {
  if (chunk >= job_chunks_) return;
  const int64_t n = job_n_, k = job_chunks_;
  const int64_t begin = n * chunk / k, end = n * (chunk + 1) / k;
  if (begin >= end) return;
  const bool was_inside = t_inside_pool;
  t_inside_pool = true;
  try {
    (*job_)(begin, end, chunk);
  } catch (...) {
    std::lock_guard<std::mutex> lk(error_mu_);
    if (!job_error_) job_error_ = std::current_exception();
  }
  t_inside_pool = was_inside;
}

void ThreadPool::worker_loop(int worker_index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = gen_.load(std::memory_order_acquire);
    for (int i = 0; g == seen && i < kSpinIters; ++i) {
      if (stop_.load(std::memory_order_relaxed)) return;
      LLMS_CPU_RELAX();
      g = gen_.load(std::memory_order_acquire);
    }
    if (g == seen) {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] {
        return stop_.load(std::memory_order_acquire) || gen_.load(std::memory_order_acquire) != seen;
      });
      if (stop_.load(std::memory_order_acquire)) return;
      g = gen_.load(std::memory_order_acquire);
    }
    seen = g;
    run_chunk(worker_index + 1);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  parallel_for_chunked(n, [&fn](int64_t b, int64_t e, int) { fn(b, e); });
}

void ThreadPool::parallel_for_chunked(int64_t n,
                                      const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  const int chunks = static_cast<int>(std::min<int64_t>(n, n_threads_));
  if (chunks == 1 || t_inside_pool) {
    // Same chunk boundaries as the parallel path, run in order on this thread.
    for (int c = 0; c < chunks; ++c) {
      const int64_t b = n * c / chunks, e = n * (c + 1) / chunks;
      if (b < e) fn(b, e, c);
    }
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mu_);
  job_ = &fn;
  job_n_ = n;
  job_chunks_ = chunks;
  job_error_ = nullptr;
  pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lk(mu_);
    gen_.fetch_add(1, std::memory_order_acq_rel);
  }
  cv_.notify_all();
  run_chunk(0);
  for (int i = 0; pending_.load(std::memory_order_acquire) != 0; ++i) {
    if (i < kSpinIters) {
      LLMS_CPU_RELAX();
    } else {
      std::this_thread::yield();
    }
  }
  job_ = nullptr;
  if (job_error_) {
    std::exception_ptr e = job_error_;
    job_error_ = nullptr;
    std::rethrow_exception(e);
  }
}

}  // namespace llmserve
