#include "runtime/translations.h"

#include <catch2/catch.hpp>

namespace disagg::runtime {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kBase = uint64_t{17} << 40;

RegionInfo OneExtent(uint64_t vaddr, uint64_t pages, const std::string& element) {
  return RegionInfo{pages * kPage, {{vaddr / kPage, pages, element}}};
}

TEST_CASE("Translations split owned ranges and know what was given away") {
  Translations t;
  t.Add(kBase, OneExtent(kBase, 16, "mem0"));
  REQUIRE(t.Find(kBase / kPage + 15) != nullptr);
  REQUIRE(t.CheckOwned(kBase, 16 * kPage).ok());

  SECTION("a part given away is carved out, the rest stays") {
    t.MarkRevoked(kBase + 4 * kPage, 4 * kPage);
    REQUIRE(t.Find(kBase / kPage + 3) != nullptr);
    REQUIRE(t.Find(kBase / kPage + 4) == nullptr);
    REQUIRE(t.Find(kBase / kPage + 8) != nullptr);
    REQUIRE(t.Revoked(kBase / kPage + 7));
    REQUIRE_FALSE(t.Revoked(kBase / kPage + 8));
    REQUIRE(absl::IsInvalidArgument(t.CheckOwned(kBase, 16 * kPage)));
    REQUIRE(t.CheckOwned(kBase + 8 * kPage, 8 * kPage).ok());
  }
  SECTION("ranges given away one by one come back in one piece") {
    for (uint64_t p = 0; p < 4; ++p) t.MarkRevoked(kBase + p * kPage, kPage);
    for (uint64_t p = 0; p < 4; ++p) REQUIRE(t.Revoked(kBase / kPage + p));
    t.Add(kBase, OneExtent(kBase, 4, "mem1"));  // granted back, all four at once
    for (uint64_t p = 0; p < 4; ++p) {
      INFO("page " << p);
      REQUIRE_FALSE(t.Revoked(kBase / kPage + p));
      REQUIRE(t.Find(kBase / kPage + p) != nullptr);
      REQUIRE(t.Find(kBase / kPage + p)->element == "mem1");
    }
  }
  SECTION("a carve across several ranges removes all of them") {
    t.Add(kBase + 16 * kPage, OneExtent(kBase + 16 * kPage, 16, "mem1"));
    t.Add(kBase + 32 * kPage, OneExtent(kBase + 32 * kPage, 16, "mem0"));
    t.MarkRevoked(kBase + 8 * kPage, 32 * kPage);
    REQUIRE(t.Find(kBase / kPage + 7) != nullptr);
    for (uint64_t p = 8; p < 40; ++p) REQUIRE(t.Find(kBase / kPage + p) == nullptr);
    REQUIRE(t.Find(kBase / kPage + 40) != nullptr);
    REQUIRE(t.Find(kBase / kPage + 40)->element == "mem0");
  }
  SECTION("a removed region is forgotten whole") {
    REQUIRE(t.Remove(kBase) == 16 * kPage);
    REQUIRE(t.Find(kBase / kPage) == nullptr);
    REQUIRE_FALSE(t.Remove(kBase).has_value());
  }
}

}  // namespace
}  // namespace disagg::runtime
