#include "datasync.h"

#include <cerrno>

#include <unistd.h>

namespace muvera {

namespace {
int flush_data(int fd) {
#if defined(__APPLE__)
  int rc = fsync(fd);  // no fdatasync there
#else
  int rc = fdatasync(fd);
#endif
  return rc == 0 ? 0 : errno;
}
}  // namespace

DataSyncWorker::DataSyncWorker() : thread_([this] { run(); }) {}

DataSyncWorker::~DataSyncWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

bool DataSyncWorker::start(int fd) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (started_) return false;
    fd_ = fd;
    err_ = 0;
    pending_ = started_ = true;
  }
  cv_.notify_all();
  return true;
}

int DataSyncWorker::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !pending_; });
  started_ = false;
  return err_;
}

void DataSyncWorker::run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return pending_ || stop_; });
    if (pending_) {  // a started flush runs even when stopping: its waiter must hear back
      int fd = fd_;
      lock.unlock();
      int err = flush_data(fd);
      lock.lock();
      err_ = err;
      pending_ = false;
      cv_.notify_all();
      continue;
    }
    if (stop_) return;
  }
}

}  // namespace muvera
