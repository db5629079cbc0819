// TaskQueue: runs closures one at a time, in the order they were pushed, on a thread of its
// own. The control thread hands it whatever may block (dropping pages that a fetch in flight
// holds, shrinking the cache by write-backs), so that it always answers its compute
// element's heartbeats at once: a process that is only busy is never declared failed.
//
// Thread-safety: Push and Stop may be called from any thread but the queue's own. Stop runs
// what is queued, then joins; later pushes are dropped.
#ifndef DISAGG_RUNTIME_TASK_QUEUE_H_
#define DISAGG_RUNTIME_TASK_QUEUE_H_

#include <pthread.h>

#include <deque>
#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "internal/mutex.h"

namespace disagg::runtime {

class TaskQueue {
 public:
  TaskQueue()
      : thread_([this] {
          pthread_setname_np(pthread_self(), "disagg-tasks");
          Run();
        }) {}
  ~TaskQueue() { Stop(); }
  TaskQueue(const TaskQueue&) = delete;
  TaskQueue& operator=(const TaskQueue&) = delete;

  void Push(std::function<void()> task) {
    MutexLock lock(&mu_);
    if (stopping_) return;
    tasks_.push_back(std::move(task));
    changed_.SignalAll();
  }

  // True if nothing is queued or running: to the one thread that pushes, everything it
  // pushed before has run.
  bool Idle() const {
    MutexLock lock(&mu_);
    return tasks_.empty() && !running_;
  }

  void Stop() {
    {
      MutexLock lock(&mu_);
      stopping_ = true;
      changed_.SignalAll();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run() {
    MutexLock lock(&mu_);
    while (true) {
      while (tasks_.empty() && !stopping_) changed_.Wait(&mu_);
      if (tasks_.empty()) return;
      std::function<void()> task = std::move(tasks_.front());
      tasks_.pop_front();
      running_ = true;
      mu_.Unlock();
      task();
      mu_.Lock();
      running_ = false;
    }
  }

  mutable Mutex mu_;
  CondVar changed_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace disagg::runtime

#endif  // DISAGG_RUNTIME_TASK_QUEUE_H_
