// Freezer: pauses a set of processes as a stopped blade would, and resumes them. It uses a
// cgroup v1 freezer (a cgroup of its own under /sys/fs/cgroup/freezer) where one is mounted,
// else SIGSTOP and SIGCONT of each process. Processes are named by pidfd, so a pid reused
// meanwhile is never touched.
// Move-only; the destructor resumes what is still paused.
#ifndef DISAGG_RACKMON_FREEZER_H_
#define DISAGG_RACKMON_FREEZER_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ipc/fd.h"

namespace disagg::rackmon {

class Freezer {
 public:
  // Pauses `pids` (the processes whose pids are given, as they are now). `name` names the
  // cgroup ("<rack>-<element>"). FAILED_PRECONDITION if none of them could be paused.
  static absl::StatusOr<Freezer> Pause(const std::string& name, const std::vector<pid_t>& pids);
  Freezer(Freezer&&) = default;
  Freezer& operator=(Freezer&&) = default;
  ~Freezer();

  // Thaws and removes the freezer cgroups of rack monitors that died with processes frozen.
  static void SweepStale();

  // Resumes them. Idempotent.
  void Resume();
  // "cgroup freezer" or "SIGSTOP".
  const char* how() const { return cgroup_.empty() ? "SIGSTOP" : "cgroup freezer"; }
  size_t processes() const { return pidfds_.size(); }

 private:
  Freezer() = default;
  std::string cgroup_;  // empty: SIGSTOP was used
  std::vector<pid_t> pids_;
  std::vector<ipc::Fd> pidfds_;
  bool paused_ = false;
};

// The pids of `pid`'s descendants (children, their children, ...), as /proc tells now.
std::vector<pid_t> Descendants(pid_t pid);

}  // namespace disagg::rackmon

#endif  // DISAGG_RACKMON_FREEZER_H_
