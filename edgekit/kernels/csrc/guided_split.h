// Guided self-scheduling of [0, n) over a runtime's thread pool (the ExecuTorch wrapper's PoolParallel). It lives
// with the core, beside linear_q4.h, because it knows nothing of ExecuTorch and its checker builds without it.
//
// Every worker takes the next chunk from one shared counter until none are left; a chunk is 2/3 of an even share of
// what is still untaken (remaining * 2 / (3 * threads), at least one item). So the first chunks are long (each one
// streams its weights front to back, the hardware prefetcher stays on one stream) and the last ones are a single
// tile: a thread slowed by a busy neighbour core, a little core of a big.LITTLE phone, or the caller's own work
// before the join holds the others for at most one tile instead of a fixed share.
//
// Measured on the 0.5B decode step (2 threads, AMD EPYC, one process, the schemes switched every token so that the
// shared machine's bandwidth swings hit all of them alike, 40 rounds of 64 tokens, two runs): +3.9 % and +4.7 % decode
// over 8 equal chunks per thread from a counter (itself 1.05-1.12x over one fixed half per thread); remaining /
// (2 threads) +3.2 %, remaining / threads +1.4 %, a floor of 2 or 4 items the same as 1. The ONNX Runtime wrapper
// keeps ORT's own ParallelFor over 64 chunks: this split there measured 0.995x (12 paired rounds).
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>

namespace edgekit {

class GuidedSplit {
 public:
  GuidedSplit(int64_t n, int64_t threads) : n_(n), threads_(std::max<int64_t>(1, threads)) {}

  // f(begin, end) over chunks of [0, n) until none are left; call from every worker (any number of them).
  template <class F>
  void drain(F&& f) {
    int64_t b = next_.load(std::memory_order_relaxed);
    while (b < n_) {
      const int64_t size = std::max<int64_t>(1, 2 * (n_ - b) / (3 * threads_));
      if (next_.compare_exchange_weak(b, b + size, std::memory_order_relaxed)) {
        f(b, std::min(n_, b + size));
        b = next_.load(std::memory_order_relaxed);
      }
    }
  }

 private:
  std::atomic<int64_t> next_{0};
  const int64_t n_, threads_;
};

}  // namespace edgekit
