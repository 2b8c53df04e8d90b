// The machine's measured read bandwidth: the ceiling of a decode step, which reads every weight
// byte (and the sequence's KV cache) once per generated token. Benchmarks print their decode
// speed as a fraction of it (bench/kernels, bench/e2e); `llmserve info --bandwidth` turns it into
// a model's decode ceiling on this machine.
#pragma once
#include <cstddef>
#include <cstdint>

#include "status.h"

namespace llmserve {

class ThreadPool;

// Each of the pool's threads sums its own contiguous part of a buffer of `bytes` (allocated and
// written here, in 2 MiB-aligned transparent huge pages as the engine's packed weights are); the
// best of `reps` passes, in GB/s (1e9 bytes per second), goes to *gbs. The buffer's word i holds
// i, so *checksum (when given) is the sum of every word read over all passes: reps * N(N-1)/2
// (mod 2^64) for the N words counted. `bytes` should be many times the last-level cache (the
// benchmarks use 1 GiB); at least 1 MiB. Probes run one at a time (concurrent ones would measure
// each other). OutOfMemory when the buffer cannot be allocated.
Status measure_read_bandwidth(ThreadPool& pool, size_t bytes, int reps, double* gbs, uint64_t* checksum = nullptr);

}  // namespace llmserve
