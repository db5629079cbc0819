#include "runtime/unit_staging.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal/pagemap_scan.h"
#include "internal/status_macros.h"

namespace disagg::runtime {
namespace {

// /proc/self/pagemap if the kernel scans it by category, else -1.
int OpenPagemap() {
  const int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  static const char probe = 0;  // mapped: the scan of its page succeeds, whatever it finds
  if (HugeMappedBytes(fd, reinterpret_cast<uintptr_t>(&probe) & ~uintptr_t{4095}, 4096) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

bool UnitStaging::HugePage(uintptr_t addr) const {
  return pagemap_ >= 0 &&
         HugeMappedBytes(pagemap_, addr, kUnitBytes) == static_cast<int64_t>(kUnitBytes);
}

absl::StatusOr<std::unique_ptr<UnitStaging>> UnitStaging::Create(Userfaultfd& uffd, size_t slots) {
  if (!uffd.can_move()) {
    return absl::FailedPreconditionError("this kernel's userfaultfd cannot move pages (Linux 6.8)");
  }
  const uint64_t bytes = slots * kUnitBytes;
  const uint64_t mapping_bytes = bytes + kUnitBytes;  // room to align
  void* mapping = mmap(nullptr, mapping_bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mapping == MAP_FAILED) return ErrnoStatus("reserving the unit staging range");
  const uintptr_t base =
      (reinterpret_cast<uintptr_t>(mapping) + kUnitBytes - 1) & ~(kUnitBytes - 1);
  std::unique_ptr<UnitStaging> staging(
      new UnitStaging(mapping, mapping_bytes, base, bytes, OpenPagemap()));
  // Huge pages where the kernel allocates them here; not in a child after fork; as the rack
  // range is.
  madvise(reinterpret_cast<void*>(base), bytes, MADV_HUGEPAGE);
  madvise(reinterpret_cast<void*>(base), bytes, MADV_DONTFORK);
  madvise(reinterpret_cast<void*>(base), bytes, MADV_DONTDUMP);
  RETURN_IF_ERROR(uffd.RegisterStaging(base, bytes));
  return staging;
}

UnitStaging::UnitStaging(void* mapping, uint64_t mapping_bytes, uintptr_t base, uint64_t bytes,
                         int pagemap)
    : mapping_(mapping),
      mapping_bytes_(mapping_bytes),
      base_(base),
      bytes_(bytes),
      pagemap_(pagemap) {
  for (uintptr_t a = base_ + bytes_; a > base_; a -= kUnitBytes) holes_.push_back(a - kUnitBytes);
}

UnitStaging::~UnitStaging() {
  if (pagemap_ >= 0) close(pagemap_);
  MutexLock lock(&mu_);
  if (retired_) {
    mmap(mapping_, mapping_bytes_, PROT_NONE,
         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
  } else {
    munmap(mapping_, mapping_bytes_);
  }
}

size_t UnitStaging::available() {
  MutexLock lock(&mu_);
  return full_.size() + holes_.size();
}

std::optional<UnitStaging::Slot> UnitStaging::Take() {
  MutexLock lock(&mu_);
  if (!full_.empty()) {
    const uintptr_t addr = full_.back();
    full_.pop_back();
    return Slot{addr, true};
  }
  if (holes_.empty()) return std::nullopt;
  const uintptr_t addr = holes_.back();
  holes_.pop_back();
  return Slot{addr, false};
}

std::optional<uintptr_t> UnitStaging::TakeHole() {
  MutexLock lock(&mu_);
  if (holes_.empty()) return std::nullopt;
  const uintptr_t addr = holes_.back();
  holes_.pop_back();
  return addr;
}

void UnitStaging::Give(Slot slot) {
  MutexLock lock(&mu_);
  if (slot.holds_pages && full_.size() < kKeepFull) {
    full_.push_back(slot.addr);
    return;
  }
  if (slot.holds_pages) madvise(reinterpret_cast<void*>(slot.addr), kUnitBytes, MADV_DONTNEED);
  holes_.push_back(slot.addr);
}

void UnitStaging::Retire(uintptr_t addr) {
  madvise(reinterpret_cast<void*>(addr), kUnitBytes, MADV_DONTNEED);
  MutexLock lock(&mu_);
  retired_ = true;
}

}  // namespace disagg::runtime
