// A thread that flushes one file descriptor's data to disk (fdatasync) while the caller goes on.
// The write-ahead log starts the flush of a record, applies the change, then waits: the flush
// overlaps the work. Unlike a Python thread pool, the worker needs no GIL to start, so the
// overlap is real even while the caller runs Python code.
#pragma once

#include <condition_variable>
#include <mutex>
#include <thread>

namespace muvera {

class DataSyncWorker {
 public:
  DataSyncWorker();
  ~DataSyncWorker();
  DataSyncWorker(const DataSyncWorker&) = delete;
  DataSyncWorker& operator=(const DataSyncWorker&) = delete;

  // Starts flushing `fd`. Returns false (and starts nothing) when a flush is still unwaited.
  bool start(int fd);
  // Waits for the started flush; returns its errno (0: flushed, or nothing was started).
  int wait();

 private:
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  int fd_ = -1;
  bool pending_ = false;  // started, not yet flushed
  bool started_ = false;  // started, not yet waited for
  bool stop_ = false;
  int err_ = 0;
  std::thread thread_;
};

}  // namespace muvera
