// UnitStaging: the address range where memory elements write 2 MiB page units into this
// process before the fault path moves them into place (ElementPool::PlaceUnits,
// Userfaultfd::Move), and where evicted units are moved back to, so that the next unit written
// there finds its huge page already allocated. Each slot is a 2 MiB-aligned unit of the range:
// holding pages (a recycled unit) or a hole (the kernel allocates when the element writes).
//
// Thread-safety: all methods are thread-safe. Move-only resource: owns the reservation.
#ifndef DISAGG_RUNTIME_UNIT_STAGING_H_
#define DISAGG_RUNTIME_UNIT_STAGING_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "internal/mutex.h"
#include "runtime/userfaultfd.h"

namespace disagg::runtime {

inline constexpr uint64_t kUnitBytes = uint64_t{2} << 20;

class UnitStaging {
 public:
  // Reserves `slots` units of address space (no memory) and registers them with `uffd` for
  // moves. FAILED_PRECONDITION if the kernel cannot move pages; the errno otherwise.
  static absl::StatusOr<std::unique_ptr<UnitStaging>> Create(Userfaultfd& uffd, size_t slots);
  // Unmaps the range; if a slot was retired (an element may still write there), leaves it
  // reserved and inaccessible instead, so that nothing mapped there later is written into.
  ~UnitStaging();
  UnitStaging(const UnitStaging&) = delete;
  UnitStaging& operator=(const UnitStaging&) = delete;

  struct Slot {
    uintptr_t addr = 0;
    bool holds_pages = false;
  };
  // A slot for an element to write a unit into: one holding pages if any. nullopt if none is
  // free.
  std::optional<Slot> Take();
  // A hole to move an evicted unit into; nullopt if none is free.
  std::optional<uintptr_t> TakeHole();
  // Gives `slot` back. At most kKeepFull slots keep their pages; more are dropped, so that
  // staging holds no more than that beyond the cache.
  void Give(Slot slot);
  // Never hands `addr` out again (an element may still write into it).
  void Retire(uintptr_t addr);
  // Slots that Take may hand out now.
  size_t available();

  bool Contains(uintptr_t addr) const { return addr >= base_ && addr < base_ + bytes_; }

  // True if the 2 MiB unit at `addr` (anywhere in the process) is mapped as one huge page,
  // as the kernel's page map says (PAGEMAP_SCAN, Linux 6.7). Only such a unit is worth moving
  // back here: a unit split into small pages (a write-protect change of part of it splits it)
  // would be written and moved page by page by every unit that reused it. False where the
  // kernel cannot tell.
  bool HugePage(uintptr_t addr) const;

  static constexpr size_t kKeepFull = 4;

 private:
  UnitStaging(void* mapping, uint64_t mapping_bytes, uintptr_t base, uint64_t bytes, int pagemap);

  void* const mapping_;
  const uint64_t mapping_bytes_;
  const uintptr_t base_;
  const uint64_t bytes_;
  const int pagemap_;  // /proc/self/pagemap, or -1 if the kernel cannot scan it
  Mutex mu_;
  std::vector<uintptr_t> full_ ABSL_GUARDED_BY(mu_);
  std::vector<uintptr_t> holes_ ABSL_GUARDED_BY(mu_);
  bool retired_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace disagg::runtime

#endif  // DISAGG_RUNTIME_UNIT_STAGING_H_
