// RackMmu: the Rack MMU's service on its event loop: the registry of elements, placement,
// the rack-wide memory map, the programming of the memory elements' page tables, grant and
// steal, trust groups, named roots, the memory of dead processes held for adoption, and the
// consistency check against the memory elements. It answers every peer on its Hub.
// Every operation is decided (validated, recorded in the map) at once, then applied at the
// memory elements; its caller hears of success only once they all acknowledged.
// Single-threaded, owned by main().
#ifndef DISAGG_RACKMMU_MMU_H_
#define DISAGG_RACKMMU_MMU_H_

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "calls.h"
#include "fate_spec.h"
#include "ipc/event_loop.h"
#include "ipc/hub.h"
#include "ipc/life_word.h"
#include "ipc/write_domain.h"
#include "memory_map.h"
#include "registry.h"

namespace disagg::rackmmu {

struct MmuOptions {
  RackLayout layout;
  // How long a dead process's memory and roots are held for adoption before they are freed.
  absl::Duration grace_period = absl::Seconds(10);
};

class RackMmu : public ipc::Hub::Handler {
 public:
  // `loop` is the one the MMU's Hub runs on; it must outlive the MMU.
  RackMmu(ipc::EventLoop& loop, MmuOptions options = {});

  void OnOpen(ipc::Link& link) override { links_[link.id()] = &link; }
  absl::Status OnMessage(ipc::Link& link, proto::Message::Reader message) override;
  void OnClose(ipc::Link& link, const absl::Status& why) override;

  const ElementRegistry& registry() const { return registry_; }

 private:
  // Remote memory (mmu_memory.cc).
  absl::Status HandleJoin(ipc::Link& link, uint64_t seq, proto::Join::Reader request);
  absl::Status HandleMap(ipc::Link& link, uint64_t seq, proto::MapRequest::Reader request);
  absl::Status HandleUnmap(ipc::Link& link, uint64_t seq, proto::UnmapRequest::Reader request);
  absl::Status HandleTranslate(ipc::Link& link, uint64_t seq, uint64_t vpage);
  absl::Status HandleLeave(ipc::Link& link, uint64_t seq);
  // Sends `region` as a Mapped reply to `seq`.
  absl::Status SendMapped(ipc::Link& link, uint64_t seq, const Region& region);
  void FinishMap(uint64_t link_id, uint64_t seq, uint32_t process_id, uint64_t incarnation,
                 uint64_t vaddr, uint64_t token, const absl::Status& result);
  // Tells the memory elements to free `extents` of `process_id` (acknowledged; a failure is
  // logged: the element is gone or its table disagrees, which `rackctl check` shows).
  void Release(uint32_t process_id, const std::vector<ExtentRecord>& extents);
  // The application on `link_id` is gone: its memory is held for adoption for the grace
  // period, or freed now if it holds nothing worth adopting.
  void ProcessLeft(uint64_t link_id);
  // Frees the memory of dead processes whose grace period ended.
  void ReleaseExpired();
  void ReleaseProcess(uint32_t process_id);
  // An element went away: a memory element takes no new regions and its regions' owners are
  // told; a compute element's processes fail with it.
  void ElementGone(const std::string& name, const std::string& reason);
  ipc::Link* ElementLink(const std::string& name);
  uint32_t ProcessOf(const ipc::Link& link) const;
  // Sends a request built by `fill` to memory element `element`, answered through
  // `callback`. UNAVAILABLE (and `callback` is not called) if the element cannot be reached.
  absl::Status CallElement(const std::string& element,
                           const std::function<void(proto::Message::Builder)>& fill,
                           PendingCalls::Callback callback);

  // Grant, steal, groups, roots (mmu_transfer.cc).
  absl::Status HandleGrant(ipc::Link& link, uint64_t seq, proto::GrantRequest::Reader request);
  absl::Status HandleSteal(ipc::Link& link, uint64_t seq, proto::StealRequest::Reader request);
  // Moves [vaddr, +bytes) from `from` to `to` in the map and at the memory elements; `done`
  // runs once every element acknowledged (or the move was undone after a refusal).
  absl::Status StartMove(uint32_t from, uint32_t to, uint64_t vaddr, uint64_t bytes,
                         std::function<void(const absl::Status&)> done);
  // Sends a rebinding of `extents` from `from` to `to` to their elements, counted in `batch`;
  // `moved`, if given, gets which of them each element acknowledged.
  void Rebind(uint32_t from, uint32_t to, const std::vector<ExtentRecord>& extents,
              const std::shared_ptr<CallBatch>& batch,
              const std::shared_ptr<std::vector<bool>>& moved);
  bool Busy(uint64_t vaddr, uint64_t bytes) const;
  // Tells `process_id` (if it is still the incarnation `incarnation`) of a move.
  void SendEvent(uint32_t process_id, uint64_t incarnation, proto::EventKind kind, uint32_t other,
                 uint64_t vaddr, uint64_t bytes, const std::string& element = "",
                 const std::string& reason = "");
  absl::Status HandleJoinGroup(ipc::Link& link, uint64_t seq, proto::JoinGroup::Reader request);
  absl::Status HandlePublish(ipc::Link& link, uint64_t seq, proto::Publish::Reader request);
  absl::Status HandleLookup(ipc::Link& link, uint64_t seq, proto::Lookup::Reader request);
  absl::Status HandleSubscribe(ipc::Link& link, uint64_t seq, proto::Subscribe::Reader request);

  // Failures (mmu_failures.cc).
  absl::Status HandleProcessFailed(ipc::Link& link, uint64_t seq,
                                   proto::ProcessFailed::Reader failed);
  // Process `process_id` failed (it died, or the rack monitor declared it failed, or its
  // compute element failed): fenced at every memory element, its connections refused from
  // then on, told (if it still runs) that it was fenced, its groups told, and its memory held
  // for adoption for the grace period (or freed if it held nothing worth adopting).
  // With `share`, its application's fate spec then widens the failure (mmu_fate.cc); a
  // process failed for its fate shares it no further.
  void DeclareFailed(uint32_t process_id, const std::string& reason, bool share = true);
  // Tells every memory element to refuse the process for good (acknowledged, logged); `then`
  // runs once every element answered or was found gone.
  void Fence(uint32_t process_id, pid_t pid, uint64_t start_time, const std::string& reason,
             std::function<void()> then = nullptr);
  // Sends an event about `p` to every live process that shares a trust group with it (if
  // `groups`) or its application (if `app`), once each.
  void TellPeers(const ProcessRecord& p, bool groups, bool app, proto::EventKind kind,
                 uint64_t vaddr, uint64_t bytes, const std::string& element,
                 const std::string& reason);
  // The region [vaddr, +bytes) of `owner` lost its memory on `element`: the owner, the peers
  // its spec names and its emergency contacts (through its compute element) are told.
  void ReportLostRegion(uint32_t owner, uint64_t vaddr, uint64_t bytes, const std::string& element,
                        const std::string& reason);
  absl::Status HandleRelay(ipc::Link& link, uint64_t seq, proto::Relay::Reader relay);
  // The life word of an element (on its connection) or of a process (on its event link):
  // its death is acted on as soon as the kernel releases the word, as on a hang-up but
  // before the dead process's memory is torn down.
  absl::Status HandleLifeWord(ipc::Link& link, proto::LifeWord::Reader word);
  // Sends an event about `p` to its compute element (which tells its emergency contacts).
  void TellComputeElement(const ProcessRecord& p, proto::EventKind kind, uint64_t vaddr,
                          uint64_t bytes, const std::string& element, const std::string& reason);
  void ComputeFailed(const std::string& name, const std::string& reason);
  void MemoryFailed(const std::string& name, const std::string& reason);

  // Programmable fate sharing (mmu_fate.cc).
  // The rack monitor hands over an application's fate spec (validated there).
  absl::Status HandleAppFate(ipc::Link& link, uint64_t seq, proto::AppFate::Reader fate);
  // A process's write domain, on its event link.
  absl::Status HandleWriteDomain(ipc::Link& link, uint64_t seq, proto::WriteDomain::Reader domain);
  // The spec of `p`'s application: the model none for a process of no registered one.
  const rackmon::FateSpec& FateOf(const ProcessRecord& p) const;
  // `p`'s write domain, taken from the table (null, logged, if it gave none).
  std::shared_ptr<ipc::WriteDomainView> TakeWriteDomain(const ProcessRecord& p);
  // The memory elements holding write-backs whose outcome `p` never saw, by its write domain:
  // only memory elements of the rack that have not failed.
  std::vector<std::string> TaintedBy(const ProcessRecord& p,
                                     const ipc::WriteDomainView& domain) const;
  // What `failed`'s spec adds to its failure (it is fenced already): under complete, the
  // rest of its application ends, and so does it if it still runs.
  void ShareFate(const ProcessRecord& failed, const rackmon::FateSpec& spec,
                 const std::string& reason);
  // Under tainted, once the fence holds: the application's memory on `tainted` fails (and
  // with `users`, the processes that own some end).
  void ShareTaint(const ProcessRecord& failed, const rackmon::FateSpec& spec,
                  const std::vector<std::string>& tainted, const std::string& reason);
  // Asks the rack monitor to SIGKILL process `id` (fenced already); `run_handler`: whether
  // its death runs its failure handler (it is a failure of its own, not one it shares).
  void AskMonitorToEnd(uint32_t id, pid_t pid, uint64_t start_time, const std::string& reason,
                       bool run_handler);
  // Process `id` ends for its fate: declared failed (with `share`, its own spec widens the
  // failure further, and its failure handler runs) and killed by the rack monitor.
  void EndForFate(uint32_t id, const std::string& reason, bool share);
  // A memory element failed: what each owner's spec makes of it (complete: its application
  // ends; partial: it ends).
  void MemoryFailedFate(const std::set<uint32_t>& owners, const std::string& element,
                        const std::string& reason);

  // The consistency check (mmu_check.cc).
  absl::Status HandleCheck(ipc::Link& link, uint64_t seq);

  absl::Status HandleRegister(ipc::Link& link, uint64_t seq, proto::Register::Reader request);
  absl::Status HandleHealthChange(ipc::Link& link, uint64_t seq,
                                  proto::HealthChange::Reader change);
  absl::Status HandleStatus(ipc::Link& link, uint64_t seq);
  void HandleReply(ipc::Link& link, proto::Message::Reader message);

  ipc::EventLoop& loop_;
  const MmuOptions options_;

  ElementRegistry registry_;
  MemoryMap memory_;
  PendingCalls calls_;
  uint64_t monitor_link_ = 0;  // the rack monitor's connection: the only one trusted on health
  absl::flat_hash_map<uint64_t, ipc::Link*> links_;          // open links by id
  absl::flat_hash_map<uint64_t, uint32_t> process_by_link_;  // application links
  absl::flat_hash_map<uint32_t, uint64_t> event_links_;      // process id -> its event link
  // Links of processes declared failed while their connection stayed open: refused, why.
  absl::flat_hash_map<uint64_t, std::string> fenced_links_;
  ipc::LifeWatches lives_{loop_, "mmu"};           // elements' and processes' life words, by link
  std::set<std::string> failed_memory_;            // memory elements whose failure was reported
  std::map<std::string, rackmon::FateSpec> apps_;  // fate specs, by application
  struct Domain {
    uint64_t incarnation;
    std::shared_ptr<ipc::WriteDomainView> view;
  };
  std::set<uint32_t> declaring_;                         // processes DeclareFailed is under way for
  absl::flat_hash_map<uint32_t, Domain> write_domains_;  // by process id
  // Processes declared failed, kept a while after their records may be gone, so that their
  // compute element's relay of the failure to their emergency contacts can be checked.
  struct Failed {
    pid_t pid;
    std::string element;
    absl::Time at;
  };
  absl::flat_hash_map<uint32_t, Failed> recently_failed_;
  // Ranges being mapped, granted or stolen, by vaddr: nothing else touches them until the
  // memory elements acknowledged. The token tells an operation's own entry from a later one
  // at the same address.
  struct BusyRange {
    uint64_t end;
    uint64_t token;
  };
  std::map<uint64_t, BusyRange> busy_;
  uint64_t next_busy_token_ = 1;
};

}  // namespace disagg::rackmmu

#endif  // DISAGG_RACKMMU_MMU_H_
