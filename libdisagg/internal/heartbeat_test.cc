#include "internal/heartbeat.h"

#include <catch2/catch.hpp>

namespace disagg {
namespace {

using State = Heartbeat::State;

const absl::Time kStart = absl::FromUnixSeconds(1000);
absl::Time At(int ms) { return kStart + absl::Milliseconds(ms); }

HeartbeatOptions Options() { return {absl::Milliseconds(50), absl::Milliseconds(200)}; }

TEST_CASE("One ping is in flight at a time; silence makes a peer suspect, then failed") {
  Heartbeat beat(Options(), kStart);
  REQUIRE(beat.Ping());                             // the first ping
  REQUIRE_FALSE(beat.Ping());                       // unanswered: no second ping
  REQUIRE(beat.Check(At(100)) == State::kHealthy);  // two periods of silence is no suspicion
  REQUIRE(beat.Check(At(101)) == State::kSuspect);  // past them it is
  REQUIRE(beat.Check(At(200)) == State::kSuspect);
  REQUIRE(beat.deadline() == At(200));
  REQUIRE(beat.Check(At(201)) == State::kFailed);  // past the limit
  REQUIRE(beat.silence(At(201)) == absl::Milliseconds(201));
  REQUIRE(beat.Why(At(201)) == "no answer to heartbeats for 201ms (the limit is 200ms)");
  // For good: no more pings, and a late answer changes nothing.
  REQUIRE_FALSE(beat.Ping());
  beat.Answered(At(202));
  REQUIRE(beat.Check(At(203)) == State::kFailed);
  REQUIRE_FALSE(beat.Ping());
}

TEST_CASE("An answer restarts the silence, and a suspect peer is healthy again") {
  Heartbeat beat(Options(), kStart);
  REQUIRE(beat.Ping());
  REQUIRE(beat.Check(At(150)) == State::kSuspect);
  beat.Answered(At(160));
  REQUIRE(beat.state() == State::kHealthy);
  REQUIRE_FALSE(beat.outstanding());
  REQUIRE(beat.deadline() == At(360));
  REQUIRE(beat.Ping());  // the next ping goes out at once
  // Answered every period, it is never even suspect, for as long as it goes on.
  for (int t = 210; t < 10000; t += 50) {
    REQUIRE(beat.Check(At(t)) == State::kHealthy);
    beat.Answered(At(t + 1));
    REQUIRE(beat.Ping());
  }
  beat.Answered(At(10000));
  // Silence is what counts, not how often it was suspect: 190 ms of it, an answer, 190 more.
  for (int round = 0; round < 2; ++round) {
    const int from = 10000 + round * 190;
    REQUIRE(beat.Check(At(from + 190)) == State::kSuspect);
    beat.Answered(At(from + 190));
  }
  REQUIRE(beat.state() == State::kHealthy);
  // An answer from before the last one does not move the silence back.
  beat.Answered(At(100));
  REQUIRE(beat.deadline() == At(10380 + 200));
}

TEST_CASE("Time the watcher was away is not held against the peer") {
  Heartbeat beat(Options(), kStart);
  REQUIRE(beat.Ping());
  // The watcher was descheduled for 500 ms and finds the answer waiting: excused, not failed.
  beat.Excuse(absl::Milliseconds(500), At(550));
  REQUIRE(beat.Check(At(550)) == State::kHealthy);
  REQUIRE(beat.deadline() == At(700));
  beat.Answered(At(551));
  REQUIRE(beat.Check(At(600)) == State::kHealthy);
  // Without an answer, silence after the excused time still fails it at the limit.
  REQUIRE(beat.Ping());
  beat.Excuse(absl::ZeroDuration(), At(600));
  // A turn that does not judge leaves the state as it was, however long the silence.
  REQUIRE(beat.Turn(At(900), absl::ZeroDuration(), /*judge=*/false) == State::kHealthy);
  REQUIRE(beat.Check(At(751)) == State::kSuspect);
  REQUIRE(beat.Check(At(752)) == State::kFailed);
}

TEST_CASE("An excuse never makes a peer heard later than now: one that joined meanwhile") {
  Heartbeat beat(Options(), At(500));  // joined while the watcher was away since 0
  beat.Excuse(absl::Milliseconds(500), At(510));
  REQUIRE(beat.deadline() == At(710));  // from 510 at most, not 1000
  REQUIRE(beat.Check(At(711)) == State::kFailed);
}

TEST_CASE("The heartbeat flags are checked: a limit of less than two periods is refused") {
  auto ok = HeartbeatOptions::FromFlags(50, 200);
  REQUIRE(ok.ok());
  REQUIRE(ok->period == absl::Milliseconds(50));
  REQUIRE(ok->limit == absl::Milliseconds(200));
  REQUIRE(ok->suspect_after() == absl::Milliseconds(100));
  REQUIRE(HeartbeatOptions::FromFlags(5, 2000)->suspect_after() == absl::Milliseconds(10));
  REQUIRE(HeartbeatOptions::FromFlags(100, 200)->suspect_after() == absl::Milliseconds(100));
  auto zero = HeartbeatOptions::FromFlags(0, 200);
  REQUIRE_FALSE(zero.ok());
  REQUIRE_THAT(std::string(zero.status().message()), Catch::Contains("--heartbeat_ms=0"));
  auto short_limit = HeartbeatOptions::FromFlags(50, 99);
  REQUIRE_FALSE(short_limit.ok());
  REQUIRE_THAT(std::string(short_limit.status().message()),
               Catch::Contains("--silence_ms=99") && Catch::Contains("twice"));
}

}  // namespace
}  // namespace disagg
