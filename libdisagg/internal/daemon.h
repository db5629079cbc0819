// Start-up shared by the rack's daemons: logs into the run directory, kernel feature probes.
#ifndef DISAGG_INTERNAL_DAEMON_H_
#define DISAGG_INTERNAL_DAEMON_H_

#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "ipc/socket.h"  // SocketPath

namespace disagg {

// Starts glog for daemon `element` ("mmu", "cpu0", ...): logs go to `log_dir` as
// <element>.INFO etc. (stderr too for warnings), SIGPIPE is ignored, the daemon takes the
// scheduling priority of --nice, and the kernel features the IPC core needs are probed.
// FAILED_PRECONDITION if one is missing.
absl::Status InitDaemon(const char* argv0, const std::string& log_dir, const std::string& element);

// The nice value the daemon was started with, before --nice: what the programs it starts
// for applications get back (async-signal-safe).
int BaseNice();

// A daemon's main() after flag parsing: InitDaemon, then `run`; returns the exit code (0 when
// `run` ends OK, else 1 with the reason logged).
int RunDaemon(const char* argv0, const std::string& log_dir, const std::string& element,
              absl::FunctionRef<absl::Status()> run);

}  // namespace disagg

#endif  // DISAGG_INTERNAL_DAEMON_H_
