// ComputeElement: the compute element daemon's service: the common element duties plus the
// application processes that run on it. Each process attaches once after joining the rack;
// the element leases it a share of the element's cache budget (QuotaSplit) and reports its
// cache use.
// Programs started with `rackctl run` are procmon's children: see Launcher.
// Single-threaded, on the element's loop.
#ifndef DISAGG_MONITORS_PROCMON_COMPUTE_ELEMENT_H_
#define DISAGG_MONITORS_PROCMON_COMPUTE_ELEMENT_H_

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "element.h"
#include "internal/heartbeat.h"
#include "ipc/life_word.h"
#include "ipc/liveness_timer.h"
#include "launcher.h"
#include "quota_split.h"

namespace disagg::procmon {

class ComputeElement : public Element {
 public:
  // It heartbeats each process over its connection (internal/heartbeat.h) while it has any,
  // and declares one failed (to the rack monitor) when it has not answered for `watch.limit`.
  ComputeElement(ipc::EventLoop& loop, ElementOptions options, HeartbeatOptions watch = {});
  ~ComputeElement() override;

 protected:
  absl::Status HandleOther(ipc::Link& link, proto::Message::Reader message) override;
  void LinkClosed(ipc::Link& link) override;

 private:
  struct Process {
    ipc::Link* link = nullptr;
    uint32_t process_id = 0;
    std::string name;
    std::string app;  // its application, as it said
    pid_t pid = 0;
    uint64_t shrink_seq = 0;    // the pending request to shrink (0: none pending)
    uint64_t cached_bytes = 0;  // as it last reported
    bool attached = false;      // its Attach was answered (with its first quota)
    bool left = false;          // it said it leaves the rack: its hang-up is no failure
    bool failed = false;        // declared failed (silent, or died): no longer watched
    Heartbeat beat;
    std::vector<uint32_t> contacts;  // its emergency contacts (SetEmergencyContacts)
  };

  absl::Status HandleAttach(ipc::Link& link, uint64_t seq, proto::Attach::Reader attach);
  absl::Status HandleUsage(ipc::Link& link, uint64_t seq, proto::CacheUsage::Reader usage);
  absl::Status HandleStatus(ipc::Link& link, uint64_t seq);
  // Moves quotas toward the fair share, and tells the processes.
  void Rebalance();
  void SendQuota(Process& p, uint64_t pages, uint64_t seq);
  // A round of heartbeats (`ping`) or a check at a deadline; declares the processes that
  // stopped answering failed. `away` and `judge`: see ipc::LivenessTimer.
  void Beat(bool ping, absl::Duration away, bool judge);
  // Tells the rack monitor that `p` is gone or failed (and, if it failed, its emergency
  // contacts).
  void ReportDown(const Process& p, const std::string& reason, bool clean);
  absl::Status HandleContacts(ipc::Link& link, proto::EmergencyContacts::Reader contacts);
  // The process's life word: its death is reported as soon as the kernel releases the word,
  // before its memory is torn down.
  absl::Status HandleLifeWord(ipc::Link& link, proto::LifeWord::Reader word);
  void Died(uint64_t link_id);
  // The Rack MMU tells of an event about one of this element's processes: passed on to its
  // emergency contacts.
  absl::Status HandleMmuEvent(proto::RackEvent::Reader event);
  // Asks the Rack MMU to deliver `event` to `p`'s emergency contacts.
  void TellContacts(const Process& p, proto::RackEvent::Reader event);
  uint64_t CachedBytes() const;

  const HeartbeatOptions watch_;
  ipc::LivenessTimer timer_;  // running while there are processes
  QuotaSplit quotas_;         // by link id
  bool rebalancing_ = false;  // see Rebalance
  bool rebalance_again_ = false;
  std::map<uint64_t, Process> processes_;  // by link id, in order of attaching
  ipc::LifeWatches lives_;                 // the processes' life words, by link id
  uint64_t next_seq_ = 1;
  Launcher launcher_;
};

}  // namespace disagg::procmon

#endif  // DISAGG_MONITORS_PROCMON_COMPUTE_ELEMENT_H_
