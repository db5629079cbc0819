#include "runtime/events.h"

#include <pthread.h>

namespace disagg::runtime {

EventQueue::EventQueue()
    : thread_([this] {
        pthread_setname_np(pthread_self(), "disagg-events");
        Deliver();
      }) {}

EventQueue::~EventQueue() { Stop(); }

void EventQueue::Stop() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    changed_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

void EventQueue::SetHandler(EventHandler handler) {
  MutexLock lock(&mu_);
  handler_ = std::move(handler);
}

void EventQueue::Push(const Event& event) {
  MutexLock lock(&mu_);
  if (!handler_ || stopping_) {
    ++dropped_;
    return;
  }
  queue_.push_back(event);
  changed_.SignalAll();
}

uint64_t EventQueue::dropped() const {
  MutexLock lock(&mu_);
  return dropped_;
}

void EventQueue::Deliver() {
  MutexLock lock(&mu_);
  while (true) {
    while (!stopping_ && queue_.empty()) changed_.Wait(&mu_);
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
