// The redo log under fire: writers (redo_log_writer) rewrite a 33-page structure through a
// RedoLog, transaction after transaction, and are SIGKILLed at random moments; each time a
// fresh writer steals the dead one's memory, checks what the memory elements hold, recovers
// the log, checks the state again and carries on from it.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "rack_harness.h"
#include "rack_peer_driver.h"

namespace disagg::testing {
namespace {

struct Adopted {
  uint64_t seq = 0;
  std::string raw;      // whole | mixed: the state as the memory elements held it
  bool redone = false;  // Recover redid a committed transaction
  std::string verdict;  // "ok" or "bad ..."
};

Adopted ParseAdopted(const std::string& line) {
  Adopted a;
  std::istringstream in(line);
  std::string word, raw, redone;
  in >> word >> a.seq >> raw >> redone;
  if (word != "adopted") return {0, "", false, "not an adoption: " + line};
  a.raw = raw.substr(raw.find('=') + 1);
  a.redone = redone == "redone=1";
  std::getline(in >> std::ws, a.verdict);
  return a;
}

// The last "committed N" a killed writer printed (`floor` if none), reading to end of output.
uint64_t LastCommitted(Peer& writer, uint64_t floor) {
  uint64_t last = floor;
  for (std::string line = writer.Answer(); !line.empty(); line = writer.Answer()) {
    if (line.rfind("committed ", 0) == 0) last = std::strtoull(line.c_str() + 10, nullptr, 10);
  }
  return last;
}

TEST_CASE("A writer killed at random points mid-update leaves the old or the new state") {
  TestRack rack;
  // A cache of 32 pages (room for two processes: one may still be dying as the next attaches)
  // for a 66-page working set: evictions write pages back in the middle of every transaction,
  // so a kill leaves the memory elements half updated.
  REQUIRE(rack.Up("--compute 1 --memory 2 --pool-size 64M --cache-budget 128K") == 0);
  const unsigned seed = std::random_device{}();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> pause_us(0, 15000);

  auto writer =
      std::make_unique<Peer>(rack.dir(), "cpu0", "", "redo_log_writer", std::vector<std::string>{});
  INFO(writer->error());
  REQUIRE(writer->ok());
  const std::string state_line = writer->Answer();
  REQUIRE(state_line.rfind("state 0x", 0) == 0);
  const std::string addr = state_line.substr(6);

  constexpr int kKills = 200;
  int mixed = 0, redone = 0, advanced = 0;
  uint64_t seq = 0;
  for (int kill = 0; kill <= kKills; ++kill) {
    std::this_thread::sleep_for(std::chrono::microseconds(pause_us(rng)));
    writer->Kill();
    const uint64_t committed = LastCommitted(*writer, seq);
    const bool last = kill == kKills;
    std::vector<std::string> args{"--adopt", std::to_string(writer->id()), addr};
    if (last) args.push_back("--check-only");
    auto next = std::make_unique<Peer>(rack.dir(), "cpu0", "", "redo_log_writer", args);
    INFO("kill " << kill << ": " << next->error());
    REQUIRE(next->ok());
    const Adopted adopted = ParseAdopted(next->Answer());
    INFO("kill " << kill << ": the writer had committed " << committed << "; adopted state "
                 << adopted.seq << " (" << adopted.raw << ")");
    REQUIRE(adopted.verdict == "ok");
    // Nothing a Commit returned OK for is lost; at most the transaction under way is added.
    REQUIRE(adopted.seq >= committed);
    REQUIRE(adopted.seq <= committed + 1);
    mixed += adopted.raw == "mixed";
    redone += adopted.redone;
    advanced += adopted.seq > seq;
    seq = adopted.seq;
    if (!last) REQUIRE(next->Answer() == state_line);
    writer = std::move(next);
  }

  // A damaged record is refused, never redone: kill writers until an adopter that damages
  // the record finds a transaction to redo (two kills in three, above).
  bool refused = false;
  for (int attempt = 0; attempt < 30 && !refused; ++attempt) {
    auto next = std::make_unique<Peer>(
        rack.dir(), "cpu0", "", "redo_log_writer",
        std::vector<std::string>{"--adopt", std::to_string(writer->id()), addr});
    INFO("attempt " << attempt << ": " << next->error());
    REQUIRE(next->ok());
    REQUIRE(ParseAdopted(next->Answer()).verdict == "ok");
    REQUIRE(next->Answer() == state_line);
    std::this_thread::sleep_for(std::chrono::microseconds(pause_us(rng)));
    next->Kill();
    writer =
        std::make_unique<Peer>(rack.dir(), "cpu0", "", "redo_log_writer",
                               std::vector<std::string>{"--adopt", std::to_string(next->id()), addr,
                                                        "--check-only", "--damage-record"});
    INFO("attempt " << attempt << ": " << writer->error());
    REQUIRE(writer->ok());
    const std::string answer = writer->Answer();
    INFO(answer);
    if (answer.rfind("error recover: ", 0) == 0) {
      REQUIRE(answer.find("does not check out") != std::string::npos);
      refused = true;
    } else {
      REQUIRE(ParseAdopted(answer).verdict == "ok");  // nothing to redo: the record unused
      REQUIRE_FALSE(ParseAdopted(answer).redone);
    }
  }
  REQUIRE(refused);
  writer.reset();
  // Not chance alone: a transaction spends about half its time between its commit mark and
  // its applied mark, the window in which a kill leaves a mixed state for the log to repair;
  // 200 uniform kills miss it every time with a probability far below 1e-20. These show the
  // kills landed where the log matters, so the checks above could have failed.
  WARN(mixed << " of " << kKills << " kills left a mixed state, " << redone
             << " adoptions redid a transaction, " << advanced << " found progress; " << seq
             << " transactions in all");
  REQUIRE(mixed > 0);
  REQUIRE(redone > 0);
  // Progress between kills, but how much depends on the machine: under TSan beside other
  // tests, 33 of 200 adoptions found some (a quarter was required before, and failed there).
  REQUIRE(advanced > 0);
}

}  // namespace
}  // namespace disagg::testing
