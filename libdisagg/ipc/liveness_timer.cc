#include "ipc/liveness_timer.h"

#include <algorithm>
#include <utility>

namespace disagg::ipc {

LivenessTimer::LivenessTimer(EventLoop& loop, absl::Duration period, Beat beat)
    : loop_(loop), period_(period), beat_(std::move(beat)) {}

void LivenessTimer::Start() {
  if (round_ != 0) return;
  last_call_ = absl::Now();
  next_round_ = last_call_ + period_;
  round_ = loop_.AddTimer(period_, [this] {
    next_round_ = absl::Now() + period_;
    Call(/*ping=*/true);
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
  // the deadline has passed when it comes (the kernel's timers are not early, but absl's clock
  // and the loop's may disagree by a hair).
  const absl::Duration after =
      std::max(at - absl::Now(), absl::ZeroDuration()) + absl::Milliseconds(1);
  wake_ = loop_.AddTimer(after, [this] {
    loop_.Unwatch(wake_);
    wake_ = 0;
    wake_at_ = absl::InfiniteFuture();
    Call(/*ping=*/false);
  });
}

void LivenessTimer::Call(bool ping) {
  const absl::Time now = absl::Now();
  const absl::Duration away =
      std::max(now - last_call_ - period_ - period_ / 2, absl::ZeroDuration());
  last_call_ = now;
  beat_(ping, away);
}

}  // namespace disagg::ipc
