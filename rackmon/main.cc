// rackmon: the rack monitor daemon. One per rack; listens at <run_dir>/mon.sock after it has
// registered with the Rack MMU at <run_dir>/mmu.sock.
#include <capnp/message.h>
#include <gflags/gflags.h>

#include "internal/daemon.h"
#include "internal/logging.h"
#include "ipc/event_loop.h"
#include "ipc/hub.h"
#include "monitor.h"

DEFINE_string(run_dir, "", "the rack's run directory (sockets, logs); required");
DEFINE_string(rack_name, "rack", "the rack's name, shown by rackctl status");
DEFINE_int32(heartbeat_ms, 50, "heartbeat period in milliseconds");
DEFINE_int32(silence_ms, 200,
             "milliseconds without an answer to heartbeats after which an element has failed");
DEFINE_int32(spin_us, 20, "microseconds to poll the rings after the last message before sleeping");

namespace disagg::rackmon {
namespace {

struct Options {
  std::string run_dir;
  absl::Duration spin;
  MonitorOptions monitor;
};

absl::Status Run(const Options& options) {
  ipc::EventLoopOptions loop_options;
  loop_options.spin = options.spin;
  auto loop = ipc::EventLoop::Create(loop_options);
  if (!loop.ok()) return loop.status();
  RackMonitor monitor(**loop, options.monitor);
  ipc::Hub hub(**loop, monitor, "mon");
  absl::StatusOr<ipc::Link*> mmu = hub.Dial(SocketPath(options.run_dir, "mmu"));
  if (!mmu.ok()) return mmu.status();
  (*mmu)->set_label("mmu");
  capnp::MallocMessageBuilder builder;
  auto message = builder.initRoot<proto::Message>();
  message.setSeq(1);
  auto reg = message.initRegister();
  reg.setName("mon");
  reg.setKind(proto::ElementKind::RACKMON);
  if (absl::Status s = (*mmu)->Send(builder); !s.ok()) return s;
  monitor.Start(hub, **mmu);
  if (absl::Status s = hub.Listen(SocketPath(options.run_dir, "mon")); !s.ok()) return s;
  LOG(INFO) << "mon: rack " << options.monitor.rack_name << " heartbeats every "
            << absl::FormatDuration(options.monitor.heartbeat.period) << "; an element is failed "
            << absl::FormatDuration(options.monitor.heartbeat.limit) << " after its last answer";
  absl::Status status = (*loop)->Run();
  LOG(INFO) << "mon: stopped";
  return status;
}

}  // namespace
}  // namespace disagg::rackmon

int main(int argc, char** argv) {
  gflags::SetUsageMessage("rackmon --run_dir=DIR: the rack's monitor daemon");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_run_dir.empty() || argc != 1) {
    fprintf(stderr, "rackmon: --run_dir is required, and nothing else\n");
    return 2;
  }
  auto heartbeat = disagg::HeartbeatOptions::FromFlags(FLAGS_heartbeat_ms, FLAGS_silence_ms);
  if (!heartbeat.ok()) {
    fprintf(stderr, "rackmon: %s\n", std::string(heartbeat.status().message()).c_str());
    return 2;
  }
  disagg::rackmon::Options options;
  options.run_dir = FLAGS_run_dir;
  options.spin = absl::Microseconds(FLAGS_spin_us);
  options.monitor.rack_name = FLAGS_rack_name;
  options.monitor.run_dir = FLAGS_run_dir;
  options.monitor.heartbeat = *heartbeat;
  return disagg::RunDaemon(argv[0], FLAGS_run_dir, "mon",
                           [&] { return disagg::rackmon::Run(options); });
}
