// Heartbeat: the watcher's side of one peer's liveness, judged by the age of its last sign of
// life. The watcher pings its peers every `period` (one ping in flight per peer at most, so
// that a stalled peer's ring stays short); an answer is a sign of life. A peer silent for
// longer than suspect_after() is suspect; one silent for longer than `limit` has failed, for
// good. So a healthy peer costs one ping and one answer a period, and a hang is seen `limit`
// after the peer's last answer, however long the period: the period sets the cost, the limit
// the detection time. (Deaths are seen at once, by other means: pidfds and life words.)
//
// Time the watcher itself did not run is not held against a peer: Excuse moves the last sign
// of life forward by it (see ipc::LivenessTimer, which measures it), so an answer that waited
// in a ring while the watcher was descheduled is never taken for silence.
//
// The rack monitor watches its elements with it, a compute element its processes.
// Value type; not thread-safe.
#ifndef DISAGG_INTERNAL_HEARTBEAT_H_
#define DISAGG_INTERNAL_HEARTBEAT_H_

#include <time.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace disagg {

// The clock liveness is judged by: monotonic (a wall clock stepped back would delay detection,
// one stepped forward would fail peers), as the event loop's timers are.
inline absl::Time LivenessNow() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return absl::TimeFromTimespec(ts);
}

struct HeartbeatOptions {
  absl::Duration period = absl::Milliseconds(50);  // a ping every period
  absl::Duration limit = absl::Milliseconds(200);  // failed once silent for longer
  // Suspect once silent for longer than this: two periods (an answer is missing), or half the
  // limit if that is shorter.
  absl::Duration suspect_after() const { return std::min(2 * period, limit / 2); }

  // From the daemons' flags --heartbeat_ms and --silence_ms: the period at least 1 ms, the
  // limit at least two periods (or a healthy peer, answering once a period, would fail).
  static absl::StatusOr<HeartbeatOptions> FromFlags(int64_t heartbeat_ms, int64_t silence_ms) {
    if (heartbeat_ms < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--heartbeat_ms=", heartbeat_ms, ": must be at least 1"));
    }
    if (silence_ms < 2 * heartbeat_ms) {
      return absl::InvalidArgumentError(
          absl::StrCat("--silence_ms=", silence_ms, ": must be at least twice --heartbeat_ms (",
                       heartbeat_ms, "): a peer answers once a period"));
    }
    return HeartbeatOptions{absl::Milliseconds(heartbeat_ms), absl::Milliseconds(silence_ms)};
  }
};

class Heartbeat {
 public:
  enum class State { kHealthy, kSuspect, kFailed };

  Heartbeat() = default;
  // A peer first heard at `now`.
  Heartbeat(const HeartbeatOptions& options, absl::Time now)
      : limit_(options.limit), suspect_after_(options.suspect_after()), last_heard_(now) {}

  // A period passed: true if a ping is to be sent now (none is in flight), which is then in
  // flight. Never for a failed peer.
  bool Ping() {
    if (state_ == State::kFailed || outstanding_) return false;
    outstanding_ = true;
    return true;
  }

  // The peer answered the ping in flight at `now`. A failed peer stays failed.
  void Answered(absl::Time now) {
    if (state_ == State::kFailed) return;
    outstanding_ = false;
    last_heard_ = std::max(last_heard_, now);
    state_ = State::kHealthy;
  }

  // The watcher was away for `away` until `now` (it did not run): not held against the peer
  // (but no peer is taken to have been heard after `now`: one that joined meanwhile).
  void Excuse(absl::Duration away, absl::Time now) {
    if (away > absl::ZeroDuration())
      last_heard_ = std::max(last_heard_, std::min(last_heard_ + away, now));
  }

  // The state at `now`: failed (for good) once silent for longer than the limit, suspect once
  // silent for longer than suspect_after().
  State Check(absl::Time now) {
    if (state_ == State::kFailed) return state_;
    const absl::Duration silent = now - last_heard_;
    if (silent > limit_) {
      state_ = State::kFailed;
    } else if (silent > suspect_after_) {
      state_ = State::kSuspect;
    }
    return state_;
  }

  // One call of the watcher's timer (ipc::LivenessTimer) for this peer: excuses `away` and,
  // if `judge`, checks. The state after it.
  State Turn(absl::Time now, absl::Duration away, bool judge) {
    Excuse(away, now);
    return judge ? Check(now) : state_;
  }

  // Why the peer is suspect or failed at `now`, for logs and reasons.
  std::string Why(absl::Time now) const {
    return absl::StrCat("no answer to heartbeats for ",
                        absl::FormatDuration(absl::Trunc(silence(now), absl::Milliseconds(1))),
                        " (the limit is ", absl::FormatDuration(limit_), ")");
  }

  State state() const { return state_; }
  bool outstanding() const { return outstanding_; }
  // How long the peer has been silent at `now` (excused time not counted).
  absl::Duration silence(absl::Time now) const { return now - last_heard_; }
  // When the peer fails if nothing is heard from it before (the first Check after it).
  absl::Time deadline() const { return last_heard_ + limit_; }

 private:
  absl::Duration limit_ = absl::Milliseconds(200);
  absl::Duration suspect_after_ = absl::Milliseconds(100);
  absl::Time last_heard_ = absl::InfinitePast();
  bool outstanding_ = false;
  State state_ = State::kHealthy;
};

}  // namespace disagg

#endif  // DISAGG_INTERNAL_HEARTBEAT_H_
