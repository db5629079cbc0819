// LivenessTimer: the timer a watcher of heartbeats (internal/heartbeat.h) runs on its event
// loop. It calls `beat(ping = true, ...)` every `period`, the round in which the watcher
// pings its peers and checks them, and `beat(ping = false, ...)` once at a time asked for by
// WakeAt when that comes before the next round: a peer's deadline, so that a hang is seen at
// its limit and not at the round after it. Between rounds an idle watcher sleeps.
//
// `away` is how late the call came, past the time it was due (beyond a grace of kGrace):
// time the watcher did not run, because it was descheduled, stopped or starved. The watcher
// excuses its peers that much (Heartbeat::Excuse). A late call does not `judge`: the answers
// of the peers may be waiting, unread, in the watcher's rings (timers are served before the
// rings in a turn of the loop), so the timer calls again a moment later, after the rings
// were read, and that call judges (declares peers suspect or failed).
//
// Times are LivenessNow()'s (monotonic). Single-threaded, on the loop's thread; the loop must
// outlive it.
#ifndef DISAGG_IPC_LIVENESS_TIMER_H_
#define DISAGG_IPC_LIVENESS_TIMER_H_

#include <functional>

#include "absl/time/time.h"
#include "ipc/event_loop.h"

namespace disagg::ipc {

class LivenessTimer {
 public:
  using Beat = std::function<void(bool ping, absl::Duration away, bool judge)>;
  // Lateness up to this is not counted as time away.
  static constexpr absl::Duration kGrace = absl::Milliseconds(5);

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
  // A call that was due at `due`.
  void Call(bool ping, absl::Time due);

  EventLoop& loop_;
  const absl::Duration period_;
  Beat beat_;
  EventLoop::WatchId round_ = 0;
  EventLoop::WatchId wake_ = 0;
  absl::Time next_round_ = absl::InfiniteFuture();
  absl::Time wake_at_ = absl::InfiniteFuture();
  absl::Time last_call_ = absl::InfinitePast();
  absl::Time last_late_ = absl::InfinitePast();  // the last call that came late
};

}  // namespace disagg::ipc

#endif  // DISAGG_IPC_LIVENESS_TIMER_H_
