#include "quota_split.h"

#include <algorithm>

#include "internal/logging.h"

namespace disagg::procmon {

void QuotaSplit::Shrunk(uint64_t key) {
  auto it = leases_.find(key);
  if (it == leases_.end() || !it->second.shrinking) return;
  it->second.granted = it->second.shrink_to;
  it->second.shrinking = false;
}

std::vector<QuotaSplit::Order> QuotaSplit::Rebalance() {
  std::vector<Order> orders;
  if (leases_.empty()) return orders;
  const uint64_t share = budget_pages_ / leases_.size();
  uint64_t used = 0;
  for (auto& [key, l] : leases_) {
    // Asked again only when the share fell below what it was asked before.
    if (l.shrinking ? l.shrink_to > share : l.granted > share) {
      l.shrinking = true;
      l.shrink_to = share;
      orders.push_back({key, share, true});
    }
    used += l.granted;
  }
  CHECK_LE(used, budget_pages_) << "cache quotas exceed the budget";
  uint64_t free = budget_pages_ - used;
  for (auto& [key, l] : leases_) {
    if (free == 0) break;
    if (l.shrinking || l.granted >= share) continue;
    const uint64_t give = std::min(share - l.granted, free);
    l.granted += give;
    free -= give;
    orders.push_back({key, l.granted, false});
  }
  return orders;
}

uint64_t QuotaSplit::granted(uint64_t key) const {
  auto it = leases_.find(key);
  return it == leases_.end() ? 0 : it->second.granted;
}

bool QuotaSplit::shrinking(uint64_t key) const {
  auto it = leases_.find(key);
  return it != leases_.end() && it->second.shrinking;
}

uint64_t QuotaSplit::shrink_target(uint64_t key) const {
  auto it = leases_.find(key);
  return it == leases_.end() || !it->second.shrinking ? 0 : it->second.shrink_to;
}

uint64_t QuotaSplit::total_granted() const {
  uint64_t total = 0;
  for (const auto& [key, l] : leases_) total += l.granted;
  return total;
}

}  // namespace disagg::procmon
