#include "ipc/event_loop.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <catch2/catch.hpp>

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
  (*loop)->AddPoller({[&] { ++polls; return false; },
                      [&] { ++sleeps; return false; },
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

}  // namespace
}  // namespace disagg::ipc
