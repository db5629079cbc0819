// Network faults end to end, on private racks of real daemons: a partition between a compute
// element and a memory element stops the data path between them, both ways, until healed,
// while everyone else is served; a delay holds every message; bad requests are refused.
#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <thread>

#include "rack_harness.h"
#include "rack_peer_driver.h"
#include "rack_probes.h"

namespace disagg::testing {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;
constexpr char kRackArgs[] =
    "--compute 2 --memory 2 --pool-size 64M --cache-budget 1M --silence-ms 2000";

// Maps 4 MiB in `peer` (spread over both memory elements), fills it with `seed` and flushes
// it: through a 1 MiB cache, its first MiB is then on the memory elements only.
uint64_t Written(Peer& peer, int seed) {
  const uint64_t a = Addr(peer.Ask("map " + std::to_string(4 * kMiB)));
  REQUIRE(peer.Ask("fill " + Range(a, 4 * kMiB) + " " + std::to_string(seed)) == "ok");
  REQUIRE(peer.Ask("flush " + Range(a, 4 * kMiB)) == "ok");
  return a;
}

std::string Inject(const TestRack& rack, const std::string& args, int expect_rc = 0) {
  int rc = 0;
  const std::string out = Rackctl(rack, args, &rc);
  INFO(args << " -> " << out);
  REQUIRE(rc == expect_rc);
  return out;
}

}  // namespace

TEST_CASE(
    "A partition stops the data path between a compute element and a memory element until "
    "healed while everyone else is served") {
  TestRack rack;
  REQUIRE(rack.Up(kRackArgs) == 0);
  Peer cut(rack.dir(), "cpu0");
  Peer served(rack.dir(), "cpu1");
  REQUIRE(cut.ok());
  REQUIRE(served.ok());
  const uint64_t a = Written(cut, 1);
  const uint64_t b = Written(served, 2);

  Inject(rack, "partition cpu0 mem1");
  // Pages on mem1 cannot reach cpu0: the read waits...
  cut.Send("verify " + Range(a, kMiB) + " 1");
  REQUIRE(cut.AnswerWithin(500).empty());
  // ...while cpu1's processes are served by both memory elements.
  REQUIRE(served.Ask("verify " + Range(b, kMiB) + " 2") == "ok");
  Inject(rack, "partition mem1 cpu0", 1);  // the same partition, named the other way
  // Healed, the read completes with the data written before.
  Inject(rack, "heal cpu0 mem1");
  REQUIRE(cut.Answer() == "ok");
  REQUIRE(Inject(rack, "heal", 1).find("nothing is partitioned") != std::string::npos);

  SECTION("a partition given --for heals by itself, though the rackctl that set it is gone") {
    Inject(rack, "partition mem0 cpu0 --for 300");
    const uint64_t c = Addr(cut.Ask("map " + std::to_string(4 * kMiB)));
    REQUIRE(cut.Ask("fill " + Range(c, 4 * kMiB) + " 3") == "ok");  // write-backs wait, then land
    REQUIRE(cut.Ask("verify " + Range(c, 4 * kMiB) + " 3") == "ok");
    REQUIRE(Inject(rack, "heal cpu0 mem0", 1).find("are not partitioned") != std::string::npos);
  }
  SECTION("a partition longer than a call's timeout fails the call, not the process") {
    Inject(rack, "partition cpu0 mem1");
    // Its second MiB: the first is in its cache since it was read.
    const std::string said = cut.Ask("verify " + Range(a + kMiB, kMiB) + " 1");
    INFO(said);
    REQUIRE(said.rfind("fault", 0) == 0);
    Inject(rack, "heal");
    REQUIRE(cut.Ask("id") == std::to_string(cut.id()));
  }
  REQUIRE_CONSISTENT(rack);
}

TEST_CASE("A delay holds every message on an element's channels, and ends") {
  TestRack rack;
  REQUIRE(rack.Up(kRackArgs) == 0);
  Peer slow(rack.dir(), "cpu0");
  REQUIRE(slow.ok());
  const uint64_t a = Written(slow, 1);
  Inject(rack, "delay mem0 5000");  // 5 ms
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(slow.Ask("verify " + Range(a, kMiB) + " 1") == "ok");  // pages from both elements
  const auto took = std::chrono::steady_clock::now() - start;
  // At least one read went to mem0 and came back: held 5 ms each way.
  REQUIRE(took >= std::chrono::milliseconds(10));
  Inject(rack, "delay mem0 0");
  REQUIRE(slow.Ask("verify " + Range(a, 4 * kMiB) + " 1") == "ok");
}

TEST_CASE("Bad partitions and delays are refused with the reason") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M") == 0);
  struct Case {
    std::string args;
    int rc;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {"partition cpu0 cpu0", 1, "not partitioned from itself"},
           {"partition cpu0 mem7", 1, "no compute or memory element 'mem7'"},
           {"partition cpu0", 2, "unknown command or arguments"},
           {"partition cpu0 mem0 --for -5", 2, "not a number of milliseconds"},
           {"heal cpu0", 2, "unknown command or arguments"},
           {"heal cpu0 mem0", 1, "are not partitioned"},
           {"delay cpu0 fast", 2, "not a number of microseconds"},
           {"delay cpu0 2000000", 2, "not a number of microseconds"},
           {"delay cpu9 5", 1, "no compute or memory element 'cpu9'"},
           {"kill 1 --for 5", 2, "--for goes only with pause, partition and delay"},
       }) {
    int rc = 0;
    const std::string out = Rackctl(rack, c.args, &rc);
    INFO(c.args << " -> " << out);
    CHECK(rc == c.rc);
    CHECK(out.find(c.says) != std::string::npos);
  }
  // And the monitor serves on: a good one is taken and ended.
  Inject(rack, "partition cpu0 mmu");
  Inject(rack, "heal");
}

}  // namespace disagg::testing
