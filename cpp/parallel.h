// One fork-join loop for every kernel driver (FDE encoding, fastembed FDEs, Chamfer, residual),
// on one process-wide pool of reused threads.
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>

namespace muvera {

namespace detail {

// The state of one parallel_for call, shared with its helper jobs. A helper that starts after
// the caller has finished (closed) leaves at once: the caller never waits for helpers queued
// behind other calls' work, and a pool that lost its threads (a fork) only costs speed.
struct ForState {
  std::atomic<int64_t> next{0};
  int64_t n = 0;
  const std::function<void(int64_t, int)>* fn = nullptr;
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::condition_variable cv;
  int active = 0;
  bool closed = false;
  std::exception_ptr error;

  void run(int tid) {
    for (int64_t t = next.fetch_add(1); t < n && !failed.load(std::memory_order_relaxed); t = next.fetch_add(1)) {
      try {
        (*fn)(t, tid);
      } catch (...) {  // the first exception is rethrown in the caller; the rest stop early
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
  }
};

// Queues `helpers` jobs on the pool (fewer if threads cannot be started); job j runs
// state->run(j + 1) unless the call is closed by then.
void submit_helpers(const std::shared_ptr<ForState>& state, int helpers);

}  // namespace detail

// Runs fn(task, thread_id) for task in [0, n) on up to num_threads threads: the caller (thread
// id 0) and pool threads (ids 1..num_threads-1). Exceptions thrown by fn are rethrown here (the
// first one; the others stop taking tasks). One thread, or one task, runs inline.
template <typename Fn>
void parallel_for(int64_t n, int num_threads, Fn fn) {
  if (n <= 0) return;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, n)));
  if (threads == 1) {
    for (int64_t t = 0; t < n; ++t) fn(t, 0);
    return;
  }
  const std::function<void(int64_t, int)> body = [&fn](int64_t t, int tid) { fn(t, tid); };
  auto state = std::make_shared<detail::ForState>();
  state->n = n;
  state->fn = &body;
  detail::submit_helpers(state, threads - 1);
  state->run(0);
  std::unique_lock<std::mutex> lock(state->mu);
  state->closed = true;  // helpers not started yet will not start
  state->cv.wait(lock, [&] { return state->active == 0; });
  if (state->error) std::rethrow_exception(state->error);
}

// The item loop both FDE encoders share: encode(i, tid) for items [0, n_items) in tasks of four
// items (small enough to balance, large enough to amortise) on up to num_threads threads. Returns
// the lowest item for which encode returned false (NaN or Inf found), or -1.
template <typename Encode>
int64_t encode_items(int64_t n_items, int num_threads, Encode encode) {
  std::atomic<int64_t> first_bad{n_items};
  const int64_t chunk = 4;
  parallel_for((n_items + chunk - 1) / chunk, num_threads, [&](int64_t task, int tid) {
    const int64_t end = std::min((task + 1) * chunk, n_items);
    for (int64_t i = task * chunk; i < end; ++i) {
      if (!encode(i, tid)) {
        int64_t cur = first_bad.load();
        while (i < cur && !first_bad.compare_exchange_weak(cur, i)) {
        }
      }
    }
  });
  const int64_t bad = first_bad.load();
  return bad < n_items ? bad : -1;
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
