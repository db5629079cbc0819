// RackMmu: the Rack MMU's service on its event loop: the registry of elements and (later
// issues) placement, page maps, grant and steal. It answers every peer on its Hub.
// Single-threaded, owned by main().
#ifndef DISAGG_RACKMMU_MMU_H_
#define DISAGG_RACKMMU_MMU_H_

#include <map>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "ipc/event_loop.h"
#include "ipc/hub.h"
#include "memory_map.h"
#include "registry.h"

namespace disagg::rackmmu {

class RackMmu : public ipc::Hub::Handler {
 public:
  // `loop` is the one the MMU's Hub runs on; it must outlive the MMU.
  explicit RackMmu(ipc::EventLoop& loop) : loop_(loop) {}

  void OnOpen(ipc::Link& link) override { links_[link.id()] = &link; }
  absl::Status OnMessage(ipc::Link& link, proto::Message::Reader message) override;
  void OnClose(ipc::Link& link, const absl::Status& why) override;

  const ElementRegistry& registry() const { return registry_; }

 private:
  // A Map waiting for the memory elements to acknowledge their page-table programming.
  struct PendingMap {
    uint64_t link_id = 0;  // the application's connection
    uint64_t seq = 0;      // its request
    uint32_t process_id = 0;
    uint64_t vaddr = 0;
    int acks_left = 0;
    absl::Status failure;
  };

  // Remote memory (mmu_memory.cc).
  absl::Status HandleJoin(ipc::Link& link, uint64_t seq, proto::Join::Reader request);
  absl::Status HandleMap(ipc::Link& link, uint64_t seq, proto::MapRequest::Reader request);
  absl::Status HandleUnmap(ipc::Link& link, uint64_t seq, proto::UnmapRequest::Reader request);
  absl::Status HandleTranslate(ipc::Link& link, uint64_t seq, uint64_t vpage);
  // Sends `region` as a Mapped reply to `seq`.
  absl::Status SendMapped(ipc::Link& link, uint64_t seq, const Region& region);
  // A memory element answered one of our ProgramPages (seq) with `result`.
  void HandleProgramAck(ipc::Link& link, uint64_t seq, const absl::Status& result);
  void FinishMap(uint64_t op_id);
  // Tells the memory elements to drop `region`'s pages.
  void Revoke(uint32_t process_id, const Region& region);
  void ProcessLeft(uint64_t link_id);
  // A memory element went away: it takes no new regions and acknowledges nothing more.
  void ElementGone(const std::string& name);
  ipc::Link* ElementLink(const std::string& name);
  uint32_t ProcessOf(const ipc::Link& link) const;

  absl::Status HandleRegister(ipc::Link& link, uint64_t seq, proto::Register::Reader request);
  absl::Status HandleHealthChange(ipc::Link& link, uint64_t seq,
                                  proto::HealthChange::Reader change);
  absl::Status HandleStatus(ipc::Link& link, uint64_t seq);

  ipc::EventLoop& loop_;

  ElementRegistry registry_;
  MemoryMap memory_;
  uint64_t monitor_link_ = 0;  // the rack monitor's connection: the only one trusted on health
  absl::flat_hash_map<uint64_t, ipc::Link*> links_;          // open links by id
  absl::flat_hash_map<uint64_t, uint32_t> process_by_link_;  // application links
  uint64_t next_seq_ = 1;                                    // our own requests' seqs
  struct ProgramAck {
    uint64_t op_id;
    std::string element;
  };
  absl::flat_hash_map<uint64_t, ProgramAck> acks_by_seq_;  // our ProgramPages in flight
  std::map<uint64_t, PendingMap> pending_maps_;
  uint64_t next_op_ = 1;
};

}  // namespace disagg::rackmmu

#endif  // DISAGG_RACKMMU_MMU_H_
