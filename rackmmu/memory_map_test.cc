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
  REQUIRE((*a)->window_base == RackLayout{}.window_base((*a)->id));
  REQUIRE((*b)->window_base != (*a)->window_base);

  SECTION("spread stripes across both elements") {
    auto r = map.Map((*a)->id, 256 * kPageBytes, proto::Placement::SPREAD);
    REQUIRE(r.ok());
    RequireCovers(**r);
    REQUIRE(PagesOn(**r, "mem0") == 128);
    REQUIRE(PagesOn(**r, "mem1") == 128);
    REQUIRE((*r)->vaddr >= (*a)->window_base);
    REQUIRE((*r)->vaddr + (*r)->bytes <= (*a)->window_base + RackLayout{}.window_bytes());
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
    REQUIRE(map.free_pages() == 256);          // only the old mem0 pages came back
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
        map.Map((*a)->id, RackLayout{}.window_bytes() + 1, proto::Placement::SPREAD).status()));
    REQUIRE(absl::IsNotFound(map.Map(999, 4096, proto::Placement::SPREAD).status()));
  }
}

TEST_CASE("The Rack MMU moves memory between processes at the same addresses") {
  MemoryMap map;
  map.AddElement("mem0", 1 << 20);
  map.AddElement("mem1", 1 << 20);
  auto a = map.Join("a", 100, 1);
  auto b = map.Join("b", 101, 2);
  REQUIRE((a.ok() && b.ok()));
  const uint32_t ida = (*a)->id, idb = (*b)->id;
  auto r = map.Map(ida, 256 * kPageBytes, proto::Placement::SPREAD);
  REQUIRE(r.ok());
  const uint64_t vaddr = (*r)->vaddr;

  SECTION("a whole region changes owner; the giver is refused, the taker translated") {
    const size_t extents = (*r)->extents.size();
    REQUIRE(extents > 1);  // striped
    auto moved = map.Move(ida, idb, vaddr, 256 * kPageBytes);
    REQUIRE(moved.ok());
    REQUIRE(moved->size() == extents);
    REQUIRE(map.Translate(idb, (vaddr >> kPageShift) + 3).ok());
    REQUIRE(absl::IsPermissionDenied(map.Translate(ida, (vaddr >> kPageShift) + 3).status()));
    REQUIRE(map.MappedBytes(idb) == 256 * kPageBytes);
    REQUIRE(map.MappedBytes(ida) == 0);
    REQUIRE(absl::IsNotFound(map.Unmap(ida, vaddr).status()));
    REQUIRE(map.Unmap(idb, vaddr).ok());  // the taker may free it, in the giver's window
    REQUIRE(map.free_pages() == 512);
  }
  SECTION("part of a region splits it in three") {
    const uint64_t mid = vaddr + 32 * kPageBytes;
    auto moved = map.Move(ida, idb, mid, 64 * kPageBytes);
    REQUIRE(moved.ok());
    uint64_t pages = 0;
    for (const auto& e : *moved) pages += e.pages;
    REQUIRE(pages == 64);
    REQUIRE(map.regions().size() == 3);
    REQUIRE(map.MappedBytes(ida) == 192 * kPageBytes);
    REQUIRE(map.Translate(ida, vaddr >> kPageShift).ok());
    REQUIRE(map.Translate(ida, (mid >> kPageShift) + 64).ok());
    REQUIRE(map.Translate(idb, (mid >> kPageShift) + 63).ok());
    REQUIRE(absl::IsPermissionDenied(map.Translate(idb, (mid >> kPageShift) + 64).status()));
    for (const auto& [at, region] : map.regions()) RequireCovers(region);
    SECTION("and the taker can move it on, or back") {
      REQUIRE(map.Move(idb, ida, mid, 64 * kPageBytes).ok());
      REQUIRE(map.MappedBytes(ida) == 256 * kPageBytes);
    }
  }
  SECTION("an undone move gives the range back and joins the pieces it split off") {
    const uint64_t mid = vaddr + 32 * kPageBytes;
    REQUIRE(map.Move(ida, idb, mid, 64 * kPageBytes).ok());
    REQUIRE(map.regions().size() == 3);
    REQUIRE(map.UndoMove(ida, idb, mid, 64 * kPageBytes));
    REQUIRE(map.regions().size() == 1);
    RequireCovers(map.regions().begin()->second);
    REQUIRE(map.MappedBytes(ida) == 256 * kPageBytes);
    REQUIRE(map.Unmap(ida, vaddr).ok());  // one region again, as the giver knows it
    REQUIRE(map.free_pages() == 512);
  }
  SECTION("a move is undone for a dead giver too; not once the taker lost the range") {
    REQUIRE(map.Move(ida, idb, vaddr, 256 * kPageBytes).ok());
    map.MarkDead(ida, absl::Now());
    REQUIRE(map.UndoMove(ida, idb, vaddr, 256 * kPageBytes));
    REQUIRE(map.MappedBytes(ida) == 256 * kPageBytes);
    REQUIRE(map.Move(ida, idb, vaddr, 256 * kPageBytes).ok());
    REQUIRE(map.Unmap(idb, vaddr).ok());
    REQUIRE_FALSE(map.UndoMove(ida, idb, vaddr, 256 * kPageBytes));
  }
  SECTION("bad moves change nothing") {
    REQUIRE(absl::IsNotFound(map.Move(ida, 999, vaddr, kPageBytes).status()));
    REQUIRE(absl::IsInvalidArgument(map.Move(ida, ida, vaddr, kPageBytes).status()));
    REQUIRE(absl::IsInvalidArgument(map.Move(ida, idb, vaddr + 1, kPageBytes).status()));
    REQUIRE(absl::IsInvalidArgument(map.Move(ida, idb, vaddr, 0).status()));
    REQUIRE(absl::IsInvalidArgument(map.Move(ida, idb, vaddr, 300 * kPageBytes).status()));
    REQUIRE(absl::IsPermissionDenied(map.Move(idb, ida, vaddr, kPageBytes).status()));
    REQUIRE(map.regions().size() == 1);
    REQUIRE(map.MappedBytes(ida) == 256 * kPageBytes);
  }
  SECTION(
      "a dead process keeps its memory until it leaves; its window outlives it while it "
      "holds others' regions") {
    REQUIRE(map.Move(ida, idb, vaddr, 128 * kPageBytes).ok());
    map.MarkDead(ida, absl::Now());
    REQUIRE(map.process(ida)->dead);
    REQUIRE(absl::IsNotFound(map.Move(idb, ida, vaddr, kPageBytes).status()));     // no live taker
    REQUIRE(map.Move(ida, idb, vaddr + 128 * kPageBytes, 128 * kPageBytes).ok());  // adopted
    REQUIRE(map.Leave(ida).empty());
    auto c = map.Join("c", 102, 3);
    REQUIRE(c.ok());
    REQUIRE((*c)->id != ida);  // a's window still holds b's regions
    REQUIRE(map.Unmap(idb, vaddr).ok());
    REQUIRE(map.Unmap(idb, vaddr + 128 * kPageBytes).ok());
    auto d = map.Join("d", 103, 4);
    REQUIRE(d.ok());
    REQUIRE((*d)->id == ida);  // now it is free again
  }
}

TEST_CASE("Process ids are recycled: a rack serves any number of processes over its life") {
  MemoryMap map;
  map.AddElement("mem0", 1 << 20);
  for (int i = 0; i < 3 * static_cast<int>(RackLayout{}.max_processes); ++i) {
    auto p = map.Join("p", 100 + i, i);
    REQUIRE(p.ok());
    REQUIRE(map.Map((*p)->id, kPageBytes, proto::Placement::SPREAD).ok());
    REQUIRE(map.Leave((*p)->id).size() == 1);
  }
  REQUIRE(map.free_pages() == 256);
  std::vector<uint32_t> ids;
  for (uint32_t i = 0; i < RackLayout{}.max_processes; ++i) {
    auto p = map.Join("p", 1, i);
    REQUIRE(p.ok());
    ids.push_back((*p)->id);
  }
  REQUIRE(absl::IsResourceExhausted(map.Join("one too many", 1, 0).status()));
  REQUIRE(map.Leave(ids[500]).empty());
  REQUIRE(map.Join("again", 1, 0).ok());
}

}  // namespace
}  // namespace disagg::rackmmu

namespace disagg::rackmmu {
namespace {

TEST_CASE("Memory lost on one element for some owners frees its pages there only") {
  MemoryMap map;
  map.AddElement("mem0", 1 << 20);  // 256 pages each
  map.AddElement("mem1", 1 << 20);
  auto a = map.Join("a", 100, 1);
  auto b = map.Join("b", 101, 2);
  REQUIRE((a.ok() && b.ok()));
  const uint32_t ida = (*a)->id, idb = (*b)->id;
  auto ra = map.Map(ida, 256 * kPageBytes, proto::Placement::SPREAD);
  auto rb = map.Map(idb, 128 * kPageBytes, proto::Placement::SPREAD);
  REQUIRE((ra.ok() && rb.ok()));
  const uint64_t va = (*ra)->vaddr;
  const uint64_t free_before = map.free_pages();

  std::vector<Region> lost = map.LoseExtents({ida}, "mem1");
  REQUIRE(lost.size() == 1);
  CHECK(lost[0].owner == ida);
  CHECK(lost[0].vaddr == va);
  CHECK(PagesOn(lost[0], "mem1") == 128);
  CHECK(PagesOn(lost[0], "mem0") == 0);
  CHECK(map.free_pages() == free_before + 128);
  // The region keeps its addresses; its extents on mem1 are no longer current.
  const Region& kept = map.regions().at(va);
  for (const ExtentRecord& e : kept.extents) CHECK(map.Current(e) == (e.element == "mem0"));
  // b's memory on mem1 is untouched; a second loss finds nothing more.
  for (const ExtentRecord& e : map.regions().at((*rb)->vaddr).extents) CHECK(map.Current(e));
  CHECK(map.LoseExtents({ida}, "mem1").empty());
  CHECK(map.LoseExtents({ida}, "mem9").empty());
  // Unmapping frees only what was still current: the accounting stays whole.
  REQUIRE(map.Unmap(ida, va).ok());
  CHECK(map.free_pages() == free_before + 256);
}

}  // namespace
}  // namespace disagg::rackmmu
