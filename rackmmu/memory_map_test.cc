#include "memory_map.h"

#include <catch2/catch.hpp>

namespace disagg::rackmmu {
namespace {

uint64_t PagesOn(const Region& r, const std::string& element) {
  uint64_t pages = 0;
  for (const auto& e : r.extents) {
    if (e.element == element) pages += e.pages;
  }
  return pages;
}

void RequireCovers(const Region& r) {
  uint64_t vpage = r.vaddr >> kPageShift;
  for (const auto& e : r.extents) {
    REQUIRE(e.vpage == vpage);
    vpage += e.pages;
  }
  REQUIRE(vpage == (r.vaddr + r.bytes) >> kPageShift);
}

TEST_CASE("The Rack MMU places regions in the process's window, spread or filled") {
  MemoryMap map;
  map.AddElement("mem0", 1 << 20);  // 256 pages each
  map.AddElement("mem1", 1 << 20);
  auto a = map.Join("a", 100, 1);
  auto b = map.Join("b", 101, 2);
  REQUIRE((a.ok() && b.ok()));
  REQUIRE((*a)->window_base == kRangeBase + (uint64_t{(*a)->id} << kWindowShift));
  REQUIRE((*b)->window_base != (*a)->window_base);

  SECTION("spread stripes across both elements") {
    auto r = map.Map((*a)->id, 256 * kPageBytes, proto::Placement::SPREAD);
    REQUIRE(r.ok());
    RequireCovers(**r);
    REQUIRE(PagesOn(**r, "mem0") == 128);
    REQUIRE(PagesOn(**r, "mem1") == 128);
    REQUIRE((*r)->vaddr >= (*a)->window_base);
    REQUIRE((*r)->vaddr + (*r)->bytes <= (*a)->window_base + (uint64_t{1} << kWindowShift));
  }
  SECTION("translation finds the extent of a page, and refuses others' and unmapped pages") {
    auto r = map.Map((*a)->id, 256 * kPageBytes, proto::Placement::SPREAD);
    REQUIRE(r.ok());
    const uint64_t page = ((*r)->vaddr >> kPageShift) + 100;
    auto t = map.Translate((*a)->id, page);
    REQUIRE(t.ok());
    REQUIRE(t->vaddr == (*r)->vaddr);
    REQUIRE(t->extents.size() == 1);
    REQUIRE(page >= t->extents[0].vpage);
    REQUIRE(page < t->extents[0].vpage + t->extents[0].pages);
    REQUIRE(absl::IsPermissionDenied(map.Translate((*b)->id, page).status()));
    REQUIRE(absl::IsNotFound(map.Translate((*a)->id, page + 256).status()));
    REQUIRE(absl::IsOutOfRange(map.Translate((*a)->id, 5).status()));
  }
  SECTION("fill uses one element before the next") {
    auto r = map.Map((*a)->id, 300 * kPageBytes, proto::Placement::FILL);
    REQUIRE(r.ok());
    RequireCovers(**r);
    REQUIRE(PagesOn(**r, "mem0") == 256);
    REQUIRE(PagesOn(**r, "mem1") == 44);
    REQUIRE((*r)->extents.size() == 2);
  }
  SECTION("a full rack refuses, leaving nothing allocated") {
    auto r = map.Map((*a)->id, 400 * kPageBytes, proto::Placement::SPREAD);
    REQUIRE(r.ok());
    const uint64_t free = map.free_pages();
    REQUIRE(free == 112);
    REQUIRE(absl::IsResourceExhausted(
        map.Map((*b)->id, 113 * kPageBytes, proto::Placement::SPREAD).status()));
    REQUIRE(map.free_pages() == free);
    REQUIRE(map.MappedBytes((*b)->id) == 0);
    REQUIRE(map.Map((*b)->id, 112 * kPageBytes, proto::Placement::SPREAD).ok());
  }
  SECTION("unmap frees the pages; a failed element takes no new regions") {
    auto r = map.Map((*a)->id, 512 * kPageBytes, proto::Placement::SPREAD);
    REQUIRE(r.ok());
    const uint64_t vaddr = (*r)->vaddr;
    REQUIRE(map.free_pages() == 0);
    REQUIRE(map.Unmap((*a)->id, vaddr).ok());
    REQUIRE(map.free_pages() == 512);
    REQUIRE(absl::IsNotFound(map.Unmap((*a)->id, vaddr).status()));
    REQUIRE(absl::IsNotFound(map.Unmap((*b)->id, vaddr).status()));
    map.SetUsable("mem1", false);
    auto s = map.Map((*b)->id, 10 * kPageBytes, proto::Placement::SPREAD);
    REQUIRE(s.ok());
    REQUIRE(PagesOn(**s, "mem1") == 0);
  }
  SECTION("a restarted element's fresh pool is not corrupted by frees of its old pages") {
    auto r = map.Map((*a)->id, 512 * kPageBytes, proto::Placement::SPREAD);
    REQUIRE(r.ok());
    const uint64_t vaddr = (*r)->vaddr;
    map.AddElement("mem1", 1 << 20);  // mem1 failed and came back empty
    REQUIRE(map.free_pages() == 256);
    auto s = map.Map((*b)->id, 256 * kPageBytes, proto::Placement::SPREAD);
    REQUIRE(s.ok());
    REQUIRE(map.Unmap((*a)->id, vaddr).ok());  // must not free b's pages on the new mem1
    REQUIRE(map.free_pages() == 256);         // only the old mem0 pages came back
  }
  SECTION("a leaving process releases everything") {
    REQUIRE(map.Map((*a)->id, 100 * kPageBytes, proto::Placement::SPREAD).ok());
    REQUIRE(map.Map((*a)->id, 100 * kPageBytes, proto::Placement::FILL).ok());
    REQUIRE(map.Leave((*a)->id).size() == 2);
    REQUIRE(map.free_pages() == 512);
  }
  SECTION("bad sizes and unknown processes") {
    REQUIRE(absl::IsInvalidArgument(map.Map((*a)->id, 0, proto::Placement::SPREAD).status()));
    REQUIRE(absl::IsInvalidArgument(
        map.Map((*a)->id, (uint64_t{1} << kWindowShift) + 1, proto::Placement::SPREAD).status()));
    REQUIRE(absl::IsNotFound(map.Map(999, 4096, proto::Placement::SPREAD).status()));
  }
}

}  // namespace
}  // namespace disagg::rackmmu
