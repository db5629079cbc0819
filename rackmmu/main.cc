// rackmmu: the Rack MMU daemon. One per rack; listens at <run_dir>/mmu.sock.
#include <gflags/gflags.h>

#include "internal/daemon.h"
#include "internal/logging.h"
#include "internal/size_flag.h"
#include "ipc/event_loop.h"
#include "ipc/hub.h"
#include "mmu.h"

DEFINE_string(run_dir, "", "the rack's run directory (sockets, logs); required");
DEFINE_int64(grace_ms, 10000,
             "how long a dead process's memory and named roots are held for adoption (steal) "
             "before they are freed; 0 frees them at once");
DEFINE_string(range_base, "17T",
              "where the rack address space starts (a size: 17T, 256G); every rack process "
              "reserves it");
DEFINE_string(window_size, "64G",
              "each process's window of the rack address space, a power of two from 1M to 64G "
              "(the largest region it can map)");
DEFINE_int32(max_processes, 1023, "how many processes the rack serves at once (ids 1..N)");
DEFINE_int32(spin_us, 20, "microseconds to poll the rings after the last message before sleeping");

namespace disagg::rackmmu {
namespace {

struct Options {
  std::string run_dir;
  absl::Duration spin;
  MmuOptions mmu;
};

absl::Status Run(const Options& options) {
  ipc::EventLoopOptions loop_options;
  loop_options.spin = options.spin;
  auto loop = ipc::EventLoop::Create(loop_options);
  if (!loop.ok()) return loop.status();
  RackMmu mmu(**loop, options.mmu);
  ipc::Hub hub(**loop, mmu, "mmu");
  if (absl::Status s = hub.Listen(SocketPath(options.run_dir, "mmu")); !s.ok()) return s;
  LOG(INFO) << "mmu: serving " << SocketPath(options.run_dir, "mmu");
  absl::Status status = (*loop)->Run();
  LOG(INFO) << "mmu: stopped";
  return status;
}

}  // namespace
}  // namespace disagg::rackmmu

int main(int argc, char** argv) {
  gflags::SetUsageMessage("rackmmu --run_dir=DIR: the rack's Rack MMU daemon");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_run_dir.empty() || argc != 1) {
    fprintf(stderr, "rackmmu: --run_dir is required and no positional arguments are taken\n");
    return 2;
  }
  if (FLAGS_grace_ms < 0) {
    fprintf(stderr, "rackmmu: --grace_ms=%lld: must be 0 or more\n",
            static_cast<long long>(FLAGS_grace_ms));
    return 2;
  }
  disagg::rackmmu::Options options{FLAGS_run_dir, absl::Microseconds(FLAGS_spin_us), {}};
  options.mmu.grace_period = absl::Milliseconds(FLAGS_grace_ms);
  absl::StatusOr<uint64_t> base = disagg::ParseSize(FLAGS_range_base);
  absl::StatusOr<uint64_t> window = disagg::ParseSize(FLAGS_window_size);
  if (!base.ok() || !window.ok() || (*window & (*window - 1)) != 0 || FLAGS_max_processes < 1) {
    fprintf(stderr,
            "rackmmu: --range_base=%s --window_size=%s --max_processes=%d: sizes like 17T and "
            "64G, a window that is a power of two, at least one process\n",
            FLAGS_range_base.c_str(), FLAGS_window_size.c_str(), FLAGS_max_processes);
    return 2;
  }
  options.mmu.layout.base = *base;
  options.mmu.layout.window_shift = __builtin_ctzll(*window);
  options.mmu.layout.max_processes = static_cast<uint32_t>(FLAGS_max_processes);
  if (absl::Status s = options.mmu.layout.Validate(); !s.ok()) {
    fprintf(stderr, "rackmmu: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  return disagg::RunDaemon(argv[0], FLAGS_run_dir, "mmu",
                           [&] { return disagg::rackmmu::Run(options); });
}
