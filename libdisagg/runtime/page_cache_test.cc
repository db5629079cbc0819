#include "runtime/page_cache.h"

#include <catch2/catch.hpp>

namespace disagg::runtime {
namespace {

TEST_CASE("Page cache counts fetches against the quota and evicts the longest present") {
  PageCache cache;
  cache.set_quota_pages(2);
  REQUIRE(cache.HasRoom());
  cache.BeginFetch(10);
  cache.BeginFetch(11);
  REQUIRE_FALSE(cache.HasRoom());  // two fetches in flight fill a quota of two
  cache.FinishFetch(11, /*dirty=*/true);
  cache.FinishFetch(10, /*dirty=*/false);
  REQUIRE(cache.present_pages() == 2);
  REQUIRE(cache.peak_present_pages() == 2);
  REQUIRE(cache.NextVictim() == std::optional<uint64_t>(11));  // fetched first
  cache.BeginWriteBack(11);
  REQUIRE(cache.present_pages() == 1);
  REQUIRE(cache.BusyIn(11, 12));
  REQUIRE_FALSE(cache.BusyIn(10, 11));
  cache.Remove(11);
  REQUIRE(cache.Find(11) == nullptr);
  REQUIRE(cache.HasRoom());
}

TEST_CASE("Page cache skips pages that left the eviction queue's view") {
  PageCache cache;
  cache.set_quota_pages(8);
  cache.BeginFetch(1);
  cache.FinishFetch(1, false);
  cache.BeginFetch(2);
  cache.FinishFetch(2, false);
  cache.Remove(1);
  cache.BeginFetch(1);  // fetched again: a newer generation, queued behind page 2
  cache.FinishFetch(1, false);
  REQUIRE(cache.NextVictim() == std::optional<uint64_t>(2));
  cache.Remove(2);
  REQUIRE(cache.NextVictim() == std::optional<uint64_t>(1));
  cache.Remove(1);
  REQUIRE_FALSE(cache.NextVictim().has_value());
}

TEST_CASE("Page cache never picks a pinned page to evict, and keeps its place") {
  PageCache cache;
  cache.set_quota_pages(8);
  for (uint64_t p = 1; p <= 3; ++p) {
    cache.BeginFetch(p);
    cache.FinishFetch(p, false);
  }
  cache.Find(1)->pins = 1;
  REQUIRE(cache.NextVictim() == std::optional<uint64_t>(2));
  cache.Find(3)->pins = 1;
  REQUIRE_FALSE(cache.NextVictim().has_value());  // all that is left is pinned
  cache.Find(1)->pins = 0;
  REQUIRE(cache.NextVictim() == std::optional<uint64_t>(1));
}

TEST_CASE("Page cache: a shrunken quota shows as over quota, and poisoned pages do not count") {
  PageCache cache;
  cache.set_quota_pages(3);
  for (uint64_t p = 0; p < 3; ++p) {
    cache.BeginFetch(p);
    cache.FinishFetch(p, false);
  }
  cache.set_quota_pages(1);
  REQUIRE(cache.OverQuota());
  cache.MarkPoisoned(0);
  cache.MarkPoisoned(1);
  REQUIRE_FALSE(cache.OverQuota());
  REQUIRE(cache.present_pages() == 1);
  REQUIRE(cache.Find(0)->state == PageState::kPoisoned);
  cache.BeginFetch(7);
  cache.AbortFetch(7, /*poisoned=*/false);
  REQUIRE(cache.Find(7) == nullptr);
}

}  // namespace
}  // namespace disagg::runtime
