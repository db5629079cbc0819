// How much of a range of this process is mapped as huge pages, as the kernel's page map says
// (the PAGEMAP_SCAN ioctl on /proc/self/pagemap, Linux 6.7; its ABI is defined here, the
// installed headers being older). Header-only; thread-safe.
#ifndef DISAGG_INTERNAL_PAGEMAP_SCAN_H_
#define DISAGG_INTERNAL_PAGEMAP_SCAN_H_

#include <sys/ioctl.h>

#include <cstdint>
#include <vector>

namespace disagg {
namespace pagemap_scan_internal {

struct PageRegion {  // struct page_region
  uint64_t start, end, categories;
};
struct ScanArg {  // struct pm_scan_arg
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted,
      category_mask, category_anyof_mask, return_mask;
};
inline constexpr unsigned long kPagemapScan = _IOWR('f', 16, ScanArg);
inline constexpr uint64_t kPageIsHuge = 1 << 6;  // PMD-mapped transparent huge page, or hugetlb

}  // namespace pagemap_scan_internal

// Bytes of [addr, addr + bytes) mapped as huge pages, from `pagemap` (an open
// /proc/self/pagemap); -1 if the kernel cannot tell (no PAGEMAP_SCAN).
inline int64_t HugeMappedBytes(int pagemap, uintptr_t addr, uint64_t bytes) {
  using namespace pagemap_scan_internal;
  std::vector<PageRegion> regions(bytes / (uint64_t{2} << 20) + 1);  // at most one per huge page
  ScanArg arg{};
  arg.size = sizeof(arg);
  arg.start = addr;
  arg.end = addr + bytes;
  arg.vec = reinterpret_cast<uintptr_t>(regions.data());
  arg.vec_len = regions.size();
  arg.category_mask = kPageIsHuge;
  arg.return_mask = kPageIsHuge;
  const long found = ioctl(pagemap, kPagemapScan, &arg);
  if (found < 0) return -1;
  int64_t huge = 0;
  for (long i = 0; i < found; ++i) huge += static_cast<int64_t>(regions[i].end - regions[i].start);
  return huge;
}

}  // namespace disagg

#endif  // DISAGG_INTERNAL_PAGEMAP_SCAN_H_
