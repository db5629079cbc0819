#include "page_store.h"

#include <cstring>

#include <catch2/catch.hpp>

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

}  // namespace
}  // namespace disagg::memmon
