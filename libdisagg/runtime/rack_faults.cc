// RackImpl's fault path: fault threads read the userfaultfd; a missing page is fetched from
// its memory element and installed write-protected (writable at once for a write fault), a
// write to a write-protected page marks it dirty, and a refused page is poisoned so that the
// access raises SIGBUS. Room in the cache is made by evicting the longest-present page.
#include <errno.h>
#include <linux/userfaultfd.h>
#include <poll.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "internal/logging.h"
#include "ipc/wire.h"
#include "runtime/fault_signal.h"
#include "runtime/rack_impl.h"

namespace disagg::runtime {
namespace {

FaultCause CauseOfTranslation(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kPermissionDenied:
      return FaultCause::kNotYours;
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kOutOfRange:
      return FaultCause::kNotMapped;
    default:
      return FaultCause::kRefused;
  }
}

FaultCause CauseOfRead(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return FaultCause::kElementFailed;
    default:
      return FaultCause::kRefused;
  }
}

}  // namespace

void RackImpl::FaultLoop() {
  while (true) {
    struct pollfd fds[2] = {{uffd_.fd(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      PLOG(ERROR) << "disagg: polling the userfaultfd";
      return;
    }
    if (fds[1].revents & POLLIN) return;
    // One fault at a time per thread, so that the other threads take the next ones.
    struct uffd_msg msg;
    if (read(uffd_.fd(), &msg, sizeof(msg)) != sizeof(msg)) continue;  // another thread took it
    if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
    HandleFault(msg.arg.pagefault.address, msg.arg.pagefault.flags);
  }
}

void RackImpl::HandleFault(uintptr_t addr, uint64_t flags) {
  const uint64_t vpage = addr >> kPageShift;
  if (flags & UFFD_PAGEFAULT_FLAG_WP) return HandleWriteProtect(vpage);
  HandleMissing(vpage, (flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0);
}

void RackImpl::HandleMissing(uint64_t vpage, bool write) {
  const uintptr_t addr = vpage << kPageShift;
  std::string element;
  {
    absl::MutexLock lock(&mu_);
    while (true) {
      if (PageEntry* entry = cache_.Find(vpage)) {
        switch (entry->state) {
          case PageState::kFetching:
            return;  // its installation wakes this access too
          case PageState::kPresent:
          case PageState::kPoisoned:
            (void)uffd_.Wake(addr);  // the access retries: it reads, or raises SIGBUS
            return;
          case PageState::kWritingBack:
            changed_.Wait(&mu_);  // fetch only what the memory element holds after it
            continue;
        }
      }
      if (cache_.HasRoom()) break;
      if (!EvictOne()) changed_.Wait(&mu_);  // everything is in flight, or the quota is 0
    }
    cache_.BeginFetch(vpage);
    absl::StatusOr<std::string> local = TranslateLocked(vpage);
    if (local.ok()) element = std::move(*local);
  }
  if (element.empty()) {
    absl::StatusOr<std::string> remote = Translate(vpage);
    if (!remote.ok()) {
      VLOG(1) << "disagg: refused 0x" << std::hex << addr << std::dec << ": " << remote.status();
      absl::MutexLock lock(&mu_);
      cache_.AbortFetch(vpage, /*poisoned=*/true);
      Refuse(vpage, CauseOfTranslation(remote.status()));
      changed_.SignalAll();
      return;
    }
    element = std::move(*remote);
  }
  absl::Status status = elements_.ReadPage(element, vpage, [&](const uint8_t* data) {
    // Installed read-only unless this access writes: the first write marks it dirty.
    return uffd_.Copy(addr, data, /*write_protect=*/!write);
  });
  absl::MutexLock lock(&mu_);
  if (status.ok()) {
    cache_.FinishFetch(vpage, /*dirty=*/write);
    ++faults_;
  } else {
    LOG(WARNING) << "disagg: page 0x" << std::hex << addr << std::dec << ": " << status;
    cache_.AbortFetch(vpage, /*poisoned=*/true);
    Refuse(vpage, CauseOfRead(status));
  }
  changed_.SignalAll();
}

void RackImpl::HandleWriteProtect(uint64_t vpage) {
  const uintptr_t addr = vpage << kPageShift;
  absl::MutexLock lock(&mu_);
  PageEntry* entry = cache_.Find(vpage);
  while (entry != nullptr && entry->state == PageState::kFetching) {
    changed_.Wait(&mu_);  // installed but not yet recorded
    entry = cache_.Find(vpage);
  }
  if (entry != nullptr && entry->state == PageState::kPresent) {
    entry->dirty = true;
    absl::Status status = uffd_.WriteProtect(addr, kPageBytes, false);  // wakes the writer
    if (status.ok()) return;
    LOG(ERROR) << "disagg: " << status;
  }
  // Evicted meanwhile: the retried write faults the page in again.
  (void)uffd_.Wake(addr);
}

void RackImpl::Refuse(uint64_t vpage, FaultCause cause) {
  RecordPoison(vpage, cause);
  absl::Status status = uffd_.Poison(vpage << kPageShift);
  if (!status.ok()) LOG(ERROR) << "disagg: " << status;
}

absl::StatusOr<std::string> RackImpl::TranslateLocked(uint64_t vpage) {
  const uintptr_t addr = vpage << kPageShift;
  auto region = regions_.upper_bound(addr);
  if (region != regions_.begin()) {
    --region;
    if (addr < region->first + region->second.bytes) {
      const auto& extents = region->second.extents;
      auto e = std::upper_bound(extents.begin(), extents.end(), vpage,
                                [](uint64_t v, const ExtentInfo& x) { return v < x.vpage; });
      if (e != extents.begin() && vpage < std::prev(e)->vpage + std::prev(e)->pages) {
        return std::prev(e)->element;
      }
    }
  }
  return absl::NotFoundError("not in the local translation cache");
}

absl::StatusOr<std::string> RackImpl::Translate(uint64_t vpage) {
  uint64_t region_vaddr = 0;
  RegionInfo found;
  {
    absl::MutexLock lock(&mmu_mu_);
    ipc::SmallMessage request;
    auto root = request.Init();
    root.initTranslate().setVpage(vpage);
    absl::Status status = mmu_.Call(
        request.builder(), root,
        [&](proto::Message::Reader reply) {
          if (!reply.isMapped() || reply.getMapped().getExtents().size() != 1) {
            return absl::InternalError("the Rack MMU answered Translate oddly");
          }
          auto mapped = reply.getMapped();
          auto e = mapped.getExtents()[0];
          region_vaddr = mapped.getVaddr();
          found.bytes = mapped.getBytes();
          found.extents.push_back({e.getVpage(), e.getPages(), e.getElement()});
          return absl::OkStatus();
        },
        options_.timeout);
    if (!status.ok()) return status;
  }
  const ExtentInfo& extent = found.extents[0];
  if (vpage < extent.vpage || vpage - extent.vpage >= extent.pages) {
    return absl::InternalError("the Rack MMU translated a page to an extent without it");
  }
  std::string element = extent.element;
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = regions_.try_emplace(region_vaddr, std::move(found));
  if (!inserted) {
    auto& extents = it->second.extents;
    auto at = std::upper_bound(extents.begin(), extents.end(), extent.vpage,
                               [](uint64_t v, const ExtentInfo& x) { return v < x.vpage; });
    extents.insert(at, ExtentInfo{extent.vpage, extent.pages, element});
  }
  return element;
}

bool RackImpl::EvictOne() {
  std::optional<uint64_t> victim = cache_.NextVictim();
  if (!victim) return false;
  const uint64_t vpage = *victim;
  const uintptr_t addr = vpage << kPageShift;
  PageEntry* entry = cache_.Find(vpage);
  absl::StatusOr<std::string> element = TranslateLocked(vpage);
  ++evictions_;
  if (!entry->dirty || !element.ok()) {
    (void)uffd_.Drop(addr, kPageBytes);
    cache_.Remove(vpage);
    return true;
  }
  // Writers block from here on; the copy is the page's last contents.
  absl::Status status = uffd_.WriteProtect(addr, kPageBytes, true);
  alignas(64) uint8_t copy[kPageBytes];
  std::memcpy(copy, reinterpret_cast<const void*>(addr), kPageBytes);
  if (status.ok()) status = uffd_.Drop(addr, kPageBytes);
  if (!status.ok()) {
    LOG(ERROR) << "disagg: evicting 0x" << std::hex << addr << std::dec << ": " << status;
    entry->dirty = true;
    return false;
  }
  cache_.BeginWriteBack(vpage);
  mu_.Unlock();
  const PageWrite write{vpage, copy};
  status = elements_.WritePages(*element, {&write, 1});
  mu_.Lock();
  cache_.Remove(vpage);
  ++writebacks_;
  if (!status.ok()) {
    LOG(ERROR) << "disagg: write-back of 0x" << std::hex << addr << std::dec
               << " failed; the page is lost: " << status;
    cache_.MarkPoisoned(vpage);
    Refuse(vpage, FaultCause::kLost);
  }
  changed_.SignalAll();
  return true;
}

void RackImpl::ShrinkToQuota() {
  while (cache_.OverQuota()) {
    if (!EvictOne()) changed_.Wait(&mu_);
  }
}

}  // namespace disagg::runtime
