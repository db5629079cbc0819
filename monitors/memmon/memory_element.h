// MemoryElement: the memory element daemon's service: the common element duties plus its
// page table (programmed only by the Rack MMU) and page reads and write-backs for the
// processes the table allows. Anything else is refused with a logged reason, and the
// element keeps serving everyone else.
// Single-threaded, on the element's loop.
#ifndef DISAGG_MONITORS_MEMMON_MEMORY_ELEMENT_H_
#define DISAGG_MONITORS_MEMMON_MEMORY_ELEMENT_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "element.h"
#include "page_store.h"

namespace disagg::memmon {

// Page slots in each channel of the element (ipc/channel.h): the longest run one ReadPages
// asks for.
inline constexpr size_t kSlotPages = 128;

struct MemoryOptions {
  // How long the loop keeps polling after page traffic (reads, write-backs), which comes in
  // bursts: long enough that a fault path's next request finds it awake.
  absl::Duration burst_spin = absl::Microseconds(200);
};

class MemoryElement : public Element {
 public:
  MemoryElement(ipc::EventLoop& loop, ElementOptions options, PageStore store,
                MemoryOptions memory_options = {});

 protected:
  absl::Status HandleOther(ipc::Link& link, proto::Message::Reader message) override;
  void LinkClosed(ipc::Link& link) override {
    identities_.erase(link.id());
    memory_of_.erase(link.id());
  }

 private:
  absl::Status HandleProgram(ipc::Link& link, uint64_t seq, proto::ProgramPages::Reader program);
  absl::Status HandleRevoke(ipc::Link& link, uint64_t seq, proto::RevokePages::Reader revoke);
  absl::Status HandleMove(ipc::Link& link, uint64_t seq, proto::MovePages::Reader move);
  absl::Status HandlePageTable(ipc::Link& link, uint64_t seq);
  absl::Status HandleFence(ipc::Link& link, uint64_t seq, proto::Fence::Reader fence);
  // The processes bound here, with what they wrote back and what was refused to them.
  absl::Status HandleStatus(ipc::Link& link, uint64_t seq);
  absl::Status HandleRead(ipc::Link& link, uint64_t seq, uint64_t vpage);
  absl::Status HandleReadPages(ipc::Link& link, uint64_t seq, proto::ReadPages::Reader read);
  absl::Status HandleWritePages(ipc::Link& link, uint64_t seq, proto::WritePages::Reader write);
  absl::Status HandlePlaceUnit(ipc::Link& link, uint64_t seq, proto::PlaceUnit::Reader place);
  // Writes `pages` into the process on `link` from `dst` on. ABORTED if the process does not have
  // the destination writable as plain anonymous memory (or exec'd another program since it
  // connected); UNIMPLEMENTED if the kernel does not let this element write into it; UNAVAILABLE if
  // it exited.
  absl::Status WriteInto(ipc::Link& link, const std::vector<const uint8_t*>& pages, uint64_t dst);
  // Why a run of `pages` pages from `vpage` in slots from `slot` cannot be served on `link`.
  absl::Status CheckRun(const ipc::Link& link, uint64_t vpage, uint64_t pages, uint64_t slot);
  absl::Status HandleWrite(ipc::Link& link, uint64_t seq, proto::PageData::Reader page);
  // The rack process on `link`, as the kernel identifies it. PERMISSION_DENIED if the
  // Rack MMU has not bound it here; FAILED_PRECONDITION if it was fenced.
  absl::StatusOr<uint32_t> ProcessOn(ipc::Link& link);
  absl::Status Refuse(ipc::Link& link, uint64_t seq, const absl::Status& why);

  PageStore store_;
  const MemoryOptions memory_options_;
  absl::flat_hash_map<uint64_t, uint64_t> identities_;  // link id -> peer start time
  // The peer's /proc/<pid>/mem, opened at its first PlaceUnit: bound to the address space the
  // process had then (an exec ends it, a reused pid never reaches it), and written without
  // waiting on the process's own page faults (userfaultfd).
  absl::flat_hash_map<uint64_t, ipc::Fd> memory_of_;  // link id ->
  absl::StatusOr<int> MemoryOf(ipc::Link& link);
  struct Counters {
    uint64_t writebacks = 0;
    uint64_t refused = 0;
  };
  absl::flat_hash_map<uint32_t, Counters> counters_;  // by rack process id
  // Processes declared failed, as the kernel identifies them ((pid, start time) is never
  // reused): refused for good, whatever their rack id is given to later.
  struct Fenced {
    uint32_t process_id;
    std::string reason;
  };
  std::map<std::pair<pid_t, uint64_t>, Fenced> fenced_;
  uint64_t quiet_refusals_ = 0;  // refusals of fenced processes (logged now and then)
};

}  // namespace disagg::memmon

#endif  // DISAGG_MONITORS_MEMMON_MEMORY_ELEMENT_H_
