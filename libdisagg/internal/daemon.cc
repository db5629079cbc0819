#include "internal/daemon.h"

#include <gflags/gflags.h>
#include <signal.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "internal/logging.h"
#include "ipc/socket.h"

// The rack's daemons stand for its hardware (the MMU, the monitor, the elements'
// controllers), which applications never compete with for a core: they run ahead of them,
// so that a failure is told in milliseconds also while a dying process's teardown or a busy
// application holds the cores. They sleep whenever they have no work.
DEFINE_int32(nice, -10,
             "scheduling priority of the daemon (-20..19; the applications keep theirs); needs "
             "CAP_SYS_NICE below the one it started with, else it keeps that one");

namespace disagg {
namespace {
int g_base_nice = 0;
}  // namespace

int BaseNice() { return g_base_nice; }

absl::Status InitDaemon(const char* argv0, const std::string& log_dir, const std::string& element) {
  if (!log_dir.empty()) {
    FLAGS_log_dir = log_dir;
    // One file per daemon and run directory: <log_dir>/<element>.log (appended to).
    FLAGS_timestamp_in_logfile_name = false;
    const std::string base = absl::StrCat(log_dir, "/", element, ".log");
    for (int severity : {google::INFO, google::WARNING, google::ERROR}) {
      google::SetLogDestination(severity, "");
    }
    google::SetLogDestination(google::INFO, base.c_str());
    google::SetLogSymlink(google::INFO, "");
  }
  FLAGS_logbufsecs = 0;
  google::InitGoogleLogging(argv0);
  google::InstallFailureSignalHandler();
  ::signal(SIGPIPE, SIG_IGN);
  errno = 0;
  g_base_nice = ::getpriority(PRIO_PROCESS, 0);
  if (errno != 0) g_base_nice = 0;
  if (FLAGS_nice < -20 || FLAGS_nice > 19) {
    return absl::InvalidArgumentError(absl::StrCat("--nice=", FLAGS_nice, " is outside -20..19"));
  }
  // Before any thread starts: they inherit it.
  if (FLAGS_nice != g_base_nice && ::setpriority(PRIO_PROCESS, 0, FLAGS_nice) != 0) {
    LOG(WARNING) << element << ": cannot run at nice " << FLAGS_nice << " (" << std::strerror(errno)
                 << "); it keeps nice " << g_base_nice
                 << ": failures may be told later while the cores are busy";
  }
  return ipc::ProbeKernelSupport();
}

int RunDaemon(const char* argv0, const std::string& log_dir, const std::string& element,
              absl::FunctionRef<absl::Status()> run) {
  absl::Status status = InitDaemon(argv0, log_dir, element);
  if (status.ok()) status = run();
  if (status.ok()) return 0;
  LOG(ERROR) << element << ": " << status;
  return 1;
}

}  // namespace disagg
