#include "runtime/events.h"

namespace disagg::runtime {

EventQueue::EventQueue() : thread_([this] { Deliver(); }) {}

EventQueue::~EventQueue() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void EventQueue::SetHandler(EventHandler handler) {
  absl::MutexLock lock(&mu_);
  handler_ = std::move(handler);
}

void EventQueue::Push(const Event& event) {
  absl::MutexLock lock(&mu_);
  if (!handler_) {
    ++dropped_;
    return;
  }
  queue_.push_back(event);
}

uint64_t EventQueue::dropped() const {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

void EventQueue::Deliver() {
  absl::MutexLock lock(&mu_);
  while (true) {
    mu_.Await(absl::Condition(
        +[](EventQueue* q) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          return q->stopping_ || !q->queue_.empty();
        },
        this));
    if (queue_.empty()) return;  // stopping, and all delivered
    const Event event = queue_.front();
    queue_.pop_front();
    EventHandler handler = handler_;
    mu_.Unlock();
    if (handler) handler(event);
    mu_.Lock();
  }
}

}  // namespace disagg::runtime
