// MemoryMap: the Rack MMU's view of rack memory: one PagePool per memory element; the
// processes that joined; the windows of the rack address space, each an allocator of the
// addresses where one process places its new regions; and one rack-wide map from address
// range to region {owner, extents}. Ownership is apart from address: a region keeps its
// addresses for life, and grant and steal change only its owner. Extents are runs of pages
// contiguous in one element's pool, never single pages. A request the rack cannot hold fails
// whole: nothing is half-allocated.
//
// Process ids (and with them windows) are recycled once a process is gone and its window
// holds no region any more, whoever owns what was placed there.
// Value type; not thread-safe (the Rack MMU's loop owns it).
#ifndef DISAGG_RACKMMU_MEMORY_MAP_H_
#define DISAGG_RACKMMU_MEMORY_MAP_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "page_pool.h"
#include "proto/rack.capnp.h"

namespace disagg::rackmmu {

inline constexpr uint64_t kPageBytes = 4096;
inline constexpr int kPageShift = 12;
// Spread placement stripes regions across elements in chunks of this many pages (256 KiB).
inline constexpr uint64_t kStripePages = 64;

// The rack address space, a property of the rack fixed when it starts: window i is
// [base + i << window_shift, +window), for process ids 1..max_processes; the range is
// windows 0..max_processes, reserved by every rack process. The default, [17 TiB, 81 TiB),
// lies above AddressSanitizer's shadow memory and below where Linux puts PIE executables
// (~85 TiB) and the mmap area (growing down from 128 TiB).
struct RackLayout {
  uint64_t base = uint64_t{17} << 40;
  int window_shift = 36;  // 64 GiB per process
  uint32_t max_processes = 1023;

  uint64_t window_bytes() const { return uint64_t{1} << window_shift; }
  uint64_t range_bytes() const { return uint64_t{max_processes + 1} << window_shift; }
  uint64_t window_base(uint32_t id) const { return base + (uint64_t{id} << window_shift); }
  // INVALID_ARGUMENT unless the range is page aligned, lies in user space (below 128 TiB)
  // and holds at least one process of a window of 1 MiB to 64 GiB.
  absl::Status Validate() const;
};

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
  uint32_t owner = 0;
  std::vector<ExtentRecord> extents;  // sorted by vpage, covering the region
  uint64_t origin = 0;  // the vaddr of the Map it came from (pieces split off keep it)
};

struct ProcessRecord {
  uint32_t id = 0;
  uint64_t incarnation = 0;  // unique for the map's life: ids are recycled, this is not
  std::string name;
  std::string element;  // the compute element it runs on, as it said when joining
  std::string app;      // the application it belongs to ("" if none), as it said
  pid_t pid = 0;
  uint64_t start_time = 0;
  uint64_t window_base = 0;
  bool dead = false;                      // it died; its memory and roots are held for adoption
  absl::Time release_at;                  // when a dead process's memory is freed
  std::set<std::string> groups;           // trust groups
  std::map<std::string, uint64_t> roots;  // named roots: name -> address
};

class MemoryMap {
 public:
  explicit MemoryMap(RackLayout layout = {}) : layout_(layout) {}
  const RackLayout& layout() const { return layout_; }

  // A memory element's pool joins placement. A restarted element comes back with a fresh,
  // empty pool: extents on its earlier pool are then never freed into the new one.
  void AddElement(const std::string& name, uint64_t capacity_bytes);
  // A failed element takes no new regions. Its extents stay recorded.
  void SetUsable(const std::string& name, bool usable);

  // A process joins: a rack id (the lowest free one) and its window. RESOURCE_EXHAUSTED when
  // every id is in use (by live processes, dead ones held for adoption, or windows that
  // still hold regions).
  absl::StatusOr<ProcessRecord*> Join(const std::string& name, pid_t pid, uint64_t start_time);
  // Maps `bytes` (rounded up to pages) for `process_id` in its window. INVALID_ARGUMENT for
  // zero or more than a window; RESOURCE_EXHAUSTED if the rack's usable elements cannot hold
  // it (then nothing is allocated); NOT_FOUND for an unknown process.
  absl::StatusOr<const Region*> Map(uint32_t process_id, uint64_t bytes,
                                    proto::Placement placement);
  // Removes the region starting at `vaddr`, which `process_id` must own, frees its pages
  // and returns it (so its extents can be released at the memory elements). NOT_FOUND if
  // the process owns no region starting there.
  absl::StatusOr<Region> Unmap(uint32_t process_id, uint64_t vaddr);
  // Where `vpage` lives for `process_id`: the region holding it (extents narrowed to the one
  // holding the page). NOT_FOUND if nothing is mapped there; PERMISSION_DENIED naming the
  // owner if another process owns it; OUT_OF_RANGE outside the rack range.
  absl::StatusOr<Region> Translate(uint32_t process_id, uint64_t vpage) const;

  // Grant and steal: moves [vaddr, +bytes) from `from` to `to`, splitting regions at the
  // range's ends, and returns the extents moved (to be rebound at the memory elements).
  // INVALID_ARGUMENT for an empty or unaligned range, one not wholly mapped, or from == to;
  // PERMISSION_DENIED if `from` does not own every page of it; NOT_FOUND for an unknown
  // process. Nothing changes on error.
  absl::StatusOr<std::vector<ExtentRecord>> Move(uint32_t from, uint32_t to, uint64_t vaddr,
                                                 uint64_t bytes);
  // Undoes a Move of [vaddr, +bytes) from `from` to `to` whose rebinding failed: `from` owns
  // it again even if it died meanwhile, and the pieces the move split off are joined again.
  // false if `to` does not own all of it any more (it left: its memory is released).
  bool UndoMove(uint32_t from, uint32_t to, uint64_t vaddr, uint64_t bytes);

  // The memory of `owners` on `element` fails, the element staying up for everyone else
  // (tainted fate sharing): every current extent there of a region one of them owns gives
  // its pool pages back and is current no more, as on a failed element. Returns each region
  // that lost extents, with only those extents (to revoke at the element).
  std::vector<Region> LoseExtents(const std::set<uint32_t>& owners, const std::string& element);

  // The process died: it keeps its regions, groups and roots until `release_at`.
  void MarkDead(uint32_t process_id, absl::Time release_at);
  // The process is gone for good: its regions are removed, freed and returned; its id comes
  // free once its window holds no region.
  std::vector<Region> Leave(uint32_t process_id);

  ProcessRecord* process(uint32_t id);
  const ProcessRecord* process(uint32_t id) const;
  const std::map<uint32_t, ProcessRecord>& processes() const { return processes_; }
  const std::map<uint64_t, Region>& regions() const { return regions_; }
  // True if `e` lives on the current incarnation of its element's pool.
  bool Current(const ExtentRecord& e) const {
    auto pool = pools_.find(e.element);
    return pool != pools_.end() && pool->second.generation == e.pool_generation;
  }
  uint64_t free_pages() const;                      // on usable elements
  uint64_t MappedBytes(uint32_t process_id) const;  // what it owns
  // Ids no one holds, counted from the highest ever given out (for tests of recycling).
  size_t free_ids() const { return free_ids_.size(); }

 private:
  struct Pool {
    PagePool pages;
    bool usable = true;
    uint64_t generation = 0;
  };
  std::vector<ExtentRecord> Place(uint64_t vpage, uint64_t pages, proto::Placement placement);
  // Frees the region's pool pages and its addresses in their window.
  void Release(const Region& region);
  // Makes a region start at `vaddr` if one spans it (splitting its extents).
  void SplitAt(uint64_t vaddr);
  // Joins the region starting at `vaddr` with the one before it if both came from the same
  // Map and have the same owner.
  void JoinAt(uint64_t vaddr);
  // Recycles window `id` if neither a process nor a region holds it.
  void MaybeRecycle(uint32_t id);

  const RackLayout layout_;
  std::map<std::string, Pool> pools_;  // by element name; ordered for placement
  std::map<uint32_t, ProcessRecord> processes_;
  std::map<uint32_t, PagePool> windows_;  // by window id (the id of the process placing there)
  std::map<uint64_t, Region> regions_;    // rack-wide, by start address
  std::set<uint32_t> free_ids_;
  uint32_t next_process_id_ = 1;
  uint64_t next_incarnation_ = 1;
  uint64_t next_generation_ = 1;
  size_t spread_cursor_ = 0;
};

}  // namespace disagg::rackmmu

#endif  // DISAGG_RACKMMU_MEMORY_MAP_H_
