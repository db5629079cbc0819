// failover: a service that keeps its state in remote memory and survives its own death. It
// counts steps in one 4 KiB page of rack memory (a page is written back whole, so the page as
// the memory element holds it is always one consistent state), flushed at every step, and
// publishes it as the named root "state" in the trust group "failover".
//
// Started fresh, it maps a new state. Started by the rack monitor as the fast failure handler
// of a failed predecessor (DISAGG_FAILED_PROCESS is set), it steals the predecessor's state,
// checks every word of it, and carries on from the step the predecessor last made durable:
//
//   rackctl on-failure failover --on cpu1 -- build/bin/failover
//   rackctl run --on cpu0 -- build/bin/failover &
//   rackctl kill failover          # the successor's output: <rack>/on-failure-failover.log
//
// Flags: --steps N (stop after N steps; default: run until killed), --every N (print every N
// steps; default 1000), --pause_us N (between steps; default 1000).
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "disagg/disagg.h"

namespace {

constexpr uint64_t kMagic = 0x6661696c6f766572;  // "failover"
constexpr size_t kValues = 509;                  // the page: 3 header words and the values

struct State {
  uint64_t magic;
  uint64_t
      step;  // steps made; values[i] holds the value of the last step s < step, s % kValues == i
  uint64_t sum;  // of the values
  uint64_t values[kValues];
};
static_assert(sizeof(State) == 4096);

uint64_t ValueOf(uint64_t step) { return (step + 1) * 0x9E3779B97F4A7C15ull; }

// Empty if `s` is a state some step left; else what is wrong with it.
std::string Check(const State& s) {
  if (s.magic != kMagic) return "it holds no failover state";
  uint64_t sum = 0;
  for (size_t i = 0; i < kValues; ++i) {
    uint64_t want = 0;
    if (s.step > i) want = ValueOf(s.step - 1 - (s.step - 1 - i) % kValues);
    if (s.values[i] != want) return "value " + std::to_string(i) + " is wrong";
    sum += s.values[i];
  }
  if (sum != s.sum) return "its checksum is wrong";
  return "";
}

int Fail(const char* what, const absl::Status& s) {
  std::fprintf(stderr, "failover: %s: %s\n", what, std::string(s.message()).c_str());
  return 1;
}

uint64_t Flag(int argc, char** argv, const char* name, uint64_t fallback) {
  const std::string prefix = std::string("--") + name + "=";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) {
      return std::strtoull(argv[i] + prefix.size(), nullptr, 10);
    }
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t steps = Flag(argc, argv, "steps", 0);
  const uint64_t every = Flag(argc, argv, "every", 1000);
  const uint64_t pause_us = Flag(argc, argv, "pause_us", 1000);
  auto joined = disagg::Rack::Join();
  if (!joined.ok()) return Fail("join", joined.status());
  disagg::Rack& rack = **joined;
  if (absl::Status s = rack.JoinGroup("failover"); !s.ok()) return Fail("join group", s);

  State* state = nullptr;
  const char* failed = std::getenv("DISAGG_FAILED_PROCESS");
  if (failed == nullptr) {
    auto region = rack.Map(sizeof(State));
    if (!region.ok()) return Fail("map", region.status());
    state = region->as<State>();
    state->magic = kMagic;
    if (absl::Status s = rack.Flush(state, sizeof(State)); !s.ok()) return Fail("flush", s);
    std::printf("failover: process %u starts a fresh state\n", rack.self());
  } else {
    const uint32_t from = static_cast<uint32_t>(std::strtoul(failed, nullptr, 10));
    const char* why = std::getenv("DISAGG_FAILED_REASON");
    std::printf("failover: process %u takes over from process %u (%s)\n", rack.self(), from,
                why != nullptr ? why : "?");
    auto root = rack.Lookup(from, "state");
    if (!root.ok()) return Fail("look up the state", root.status());
    auto stolen = rack.Steal(from, *root, sizeof(State));
    if (!stolen.ok()) return Fail("steal the state", stolen.status());
    state = stolen->as<State>();
    if (const std::string wrong = Check(*state); !wrong.empty()) {
      std::fprintf(stderr, "failover: the adopted state is broken: %s\n", wrong.c_str());
      return 1;
    }
    std::printf("failover: process %u adopted process %u's state at step %" PRIu64 ": verified\n",
                rack.self(), from, state->step);
  }
  std::fflush(stdout);
  if (absl::Status s = rack.Publish("state", state); !s.ok()) return Fail("publish", s);

  while (steps == 0 || state->step < steps) {
    const uint64_t step = state->step;
    uint64_t& slot = state->values[step % kValues];
    state->sum += ValueOf(step) - slot;
    slot = ValueOf(step);
    state->step = step + 1;
    if (absl::Status s = rack.Flush(state, sizeof(State)); !s.ok()) return Fail("flush", s);
    if (every != 0 && state->step % every == 0) {
      std::printf("failover: step %" PRIu64 "\n", state->step);
      std::fflush(stdout);
    }
    if (pause_us != 0) usleep(pause_us);
  }
  if (const std::string wrong = Check(*state); !wrong.empty()) {
    std::fprintf(stderr, "failover: the state is broken: %s\n", wrong.c_str());
    return 1;
  }
  std::printf("failover: done at step %" PRIu64 "\n", state->step);
  return 0;
}
