// The worker side of the mapreduce example: a mapper or a reducer, as the orchestrator asks.
#ifndef DISAGG_EXAMPLES_MAPREDUCE_WORKER_H_
#define DISAGG_EXAMPLES_MAPREDUCE_WORKER_H_

#include "disagg/disagg.h"

namespace mapreduce {

// Joins the trust group "mapreduce", says "ready ID" and serves the orchestrator's commands
// on stdin until it ends them. Returns the exit status.
int RunWorker(disagg::Rack& rack);

}  // namespace mapreduce

#endif  // DISAGG_EXAMPLES_MAPREDUCE_WORKER_H_
