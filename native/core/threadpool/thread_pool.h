// ThreadPool: a fixed set of worker threads created once (one pool per engine), used for every
// parallel kernel. parallel_for splits [0, n) into at most size() contiguous chunks; the calling
// thread runs chunk 0, so a pool of size 1 has no worker threads at all.
//
// Determinism: the split depends only on (n, size()), and callers must make every output element's
// arithmetic independent of the split (parallelize over output rows/tokens, never inside one sum).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace llmserve {

class ThreadPool {
 public:
  // n_threads <= 0 picks std::thread::hardware_concurrency() (at least 1).
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Runs fn(begin, end) over [0, n) split into contiguous chunks across the pool's threads (the
  // calling thread participates); returns when all are done. n <= 0 does nothing.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

  // Same, but fn also receives its chunk index c in [0, size()); no two chunks of one call share c,
  // so c can index per-thread scratch buffers. Chunk c covers [n*c/k, n*(c+1)/k), k = min(n, size()).
  void parallel_for_chunked(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn);

 private:
  void worker_loop(int worker_index);
  void run_chunk(int chunk);

  int n_threads_ = 1;
  std::vector<std::thread> workers_;

  // Current job (written by the caller before gen_ is bumped, read by workers after).
  const std::function<void(int64_t, int64_t, int)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int job_chunks_ = 0;
  std::exception_ptr job_error_;
  std::mutex error_mu_;

  std::atomic<uint64_t> gen_{0};     // bumped once per parallel call
  std::atomic<int> pending_{0};      // workers that have not finished the current generation
  std::atomic<bool> stop_{false};
  std::mutex mu_;                    // guards sleeping on cv_
  std::condition_variable cv_;
  std::mutex call_mu_;               // serializes concurrent callers from different threads
};

}  // namespace llmserve
