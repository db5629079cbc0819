// Heartbeat: the watcher's side of one peer's heartbeats. Each period the watcher calls Tick:
// with no ping in flight it sends one (at most one is ever in flight, so that a stalled
// peer's ring does not fill up); with one in flight the period is a missed beat. From the
// second missed beat in a row the peer is suspect, at `missed_beats` it has failed, for good.
// An answer clears the count, and a suspect peer is healthy again.
//
// The rack monitor watches its elements with it, a compute element its processes.
// Value type; not thread-safe.
#ifndef DISAGG_INTERNAL_HEARTBEAT_H_
#define DISAGG_INTERNAL_HEARTBEAT_H_

namespace disagg {

class Heartbeat {
 public:
  enum class State { kHealthy, kSuspect, kFailed };

  // `missed_beats` at least 1.
  explicit Heartbeat(int missed_beats = 10) : missed_beats_(missed_beats < 1 ? 1 : missed_beats) {}

  // A period passed: true if a ping is to be sent now. state() may have changed.
  bool Tick() {
    if (state_ == State::kFailed) return false;
    if (!outstanding_) {
      outstanding_ = true;
      return true;
    }
    ++missed_;
    if (missed_ >= missed_beats_) {
      state_ = State::kFailed;
    } else if (missed_ >= 2) {
      state_ = State::kSuspect;
    }
    return false;
  }

  // The peer answered the ping in flight. A failed peer stays failed.
  void Answered() {
    if (state_ == State::kFailed) return;
    outstanding_ = false;
    missed_ = 0;
    state_ = State::kHealthy;
  }

  State state() const { return state_; }
  int missed() const { return missed_; }
  bool outstanding() const { return outstanding_; }

 private:
  int missed_beats_;
  int missed_ = 0;
  bool outstanding_ = false;
  State state_ = State::kHealthy;
};

}  // namespace disagg

#endif  // DISAGG_INTERNAL_HEARTBEAT_H_
