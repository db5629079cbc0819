// Start-up shared by the rack's daemons: logs into the run directory, kernel feature probes.
#ifndef DISAGG_INTERNAL_DAEMON_H_
#define DISAGG_INTERNAL_DAEMON_H_

#include <string>

#include "absl/status/status.h"

namespace disagg {

// Starts glog for daemon `element` ("mmu", "cpu0", ...): logs go to `log_dir` as
// <element>.INFO etc. (stderr too for warnings), SIGPIPE is ignored, and the kernel
// features the IPC core needs are probed. FAILED_PRECONDITION if one is missing.
absl::Status InitDaemon(const char* argv0, const std::string& log_dir, const std::string& element);

// The exit code for daemon `element` ending with `status` (0 for OK, else 1, logged).
int ExitCode(const std::string& element, const absl::Status& status);

// The socket path of element `name` in run directory `run_dir`: <run_dir>/<name>.sock.
std::string SocketPath(const std::string& run_dir, const std::string& name);

}  // namespace disagg

#endif  // DISAGG_INTERNAL_DAEMON_H_
