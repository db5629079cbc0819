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
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "freezer.h"
#include "internal/heartbeat.h"
#include "ipc/event_loop.h"
#include "ipc/hub.h"
#include "ipc/life_word.h"
#include "ipc/liveness_timer.h"

namespace disagg::rackmon {

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
    ipc::Fd pidfd;  // opened when reported: a kill never reaches a reused pid
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

  // Fault injection (monitor_inject.cc).
  absl::Status HandleInject(ipc::Link& link, uint64_t seq, proto::Inject::Reader inject);
  absl::Status Fail(const std::string& target);
  absl::Status Kill(const std::string& target);
  absl::Status Pause(const std::string& target, absl::Duration for_how_long);
  absl::Status Resume(const std::string& target);
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
