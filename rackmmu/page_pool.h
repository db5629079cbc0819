// PagePool: allocator of page numbers in [0, pages), as runs of consecutive pages. Used for a
// memory element's pool and for a process's window of virtual pages. First fit; freed runs
// coalesce with their neighbours. Value type; not thread-safe.
#ifndef DISAGG_RACKMMU_PAGE_POOL_H_
#define DISAGG_RACKMMU_PAGE_POOL_H_

#include <cstdint>
#include <map>
#include <vector>

#include "absl/status/statusor.h"

namespace disagg::rackmmu {

struct PageRun {
  uint64_t first = 0;
  uint64_t count = 0;
  bool operator==(const PageRun&) const = default;
};

class PagePool {
 public:
  explicit PagePool(uint64_t pages = 0);

  // `pages` pages as one run, aligned to `align` pages (a power of two).
  // RESOURCE_EXHAUSTED if no run that large is free; nothing is taken then.
  absl::StatusOr<PageRun> AllocateContiguous(uint64_t pages, uint64_t align = 1);
  // Up to `pages` pages as few runs as first fit gives; fewer if the pool runs dry.
  std::vector<PageRun> AllocateUpTo(uint64_t pages);
  // Returns a run. INVALID_ARGUMENT if it is out of range or overlaps free pages (a double
  // free); nothing changes then.
  absl::Status Free(PageRun run);

  uint64_t total_pages() const { return total_; }
  uint64_t free_pages() const { return free_; }

 private:
  uint64_t total_;
  uint64_t free_;
  std::map<uint64_t, uint64_t> runs_;  // free runs: first page -> count
};

}  // namespace disagg::rackmmu

#endif  // DISAGG_RACKMMU_PAGE_POOL_H_
