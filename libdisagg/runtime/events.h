// EventQueue: delivers rack events (disagg::Event) to the application's OnEvent handler on a
// thread of its own, in the order they were pushed, so that a handler may call back into the
// Rack (Map, Flush, Grant, ...) without holding up the threads that receive events or serve
// faults. Events pushed while no handler is set, or after Stop, are dropped (counted).
//
// Thread-safety: all methods are thread-safe. The destructor stops the thread after the
// events already queued were delivered; it must not run on the delivery thread.
#ifndef DISAGG_RUNTIME_EVENTS_H_
#define DISAGG_RUNTIME_EVENTS_H_

#include <deque>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "disagg/disagg.h"
#include "internal/mutex.h"

namespace disagg::runtime {

class EventQueue {
 public:
  EventQueue();
  ~EventQueue();
  EventQueue(const EventQueue&) = delete;
  EventQueue& operator=(const EventQueue&) = delete;

  // Delivers what is queued, then stops the thread; later events are dropped. Idempotent.
  // Must not be called on the delivery thread.
  void Stop();
  // Replaces the handler (an empty function: none). Takes effect for the next event.
  void SetHandler(EventHandler handler);
  void Push(const Event& event);
  uint64_t dropped() const;

 private:
  void Deliver();

  mutable Mutex mu_;
  CondVar changed_;  // an event was queued, or the queue stops
  std::deque<Event> queue_ ABSL_GUARDED_BY(mu_);
  EventHandler handler_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace disagg::runtime

#endif  // DISAGG_RUNTIME_EVENTS_H_
