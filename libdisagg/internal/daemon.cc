#include "internal/daemon.h"

#include <signal.h>

#include "absl/strings/str_cat.h"
#include "internal/logging.h"
#include "ipc/socket.h"

namespace disagg {

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
