#include "ipc/event_loop.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <thread>
#include <vector>

#include "internal/heartbeat.h"
#include "ipc/liveness_timer.h"

namespace disagg::ipc {
namespace {

EventLoopOptions TestOptions() {
  EventLoopOptions options;
  options.handle_signals = false;
  return options;
}

TEST_CASE("The event loop runs timers until they are removed") {
  auto loop = EventLoop::Create(TestOptions());
  REQUIRE(loop.ok());
  int fired = 0;
  EventLoop::WatchId id = 0;
  id = (*loop)->AddTimer(absl::Milliseconds(1), [&] {
    if (++fired == 3) {
      (*loop)->Unwatch(id);
      (*loop)->AddTimer(absl::Milliseconds(5), [&] { (*loop)->Stop(); });
    }
  });
  REQUIRE((*loop)->Run().ok());
  REQUIRE(fired == 3);
}

TEST_CASE("The event loop reports a readable fd and stops watching it on request") {
  auto loop = EventLoop::Create(TestOptions());
  REQUIRE(loop.ok());
  Fd efd(::eventfd(0, EFD_NONBLOCK));
  int seen = 0;
  EventLoop::WatchId id = 0;
  id = (*loop)->WatchFd(efd.get(), POLLIN, [&](int revents) {
    REQUIRE((revents & POLLIN) != 0);
    uint64_t v;
    REQUIRE(::read(efd.get(), &v, 8) == 8);
    if (++seen == 2) {
      (*loop)->Unwatch(id);
      (*loop)->Stop();
    } else {
      uint64_t one = 1;
      REQUIRE(::write(efd.get(), &one, 8) == 8);
    }
  });
  uint64_t one = 1;
  REQUIRE(::write(efd.get(), &one, 8) == 8);
  REQUIRE((*loop)->Run().ok());
  REQUIRE(seen == 2);
}

TEST_CASE("The event loop sleeps between pollers' work instead of spinning") {
  auto loop = EventLoop::Create(TestOptions());
  REQUIRE(loop.ok());
  int polls = 0, sleeps = 0, wakes = 0;
  (*loop)->AddPoller({[&] {
                        ++polls;
                        return false;
                      },
                      [&] {
                        ++sleeps;
                        return false;
                      },
                      [&] { ++wakes; }});
  int ticks = 0;
  (*loop)->AddTimer(absl::Milliseconds(2), [&] {
    if (++ticks == 10) (*loop)->Stop();
  });
  REQUIRE((*loop)->Run().ok());
  // 20 ms at a 20 us spin: a spinning loop would poll hundreds of thousands of times.
  REQUIRE(sleeps >= 9);
  REQUIRE(wakes >= 9);
  REQUIRE(polls < 200000);
}

TEST_CASE("Housekeeping alone starts no spin: a loop woken by heartbeats sleeps between them") {
  EventLoopOptions options = TestOptions();
  options.spin = absl::Seconds(1);  // after real work it would poll for a whole second
  auto loop = EventLoop::Create(options);
  REQUIRE(loop.ok());
  Fd beat(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  REQUIRE(beat.valid());
  int sleeps = 0, wakes = 0;
  uint64_t beats = 0;
  (*loop)->AddPoller({[] { return false; },
                      [&] {
                        ++sleeps;
                        return false;
                      },
                      [] {}});
  (*loop)->WatchFd(beat.get(), POLLIN, [&](int) {
    uint64_t v = 0;
    (void)!::read(beat.get(), &v, sizeof(v));
    (*loop)->Housekeeping();
    ++wakes;
    // Beats that came while the loop was descheduled add up in one read: count the value.
    beats += v;
    if (beats >= 10) (*loop)->Stop();
  });
  std::thread heart([&] {
    for (int i = 0; i < 10; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
      const uint64_t one = 1;
      (void)!::write(beat.get(), &one, sizeof(one));
    }
  });
  const auto start = std::chrono::steady_clock::now();
  REQUIRE((*loop)->Run().ok());
  heart.join();
  REQUIRE(beats == 10);
  // Asleep before each wake-up after the first; a spinning loop would not sleep at all within
  // its one-second spin.
  REQUIRE(wakes >= 2);
  REQUIRE(sleeps >= wakes - 1);
  REQUIRE(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
}

TEST_CASE(
    "A liveness timer pings every period, checks once more at an early deadline, and "
    "tells how long its loop was away, judging only once the rings could be read") {
  struct Call {
    bool ping;
    absl::Duration away;
    bool judge;
    absl::Time at;
  };
  std::vector<Call> calls;
  absl::Time asked = absl::InfiniteFuture();
  // The sequence asked for: two rounds, the deadline's call, three rounds (the loop stalls
  // 300 ms in the third), a late round, then the call after it that judges. A call that comes
  // late for any other reason (the machine descheduled the loop: on a busy 2-core machine,
  // tens of ms happen) adds calls of its own, as it must; such a run is repeated, up to 5
  // times, and the checks below hold for the first run in which only the stall was late.
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto loop = EventLoop::Create(TestOptions());
    REQUIRE(loop.ok());
    calls.clear();
    ipc::LivenessTimer* self = nullptr;
    ipc::LivenessTimer timer(
        **loop, absl::Milliseconds(40), [&](bool ping, absl::Duration away, bool judge) {
          calls.push_back({ping, away, judge, LivenessNow()});
          if (calls.size() == 2) {  // a deadline 10 ms from now, before the next round
            asked = LivenessNow() + absl::Milliseconds(10);
            self->WakeAt(asked);
            self->WakeAt(asked + absl::Milliseconds(5));     // a later one: the earlier stands
            self->WakeAt(LivenessNow() + absl::Seconds(5));  // after the next round: left to it
          }
          if (calls.size() == 5) std::this_thread::sleep_for(std::chrono::milliseconds(300));
          // Stops at the first call after the stall that judges (or, failing that, the 20th).
          if ((calls.size() > 6 && judge) || calls.size() == 20) (*loop)->Stop();
        });
    self = &timer;
    REQUIRE_FALSE(timer.running());
    timer.Start();
    timer.Start();  // idempotent
    REQUIRE(timer.running());
    REQUIRE((*loop)->Run().ok());
    timer.Stop();
    REQUIRE_FALSE(timer.running());
    bool disturbed = false;
    for (size_t i = 0; i < calls.size(); ++i) {
      if (i != 5 && calls[i].away > absl::ZeroDuration()) disturbed = true;
    }
    if (!disturbed) break;
    WARN("attempt " << attempt << ": the machine made a call late; running it again");
  }
  REQUIRE(calls.size() >= 7);
  REQUIRE(calls.back().judge);
  REQUIRE(calls[0].ping);
  REQUIRE(calls[1].ping);
  REQUIRE_FALSE(calls[2].ping);  // the deadline's call, not a round
  REQUIRE(calls[2].at >= asked);
  for (size_t i = 3; i < 6; ++i) REQUIRE(calls[i].ping);  // one deadline call only
  // The loop slept 300 ms in the fifth call: the sixth came at least 260 ms after it was due
  // (40 ms after the fifth). It does not judge; a call a moment later, before the next round,
  // does.
  REQUIRE(calls[5].away >= absl::Milliseconds(255));
  REQUIRE_FALSE(calls[5].judge);
  REQUIRE_FALSE(calls[6].ping);
  REQUIRE(calls[6].judge);
}

}  // namespace
}  // namespace disagg::ipc
