// RackImpl's grant and steal, trust groups, named roots, and the events of the Rack MMU
// (memory granted to this process, memory stolen from it).
#include "absl/strings/str_cat.h"
#include "internal/status_macros.h"
#include "ipc/wire.h"
#include "runtime/fault_signal.h"
#include "runtime/log.h"
#include "runtime/rack_impl.h"

namespace disagg::runtime {
namespace {

absl::Status CheckRange(uint64_t vaddr, size_t len, const char* what) {
  if (len == 0 || vaddr % kPageBytes != 0 || len % kPageBytes != 0 || vaddr + len < vaddr) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": [0x", absl::Hex(vaddr), ", +", len,
                                                   ") is not a non-empty page-aligned range"));
  }
  return absl::OkStatus();
}

}  // namespace

bool RackImpl::InTransfer(uint64_t vpage) const {
  const uint64_t addr = vpage << kPageShift;
  auto it = transfers_.upper_bound(addr);
  if (it == transfers_.begin()) return false;
  return addr < std::prev(it)->second;
}

absl::Status RackImpl::DropRange(uint64_t first, uint64_t last, bool write_back) {
  if (write_back) RETURN_IF_ERROR(WriteBackRange(first, last));
  // Also wait for pages another thread's Flush is writing back: the range must not change
  // hands before their copies reached the memory elements.
  while (cache_.BusyIn(first, last) || cache_.PinnedIn(first, last)) changed_.Wait(&mu_);
  // Only pages the cache knows of are in the address space (installed or poisoned): they go
  // in runs, one call each, so the cost follows what is cached, not the range's size. The
  // next touch faults and finds what the range is now.
  auto& pages = cache_.pages();
  std::vector<std::pair<uint64_t, uint64_t>> runs;  // (first page, pages)
  for (auto it = pages.lower_bound(first); it != pages.end() && it->first < last;) {
    if (!runs.empty() && runs.back().first + runs.back().second == it->first) {
      ++runs.back().second;
    } else {
      runs.emplace_back(it->first, 1);
    }
    ForgetPoison(it->first);
    const uint64_t vpage = it->first;
    ++it;
    cache_.Remove(vpage);
  }
  absl::Status dropped;
  for (const auto& [run, count] : runs) {
    absl::Status s = uffd_.Drop(run << kPageShift, count << kPageShift);
    if (dropped.ok()) dropped = s;
  }
  changed_.SignalAll();
  return dropped;
}

void RackImpl::Adopt(uint64_t vaddr, RegionInfo info) {
  const uint64_t first = vaddr >> kPageShift, last = (vaddr + info.bytes) >> kPageShift;
  // Pages refused before (touched while unmapped, or someone else's) are usable now. A touch
  // in flight is awaited first (one the Rack MMU already translated holds the range's own
  // data and stays).
  while (cache_.BusyIn(first, last)) changed_.Wait(&mu_);
  auto& pages = cache_.pages();
  for (auto it = pages.lower_bound(first); it != pages.end() && it->first < last;) {
    if (it->second.state != PageState::kPoisoned) {
      ++it;
      continue;
    }
    ForgetPoison(it->first);
    (void)uffd_.Drop(it->first << kPageShift, kPageBytes);
    it = pages.erase(it);
  }
  translations_.Add(vaddr, std::move(info));
  changed_.SignalAll();
}

absl::Status RackImpl::Grant(void* addr, size_t len, uint32_t to) {
  const uint64_t vaddr = reinterpret_cast<uintptr_t>(addr);
  RETURN_IF_ERROR(CheckRange(vaddr, len, "Grant"));
  if (to == id_) return absl::InvalidArgumentError("Grant: a process cannot grant to itself");
  const uint64_t first = vaddr >> kPageShift, last = (vaddr + len) >> kPageShift;
  {
    MutexLock lock(&mu_);
    auto next = transfers_.lower_bound(vaddr);
    if ((next != transfers_.end() && next->first < vaddr + len) || InTransfer(first)) {
      return absl::AbortedError("Grant: this process is granting an overlapping range already");
    }
    // From here on, touches of the range wait for the outcome; what was written goes back to
    // the memory elements, and the local copies leave.
    transfers_[vaddr] = vaddr + len;
    absl::Status dropped = DropRange(first, last, /*write_back=*/true);
    if (!dropped.ok()) {
      transfers_.erase(vaddr);
      changed_.SignalAll();
      return absl::Status(dropped.code(), absl::StrCat("Grant: nothing was granted: the range's "
                                                       "data could not be written back: ",
                                                       dropped.message()));
    }
  }
  absl::Status granted = mmu_.Grant(vaddr, len, to);
  MutexLock lock(&mu_);
  if (granted.ok()) {
    // Nothing may have come in meanwhile, but whatever did leaves with the range.
    (void)DropRange(first, last, /*write_back=*/false);
    translations_.MarkRevoked(vaddr, len);
  }
  transfers_.erase(vaddr);
  changed_.SignalAll();
  return granted;
}

absl::StatusOr<Region> RackImpl::Steal(uint32_t from, void* addr, size_t len) {
  const uint64_t vaddr = reinterpret_cast<uintptr_t>(addr);
  RETURN_IF_ERROR(CheckRange(vaddr, len, "Steal"));
  if (from == id_) return absl::InvalidArgumentError("Steal: a process cannot steal from itself");
  ASSIGN_OR_RETURN(MappedRange stolen, mmu_.Steal(from, vaddr, len));
  if (stolen.vaddr != vaddr || stolen.info.bytes != len) {
    return absl::InternalError("the Rack MMU answered a steal with another range");
  }
  MutexLock lock(&mu_);
  Adopt(vaddr, std::move(stolen.info));
  return Region(addr, len);
}

absl::Status RackImpl::JoinGroup(const std::string& name) { return mmu_.JoinGroup(name); }

absl::Status RackImpl::Publish(const std::string& name, const void* addr) {
  return mmu_.Publish(name, reinterpret_cast<uintptr_t>(addr));
}

absl::StatusOr<void*> RackImpl::Lookup(uint32_t owner, const std::string& name) {
  ASSIGN_OR_RETURN(uint64_t vaddr, mmu_.Lookup(owner, name));
  return reinterpret_cast<void*>(vaddr);
}

absl::Status RackImpl::HandleRackEvent(proto::Message::Reader message) {
  if (!message.isRackEvent()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unexpected message ", static_cast<int>(message.which()), " on the event link"));
  }
  auto event = message.getRackEvent();
  const proto::EventKind kind = event.getKind();
  const uint64_t vaddr = event.getVaddr(), bytes = event.getBytes();
  const bool ranged = kind == proto::EventKind::GRANTED || kind == proto::EventKind::REVOKED ||
                      kind == proto::EventKind::MEMORY_FAILED;
  if (ranged &&
      (vaddr % kPageBytes != 0 || bytes % kPageBytes != 0 || bytes == 0 || vaddr < range_base_ ||
       vaddr - range_base_ >= range_bytes_ || bytes > range_bytes_ - (vaddr - range_base_))) {
    return absl::InvalidArgumentError("an event names a range outside the rack range");
  }
  Event out{EventKind::kGranted, event.getProcess(), reinterpret_cast<void*>(vaddr), bytes,
            event.getElement(),  event.getReason()};
  RegionInfo granted{bytes, {}};
  switch (kind) {
    case proto::EventKind::GRANTED:
      for (auto e : event.getExtents()) {
        granted.extents.push_back({e.getVpage(), e.getPages(), e.getElement()});
      }
      break;
    case proto::EventKind::REVOKED:
      out.kind = EventKind::kRevoked;
      break;
    case proto::EventKind::MEMORY_FAILED:
      out.kind = EventKind::kMemoryFailed;
      break;
    case proto::EventKind::PEER_FAILED:
      out.kind = EventKind::kPeerFailed;
      out.address = nullptr;
      out.size = 0;
      break;
    case proto::EventKind::FENCED:
      out.kind = EventKind::kFenced;
      out.address = nullptr;
      out.size = 0;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("an event of unknown kind ", static_cast<int>(kind)));
  }
  // Applying it may wait (for fetches in flight to land): then not on the control thread.
  if (tasks_.Idle()) {
    bool applied = false;
    {
      MutexLock lock(&mu_);
      if (!MustWait(out)) {
        ApplyRackEvent(out, std::move(granted));
        applied = true;
      }
    }
    if (applied) {
      events_.Push(out);
      return absl::OkStatus();
    }
  }
  tasks_.Push([this, out = std::move(out), granted = std::move(granted)]() mutable {
    {
      MutexLock lock(&mu_);
      ApplyRackEvent(out, std::move(granted));
    }
    events_.Push(out);
  });
  return absl::OkStatus();
}

bool RackImpl::MustWait(const Event& event) const {
  const uint64_t first = reinterpret_cast<uintptr_t>(event.address) >> kPageShift;
  const uint64_t last = first + (event.size >> kPageShift);
  auto busy = [&](uint64_t from, uint64_t to) {
    return cache_.BusyIn(from, to) || cache_.PinnedIn(from, to);
  };
  switch (event.kind) {
    case EventKind::kGranted:
      return cache_.BusyIn(first, last);
    case EventKind::kRevoked:
      return busy(first, last);
    case EventKind::kMemoryFailed:
      if (event.process != id_) return false;
      for (const ExtentInfo& e : translations_.ExtentsOn(event.element)) {
        if (busy(e.vpage, e.vpage + e.pages)) return true;
      }
      return false;
    case EventKind::kFenced: {
      const uint64_t base = range_base_ >> kPageShift;
      return busy(base, base + (range_bytes_ >> kPageShift));
    }
    case EventKind::kPeerFailed:
      return false;
  }
  return false;
}

void RackImpl::ApplyRackEvent(const Event& event, RegionInfo granted) {
  const uint64_t vaddr = reinterpret_cast<uintptr_t>(event.address);
  switch (event.kind) {
    case EventKind::kGranted:
      Adopt(vaddr, std::move(granted));
      break;
    case EventKind::kRevoked:
      // The memory elements refuse this process there already: what was not written back
      // is lost, and later touches fault as revoked.
      (void)DropRange(vaddr >> kPageShift, (vaddr + event.size) >> kPageShift,
                      /*write_back=*/false);
      translations_.MarkRevoked(vaddr, event.size);
      break;
    case EventKind::kMemoryFailed:
      if (event.process == id_) ElementFailed(event.element);
      break;
    case EventKind::kFenced:
      Fenced(event.reason);
      break;
    case EventKind::kPeerFailed:
      break;
  }
}

}  // namespace disagg::runtime
