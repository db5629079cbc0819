// PageCache: the bookkeeping of an application's local page cache: which rack pages are
// present, being fetched, being written back or poisoned; which present pages are dirty;
// the order in which present pages are evicted (first fetched, first evicted); and the
// quota the compute element leases. It touches no memory itself: the runtime performs the
// userfaultfd operations and keeps this in step, under its own lock.
//
// Invariant: present + fetching pages never exceed the quota when a fetch begins (a quota
// that shrinks is met by evicting before anything new is fetched).
// Value type; not thread-safe.
#ifndef DISAGG_RUNTIME_PAGE_CACHE_H_
#define DISAGG_RUNTIME_PAGE_CACHE_H_

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <vector>

namespace disagg::runtime {

enum class PageState : uint8_t {
  kFetching,     // a fault thread is reading it from its memory element
  kPresent,      // installed in the process's address space
  kWritingBack,  // dropped from the address space; its last contents are on the way back
  kPoisoned,     // the rack refused it: accesses raise SIGBUS
};

struct PageEntry {
  PageState state = PageState::kFetching;
  bool dirty = false;       // present and written since its last write-back
  uint64_t generation = 0;  // which fetch installed it (for the eviction queue)
  uint32_t pins = 0;        // a Flush is writing its contents back: it must not leave yet
  // Installed with its 2 MiB unit (placed by the memory element and moved in): when the whole
  // unit leaves together, it is moved back to staging for the next unit.
  bool placed = false;
};

class PageCache {
 public:
  using Map = std::map<uint64_t, PageEntry>;

  void set_quota_pages(uint64_t pages) { quota_ = pages; }
  uint64_t quota_pages() const { return quota_; }
  uint64_t present_pages() const { return present_; }
  uint64_t peak_present_pages() const { return peak_; }
  // Pages that may still be fetched within the quota.
  uint64_t free_pages() const {
    return quota_ > present_ + fetching_ ? quota_ - present_ - fetching_ : 0;
  }
  bool HasRoom() const { return free_pages() > 0; }
  // True if the cache holds (or is fetching) more than the quota allows.
  bool OverQuota() const { return present_ + fetching_ > quota_; }

  // nullptr if the page is in none of the states.
  PageEntry* Find(uint64_t vpage);
  Map& pages() { return pages_; }

  // An absent page starts being fetched.
  void BeginFetch(uint64_t vpage);
  // Absent pages [first, end) start being fetched (one walk of the map, not a search each).
  void BeginFetchRun(uint64_t first, uint64_t end);
  // A fetched page is installed (dirty if installed writable for a write fault; placed if it
  // came with its 2 MiB unit).
  void FinishFetch(uint64_t vpage, bool dirty, bool placed = false);
  // A fetch failed: the page is forgotten, or marked poisoned.
  void AbortFetch(uint64_t vpage, bool poisoned);
  // A page to evict, with what its entry holds.
  struct Victim {
    uint64_t vpage;
    bool dirty;
    bool placed;
  };
  // The present page to evict next (the longest present that is not pinned), or nullopt if
  // there is none. Pinned pages keep their place in the queue.
  std::optional<Victim> NextVictim();
  // The page leaves the cache whatever its state (a fetch in flight must not be removed).
  void Remove(uint64_t vpage);
  // Evicted present pages, in ascending order, leave: those marked in `writing_back` are being
  // written back, the others are removed. Consecutive pages cost a step of the map each.
  void Evicted(const std::vector<Victim>& sorted, const std::vector<bool>& writing_back);
  void MarkPoisoned(uint64_t vpage);
  // True if a page in [first, last) is being fetched or written back.
  bool BusyIn(uint64_t first, uint64_t last) const;
  // True if a page in [first, last) is pinned (a Flush is writing its copy back).
  bool PinnedIn(uint64_t first, uint64_t last) const;

 private:
  void Leave(PageEntry& entry);  // undoes the entry's contribution to the counters

  Map pages_;
  std::deque<std::pair<uint64_t, uint64_t>> fifo_;  // (vpage, generation), oldest first
  uint64_t quota_ = 0;
  uint64_t present_ = 0;
  uint64_t fetching_ = 0;
  uint64_t writing_back_ = 0;
  uint64_t peak_ = 0;
  uint64_t next_generation_ = 1;
};

}  // namespace disagg::runtime

#endif  // DISAGG_RUNTIME_PAGE_CACHE_H_
