// What tests of rack_peer processes ask of a rack: addresses and ranges in rack_peer's
// command syntax, rackctl's output, a peer's events, and what a memory element says of the
// processes it holds memory for.
#ifndef DISAGG_TEST_RACK_PROBES_H_
#define DISAGG_TEST_RACK_PROBES_H_

#include <cstdint>
#include <map>
#include <string>

#include "rack_harness.h"
#include "rack_peer_driver.h"

namespace disagg::testing {

// An address rack_peer printed (hex), and "ADDR BYTES" as its commands take a range.
uint64_t Addr(const std::string& hex);
std::string Range(uint64_t addr, uint64_t bytes);

// Runs `rackctl --rack <rack> ARGS`; its output, and its exit status in `rc` if given.
std::string Rackctl(const TestRack& rack, const std::string& args, int* rc = nullptr);

// `rackctl check`: true if the Rack MMU's map and the memory elements' page tables agree;
// its output in `out`.
bool Consistent(const TestRack& rack, std::string* out);
#define REQUIRE_CONSISTENT(rack)                             \
  do {                                                       \
    std::string check_output;                                \
    const bool consistent = Consistent(rack, &check_output); \
    INFO(check_output);                                      \
    REQUIRE(consistent);                                     \
  } while (0)

// Polls `peer`'s events until one contains `wanted` (10 s at the most).
bool WaitForEvent(Peer& peer, const std::string& wanted);

// What memory element `element` says of each process it holds memory for (by rack id);
// empty if it cannot be asked.
struct MemoryRow {
  uint64_t bound_bytes = 0;
  uint64_t writebacks = 0;
  uint64_t refused = 0;
  bool fenced = false;
};
std::map<uint32_t, MemoryRow> MemoryStatus(const TestRack& rack, const std::string& element);

}  // namespace disagg::testing

#endif  // DISAGG_TEST_RACK_PROBES_H_
