// memmon: a memory element daemon. It owns a page pool (a memfd of --pool_size bytes) whose
// page table only the Rack MMU programs, serves page reads and write-backs to the processes
// that table allows, registers with the rack and answers its heartbeats.
#include <fcntl.h>
#include <gflags/gflags.h>
#include <sys/mman.h>
#include <unistd.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "internal/daemon.h"
#include "internal/logging.h"
#include "internal/size_flag.h"
#include "internal/status_macros.h"
#include "ipc/fd.h"
#include "memory_element.h"

DEFINE_string(run_dir, "", "the rack's run directory (sockets, logs); required");
DEFINE_string(name, "", "this element's rack-wide name, e.g. mem0; required");
DEFINE_string(pool_size, "1G", "bytes in the page pool (suffixes K, M, G)");
DEFINE_int32(spin_us, 20, "microseconds to poll the rings after the last message before sleeping");
DEFINE_int32(burst_spin_us, 200,
             "microseconds to poll the rings after page traffic (reads, write-backs)");

namespace disagg::memmon {
namespace {

struct Options {
  std::string run_dir;
  std::string name;
  uint64_t pool_bytes;
  absl::Duration spin;
  absl::Duration burst_spin;
};

absl::Status Run(const Options& options) {
  ASSIGN_OR_RETURN(PageStore store, PageStore::Create(options.name, options.pool_bytes));
  ipc::EventLoopOptions loop_options;
  loop_options.spin = options.spin;
  ASSIGN_OR_RETURN(auto loop, ipc::EventLoop::Create(loop_options));
  ElementOptions element_options;
  element_options.run_dir = options.run_dir;
  element_options.name = options.name;
  element_options.kind = proto::ElementKind::MEMORY;
  element_options.capacity_bytes = options.pool_bytes;
  MemoryElement element(*loop, element_options, std::move(store),
                        MemoryOptions{options.burst_spin});
  return RunElement(*loop, element,
                    absl::StrCat("memory element with a pool of ", options.pool_bytes, " bytes"));
}

}  // namespace
}  // namespace disagg::memmon

int main(int argc, char** argv) {
  gflags::SetUsageMessage("memmon --run_dir=DIR --name=memN --pool_size=1G: a memory element");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  absl::StatusOr<uint64_t> pool = disagg::ParseSize(FLAGS_pool_size);
  if (FLAGS_run_dir.empty() || FLAGS_name.empty() || argc != 1) {
    fprintf(stderr, "memmon: --run_dir and --name are required, and nothing else\n");
    return 2;
  }
  if (!pool.ok() || *pool == 0) {
    fprintf(stderr, "memmon: --pool_size=%s: %s\n", FLAGS_pool_size.c_str(),
            pool.ok() ? "must be > 0" : std::string(pool.status().message()).c_str());
    return 2;
  }
  disagg::memmon::Options options{FLAGS_run_dir, FLAGS_name, *pool,
                                  absl::Microseconds(FLAGS_spin_us),
                                  absl::Microseconds(FLAGS_burst_spin_us)};
  return disagg::RunDaemon(argv[0], FLAGS_run_dir, FLAGS_name,
                           [&] { return disagg::memmon::Run(options); });
}
