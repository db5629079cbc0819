// RackMonitor: liveness of every element of the rack. Elements register with it over their
// channel; it watches each element's life word and pidfd (death is seen at once) and its
// socket (hang-up is seen at once), heartbeats each one every `heartbeat.period` over its
// channel, and declares an element failed when it dies, hangs up, or has not answered for
// longer than `heartbeat.limit` (it is suspect from `heartbeat.suspect_after()`). A failed element
// is fenced: its connection is cut, so a paused element that wakes up finds itself out of the rack.
// Health changes go to the Rack MMU. Compute elements report their processes
// (processUp/processDown): a process that died or stopped answering its compute element is declared
// failed to the Rack MMU, which fences it. It also answers `rackctl status` and serves fault
// injection (`rackctl fail`, `kill`, `pause`, `resume`; monitor_inject.cc).
//
// Single-threaded, on the rack monitor's loop. The loop and hub passed in must outlive it.
#ifndef DISAGG_RACKMON_MONITOR_H_
#define DISAGG_RACKMON_MONITOR_H_

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "fate_spec.h"
#include "freezer.h"
#include "internal/heartbeat.h"
#include "ipc/event_loop.h"
#include "ipc/fabric.h"
#include "ipc/hub.h"
#include "ipc/life_word.h"
#include "ipc/liveness_timer.h"

namespace disagg::rackmon {

// Arguments or environment variables a failure handler may have.
inline constexpr size_t kMaxHandlerArgs = 1024;

struct MonitorOptions {
  std::string run_dir;  // where handlers' logs go, and the elements' sockets are
  std::string rack_name;
  HeartbeatOptions heartbeat;
};

class RackMonitor : public ipc::Hub::Handler {
 public:
  RackMonitor(ipc::EventLoop& loop, MonitorOptions options);
  ~RackMonitor() override;

  // Starts heartbeating; `hub` serves the monitor's links. `mmu` is the monitor's own link to
  // the Rack MMU, watched like an element and told of every health change.
  void Start(ipc::Hub& hub, ipc::Link& mmu);

  void OnOpen(ipc::Link& link) override { links_[link.id()] = &link; }
  absl::Status OnMessage(ipc::Link& link, proto::Message::Reader message) override;
  void OnClose(ipc::Link& link, const absl::Status& why) override;

 private:
  struct Watched {
    std::string name;
    proto::ElementKind kind = proto::ElementKind::CLIENT;
    pid_t pid = 0;
    uint64_t capacity_bytes = 0;
    uint64_t used_bytes = 0;
    proto::Health health = proto::Health::HEALTHY;
    absl::Time last_heard = absl::InfinitePast();  // wall clock, for rackctl status
    Heartbeat beat;
    ipc::Link* link = nullptr;  // nullptr once the connection is gone
    ipc::Fd pidfd;
    ipc::EventLoop::WatchId pidfd_watch = 0;
    std::optional<Freezer> paused;             // paused by fault injection
    ipc::EventLoop::WatchId resume_timer = 0;  // pause --for: when it resumes
  };
  // An application process, as its compute element reported it.
  struct Process {
    uint32_t id = 0;
    std::string name;
    pid_t pid = 0;
    std::string element;
    std::string app;  // its application, as it said
    ipc::Fd pidfd;    // opened when reported: a kill never reaches a reused pid
  };

  absl::Status HandleRegister(ipc::Link& link, uint64_t seq, proto::Register::Reader request);
  absl::Status HandleStatus(ipc::Link& link, uint64_t seq);
  void Watch(Watched& w, ipc::Link& link);
  // A round of heartbeats (`ping`) or a check at a deadline; `away` and `judge`: see
  // ipc::LivenessTimer.
  void Beat(bool ping, absl::Duration away, bool judge);
  void SetHealth(Watched& w, proto::Health health, const std::string& reason);
  // An element's life word: its death is declared as soon as the kernel releases it.
  absl::Status HandleLifeWord(ipc::Link& link, proto::LifeWord::Reader word);
  absl::Status HandleProcessUp(ipc::Link& link, proto::ProcessUp::Reader up);
  absl::Status HandleProcessDown(ipc::Link& link, proto::ProcessDown::Reader down);
  // Tells the Rack MMU that `p` failed and forgets it.
  void ProcessFailed(const Process& p, const std::string& reason);

  // Fast failure handlers (monitor_handlers.cc).
  absl::Status HandleAddHandler(ipc::Link& link, uint64_t seq,
                                proto::FailureHandler::Reader handler);
  // Starts the handler registered for `p`'s name, if any.
  void RunHandler(const Process& p, const std::string& reason);
  // A message on a connection that launched a handler's program.
  void HandleLaunchReply(ipc::Link& link, proto::Message::Reader message);

  // Applications' fate specs (monitor_apps.cc).
  absl::Status HandleRegisterApp(ipc::Link& link, uint64_t seq, proto::RegisterApp::Reader request);
  // The Rack MMU's answer to an application's spec: passed on to the client that sent it.
  // False if `message` answers no such request.
  bool HandleMmuAnswer(proto::Message::Reader message);
  absl::Status HandleEndProcess(ipc::Link& link, proto::EndProcess::Reader end);

  // Fault injection (monitor_inject.cc).
  absl::Status HandleInject(ipc::Link& link, uint64_t seq, proto::Inject::Reader inject);
  absl::Status Fail(const std::string& target);
  absl::Status Kill(const std::string& target);
  absl::Status Pause(const std::string& target, absl::Duration for_how_long);
  absl::Status Resume(const std::string& target);
  // Partitions and delays (monitor_fabric.cc), kept in the fabric file every application
  // process consults.
  absl::Status Partition(const std::string& a, const std::string& b, absl::Duration for_how_long);
  absl::Status Heal(const std::string& a, const std::string& b);
  absl::Status Delay(const std::string& target, absl::Duration delay, absl::Duration for_how_long);
  // Writes the rules in force to the fabric file.
  absl::Status PublishFabric();
  // The element named `name` for a fabric rule: a compute or memory element, or "mmu".
  absl::Status FabricElement(const std::string& name);
  // The element named `target`: NOT_FOUND naming the elements there are.
  absl::StatusOr<Watched*> Element(const std::string& target);
  Watched* ByLink(const ipc::Link& link);

  ipc::EventLoop& loop_;
  MonitorOptions options_;
  ipc::Hub* hub_ = nullptr;
  ipc::Link* mmu_ = nullptr;
  ipc::LivenessTimer timer_{
      loop_, options_.heartbeat.period,
      [this](bool ping, absl::Duration away, bool judge) { Beat(ping, away, judge); }};
  uint64_t next_seq_ = 1;
  std::map<std::string, Watched> elements_;             // by name; node-stable
  absl::flat_hash_map<uint64_t, std::string> by_link_;  // link id -> name
  ipc::LifeWatches lives_{loop_, "mon"};                // the elements' life words, by link
  std::map<uint32_t, Process> processes_;               // by rack process id
  struct Handler {
    std::string element;
    std::vector<std::string> argv;
    std::vector<std::string> env;
    std::string cwd;
    uint64_t runs = 0;
  };
  std::map<std::string, Handler> handlers_;  // by process name
  struct App {
    FateSpec spec;
    std::string file;                // the spec's file, as the client named it
    std::optional<Handler> handler;  // runs when any of its processes fails
  };
  std::map<std::string, App> apps_;  // by application name
  struct PendingApp {                // a spec the Rack MMU has not acknowledged yet
    uint64_t link_id;                // the client's, and its request
    uint64_t seq;
    std::string app;
    App entry;
  };
  absl::flat_hash_map<uint64_t, PendingApp> pending_apps_;  // by the request sent to the MMU
  // Processes the Rack MMU had ended for a failure they share: their deaths run no handler.
  // Each with its pidfd, so that those long gone can be forgotten.
  std::map<std::pair<uint32_t, pid_t>, ipc::Fd> ended_for_fate_;
  // Whether `p`'s failure runs a handler: not if it was ended for a failure it shares.
  bool RunsHandler(const Process& p);
  absl::flat_hash_map<uint64_t, ipc::Link*> links_;  // every open link, by id
  std::optional<ipc::FabricWriter> fabric_;          // unset if the file could not be made
  struct ActiveRule {
    ipc::FabricRule rule;
    ipc::EventLoop::WatchId timer = 0;  // --for: when it ends by itself
  };
  std::map<uint64_t, ActiveRule> fabric_rules_;  // by a number of their own
  uint64_t next_rule_ = 1;
  // Programs started by handlers, by the connection that started them (which they live as
  // long as: the compute element ends a program whose launcher hangs up).
  struct Started {
    std::string what;
    ipc::Fd in;   // the program's stdin (/dev/null) and
    ipc::Fd out;  // stdout and stderr (its log), until the compute element took copies
  };
  absl::flat_hash_map<uint64_t, Started> launches_;
};

}  // namespace disagg::rackmon

#endif  // DISAGG_RACKMON_MONITOR_H_
