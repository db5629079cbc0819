#include "runtime/translations.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace disagg::runtime {
namespace {

constexpr int kPageShift = 12;

// The range of `ranges` holding `addr`, or end().
template <typename Map>
auto Holding(Map& ranges, uint64_t addr) {
  auto it = ranges.upper_bound(addr);
  if (it == ranges.begin()) return ranges.end();
  --it;
  return addr < it->first + it->second.bytes ? it : ranges.end();
}

}  // namespace

void Translations::CarveFrom(std::map<uint64_t, RegionInfo>& ranges, uint64_t vaddr,
                             uint64_t bytes) {
  const uint64_t end = vaddr + bytes;
  auto it = ranges.upper_bound(vaddr);
  if (it != ranges.begin()) --it;
  while (it != ranges.end() && it->first < end) {
    const uint64_t start = it->first, stop = start + it->second.bytes;
    if (stop <= vaddr) {
      ++it;
      continue;
    }
    RegionInfo info = std::move(it->second);
    it = ranges.erase(it);
    auto keep = [&](uint64_t from, uint64_t to) {
      RegionInfo part{to - from, {}};
      for (const ExtentInfo& e : info.extents) {
        const uint64_t lo = std::max(e.vpage, from >> kPageShift);
        const uint64_t hi = std::min(e.vpage + e.pages, to >> kPageShift);
        if (lo < hi) part.extents.push_back({lo, hi - lo, e.element});
      }
      ranges.emplace(from, std::move(part));
    };
    if (start < vaddr) keep(start, vaddr);
    if (end < stop) keep(end, stop);
    it = ranges.lower_bound(std::min(stop, end));  // ranges after this one may overlap too
  }
}

void Translations::Add(uint64_t vaddr, RegionInfo info) {
  CarveFrom(ranges_, vaddr, info.bytes);
  CarveFrom(revoked_, vaddr, info.bytes);
  std::sort(info.extents.begin(), info.extents.end(),
            [](const ExtentInfo& a, const ExtentInfo& b) { return a.vpage < b.vpage; });
  ranges_.emplace(vaddr, std::move(info));
}

void Translations::AddExtent(uint64_t vaddr, uint64_t bytes, ExtentInfo extent) {
  auto it = ranges_.find(vaddr);
  if (it == ranges_.end() || it->second.bytes != bytes) {
    Add(vaddr, RegionInfo{bytes, {std::move(extent)}});
    return;
  }
  auto& extents = it->second.extents;
  auto at = std::upper_bound(extents.begin(), extents.end(), extent.vpage,
                             [](uint64_t v, const ExtentInfo& x) { return v < x.vpage; });
  if (at != extents.begin() && std::prev(at)->vpage == extent.vpage) return;  // known already
  extents.insert(at, std::move(extent));
}

std::optional<uint64_t> Translations::Remove(uint64_t vaddr) {
  auto it = ranges_.find(vaddr);
  if (it == ranges_.end()) return std::nullopt;
  const uint64_t bytes = it->second.bytes;
  ranges_.erase(it);
  return bytes;
}

void Translations::Carve(uint64_t vaddr, uint64_t bytes) { CarveFrom(ranges_, vaddr, bytes); }

const ExtentInfo* Translations::Find(uint64_t vpage) const {
  auto range = Holding(ranges_, vpage << kPageShift);
  if (range == ranges_.end()) return nullptr;
  const auto& extents = range->second.extents;
  auto e = std::upper_bound(extents.begin(), extents.end(), vpage,
                            [](uint64_t v, const ExtentInfo& x) { return v < x.vpage; });
  if (e == extents.begin() || vpage >= std::prev(e)->vpage + std::prev(e)->pages) return nullptr;
  return &*std::prev(e);
}

std::vector<ExtentInfo> Translations::ExtentsOn(const std::string& element) const {
  std::vector<ExtentInfo> on;
  for (const auto& [vaddr, info] : ranges_) {
    for (const ExtentInfo& e : info.extents) {
      if (e.element == element) on.push_back(e);
    }
  }
  return on;
}

absl::Status Translations::CheckOwned(uintptr_t addr, size_t len) const {
  uintptr_t at = addr;
  const uintptr_t end = addr + len;
  if (end < addr) return absl::InvalidArgumentError("the range wraps around");
  while (at < end) {
    auto it = Holding(ranges_, at);
    if (it == ranges_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("0x", absl::Hex(at), " is not in memory this process owns"));
    }
    at = it->first + it->second.bytes;
  }
  return absl::OkStatus();
}

void Translations::MarkRevoked(uint64_t vaddr, uint64_t bytes) {
  CarveFrom(ranges_, vaddr, bytes);
  CarveFrom(revoked_, vaddr, bytes);
  revoked_.emplace(vaddr, RegionInfo{bytes, {}});
}

bool Translations::Revoked(uint64_t vpage) const {
  return Holding(revoked_, vpage << kPageShift) != revoked_.end();
}

bool Translations::RevokedIn(uint64_t first, uint64_t last) const {
  if (Revoked(first)) return true;
  auto it = revoked_.upper_bound(first << kPageShift);  // a revoked range starting inside
  return it != revoked_.end() && it->first < (last << kPageShift);
}

}  // namespace disagg::runtime
