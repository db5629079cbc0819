#include "page_store.h"

#include <catch2/catch.hpp>
#include <cstring>

namespace disagg::memmon {
namespace {

TEST_CASE("A memory element's page table serves only what the Rack MMU programmed") {
  auto store = PageStore::Create("mem0", 64 * kPageBytes);
  REQUIRE(store.ok());
  REQUIRE(store->Program(7, 1000, 55, 0x100, 8, 4).ok());
  REQUIRE(store->used_bytes() == 8 * kPageBytes);
  REQUIRE(store->ProcessFor(1000, 55) == 7);
  REQUIRE(store->ProcessFor(1000, 56) == 0);  // same pid, another process

  auto fresh = store->Read(7, 0x103);
  REQUIRE(fresh.ok());
  REQUIRE((*fresh)[0] == 0);  // zero-filled on first use
  auto page = store->Write(7, 0x103);
  REQUIRE(page.ok());
  std::memset(*page, 0xAB, kPageBytes);
  REQUIRE((*store->Read(7, 0x103))[kPageBytes - 1] == 0xAB);

  SECTION("pages outside the programmed range, or another process's, are refused") {
    REQUIRE(absl::IsPermissionDenied(store->Read(7, 0x108).status()));
    REQUIRE(absl::IsPermissionDenied(store->Write(7, 0xff).status()));
    REQUIRE(absl::IsPermissionDenied(store->Read(8, 0x103).status()));
  }
  SECTION("bad programming is refused") {
    REQUIRE(absl::IsInvalidArgument(store->Program(7, 1000, 55, 0x104, 2, 40)));  // overlap
    REQUIRE(absl::IsInvalidArgument(store->Program(8, 1001, 1, 0x0, 2, 63)));     // past pool
    REQUIRE(absl::IsInvalidArgument(store->Program(7, 1002, 55, 0x900, 1, 40)));  // identity
    REQUIRE(store->used_bytes() == 8 * kPageBytes);
  }
  SECTION("revocation drops the pages and zeroes them for the next owner") {
    store->Revoke(7, 0x102, 2);  // splits the range
    REQUIRE(absl::IsPermissionDenied(store->Read(7, 0x103).status()));
    REQUIRE(store->Read(7, 0x101).ok());
    REQUIRE(store->Write(7, 0x104).ok());
    REQUIRE(store->used_bytes() == 6 * kPageBytes);
    REQUIRE(store->Program(9, 2000, 1, 0x500, 2, 6).ok());  // the revoked pool pages
    auto reused = store->Read(9, 0x501);  // pool page 7: was page 0x103 of process 7, written
    REQUIRE(reused.ok());
    for (size_t i = 0; i < kPageBytes; ++i) REQUIRE((*reused)[i] == 0);
  }
}

TEST_CASE("A memory element rebinds pages to another process without touching their data") {
  auto store = PageStore::Create("mem0", 64 * kPageBytes);
  REQUIRE(store.ok());
  REQUIRE(store->Program(7, 1000, 55, 0x100, 16, 4).ok());
  std::memset(*store->Write(7, 0x105), 0x5A, kPageBytes);

  SECTION("a move of part of a range splits it: the giver keeps the rest, the taker the data") {
    REQUIRE(store->Move(7, 9, 2000, 66, 0x104, 4).ok());
    REQUIRE(absl::IsPermissionDenied(store->Read(7, 0x105).status()));
    REQUIRE(store->Read(7, 0x103).ok());
    REQUIRE(store->Read(7, 0x108).ok());
    auto moved = store->Read(9, 0x105);
    REQUIRE(moved.ok());
    REQUIRE((*moved)[100] == 0x5A);
    REQUIRE(store->ProcessFor(2000, 66) == 9);
    REQUIRE(store->used_bytes() == 16 * kPageBytes);  // nothing freed, nothing copied
    const auto table = store->Dump();
    REQUIRE(table.size() == 3);
    SECTION("and it can move back, and a released page reads as zeros afterwards") {
      REQUIRE(store->Move(9, 7, 1000, 55, 0x104, 4).ok());
      REQUIRE((*store->Read(7, 0x105))[0] == 0x5A);
      REQUIRE(store->ProcessFor(2000, 66) == 0);  // 9 holds nothing here any more
      store->Revoke(7, 0x100, 16);
      REQUIRE(store->used_bytes() == 0);
      REQUIRE(store->Program(3, 3000, 77, 0x900, 16, 4).ok());
      REQUIRE((*store->Read(3, 0x901))[0] == 0);
    }
  }
  SECTION("a range not wholly bound to the giver is refused, and nothing changes") {
    REQUIRE(absl::IsInvalidArgument(store->Move(7, 9, 2000, 66, 0x10c, 8)));
    REQUIRE(absl::IsInvalidArgument(store->Move(8, 9, 2000, 66, 0x100, 1)));
    REQUIRE(absl::IsInvalidArgument(store->Move(7, 7, 1000, 55, 0x100, 1)));
    REQUIRE(store->Read(7, 0x10c).ok());
    REQUIRE(store->ProcessFor(2000, 66) == 0);
    REQUIRE(store->Dump().size() == 1);
  }
  SECTION("a taker bound to another pid, or holding pages there, is refused") {
    REQUIRE(store->Program(9, 2000, 66, 0x200, 1, 40).ok());
    REQUIRE(absl::IsInvalidArgument(store->Move(7, 9, 2001, 66, 0x100, 1)));
    REQUIRE(store->Program(9, 2000, 66, 0x110, 1, 41).ok());
    REQUIRE(absl::IsInvalidArgument(store->Move(7, 9, 2000, 66, 0x10f, 2)));
    REQUIRE(store->Read(7, 0x10f).ok());
  }
}

}  // namespace
}  // namespace disagg::memmon
