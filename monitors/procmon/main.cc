// procmon: a compute element daemon, the local OS of one compute blade. It registers with the
// rack, answers its heartbeats, and hosts the rack's application processes (started with
// `rackctl run --on NAME`), leasing each a share of its local memory (cache) budget.
#include <gflags/gflags.h>

#include "absl/strings/str_cat.h"
#include "compute_element.h"
#include "internal/daemon.h"
#include "internal/logging.h"
#include "internal/size_flag.h"
#include "internal/status_macros.h"

DEFINE_string(run_dir, "", "the rack's run directory (sockets, logs); required");
DEFINE_string(name, "", "this element's rack-wide name, e.g. cpu0; required");
DEFINE_string(cache_budget, "256M",
              "local memory (page cache) shared by the processes on this element");
DEFINE_int32(heartbeat_ms, 50,
             "heartbeat period of the processes on this element, in milliseconds");
DEFINE_int32(silence_ms, 200,
             "milliseconds without an answer to heartbeats after which a process has failed");
DEFINE_int32(spin_us, 20, "microseconds to poll the rings after the last message before sleeping");

namespace disagg::procmon {
namespace {

struct Options {
  std::string run_dir;
  std::string name;
  uint64_t cache_budget;
  absl::Duration spin;
  HeartbeatOptions watch;
};

absl::Status Run(const Options& options) {
  ipc::EventLoopOptions loop_options;
  loop_options.spin = options.spin;
  ASSIGN_OR_RETURN(auto loop, ipc::EventLoop::Create(loop_options));
  ElementOptions element_options;
  element_options.run_dir = options.run_dir;
  element_options.name = options.name;
  element_options.kind = proto::ElementKind::COMPUTE;
  element_options.capacity_bytes = options.cache_budget;
  ComputeElement element(*loop, element_options, options.watch);
  return RunElement(
      *loop, element,
      absl::StrCat("compute element with a cache budget of ", options.cache_budget, " bytes"));
}

}  // namespace
}  // namespace disagg::procmon

int main(int argc, char** argv) {
  gflags::SetUsageMessage("procmon --run_dir=DIR --name=cpuN: a compute element");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  absl::StatusOr<uint64_t> budget = disagg::ParseSize(FLAGS_cache_budget);
  if (FLAGS_run_dir.empty() || FLAGS_name.empty() || argc != 1) {
    fprintf(stderr, "procmon: --run_dir and --name are required, and nothing else\n");
    return 2;
  }
  if (!budget.ok() || *budget < (64 << 10)) {
    fprintf(stderr, "procmon: --cache_budget=%s: %s\n", FLAGS_cache_budget.c_str(),
            budget.ok() ? "must be at least 64K" : std::string(budget.status().message()).c_str());
    return 2;
  }
  auto heartbeat = disagg::HeartbeatOptions::FromFlags(FLAGS_heartbeat_ms, FLAGS_silence_ms);
  if (!heartbeat.ok()) {
    fprintf(stderr, "procmon: %s\n", std::string(heartbeat.status().message()).c_str());
    return 2;
  }
  disagg::procmon::Options options{FLAGS_run_dir, FLAGS_name, *budget,
                                   absl::Microseconds(FLAGS_spin_us), *heartbeat};
  return disagg::RunDaemon(argv[0], FLAGS_run_dir, FLAGS_name,
                           [&] { return disagg::procmon::Run(options); });
}
