// ComputeElement: the compute element daemon's service: the common element duties plus the
// application processes that run on it. Each process attaches once after joining the rack;
// the element leases it a share of the element's cache budget and reports its cache use.
//
// Cache budget: the sum of the quotas the processes may use never exceeds the budget. Each
// process's fair share is budget / processes. A process above its share is asked to shrink
// and keeps its old quota in the sum until it answers that its cache fits; what that frees
// goes to processes below their share. A new process may therefore start with a quota of 0
// and grow as the others shrink.
// Programs started with `rackctl run` are procmon's children: see Launcher.
// Single-threaded, on the element's loop.
#ifndef DISAGG_MONITORS_PROCMON_COMPUTE_ELEMENT_H_
#define DISAGG_MONITORS_PROCMON_COMPUTE_ELEMENT_H_

#include <sys/types.h>

#include <map>
#include <string>

#include "element.h"
#include "launcher.h"

namespace disagg::procmon {

// The smallest share worth running with: a process is refused when its share would be less.
inline constexpr uint64_t kMinSharePages = 16;

class ComputeElement : public Element {
 public:
  ComputeElement(ipc::EventLoop& loop, ElementOptions options);

 protected:
  absl::Status HandleOther(ipc::Link& link, proto::Message::Reader message) override;
  void LinkClosed(ipc::Link& link) override;

 private:
  struct Process {
    ipc::Link* link = nullptr;
    uint32_t process_id = 0;
    std::string name;
    pid_t pid = 0;
    uint64_t granted_pages = 0;  // the quota it may use now (counted in the budget)
    uint64_t shrink_to = 0;      // the quota it was asked to shrink to...
    uint64_t shrink_seq = 0;     // ...by the request with this seq (0: none pending)
    uint64_t cached_bytes = 0;   // as it last reported
    bool attached = false;       // its Attach was answered (with its first quota)
  };

  absl::Status HandleAttach(ipc::Link& link, uint64_t seq, proto::Attach::Reader attach);
  absl::Status HandleUsage(ipc::Link& link, uint64_t seq, proto::CacheUsage::Reader usage);
  absl::Status HandleStatus(ipc::Link& link, uint64_t seq);
  // Moves quotas toward the fair share (see the class comment).
  void Rebalance();
  void SendQuota(Process& p, uint64_t pages, uint64_t seq);
  uint64_t CachedBytes() const;

  const uint64_t budget_pages_;
  std::map<uint64_t, Process> processes_;  // by link id, in order of attaching
  uint64_t next_seq_ = 1;
  Launcher launcher_;
};

}  // namespace disagg::procmon

#endif  // DISAGG_MONITORS_PROCMON_COMPUTE_ELEMENT_H_
