#include "page_store.h"

#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "internal/logging.h"
#include "internal/status_macros.h"

namespace disagg::memmon {

absl::StatusOr<PageStore> PageStore::Create(const std::string& name, uint64_t pool_bytes) {
  if (pool_bytes == 0 || pool_bytes % kPageBytes != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": pool size ", pool_bytes, " is not a whole number of pages"));
  }
  ipc::Fd fd(::memfd_create(absl::StrCat("disagg-pool-", name).c_str(), MFD_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("memfd_create pool");
  if (::ftruncate(fd.get(), pool_bytes) != 0) return ErrnoStatus("size pool");
  ASSIGN_OR_RETURN(ipc::ShmRegion pool, ipc::ShmRegion::Map(fd.get(), pool_bytes));
  return PageStore(name, std::move(fd), std::move(pool));
}

absl::Status PageStore::Program(uint32_t process_id, pid_t pid, uint64_t start_time, uint64_t vpage,
                                uint64_t pages, uint64_t pool_page) {
  const uint64_t pool_pages = pool_.size() / kPageBytes;
  if (pages == 0 || pool_page >= pool_pages || pool_pages - pool_page < pages ||
      vpage + pages < vpage) {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": pool pages [", pool_page, ", +", pages,
                                                   ") are outside a pool of ", pool_pages));
  }
  RETURN_IF_ERROR(Bind(process_id, pid, start_time));
  Process& p = processes_[process_id];
  auto next = p.ranges.lower_bound(vpage);
  if ((next != p.ranges.end() && next->first < vpage + pages) ||
      (next != p.ranges.begin() &&
       std::prev(next)->first + std::prev(next)->second.pages > vpage)) {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": pages of process ", process_id,
                                                   " at 0x", absl::Hex(vpage << 12),
                                                   " are mapped already"));
  }
  p.ranges[vpage] = Range{pages, pool_page};
  used_pages_ += pages;
  return absl::OkStatus();
}

absl::Status PageStore::Bind(uint32_t process_id, pid_t pid, uint64_t start_time) {
  auto it = processes_.find(process_id);
  if (it == processes_.end()) {
    processes_[process_id] = Process{pid, start_time, {}};
  } else if (it->second.pid != pid || it->second.start_time != start_time) {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ": process ", process_id, " is bound to pid ", it->second.pid));
  }
  return absl::OkStatus();
}

void PageStore::SplitAt(std::map<uint64_t, Range>& ranges, uint64_t vpage) {
  auto it = ranges.upper_bound(vpage);
  if (it == ranges.begin()) return;
  --it;
  const uint64_t first = it->first;
  const Range r = it->second;
  if (vpage <= first || vpage >= first + r.pages) return;
  it->second.pages = vpage - first;
  ranges[vpage] = Range{first + r.pages - vpage, r.pool_page + (vpage - first)};
}

absl::Status PageStore::Move(uint32_t from, uint32_t to, pid_t pid, uint64_t start_time,
                             uint64_t vpage, uint64_t pages) {
  const uint64_t end = vpage + pages;
  auto src = processes_.find(from);
  if (pages == 0 || end < vpage || src == processes_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ": process ", from, " holds nothing at 0x", absl::Hex(vpage << 12)));
  }
  // The whole range must be bound to `from`, without gaps, and free for `to`.
  auto& ranges = src->second.ranges;
  uint64_t at = vpage;
  auto it = ranges.upper_bound(vpage);
  if (it != ranges.begin()) --it;
  for (; at < end; ++it) {
    if (it == ranges.end() || it->first > at || it->first + it->second.pages <= at) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": page 0x", absl::Hex(at << 12), " is not bound to process ", from));
    }
    at = it->first + it->second.pages;
  }
  if (from == to) return absl::InvalidArgumentError(absl::StrCat(name_, ": a move to itself"));
  if (auto dst = processes_.find(to); dst != processes_.end()) {
    if (dst->second.pid != pid || dst->second.start_time != start_time) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": process ", to, " is bound to pid ", dst->second.pid));
    }
    auto& theirs = dst->second.ranges;
    auto next = theirs.lower_bound(vpage);
    if ((next != theirs.end() && next->first < end) ||
        (next != theirs.begin() &&
         std::prev(next)->first + std::prev(next)->second.pages > vpage)) {
      return absl::InvalidArgumentError(absl::StrCat(name_, ": process ", to, " has pages at 0x",
                                                     absl::Hex(vpage << 12), " already"));
    }
  }
  RETURN_IF_ERROR(Bind(to, pid, start_time));
  SplitAt(ranges, vpage);
  SplitAt(ranges, end);
  auto& theirs = processes_[to].ranges;
  for (auto r = ranges.lower_bound(vpage); r != ranges.end() && r->first < end;) {
    theirs[r->first] = r->second;
    r = ranges.erase(r);
  }
  if (ranges.empty()) processes_.erase(from);
  return absl::OkStatus();
}

std::vector<PageStore::Binding> PageStore::Dump() const {
  std::vector<Binding> out;
  for (const auto& [id, p] : processes_) {
    for (const auto& [vpage, r] : p.ranges) out.push_back({id, vpage, r.pages, r.pool_page});
  }
  return out;
}

void PageStore::Release(uint64_t pool_page, uint64_t pages) {
  // Punching a hole frees the memory and reads back as zeros: the next owner sees no old data.
  if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, pool_page * kPageBytes,
                  pages * kPageBytes) != 0) {
    std::memset(pool_.data() + pool_page * kPageBytes, 0, pages * kPageBytes);
  }
  std::fill(written_.begin() + pool_page, written_.begin() + pool_page + pages, false);
  used_pages_ -= pages;
}

void PageStore::Revoke(uint32_t process_id, uint64_t vpage, uint64_t pages) {
  auto pit = processes_.find(process_id);
  if (pit == processes_.end()) return;
  auto& ranges = pit->second.ranges;
  // A range that wraps around ends at the top of the page space.
  const uint64_t end = vpage + pages < vpage ? ~uint64_t{0} : vpage + pages;
  auto it = ranges.upper_bound(vpage);
  if (it != ranges.begin()) --it;
  while (it != ranges.end() && it->first < end) {
    const uint64_t first = it->first;
    const Range r = it->second;
    const uint64_t last = first + r.pages;
    if (last <= vpage) {
      ++it;
      continue;
    }
    it = ranges.erase(it);
    const uint64_t cut_from = std::max(first, vpage), cut_to = std::min(last, end);
    if (first < cut_from) ranges[first] = Range{cut_from - first, r.pool_page};
    if (cut_to < last) ranges[cut_to] = Range{last - cut_to, r.pool_page + (cut_to - first)};
    Release(r.pool_page + (cut_from - first), cut_to - cut_from);
    it = ranges.lower_bound(cut_to);
  }
  if (ranges.empty()) processes_.erase(pit);
}

uint32_t PageStore::ProcessFor(pid_t pid, uint64_t start_time) const {
  for (const auto& [id, p] : processes_) {
    if (p.pid == pid && p.start_time == start_time) return id;
  }
  return 0;
}

absl::StatusOr<uint64_t> PageStore::Locate(uint32_t process_id, uint64_t vpage) const {
  auto pit = processes_.find(process_id);
  if (pit != processes_.end()) {
    auto it = pit->second.ranges.upper_bound(vpage);
    if (it != pit->second.ranges.begin()) {
      --it;
      if (vpage - it->first < it->second.pages) return it->second.pool_page + (vpage - it->first);
    }
  }
  return absl::PermissionDeniedError(absl::StrCat(name_, ": page 0x", absl::Hex(vpage << 12),
                                                  " is not mapped for process ", process_id));
}

absl::StatusOr<const uint8_t*> PageStore::Read(uint32_t process_id, uint64_t vpage) const {
  static const uint8_t kZeros[kPageBytes] = {};
  ASSIGN_OR_RETURN(uint64_t pool_page, Locate(process_id, vpage));
  // A page never written is zero: reading it need not make the pool allocate it.
  if (!written_[pool_page]) return kZeros;
  return pool_.data() + pool_page * kPageBytes;
}

absl::StatusOr<uint8_t*> PageStore::Write(uint32_t process_id, uint64_t vpage) {
  ASSIGN_OR_RETURN(uint64_t pool_page, Locate(process_id, vpage));
  written_[pool_page] = true;
  return pool_.data() + pool_page * kPageBytes;
}

}  // namespace disagg::memmon
