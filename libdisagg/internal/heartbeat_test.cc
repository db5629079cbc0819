#include "internal/heartbeat.h"

#include <catch2/catch.hpp>

namespace disagg {
namespace {

using State = Heartbeat::State;

TEST_CASE("One ping is in flight at a time; missed beats make a peer suspect, then failed") {
  Heartbeat beat(4);
  REQUIRE(beat.Tick());        // the first ping
  REQUIRE_FALSE(beat.Tick());  // unanswered: missed 1, no second ping
  REQUIRE(beat.missed() == 1);
  REQUIRE(beat.state() == State::kHealthy);  // one missed beat is no suspicion
  REQUIRE_FALSE(beat.Tick());
  REQUIRE(beat.state() == State::kSuspect);  // from the second
  REQUIRE_FALSE(beat.Tick());
  REQUIRE(beat.state() == State::kSuspect);
  REQUIRE_FALSE(beat.Tick());
  REQUIRE(beat.missed() == 4);
  REQUIRE(beat.state() == State::kFailed);  // at missed_beats
  // For good: no more pings, and a late answer changes nothing.
  REQUIRE_FALSE(beat.Tick());
  beat.Answered();
  REQUIRE(beat.state() == State::kFailed);
  REQUIRE_FALSE(beat.Tick());
}

TEST_CASE("An answer clears the missed beats, and a suspect peer is healthy again") {
  Heartbeat beat(4);
  REQUIRE(beat.Tick());
  REQUIRE_FALSE(beat.Tick());
  REQUIRE_FALSE(beat.Tick());
  REQUIRE(beat.state() == State::kSuspect);
  beat.Answered();
  REQUIRE(beat.state() == State::kHealthy);
  REQUIRE(beat.missed() == 0);
  REQUIRE_FALSE(beat.outstanding());
  REQUIRE(beat.Tick());  // the next ping goes out at once
  // Answered every period, it never misses a beat.
  for (int i = 0; i < 100; ++i) {
    beat.Answered();
    REQUIRE(beat.Tick());
    REQUIRE(beat.state() == State::kHealthy);
  }
  // Missing beats in a row is what counts: three, an answer, three more is not four.
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 3; ++i) REQUIRE_FALSE(beat.Tick());
    REQUIRE(beat.state() == State::kSuspect);
    beat.Answered();
    REQUIRE(beat.Tick());
  }
  REQUIRE(beat.state() == State::kHealthy);
}

}  // namespace
}  // namespace disagg
