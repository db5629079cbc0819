#include "runtime/page_cache.h"

#include <catch2/catch.hpp>
#include <vector>

namespace disagg::runtime {
namespace {

std::optional<uint64_t> VictimPage(PageCache& cache) {
  std::optional<PageCache::Victim> victim = cache.NextVictim();
  if (!victim) return std::nullopt;
  return victim->vpage;
}

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
  const std::optional<PageCache::Victim> victim = cache.NextVictim();
  REQUIRE(victim.has_value());
  REQUIRE(victim->vpage == 11);  // fetched first
  REQUIRE(victim->dirty);
  cache.Evicted({*victim}, {/*writing_back=*/true});
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
  REQUIRE(VictimPage(cache) == std::optional<uint64_t>(2));
  cache.Remove(2);
  REQUIRE(VictimPage(cache) == std::optional<uint64_t>(1));
  cache.Remove(1);
  REQUIRE_FALSE(VictimPage(cache).has_value());
}

TEST_CASE("Page cache never picks a pinned page to evict, and keeps its place") {
  PageCache cache;
  cache.set_quota_pages(8);
  for (uint64_t p = 1; p <= 3; ++p) {
    cache.BeginFetch(p);
    cache.FinishFetch(p, false);
  }
  cache.Find(1)->pins = 1;
  REQUIRE(VictimPage(cache) == std::optional<uint64_t>(2));
  cache.Find(3)->pins = 1;
  REQUIRE_FALSE(VictimPage(cache).has_value());  // all that is left is pinned
  cache.Find(1)->pins = 0;
  REQUIRE(VictimPage(cache) == std::optional<uint64_t>(1));
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

TEST_CASE("Page cache: a run fetched together, its victims' entries, and their eviction") {
  PageCache cache;
  cache.set_quota_pages(16);
  cache.BeginFetch(5);  // known pages around the run stay as they are
  cache.BeginFetchRun(6, 10);
  cache.BeginFetch(10);
  REQUIRE(cache.free_pages() == 16 - 6);
  for (uint64_t p = 6; p < 10; ++p) REQUIRE(cache.Find(p)->state == PageState::kFetching);
  cache.FinishFetch(5, /*dirty=*/false);
  for (uint64_t p = 6; p < 10; ++p) cache.FinishFetch(p, /*dirty=*/p == 7, /*placed=*/true);
  cache.FinishFetch(10, /*dirty=*/true);
  REQUIRE(cache.Find(6)->placed);
  REQUIRE_FALSE(cache.Find(5)->placed);
  std::vector<PageCache::Victim> victims;
  while (auto victim = cache.NextVictim()) victims.push_back(*victim);
  REQUIRE(victims.size() == 6);
  REQUIRE(victims[0].vpage == 5);
  REQUIRE_FALSE(victims[0].placed);
  REQUIRE(victims[2].vpage == 7);
  REQUIRE(victims[2].dirty);
  REQUIRE(victims[2].placed);
  REQUIRE_FALSE(victims[3].dirty);
  REQUIRE(victims[5].dirty);
  // Pages 7 and 10 are written back, the others leave.
  std::vector<bool> writing_back = {false, false, true, false, false, true};
  cache.Evicted(victims, writing_back);
  REQUIRE(cache.present_pages() == 0);
  REQUIRE(cache.free_pages() == 16);
  REQUIRE(cache.BusyIn(7, 8));
  REQUIRE(cache.BusyIn(10, 11));
  REQUIRE_FALSE(cache.BusyIn(8, 10));
  REQUIRE(cache.Find(7)->state == PageState::kWritingBack);
  REQUIRE_FALSE(cache.Find(7)->dirty);
  for (uint64_t p : {5, 6, 8, 9}) REQUIRE(cache.Find(p) == nullptr);
  cache.Remove(7);
  cache.Remove(10);
  REQUIRE(cache.pages().empty());
}

}  // namespace
}  // namespace disagg::runtime
