// ThreadPool: a fixed set of worker threads created once (one pool per engine), used for every
// parallel kernel; no threads are created per call.
//
// parallel_for splits [0, n) into k contiguous chunks (k depends only on n, grain and size()) and
// the participating threads claim chunks dynamically; the calling thread takes part and claims
// whatever the workers have not, so a worker that is slow to wake (an oversubscribed machine)
// delays nothing. Determinism: which thread runs a chunk varies, so callers must make every
// output element's arithmetic independent of the split (parallelize over output rows / tokens /
// heads, never inside one sum); then results are bit-identical for any thread count.
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
  // grain: the fewest items worth a chunk of their own (small jobs run on fewer threads, or inline
  // without waking anyone).
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

  // Same, but fn also receives the slot s in [0, size()) of the thread running the chunk; chunks
  // running at the same time have different slots, so s can index per-thread scratch buffers.
  // Chunk c covers [n*c/k, n*(c+1)/k), k = clamp(n / grain, 1, 4 * size()) (k = 1 runs inline).
  // An exception thrown by fn is rethrown here (the first one). Calls from inside fn run inline.
  void parallel_for_chunked(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t grain = 1);

 private:
  void worker_loop(int slot);
  // Claims and runs chunks of generation `gen` until none are left.
  void run_chunks(uint64_t gen, int slot);

  int n_threads_ = 1;
  std::vector<std::thread> workers_;

  // Current job: written by the caller before the generation is published in state_.
  const std::function<void(int64_t, int64_t, int)>* job_ = nullptr;
  int64_t job_n_ = 0;
  std::atomic<int64_t> job_chunks_{0};  // read before claiming, hence atomic
  std::exception_ptr job_error_;
  std::mutex error_mu_;

  // state_ = generation << 32 | next unclaimed chunk. Claiming is a CAS on the whole word, so a
  // late worker can never claim a chunk of a job that has already finished.
  std::atomic<uint64_t> state_{0};
  std::atomic<int64_t> finished_{0};  // chunks of the current job completed
  std::atomic<bool> stop_{false};
  std::mutex mu_;  // workers sleep on cv_ until the generation changes
  std::condition_variable cv_;
  std::atomic<bool> caller_sleeping_{false};
  std::mutex done_mu_;  // the caller sleeps on done_cv_ until finished_ == chunks
  std::condition_variable done_cv_;
  std::mutex call_mu_;  // serializes concurrent callers from different threads
};

}  // namespace llmserve
