#include "ipc/liveness_timer.h"

#include <algorithm>
#include <utility>

#include "internal/heartbeat.h"

namespace disagg::ipc {

namespace {
// A call within this of a late one does not judge either: it is served in the same turn of
// the loop, before the rings are read.
constexpr absl::Duration kSameTurn = absl::Milliseconds(1);
}  // namespace

LivenessTimer::LivenessTimer(EventLoop& loop, absl::Duration period, Beat beat)
    : loop_(loop), period_(period), beat_(std::move(beat)) {}

void LivenessTimer::Start() {
  if (round_ != 0) return;
  last_call_ = LivenessNow();
  next_round_ = last_call_ + period_;
  round_ = loop_.AddTimer(period_, [this] {
    const absl::Time due = next_round_;
    next_round_ = LivenessNow() + period_;
    Call(/*ping=*/true, due);
  });
}

void LivenessTimer::Stop() {
  if (round_ != 0) loop_.Unwatch(round_);
  if (wake_ != 0) loop_.Unwatch(wake_);
  round_ = wake_ = 0;
  wake_at_ = next_round_ = absl::InfiniteFuture();
}

void LivenessTimer::WakeAt(absl::Time at) {
  if (round_ == 0 || at >= next_round_ || at >= wake_at_) return;
  if (wake_ != 0) loop_.Unwatch(wake_);
  wake_at_ = at;
  // A timer is periodic: this one is unwatched at its first call. A millisecond late, so that
  // the deadline has surely passed when it comes.
  const absl::Duration after =
      std::max(at - LivenessNow(), absl::ZeroDuration()) + absl::Milliseconds(1);
  wake_ = loop_.AddTimer(after, [this] {
    const absl::Time due = wake_at_;
    loop_.Unwatch(wake_);
    wake_ = 0;
    wake_at_ = absl::InfiniteFuture();
    Call(/*ping=*/false, due);
  });
}

void LivenessTimer::Call(bool ping, absl::Time due) {
  const absl::Time now = LivenessNow();
  // Late past its time, or past the previous call if that was later (time excused once).
  absl::Duration away = now - std::max(due, last_call_);
  away = away > kGrace ? away : absl::ZeroDuration();
  last_call_ = now;
  if (away > absl::ZeroDuration()) last_late_ = now;
  const bool judge = now - last_late_ >= kSameTurn;
  beat_(ping, away, judge);
  if (!judge) WakeAt(now);  // judged in a moment, once the rings were read
}

}  // namespace disagg::ipc
