// Standalone checker of GuidedSplit (guided_split.h) with real threads: for every (n, threads, workers) case, each
// index of [0, n) must be handed out exactly once, every chunk non-empty and inside [0, n), and the chunk sizes must
// follow the schedule (no chunk longer than 2/3 of an even share of what was left when it was taken, so the first
// chunk of n = 600 over 2 threads is 200). Workers may outnumber the threads the split was sized for (ONNX Runtime
// hands the tasks to its pool in batches) or fall short of them.
//
// Usage: guided_split_check [--drop]   (--drop loses the last index of every first chunk: the check must fail)
// Prints one line per failing case and "passed P of N cases"; exit 1 on any failure.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "guided_split.h"

namespace {

bool check(int64_t n, int64_t threads, int workers, bool drop) {
  edgekit::GuidedSplit split(n, threads);
  std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
  for (auto& s : seen) s = 0;
  std::atomic<int64_t> bad_chunks{0}, first{-1};
  auto work = [&] {
    split.drain([&](int64_t b, int64_t e) {
      if (b < 0 || e > n || b >= e) {
        ++bad_chunks;
        return;
      }
      if (b == 0) first = e;
      for (int64_t i = b; i < e - (drop && b == 0 ? 1 : 0); ++i) ++seen[static_cast<size_t>(i)];
    });
  };
  std::vector<std::thread> pool;
  for (int w = 1; w < workers; ++w) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  int64_t wrong = 0;
  for (auto& s : seen) wrong += s.load() != 1;
  const int64_t want_first = n > 0 ? std::max<int64_t>(1, 2 * n / (3 * std::max<int64_t>(1, threads))) : -1;
  const bool ok = wrong == 0 && bad_chunks == 0 && (n == 0 || first == want_first);
  if (!ok) {
    std::printf("FAIL n=%lld threads=%lld workers=%d: %lld indices not handed out exactly once, %lld bad chunks, "
                "first chunk [0, %lld) (want [0, %lld))\n", (long long)n, (long long)threads, workers,
                (long long)wrong, (long long)bad_chunks.load(), (long long)first.load(), (long long)want_first);
  }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const bool drop = argc > 1 && std::strcmp(argv[1], "--drop") == 0;
  const int64_t sizes[] = {0, 1, 2, 3, 5, 16, 56, 72, 100, 608, 1000, 9497};
  const int64_t threads[] = {1, 2, 3, 4, 8};
  int passed = 0, total = 0;
  for (int rep = 0; rep < 20; ++rep) {  // repeated: the interleavings differ from run to run
    for (int64_t n : sizes) {
      for (int64_t t : threads) {
        for (int workers : {1, static_cast<int>(t), static_cast<int>(2 * t + 1)}) {
          ++total;
          passed += check(n, t, workers, drop);
        }
      }
    }
  }
  std::printf("passed %d of %d cases\n", passed, total);
  return passed == total ? 0 : 1;
}
