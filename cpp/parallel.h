// A minimal fork-join loop shared by the Chamfer and residual drivers.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
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

// The scoring loop every rerank driver shares: for queries [q0, q1) and their C candidates, in
// tasks of `per_task` candidates, scores[i * C + c] = score(i, tid, begin, m) for the document
// candidates[i * C + c] (c itself when candidates is null) whose tokens are [begin, begin + m);
// -inf where the candidate is -1 or not alive.
template <typename Score>
void score_candidates(int64_t q0, int64_t q1, int64_t C, const int64_t* candidates, const uint8_t* alive,
                      const int64_t* offsets, float* scores, int num_threads, int64_t per_task, Score score) {
  const int64_t chunks = (C + per_task - 1) / per_task;
  parallel_for((q1 - q0) * chunks, num_threads, [&](int64_t task, int tid) {
    const int64_t i = q0 + task / chunks, c0 = (task % chunks) * per_task;
    const int64_t c1 = std::min(C, c0 + per_task);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t doc = candidates != nullptr ? candidates[i * C + c] : c;
      float& out = scores[i * C + c];
      if (doc < 0 || (alive != nullptr && !alive[doc])) {
        out = -std::numeric_limits<float>::infinity();
        continue;
      }
      out = score(i, tid, offsets[doc], offsets[doc + 1] - offsets[doc]);
    }
  });
}

}  // namespace muvera
