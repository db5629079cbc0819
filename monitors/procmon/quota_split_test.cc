#include "quota_split.h"

#include <catch2/catch.hpp>

namespace disagg::procmon {
namespace {

// The orders of one Rebalance, as "key:pages" for quotas and "key<pages" for shrink requests.
std::string Orders(const std::vector<QuotaSplit::Order>& orders) {
  std::string out;
  for (const QuotaSplit::Order& o : orders) {
    if (!out.empty()) out += ' ';
    out += std::to_string(o.key) + (o.shrink ? "<" : ":") + std::to_string(o.pages);
  }
  return out;
}

TEST_CASE("A lone process gets the whole budget") {
  QuotaSplit split(100);
  split.Add(1);
  REQUIRE(Orders(split.Rebalance()) == "1:100");
  REQUIRE(split.granted(1) == 100);
  REQUIRE(Orders(split.Rebalance()).empty());  // nothing changes: nothing to tell
}

TEST_CASE("A newcomer waits for the others to shrink, and the sum never exceeds the budget") {
  QuotaSplit split(100);
  split.Add(1);
  split.Rebalance();
  split.Add(2);
  // 1 is asked down to the share and keeps its 100 until it answers: 2 gets nothing yet.
  REQUIRE(Orders(split.Rebalance()) == "1<50");
  REQUIRE(split.granted(1) == 100);
  REQUIRE(split.granted(2) == 0);
  REQUIRE(split.shrinking(1));
  REQUIRE(split.shrink_target(1) == 50);
  REQUIRE(split.total_granted() <= 100);
  split.Shrunk(1);
  REQUIRE(Orders(split.Rebalance()) == "2:50");
  REQUIRE(split.granted(1) == 50);
  REQUIRE(split.total_granted() == 100);
  // A third: both are asked down to 33; what each frees goes to the newcomer as it comes.
  split.Add(3);
  REQUIRE(Orders(split.Rebalance()) == "1<33 2<33");
  REQUIRE(split.total_granted() == 100);
  split.Shrunk(2);
  REQUIRE(Orders(split.Rebalance()) == "3:17");
  split.Shrunk(1);
  REQUIRE(Orders(split.Rebalance()) == "3:33");
  REQUIRE(split.granted(1) == 33);
  REQUIRE(split.granted(2) == 33);
  REQUIRE(split.granted(3) == 33);
}

TEST_CASE("A process that never shrinks keeps its old quota, and no one gets more") {
  QuotaSplit split(100);
  split.Add(1);
  split.Rebalance();
  split.Add(2);
  REQUIRE(Orders(split.Rebalance()) == "1<50");
  for (int i = 0; i < 3; ++i) REQUIRE(Orders(split.Rebalance()).empty());  // not asked again
  REQUIRE(split.granted(1) == 100);
  REQUIRE(split.granted(2) == 0);
  // A third lowers the share: the liar is asked again, for less.
  split.Add(3);
  REQUIRE(Orders(split.Rebalance()) == "1<33");
  REQUIRE(split.total_granted() == 100);
  split.Shrunk(2);  // 2 was never asked: ignored
  REQUIRE(split.granted(2) == 0);
}

TEST_CASE("A process that leaves frees its quota for the others") {
  QuotaSplit split(90);
  for (uint64_t k : {1, 2, 3}) split.Add(k);
  REQUIRE(Orders(split.Rebalance()) == "1:30 2:30 3:30");
  split.Remove(2);
  REQUIRE(Orders(split.Rebalance()) == "1:45 3:45");
  split.Remove(1);
  split.Remove(3);
  REQUIRE(Orders(split.Rebalance()).empty());
  REQUIRE(split.total_granted() == 0);
}

TEST_CASE("Processes are admitted while each share would be at least kMinSharePages") {
  QuotaSplit split(4 * kMinSharePages);
  for (uint64_t k = 1; k <= 4; ++k) {
    REQUIRE(split.Admits());
    split.Add(k);
  }
  REQUIRE_FALSE(split.Admits());  // a fifth would get less than the minimum
  split.Remove(4);
  REQUIRE(split.Admits());
}

}  // namespace
}  // namespace disagg::procmon
