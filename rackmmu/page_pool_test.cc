#include "page_pool.h"

#include <catch2/catch.hpp>

namespace disagg::rackmmu {
namespace {

TEST_CASE("A page pool allocates, frees and coalesces runs") {
  PagePool pool(100);
  auto a = pool.AllocateContiguous(10);
  auto b = pool.AllocateContiguous(20);
  auto c = pool.AllocateContiguous(30);
  REQUIRE((a.ok() && b.ok() && c.ok()));
  REQUIRE(a->first == 0);
  REQUIRE(b->first == 10);
  REQUIRE(pool.free_pages() == 40);
  REQUIRE(absl::IsResourceExhausted(pool.AllocateContiguous(41).status()));
  REQUIRE(pool.free_pages() == 40);

  REQUIRE(pool.Free(*b).ok());
  REQUIRE(pool.Free(*a).ok());  // coalesces with b's run
  auto big = pool.AllocateContiguous(30);
  REQUIRE(big.ok());
  REQUIRE(big->first == 0);

  SECTION("double and out-of-range frees are refused") {
    REQUIRE(absl::IsInvalidArgument(pool.Free({65, 1})));
    REQUIRE(absl::IsInvalidArgument(pool.Free({55, 10})));  // overlaps the free run at 60
    REQUIRE(absl::IsInvalidArgument(pool.Free({95, 10})));
    REQUIRE(absl::IsInvalidArgument(pool.Free({0, 0})));
    REQUIRE(pool.free_pages() == 40);
  }
  SECTION("fragmented allocation takes the runs first fit gives") {
    REQUIRE(pool.Free({40, 5}).ok());  // a hole inside c: free runs [40,45) and [60,100)
    auto runs = pool.AllocateUpTo(50);
    uint64_t total = 0;
    for (const auto& r : runs) total += r.count;
    REQUIRE(total == 45);
    REQUIRE(runs.size() == 2);
    REQUIRE(runs[0] == PageRun{40, 5});
    REQUIRE(pool.free_pages() == 0);
  }
  SECTION("aligned allocation") {
    auto aligned = pool.AllocateContiguous(4, 16);
    REQUIRE(aligned.ok());
    REQUIRE(aligned->first % 16 == 0);
  }
}

}  // namespace
}  // namespace disagg::rackmmu
