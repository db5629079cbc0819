// Userfaultfd: one userfaultfd with the operations the fault path needs (install a page,
// write-protect, poison, wake, drop). Kernel features newer than the installed headers
// (UFFDIO_POISON, Linux 6.6) are defined here and probed when the fd is opened: Open fails
// with a clear message on a kernel that lacks one.
//
// Thread-safety: every method may be called from any thread (the kernel serializes).
// Move-only resource: owns the fd.
#ifndef DISAGG_RUNTIME_USERFAULTFD_H_
#define DISAGG_RUNTIME_USERFAULTFD_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "ipc/fd.h"

namespace disagg::runtime {

inline constexpr uint64_t kPageBytes = 4096;
inline constexpr int kPageShift = 12;

class Userfaultfd {
 public:
  // Opens a non-blocking userfaultfd with write-protect faults and poisoning.
  // FAILED_PRECONDITION naming the missing feature or the refusal (permissions).
  static absl::StatusOr<Userfaultfd> Open();

  // Registers [base, base + bytes) for missing and write-protect faults.
  absl::Status Register(uintptr_t base, uint64_t bytes);
  // True if the kernel moves pages between registered ranges (UFFDIO_MOVE, Linux 6.8).
  bool can_move() const { return can_move_; }
  // Registers [base, base + bytes) for write-protect faults only (the kernel fills its holes
  // itself), so that pages may be moved into it and out of it.
  absl::Status RegisterStaging(uintptr_t base, uint64_t bytes);
  // Moves the pages of [src, src + bytes) to [dst, ...) (page-table moves: no copy), without
  // waking anyone. Both ranges registered here; every source page present, every destination
  // page absent. `moved` gets how many bytes moved (from the start), also on failure.
  absl::Status Move(uintptr_t dst, uintptr_t src, uint64_t bytes, uint64_t& moved);
  // Wakes threads waiting on faults in [addr, addr + bytes).
  absl::Status WakeRange(uintptr_t addr, uint64_t bytes);

  // Installs copies of the `pages` consecutive pages at `src` at `addr` and wakes their
  // waiters (one wake-up for the whole run); with `write_protect` they are installed
  // read-only so that the first write faults. Pages already present are skipped.
  absl::Status CopyRun(uintptr_t addr, const void* src, uint64_t pages, bool write_protect);
  // Sets or clears write protection of [addr, addr + bytes) of present pages; clearing
  // wakes the threads waiting on a write fault there.
  absl::Status WriteProtect(uintptr_t addr, uint64_t bytes, bool protect);
  // Poisons page `addr`: accesses raise SIGBUS there until the page is dropped. Wakes.
  absl::Status Poison(uintptr_t addr);
  // Wakes threads waiting on faults in page `addr` (they retry the access).
  absl::Status Wake(uintptr_t addr);
  // Drops [addr, addr + bytes): present pages and poison go; the next access faults again.
  absl::Status Drop(uintptr_t addr, uint64_t bytes);

  int fd() const { return fd_.get(); }

 private:
  Userfaultfd(ipc::Fd fd, bool can_move) : fd_(std::move(fd)), can_move_(can_move) {}
  ipc::Fd fd_;
  bool can_move_ = false;
};

}  // namespace disagg::runtime

#endif  // DISAGG_RUNTIME_USERFAULTFD_H_
