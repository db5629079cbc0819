// MemoryMap: the Rack MMU's view of rack memory: one PagePool per memory element, the
// processes that joined with their fixed windows of the rack address space, and each
// process's regions as extents (runs of pages contiguous in one element's pool), never per
// page. Placement spreads a region across elements or fills one after another. A request
// the rack cannot hold fails whole: nothing is half-allocated.
// Value type; not thread-safe (the Rack MMU's loop owns it).
#ifndef DISAGG_RACKMMU_MEMORY_MAP_H_
#define DISAGG_RACKMMU_MEMORY_MAP_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "page_pool.h"
#include "proto/rack.capnp.h"

namespace disagg::rackmmu {

inline constexpr uint64_t kPageBytes = 4096;
inline constexpr int kPageShift = 12;
// The rack address space: process id i owns [kRangeBase + i << kWindowShift, +window).
// The range starts at 1 TiB: above where non-PIE programs and their heaps live, below where
// Linux puts PIE executables (~85 TiB) and the mmap area (growing down from 128 TiB).
inline constexpr uint64_t kRangeBase = uint64_t{1} << 40;  // 1 TiB
inline constexpr int kWindowShift = 36;                     // 64 GiB per process
inline constexpr uint32_t kMaxProcesses = 1023;             // ids 1..1023: a 64 TiB range
inline constexpr uint64_t kRangeBytes = uint64_t{kMaxProcesses + 1} << kWindowShift;
// Spread placement stripes regions across elements in chunks of this many pages (256 KiB).
inline constexpr uint64_t kStripePages = 64;

struct ExtentRecord {
  uint64_t vpage = 0;
  uint64_t pages = 0;
  std::string element;
  uint64_t pool_page = 0;
  uint64_t pool_generation = 0;  // which incarnation of the element's pool
};

struct Region {
  uint64_t vaddr = 0;
  uint64_t bytes = 0;
  std::vector<ExtentRecord> extents;
};

struct ProcessRecord {
  uint32_t id = 0;
  std::string name;
  std::string element;  // the compute element it runs on, as it said when joining
  pid_t pid = 0;
  uint64_t start_time = 0;
  uint64_t window_base = 0;
  PagePool window;                    // virtual pages of the window, relative to its base
  std::map<uint64_t, Region> regions;  // by vaddr
};

class MemoryMap {
 public:
  // A memory element's pool joins placement. A restarted element comes back with a fresh,
  // empty pool: extents on its earlier pool are then never freed into the new one.
  void AddElement(const std::string& name, uint64_t capacity_bytes);
  // A failed element takes no new regions. Its extents stay recorded.
  void SetUsable(const std::string& name, bool usable);

  // A process joins: a new rack id and window. RESOURCE_EXHAUSTED when all ids are taken.
  absl::StatusOr<ProcessRecord*> Join(const std::string& name, pid_t pid, uint64_t start_time);
  // Maps `bytes` (rounded up to pages) for `process_id`. INVALID_ARGUMENT for zero or more
  // than a window; RESOURCE_EXHAUSTED if the rack's usable elements cannot hold it (then
  // nothing is allocated); NOT_FOUND for an unknown process.
  absl::StatusOr<const Region*> Map(uint32_t process_id, uint64_t bytes,
                                    proto::Placement placement);
  // Removes the region starting at `vaddr`, frees its pages, and returns it (so its extents
  // can be revoked at the memory elements). NOT_FOUND if there is no such region.
  absl::StatusOr<Region> Unmap(uint32_t process_id, uint64_t vaddr);
  // Where `vpage` lives for `process_id`: the region holding it (extents narrowed to the one
  // holding the page). NOT_FOUND if nothing is mapped there; PERMISSION_DENIED naming the
  // owner if the page lies in another process's window; OUT_OF_RANGE outside the rack range.
  absl::StatusOr<Region> Translate(uint32_t process_id, uint64_t vpage) const;
  // The process leaves: all its regions are removed and returned.
  std::vector<Region> Leave(uint32_t process_id);

  const ProcessRecord* process(uint32_t id) const;
  const std::map<uint32_t, ProcessRecord>& processes() const { return processes_; }
  uint64_t free_pages() const;  // on usable elements
  uint64_t MappedBytes(uint32_t process_id) const;

 private:
  struct Pool {
    PagePool pages;
    bool usable = true;
    uint64_t generation = 0;
  };
  std::vector<ExtentRecord> Place(uint64_t vpage, uint64_t pages, proto::Placement placement);
  void FreeExtents(const Region& region);

  std::map<std::string, Pool> pools_;  // by element name; ordered for placement
  std::map<uint32_t, ProcessRecord> processes_;
  uint32_t next_process_id_ = 1;
  uint64_t next_generation_ = 1;
  size_t spread_cursor_ = 0;
};

}  // namespace disagg::rackmmu

#endif  // DISAGG_RACKMMU_MEMORY_MAP_H_
