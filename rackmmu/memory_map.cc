#include "memory_map.h"

#include "absl/strings/str_cat.h"
#include "internal/logging.h"

namespace disagg::rackmmu {
namespace {

// Regions start on 2 MiB boundaries in their window, so that huge pages stay possible.
constexpr uint64_t kRegionAlignPages = 512;

// Appends [vpage, +run.count) -> element/run, merging with the previous extent if contiguous.
void AppendExtent(std::vector<ExtentRecord>& extents, uint64_t vpage, const std::string& element,
                  uint64_t generation, const PageRun& run) {
  if (!extents.empty()) {
    ExtentRecord& last = extents.back();
    if (last.element == element && last.vpage + last.pages == vpage &&
        last.pool_page + last.pages == run.first) {
      last.pages += run.count;
      return;
    }
  }
  extents.push_back({vpage, run.count, element, run.first, generation});
}

}  // namespace

absl::Status RackLayout::Validate() const {
  constexpr uint64_t kUserSpaceEnd = uint64_t{1} << 47;
  if (window_shift < 20 || window_shift > 36 || max_processes == 0 || max_processes > (1u << 20) ||
      base % kPageBytes != 0 || base == 0 || base >= kUserSpaceEnd ||
      range_bytes() > kUserSpaceEnd - base) {
    return absl::InvalidArgumentError(
        absl::StrCat("the rack range [0x", absl::Hex(base), ", +", max_processes + 1,
                     " windows of 2^", window_shift,
                     " bytes) must be page aligned, lie below 128 TiB, and have windows of "
                     "1 MiB (2^20) to 64 GiB (2^36)"));
  }
  return absl::OkStatus();
}

void MemoryMap::AddElement(const std::string& name, uint64_t capacity_bytes) {
  pools_[name] = Pool{PagePool(capacity_bytes >> kPageShift), true, next_generation_++};
}

void MemoryMap::SetUsable(const std::string& name, bool usable) {
  auto it = pools_.find(name);
  if (it != pools_.end()) it->second.usable = usable;
}

absl::StatusOr<ProcessRecord*> MemoryMap::Join(const std::string& name, pid_t pid,
                                               uint64_t start_time) {
  uint32_t id;
  if (!free_ids_.empty()) {
    id = *free_ids_.begin();
    free_ids_.erase(free_ids_.begin());
  } else if (next_process_id_ <= layout_.max_processes) {
    id = next_process_id_++;
  } else {
    return absl::ResourceExhaustedError(absl::StrCat(
        "all ", layout_.max_processes,
        " process ids of the rack are in use (by running processes, "
        "dead ones whose memory is held for adoption, or windows that still hold regions)"));
  }
  ProcessRecord& p = processes_[id];
  p.id = id;
  p.incarnation = next_incarnation_++;
  p.name = name;
  p.pid = pid;
  p.start_time = start_time;
  p.window_base = layout_.window_base(id);
  windows_.try_emplace(id, PagePool(layout_.window_bytes() >> kPageShift));
  return &p;
}

uint64_t MemoryMap::free_pages() const {
  uint64_t free = 0;
  for (const auto& [name, pool] : pools_) {
    if (pool.usable) free += pool.pages.free_pages();
  }
  return free;
}

std::vector<ExtentRecord> MemoryMap::Place(uint64_t vpage, uint64_t pages,
                                           proto::Placement placement) {
  std::vector<ExtentRecord> extents;
  std::vector<std::pair<const std::string*, Pool*>> usable;
  for (auto& [name, pool] : pools_) {
    if (pool.usable && pool.pages.free_pages() > 0) usable.push_back({&name, &pool});
  }
  uint64_t next = vpage;
  uint64_t left = pages;
  auto take = [&](const std::string& name, Pool& pool, uint64_t want) {
    for (const PageRun& run : pool.pages.AllocateUpTo(want)) {
      AppendExtent(extents, next, name, pool.generation, run);
      next += run.count;
      left -= run.count;
    }
  };
  if (placement == proto::Placement::FILL) {
    for (auto& [name, pool] : usable) {
      if (left == 0) break;
      take(*name, *pool, left);
    }
  } else {
    // Round-robin stripes over the elements that still have room, continuing where the last
    // region stopped so that small regions spread too.
    while (left > 0) {
      bool progress = false;
      for (size_t i = 0; i < usable.size() && left > 0; ++i) {
        auto& [name, pool] = usable[(spread_cursor_ + i) % usable.size()];
        if (pool->pages.free_pages() == 0) continue;
        take(*name, *pool, std::min(left, kStripePages));
        progress = true;
      }
      if (!usable.empty()) spread_cursor_ = (spread_cursor_ + 1) % usable.size();
      CHECK(progress) << "placement ran dry after the capacity check";
    }
  }
  return extents;
}

absl::StatusOr<const Region*> MemoryMap::Map(uint32_t process_id, uint64_t bytes,
                                             proto::Placement placement) {
  ProcessRecord* p = process(process_id);
  if (p == nullptr || p->dead) {
    return absl::NotFoundError(absl::StrCat("process ", process_id, " has not joined the rack"));
  }
  if (bytes == 0 || bytes > layout_.window_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot map ", bytes,
                                                   " bytes: a region is 1 byte to ",
                                                   layout_.window_bytes(), " (a window)"));
  }
  const uint64_t pages = (bytes + kPageBytes - 1) >> kPageShift;
  const uint64_t free = free_pages();
  if (pages > free) {
    return absl::ResourceExhaustedError(absl::StrCat("the rack's memory elements have ",
                                                     free * kPageBytes, " bytes free; ", bytes,
                                                     " requested"));
  }
  absl::StatusOr<PageRun> virt =
      windows_.at(process_id).AllocateContiguous(pages, kRegionAlignPages);
  if (!virt.ok()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("process ", process_id, "'s window is full: ", virt.status().message()));
  }
  const uint64_t vaddr = p->window_base + (virt->first << kPageShift);
  Region& region = regions_[vaddr];
  region.vaddr = vaddr;
  region.bytes = pages << kPageShift;
  region.owner = process_id;
  region.origin = vaddr;
  region.extents = Place(vaddr >> kPageShift, pages, placement);
  return &region;
}

void MemoryMap::Release(const Region& region) {
  for (const ExtentRecord& e : region.extents) {
    auto pool = pools_.find(e.element);
    // Pages of an earlier incarnation of the element died with it.
    if (pool == pools_.end() || pool->second.generation != e.pool_generation) continue;
    absl::Status s = pool->second.pages.Free({e.pool_page, e.pages});
    CHECK(s.ok()) << "Rack MMU page accounting broken: " << s;
  }
  const uint32_t window =
      static_cast<uint32_t>((region.vaddr - layout_.base) >> layout_.window_shift);
  auto w = windows_.find(window);
  CHECK(w != windows_.end()) << "a region outlived its window";
  const uint64_t base = layout_.window_base(window);
  CHECK(w->second.Free({(region.vaddr - base) >> kPageShift, region.bytes >> kPageShift}).ok())
      << "Rack MMU window accounting broken";
  MaybeRecycle(window);
}

void MemoryMap::MaybeRecycle(uint32_t id) {
  if (processes_.contains(id)) return;
  auto w = windows_.find(id);
  if (w == windows_.end() || w->second.free_pages() != w->second.total_pages()) return;
  windows_.erase(w);
  free_ids_.insert(id);
}

absl::StatusOr<Region> MemoryMap::Unmap(uint32_t process_id, uint64_t vaddr) {
  if (process(process_id) == nullptr) {
    return absl::NotFoundError(absl::StrCat("process ", process_id, " has not joined the rack"));
  }
  auto r = regions_.find(vaddr);
  if (r == regions_.end() || r->second.owner != process_id) {
    return absl::NotFoundError(
        absl::StrCat("process ", process_id, " owns no region at 0x", absl::Hex(vaddr)));
  }
  Region region = std::move(r->second);
  regions_.erase(r);
  Release(region);
  return region;
}

absl::StatusOr<Region> MemoryMap::Translate(uint32_t process_id, uint64_t vpage) const {
  const uint64_t addr = vpage << kPageShift;
  if (vpage >= (uint64_t{1} << (64 - kPageShift)) || addr < layout_.base ||
      addr - layout_.base >= layout_.range_bytes()) {
    return absl::OutOfRangeError(absl::StrCat("0x", absl::Hex(addr), " is outside the rack range"));
  }
  if (process(process_id) == nullptr) {
    return absl::NotFoundError(absl::StrCat("process ", process_id, " has not joined the rack"));
  }
  auto r = regions_.upper_bound(addr);
  if (r != regions_.begin()) {
    --r;
    const Region& region = r->second;
    if (addr < region.vaddr + region.bytes) {
      if (region.owner != process_id) {
        return absl::PermissionDeniedError(absl::StrCat("0x", absl::Hex(addr),
                                                        " belongs to process ", region.owner,
                                                        ", not to process ", process_id));
      }
      for (const ExtentRecord& e : region.extents) {
        if (vpage >= e.vpage && vpage < e.vpage + e.pages) {
          return Region{region.vaddr, region.bytes, region.owner, {e}, region.origin};
        }
      }
    }
  }
  return absl::NotFoundError(absl::StrCat("nothing is mapped at 0x", absl::Hex(addr)));
}

void MemoryMap::SplitAt(uint64_t vaddr) {
  auto r = regions_.upper_bound(vaddr);
  if (r == regions_.begin()) return;
  --r;
  Region& left = r->second;
  if (vaddr <= left.vaddr || vaddr >= left.vaddr + left.bytes) return;
  Region right{vaddr, left.vaddr + left.bytes - vaddr, left.owner, {}, left.origin};
  const uint64_t cut = vaddr >> kPageShift;
  std::vector<ExtentRecord> kept;
  for (ExtentRecord& e : left.extents) {
    if (e.vpage + e.pages <= cut) {
      kept.push_back(std::move(e));
    } else if (e.vpage >= cut) {
      right.extents.push_back(std::move(e));
    } else {
      ExtentRecord tail = e;
      const uint64_t head = cut - e.vpage;
      tail.vpage = cut;
      tail.pages = e.pages - head;
      tail.pool_page = e.pool_page + head;
      e.pages = head;
      kept.push_back(std::move(e));
      right.extents.push_back(std::move(tail));
    }
  }
  left.extents = std::move(kept);
  left.bytes = vaddr - left.vaddr;
  regions_.emplace(vaddr, std::move(right));
}

absl::StatusOr<std::vector<ExtentRecord>> MemoryMap::Move(uint32_t from, uint32_t to,
                                                          uint64_t vaddr, uint64_t bytes) {
  const ProcessRecord* giver = process(from);
  const ProcessRecord* taker = process(to);
  if (giver == nullptr) return absl::NotFoundError(absl::StrCat("no process ", from));
  if (taker == nullptr || taker->dead) {
    return absl::NotFoundError(absl::StrCat("no live process ", to, " in the rack"));
  }
  if (from == to) {
    return absl::InvalidArgumentError(
        absl::StrCat("process ", from, " cannot move memory to itself"));
  }
  if (bytes == 0 || vaddr % kPageBytes != 0 || bytes % kPageBytes != 0 || vaddr + bytes < vaddr) {
    return absl::InvalidArgumentError(absl::StrCat("[0x", absl::Hex(vaddr), ", +", bytes,
                                                   ") is not a non-empty page-aligned range"));
  }
  // Every page of the range must lie in regions `from` owns, without gaps.
  const uint64_t end = vaddr + bytes;
  uint64_t at = vaddr;
  auto r = regions_.upper_bound(vaddr);
  if (r != regions_.begin()) --r;
  for (; at < end; ++r) {
    if (r == regions_.end() || r->second.vaddr > at || r->second.vaddr + r->second.bytes <= at) {
      return absl::InvalidArgumentError(absl::StrCat("0x", absl::Hex(at), " is not mapped: [0x",
                                                     absl::Hex(vaddr), ", +", bytes,
                                                     ") must lie wholly in mapped regions"));
    }
    if (r->second.owner != from) {
      return absl::PermissionDeniedError(absl::StrCat("0x", absl::Hex(at), " belongs to process ",
                                                      r->second.owner, ", not to process ", from));
    }
    at = r->second.vaddr + r->second.bytes;
  }
  SplitAt(vaddr);
  SplitAt(end);
  std::vector<ExtentRecord> moved;
  for (auto it = regions_.find(vaddr); it != regions_.end() && it->first < end; ++it) {
    it->second.owner = to;
    moved.insert(moved.end(), it->second.extents.begin(), it->second.extents.end());
  }
  return moved;
}

void MemoryMap::JoinAt(uint64_t vaddr) {
  auto right = regions_.find(vaddr);
  if (right == regions_.end() || right == regions_.begin()) return;
  auto left = std::prev(right);
  Region& l = left->second;
  const Region& r = right->second;
  if (l.vaddr + l.bytes != r.vaddr || l.owner != r.owner || l.origin != r.origin) return;
  l.bytes += r.bytes;
  for (const ExtentRecord& e : r.extents) {
    ExtentRecord& last = l.extents.back();
    if (last.element == e.element && last.pool_generation == e.pool_generation &&
        last.vpage + last.pages == e.vpage && last.pool_page + last.pages == e.pool_page) {
      last.pages += e.pages;  // an extent the split had cut in two
    } else {
      l.extents.push_back(e);
    }
  }
  regions_.erase(right);
}

bool MemoryMap::UndoMove(uint32_t from, uint32_t to, uint64_t vaddr, uint64_t bytes) {
  const uint64_t end = vaddr + bytes;
  uint64_t at = vaddr;
  for (auto it = regions_.find(vaddr); at < end; ++it) {
    if (it == regions_.end() || it->first != at || it->second.owner != to) return false;
    at += it->second.bytes;
  }
  if (at != end) return false;
  for (auto it = regions_.find(vaddr); it != regions_.end() && it->first < end; ++it) {
    it->second.owner = from;
  }
  if (process(from) == nullptr) {
    // The giver is gone for good (it left): what it held is released with the rest of it.
    for (auto it = regions_.find(vaddr); it != regions_.end() && it->first < end;) {
      Region region = std::move(it->second);
      it = regions_.erase(it);
      Release(region);
    }
    return true;
  }
  JoinAt(end);
  std::vector<uint64_t> starts;
  for (auto it = regions_.find(vaddr); it != regions_.end() && it->first < end; ++it) {
    starts.push_back(it->first);
  }
  for (auto s = starts.rbegin(); s != starts.rend(); ++s) JoinAt(*s);
  return true;
}

void MemoryMap::MarkDead(uint32_t process_id, absl::Time release_at) {
  ProcessRecord* p = process(process_id);
  if (p == nullptr) return;
  p->dead = true;
  p->release_at = release_at;
}

std::vector<Region> MemoryMap::Leave(uint32_t process_id) {
  std::vector<Region> out;
  if (processes_.erase(process_id) == 0) return out;
  for (auto it = regions_.begin(); it != regions_.end();) {
    if (it->second.owner != process_id) {
      ++it;
      continue;
    }
    out.push_back(std::move(it->second));
    it = regions_.erase(it);
  }
  for (const Region& region : out) Release(region);
  MaybeRecycle(process_id);
  return out;
}

std::vector<Region> MemoryMap::LoseExtents(const std::set<uint32_t>& owners,
                                           const std::string& element) {
  std::vector<Region> out;
  auto pool = pools_.find(element);
  if (pool == pools_.end()) return out;
  for (auto& [vaddr, region] : regions_) {
    if (!owners.contains(region.owner)) continue;
    Region lost{region.vaddr, region.bytes, region.owner, {}, region.origin};
    for (ExtentRecord& e : region.extents) {
      if (e.element != element || e.pool_generation != pool->second.generation) continue;
      absl::Status s = pool->second.pages.Free({e.pool_page, e.pages});
      CHECK(s.ok()) << "Rack MMU page accounting broken: " << s;
      lost.extents.push_back(e);
      e.pool_generation = 0;  // no incarnation has it: never current again
    }
    if (!lost.extents.empty()) out.push_back(std::move(lost));
  }
  return out;
}

ProcessRecord* MemoryMap::process(uint32_t id) {
  auto it = processes_.find(id);
  return it == processes_.end() ? nullptr : &it->second;
}

const ProcessRecord* MemoryMap::process(uint32_t id) const {
  auto it = processes_.find(id);
  return it == processes_.end() ? nullptr : &it->second;
}

uint64_t MemoryMap::MappedBytes(uint32_t process_id) const {
  uint64_t total = 0;
  for (const auto& [vaddr, region] : regions_) {
    if (region.owner == process_id) total += region.bytes;
  }
  return total;
}

}  // namespace disagg::rackmmu
