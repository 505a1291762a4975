// A minimal fork-join loop shared by the Chamfer and residual drivers.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <system_error>
#include <thread>
#include <vector>

namespace muvera {

// Runs fn(task, thread_id) for task in [0, n) on up to num_threads threads (the caller's included).
// If a thread cannot be started, the remaining ones (at least the caller) do the work.
template <typename Fn>
void parallel_for(int64_t n, int num_threads, Fn fn) {
  std::atomic<int64_t> next{0};
  auto worker = [&](int tid) {
    for (int64_t t = next.fetch_add(1); t < n; t = next.fetch_add(1)) fn(t, tid);
  };
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, n)));
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) {
    try {
      pool.emplace_back(worker, t);
    } catch (const std::system_error&) {
      break;
    }
  }
  worker(0);
  for (auto& th : pool) th.join();
}

}  // namespace muvera
