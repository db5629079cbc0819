// QuotaSplit: how a compute element leases its cache budget to its processes. The quotas
// granted never add up to more than the budget. Each process's fair share is
// budget / processes. A process above its share is asked to shrink to it and keeps its old
// quota in the sum until it answers that its cache fits (a process that never answers, or
// answers that it does not fit, keeps it); what that frees goes to processes below their
// share, in the order they came. A new process may therefore start with a quota of 0 and
// grow as the others shrink.
//
// Value type; not thread-safe. Processes are named by a key of the caller's (a link id).
#ifndef DISAGG_MONITORS_PROCMON_QUOTA_SPLIT_H_
#define DISAGG_MONITORS_PROCMON_QUOTA_SPLIT_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

namespace disagg::procmon {

// The smallest share worth running with: a process is refused when its share would be less.
inline constexpr uint64_t kMinSharePages = 16;

class QuotaSplit {
 public:
  explicit QuotaSplit(uint64_t budget_pages) : budget_pages_(budget_pages) {}

  // What to tell a process: its quota is `pages` now, or, with `shrink`, it is asked to
  // shrink to `pages` and to answer once its cache fits.
  struct Order {
    uint64_t key;
    uint64_t pages;
    bool shrink;
  };

  // True if one more process would still get a share of at least kMinSharePages.
  bool Admits() const { return budget_pages_ / (leases_.size() + 1) >= kMinSharePages; }
  // A new process, with a quota of 0 until Rebalance gives it some. Known keys are ignored.
  void Add(uint64_t key) { leases_.try_emplace(key); }
  // The process is gone: its quota is free.
  void Remove(uint64_t key) { leases_.erase(key); }
  // The process answered that its cache fits what it was asked to shrink to: that is its
  // quota now. Ignored if it was not asked.
  void Shrunk(uint64_t key);
  // Moves the quotas toward the fair share; the orders to send, in the processes' order.
  std::vector<Order> Rebalance();

  uint64_t budget_pages() const { return budget_pages_; }
  size_t processes() const { return leases_.size(); }
  // The quota `key` may use now (counted in the budget); 0 for unknown keys.
  uint64_t granted(uint64_t key) const;
  // True while `key` was asked to shrink and has not answered; shrink_target is to what
  // (0 when nothing is pending).
  bool shrinking(uint64_t key) const;
  uint64_t shrink_target(uint64_t key) const;
  uint64_t total_granted() const;

 private:
  struct Lease {
    uint64_t granted = 0;
    bool shrinking = false;
    uint64_t shrink_to = 0;
  };
  uint64_t budget_pages_;
  std::map<uint64_t, Lease> leases_;  // by key, in the order the processes came
};

}  // namespace disagg::procmon

#endif  // DISAGG_MONITORS_PROCMON_QUOTA_SPLIT_H_
