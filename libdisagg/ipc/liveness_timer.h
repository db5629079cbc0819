// LivenessTimer: the timer a watcher of heartbeats (internal/heartbeat.h) runs on its event
// loop. It calls `beat(ping = true, away)` every `period`, the round in which the watcher
// pings its peers and checks them, and `beat(ping = false, away)` once at a time asked for by
// WakeAt when that comes before the next round: a peer's deadline, so that a hang is seen at
// its limit and not at the round after it. Between rounds an idle watcher sleeps.
//
// `away` is how long the watcher did not run beyond its plan: the time since its previous
// call, less the period and a grace of half a period (zero when it ran on time). A watcher
// that was descheduled, stopped or starved excuses its peers that much (Heartbeat::Excuse):
// their answers may be waiting, unread, in its rings.
//
// Single-threaded, on the loop's thread; the loop must outlive it.
#ifndef DISAGG_IPC_LIVENESS_TIMER_H_
#define DISAGG_IPC_LIVENESS_TIMER_H_

#include <functional>

#include "absl/time/time.h"
#include "ipc/event_loop.h"

namespace disagg::ipc {

class LivenessTimer {
 public:
  using Beat = std::function<void(bool ping, absl::Duration away)>;

  LivenessTimer(EventLoop& loop, absl::Duration period, Beat beat);
  ~LivenessTimer() { Stop(); }
  LivenessTimer(const LivenessTimer&) = delete;
  LivenessTimer& operator=(const LivenessTimer&) = delete;

  // Starts the rounds (the first one period from now); Stop ends them. Both idempotent.
  void Start();
  void Stop();
  bool running() const { return round_ != 0; }

  // Asks for a call at `at` if that comes before the next round (a later `at` is left to the
  // rounds; an earlier request stands until it is served). Only while running.
  void WakeAt(absl::Time at);

 private:
  void Call(bool ping);

  EventLoop& loop_;
  const absl::Duration period_;
  Beat beat_;
  EventLoop::WatchId round_ = 0;
  EventLoop::WatchId wake_ = 0;
  absl::Time next_round_ = absl::InfiniteFuture();
  absl::Time wake_at_ = absl::InfiniteFuture();
  absl::Time last_call_ = absl::InfinitePast();
};

}  // namespace disagg::ipc

#endif  // DISAGG_IPC_LIVENESS_TIMER_H_
