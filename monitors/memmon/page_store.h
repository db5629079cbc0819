// PageStore: a memory element's pool (a memfd, zero-filled on first use) and its page table,
// keyed by (rack process id, virtual page), which only the Rack MMU programs. Each process
// is bound to the pid and start time the Rack MMU saw when it joined, so the element can
// tell who is asking without trusting what the asker says.
// Move-only resource (owns the pool's fd and mapping); not thread-safe.
#ifndef DISAGG_MONITORS_MEMMON_PAGE_STORE_H_
#define DISAGG_MONITORS_MEMMON_PAGE_STORE_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ipc/channel.h"
#include "ipc/fd.h"

namespace disagg::memmon {

inline constexpr uint64_t kPageBytes = 4096;

class PageStore {
 public:
  // A pool of `pool_bytes` (a whole number of pages) for element `name`.
  static absl::StatusOr<PageStore> Create(const std::string& name, uint64_t pool_bytes);

  // Maps [vpage, +pages) of `process_id` to pool pages [pool_page, +pages). INVALID_ARGUMENT
  // if the pool range is outside the pool, overlaps a range of that process, or the process's
  // identity differs from an earlier binding.
  absl::Status Program(uint32_t process_id, pid_t pid, uint64_t start_time, uint64_t vpage,
                       uint64_t pages, uint64_t pool_page);
  // Unmaps [vpage, +pages) of `process_id` and zeroes (releases) those pool pages. Ranges
  // that are not mapped are ignored; a partial overlap splits the range.
  void Revoke(uint32_t process_id, uint64_t vpage, uint64_t pages);
  // Rebinds [vpage, +pages) from `from` to `to` (bound to `pid` and `start_time`), keeping
  // the pool pages and their data: from then on `from` is refused there. Costs the number of
  // runs, not pages. INVALID_ARGUMENT if any page of the range is not bound to `from`, if
  // `to` already has pages there, or if `to`'s identity differs from an earlier binding;
  // nothing changes then.
  absl::Status Move(uint32_t from, uint32_t to, pid_t pid, uint64_t start_time, uint64_t vpage,
                    uint64_t pages);

  // One bound run: (process, first vpage, pages, first pool page).
  struct Binding {
    uint32_t process_id;
    uint64_t vpage;
    uint64_t pages;
    uint64_t pool_page;
  };
  // The whole page table, by process and vpage.
  std::vector<Binding> Dump() const;

  // The rack process id bound to (pid, start_time), or 0.
  uint32_t ProcessFor(pid_t pid, uint64_t start_time) const;
  // The page's contents, for reading: valid until the next call that changes the store.
  // PERMISSION_DENIED naming the page and process if the page table does not map it for that
  // process. A page never written reads as zeros without the pool allocating it.
  absl::StatusOr<const uint8_t*> Read(uint32_t process_id, uint64_t vpage) const;
  // The page's memory in the pool, for writing its 4 KiB. Errors as Read.
  absl::StatusOr<uint8_t*> Write(uint32_t process_id, uint64_t vpage);

  uint64_t used_bytes() const { return used_pages_ * kPageBytes; }
  uint64_t pool_bytes() const { return pool_.size(); }

 private:
  struct Range {
    uint64_t pages;
    uint64_t pool_page;
  };
  struct Process {
    pid_t pid = 0;
    uint64_t start_time = 0;
    std::map<uint64_t, Range> ranges;  // by first vpage
  };
  PageStore(std::string name, ipc::Fd fd, ipc::ShmRegion pool)
      : name_(std::move(name)),
        fd_(std::move(fd)),
        pool_(std::move(pool)),
        written_(pool_.size() / kPageBytes, false) {}
  absl::StatusOr<uint64_t> Locate(uint32_t process_id, uint64_t vpage) const;
  // Binds `process_id` to (pid, start_time), or checks an earlier binding.
  absl::Status Bind(uint32_t process_id, pid_t pid, uint64_t start_time);
  // Makes a range of `ranges` start at `vpage` if one spans it.
  static void SplitAt(std::map<uint64_t, Range>& ranges, uint64_t vpage);
  void Release(uint64_t pool_page, uint64_t pages);

  std::string name_;
  ipc::Fd fd_;
  ipc::ShmRegion pool_;
  std::map<uint32_t, Process> processes_;
  std::vector<bool> written_;  // by pool page: written since it was last released
  uint64_t used_pages_ = 0;
};

}  // namespace disagg::memmon

#endif  // DISAGG_MONITORS_MEMMON_PAGE_STORE_H_
