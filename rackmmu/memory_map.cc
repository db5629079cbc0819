#include "memory_map.h"

#include "absl/strings/str_cat.h"
#include "internal/logging.h"

namespace disagg::rackmmu {
namespace {

constexpr uint64_t kWindowPages = (uint64_t{1} << kWindowShift) >> kPageShift;
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

void MemoryMap::AddElement(const std::string& name, uint64_t capacity_bytes) {
  pools_[name] = Pool{PagePool(capacity_bytes >> kPageShift), true, next_generation_++};
}

void MemoryMap::SetUsable(const std::string& name, bool usable) {
  auto it = pools_.find(name);
  if (it != pools_.end()) it->second.usable = usable;
}

absl::StatusOr<ProcessRecord*> MemoryMap::Join(const std::string& name, pid_t pid,
                                                     uint64_t start_time) {
  if (next_process_id_ > kMaxProcesses) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the rack has given out all ", kMaxProcesses, " process ids"));
  }
  const uint32_t id = next_process_id_++;
  ProcessRecord& p = processes_[id];
  p.id = id;
  p.name = name;
  p.pid = pid;
  p.start_time = start_time;
  p.window_base = kRangeBase + (uint64_t{id} << kWindowShift);
  p.window = PagePool(kWindowPages);
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
  auto it = processes_.find(process_id);
  if (it == processes_.end()) {
    return absl::NotFoundError(absl::StrCat("process ", process_id, " has not joined the rack"));
  }
  ProcessRecord& p = it->second;
  if (bytes == 0 || bytes > (uint64_t{1} << kWindowShift)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot map ", bytes, " bytes: a region is 1 byte to 64 GiB"));
  }
  const uint64_t pages = (bytes + kPageBytes - 1) >> kPageShift;
  const uint64_t free = free_pages();
  if (pages > free) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the rack's memory elements have ", free * kPageBytes, " bytes free; ", bytes,
        " requested"));
  }
  absl::StatusOr<PageRun> virt = p.window.AllocateContiguous(pages, kRegionAlignPages);
  if (!virt.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat("process ", process_id,
                                                     "'s window is full: ", virt.status().message()));
  }
  const uint64_t vaddr = p.window_base + (virt->first << kPageShift);
  Region& region = p.regions[vaddr];
  region.vaddr = vaddr;
  region.bytes = pages << kPageShift;
  region.extents = Place(vaddr >> kPageShift, pages, placement);
  return &region;
}

void MemoryMap::FreeExtents(const Region& region) {
  for (const ExtentRecord& e : region.extents) {
    auto pool = pools_.find(e.element);
    // Pages of an earlier incarnation of the element died with it.
    if (pool == pools_.end() || pool->second.generation != e.pool_generation) continue;
    absl::Status s = pool->second.pages.Free({e.pool_page, e.pages});
    CHECK(s.ok()) << "Rack MMU page accounting broken: " << s;
  }
}

absl::StatusOr<Region> MemoryMap::Unmap(uint32_t process_id, uint64_t vaddr) {
  auto it = processes_.find(process_id);
  if (it == processes_.end()) {
    return absl::NotFoundError(absl::StrCat("process ", process_id, " has not joined the rack"));
  }
  ProcessRecord& p = it->second;
  auto r = p.regions.find(vaddr);
  if (r == p.regions.end()) {
    return absl::NotFoundError(
        absl::StrCat("process ", process_id, " has no region at 0x", absl::Hex(vaddr)));
  }
  Region region = std::move(r->second);
  p.regions.erase(r);
  FreeExtents(region);
  CHECK(p.window.Free({(vaddr - p.window_base) >> kPageShift, region.bytes >> kPageShift}).ok());
  return region;
}

absl::StatusOr<Region> MemoryMap::Translate(uint32_t process_id, uint64_t vpage) const {
  const uint64_t addr = vpage << kPageShift;
  if (vpage >= (uint64_t{1} << (64 - kPageShift)) || addr < kRangeBase ||
      addr - kRangeBase >= kRangeBytes) {
    return absl::OutOfRangeError(absl::StrCat("0x", absl::Hex(addr), " is outside the rack range"));
  }
  const uint32_t owner = static_cast<uint32_t>((addr - kRangeBase) >> kWindowShift);
  if (owner != process_id) {
    return absl::PermissionDeniedError(absl::StrCat(
        "0x", absl::Hex(addr), " lies in process ", owner, "'s window, not in process ",
        process_id, "'s"));
  }
  const ProcessRecord* p = process(process_id);
  if (p == nullptr) {
    return absl::NotFoundError(absl::StrCat("process ", process_id, " has not joined the rack"));
  }
  auto r = p->regions.upper_bound(addr);
  if (r != p->regions.begin()) {
    --r;
    const Region& region = r->second;
    if (addr < region.vaddr + region.bytes) {
      for (const ExtentRecord& e : region.extents) {
        if (vpage >= e.vpage && vpage < e.vpage + e.pages) {
          return Region{region.vaddr, region.bytes, {e}};
        }
      }
    }
  }
  return absl::NotFoundError(absl::StrCat("nothing is mapped at 0x", absl::Hex(addr)));
}

std::vector<Region> MemoryMap::Leave(uint32_t process_id) {
  std::vector<Region> out;
  auto it = processes_.find(process_id);
  if (it == processes_.end()) return out;
  for (auto& [vaddr, region] : it->second.regions) {
    FreeExtents(region);
    out.push_back(std::move(region));
  }
  processes_.erase(it);
  return out;
}

const ProcessRecord* MemoryMap::process(uint32_t id) const {
  auto it = processes_.find(id);
  return it == processes_.end() ? nullptr : &it->second;
}

uint64_t MemoryMap::MappedBytes(uint32_t process_id) const {
  const ProcessRecord* p = process(process_id);
  uint64_t total = 0;
  if (p != nullptr) {
    for (const auto& [vaddr, region] : p->regions) total += region.bytes;
  }
  return total;
}

}  // namespace disagg::rackmmu
