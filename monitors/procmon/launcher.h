// Launcher: the compute element's side of `rackctl run`. It starts programs as children of
// procmon, so that they live and die with their compute element, and supervises them by pidfd.
//
// A launch request carries the program's argv, environment and working directory, and the
// numbers of the caller's fds 0-2, which the launcher copies out of the caller with
// pidfd_getfd: the program writes straight to the caller's terminal or pipes. The launcher
// answers `launched` with the pid, then `exited` under the same seq when the program ends;
// `signalProgram` from the same connection delivers a signal to it. A launcher connection
// that closes takes its program down (SIGTERM, then SIGKILL after kKillGrace), as a terminal's
// hang-up would; the program
// dies with procmon (PR_SET_PDEATHSIG), since a process does not outlive its compute element.
//
// Single-threaded, on the element's loop; the loop must outlive the Launcher.
#ifndef DISAGG_MONITORS_PROCMON_LAUNCHER_H_
#define DISAGG_MONITORS_PROCMON_LAUNCHER_H_

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "ipc/event_loop.h"
#include "ipc/fd.h"
#include "ipc/hub.h"
#include "proto/rack.capnp.h"

namespace disagg::procmon {

// How long a program whose launcher hung up has between SIGTERM and SIGKILL.
inline constexpr absl::Duration kKillGrace = absl::Seconds(3);

// The environment a launched program gets: the caller's entries, less those named like one
// of `additions` (NAME=value), then `additions`.
std::vector<std::string> MergeEnvironment(std::vector<std::string> caller,
                                          const std::vector<std::string>& additions);

// Forks and execs `argv` (argv[0] a path, not looked up) with environment `env` in `cwd`,
// its fds 0-2 copies of `stdio` (each >= 3). The child starts with default signal handling,
// an empty signal mask, a process group of its own, the nice the daemon started with
// (BaseNice), and dies with the calling thread (PR_SET_PDEATHSIG). Returns its pid once the
// exec went through; NOT_FOUND saying whether entering `cwd` or running the program failed,
// and why; INVALID_ARGUMENT for an empty argv or a stdio fd below 3.
absl::StatusOr<pid_t> SpawnProgram(const std::vector<std::string>& argv,
                                   const std::vector<std::string>& env, const std::string& cwd,
                                   const int (&stdio)[3]);

class Launcher {
 public:
  // `env_additions` (NAME=value) are added to every program's environment, replacing the
  // caller's entries of the same names.
  Launcher(ipc::EventLoop& loop, std::string element, std::vector<std::string> env_additions);
  ~Launcher();
  Launcher(const Launcher&) = delete;
  Launcher& operator=(const Launcher&) = delete;

  // Starts the program `request` describes for the peer on `link`. Bad requests and programs
  // that cannot be started are answered with an error on `link`; the returned status is only
  // the link's own failure.
  absl::Status HandleLaunch(ipc::Link& link, uint64_t seq, proto::Launch::Reader request);
  // Delivers `request`'s signal to the program `link` launched.
  absl::Status HandleSignal(ipc::Link& link, uint64_t seq, proto::SignalProgram::Reader request);
  // `link` closed: the program it launched, if still running, is sent SIGTERM, and SIGKILL
  // kKillGrace later if it is still running then.
  void LinkClosed(ipc::Link& link);

 private:
  struct Program {
    pid_t pid = 0;
    ipc::Fd pidfd;
    ipc::EventLoop::WatchId watch = 0;
    ipc::EventLoop::WatchId kill_timer = 0;  // set once its launcher hung up
    ipc::Link* launcher = nullptr;           // null once the launching connection closed
    uint64_t seq = 0;                        // the launch request's, for the exited message
  };

  // A launch request, checked, with the caller's fds taken and the environment completed.
  struct Request {
    std::vector<std::string> argv;
    std::vector<std::string> env;
    std::string cwd;
    ipc::Fd stdio[3];
  };

  absl::StatusOr<Request> Parse(ipc::Link& link, proto::Launch::Reader request);
  void Reap(pid_t pid);

  ipc::EventLoop& loop_;
  std::string element_;
  std::vector<std::string> env_additions_;
  std::map<pid_t, Program> programs_;
  std::map<uint64_t, pid_t> program_by_link_;
};

}  // namespace disagg::procmon

#endif  // DISAGG_MONITORS_PROCMON_LAUNCHER_H_
