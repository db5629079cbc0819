// The orchestrator of the mapreduce example: it starts the mappers and reducers on the
// rack's compute elements, runs the map phase (adopting a straggler's half-done work), both
// shuffles with their reductions, and the plain count they are checked against.
#ifndef DISAGG_EXAMPLES_MAPREDUCE_ORCHESTRATOR_H_
#define DISAGG_EXAMPLES_MAPREDUCE_ORCHESTRATOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "disagg/disagg.h"

namespace mapreduce {

struct Options {
  uint32_t mappers = 4;
  uint32_t reducers = 2;
  uint64_t intermediate = 1ull << 30;  // generated corpus: about this much intermediate data
  std::string input;                   // a file to count instead
  uint64_t seed = 1;
  uint32_t vocabulary = 50000;
  uint64_t chunk = 8 << 20;           // mappers' output chunks
  bool straggler = true;              // mapper 0 is slow; its work is adopted
  uint64_t slow_us = 5000;            // the straggler's pause after each block
  std::string rackctl;                // the rackctl that starts the workers
  std::string self;                   // this program, which the workers run too
  std::vector<std::string> elements;  // compute elements to spread over
};

// Runs the case study in the rack `rack` joined; prints a report and the JSON line. Returns
// the exit status (0 when the counts match).
int RunOrchestrator(disagg::Rack& rack, const Options& options);

}  // namespace mapreduce

#endif  // DISAGG_EXAMPLES_MAPREDUCE_ORCHESTRATOR_H_
