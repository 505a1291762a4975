#include "parallel.h"

#include <deque>
#include <system_error>
#include <thread>
#include <vector>

#include <unistd.h>

namespace muvera {
namespace detail {
namespace {

// Threads started on first use and reused by every call; grown to the largest number of helpers
// asked for (bounded). Never destroyed: its threads must not be joined during static destruction.
class Pool {
 public:
  explicit Pool(pid_t pid) : pid_(pid) {}
  pid_t pid() const { return pid_; }

  void submit(const std::shared_ptr<ForState>& state, int helpers) {
    std::lock_guard<std::mutex> lock(mu_);
    grow(helpers);
    const int queued = std::min<int>(helpers, static_cast<int>(threads_.size()));
    for (int j = 0; j < queued; ++j) jobs_.push_back({state, j + 1});
    if (queued > 1) cv_.notify_all(); else if (queued == 1) cv_.notify_one();
  }

 private:
  struct Job {
    std::shared_ptr<ForState> state;
    int tid;
  };

  void grow(int wanted) {  // caller holds mu_
    const int cap = 1024;
    while (static_cast<int>(threads_.size()) < std::min(wanted, cap)) {
      try {
        threads_.emplace_back([this] { loop(); });
        threads_.back().detach();
      } catch (const std::system_error&) {
        return;  // no more threads: the callers do the work themselves
      }
    }
  }

  void loop() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return !jobs_.empty(); });
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      ForState& s = *job.state;
      {
        std::lock_guard<std::mutex> lock(s.mu);
        if (s.closed) continue;  // the caller finished the work already
        ++s.active;
      }
      s.run(job.tid);
      {
        std::lock_guard<std::mutex> lock(s.mu);
        --s.active;
      }
      s.cv.notify_all();
    }
  }

  const pid_t pid_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  std::vector<std::thread> threads_;
};

std::mutex g_pool_mu;
Pool* g_pool = nullptr;

Pool& pool() {
  std::lock_guard<std::mutex> lock(g_pool_mu);
  const pid_t pid = getpid();
  // A forked child has none of its parent's threads: it starts a pool of its own (the parent's
  // object is left as it is: its mutexes may have been held at the fork).
  if (g_pool == nullptr || g_pool->pid() != pid) g_pool = new Pool(pid);
  return *g_pool;
}

}  // namespace

void submit_helpers(const std::shared_ptr<ForState>& state, int helpers) {
  if (helpers > 0) pool().submit(state, helpers);
}

}  // namespace detail
}  // namespace muvera
