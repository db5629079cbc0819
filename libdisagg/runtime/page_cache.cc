#include "runtime/page_cache.h"

#include <algorithm>
#include <iterator>
#include <vector>

#include "runtime/log.h"

namespace disagg::runtime {

PageEntry* PageCache::Find(uint64_t vpage) {
  auto it = pages_.find(vpage);
  return it == pages_.end() ? nullptr : &it->second;
}

void PageCache::BeginFetch(uint64_t vpage) {
  auto [it, inserted] = pages_.try_emplace(vpage);
  CHECK(inserted) << "page cache: fetch of page 0x" << std::hex << vpage << " that is known";
  it->second.state = PageState::kFetching;
  ++fetching_;
}

void PageCache::BeginFetchRun(uint64_t first, uint64_t end) {
  auto hint = pages_.lower_bound(first);
  for (uint64_t vpage = first; vpage < end; ++vpage) {
    CHECK(hint == pages_.end() || hint->first != vpage)
        << "page cache: fetch of page 0x" << std::hex << vpage << " that is known";
    hint = std::next(pages_.emplace_hint(hint, vpage, PageEntry{}));
    ++fetching_;
  }
}

void PageCache::FinishFetch(uint64_t vpage, bool dirty, bool placed) {
  PageEntry* entry = Find(vpage);
  CHECK(entry != nullptr && entry->state == PageState::kFetching);
  --fetching_;
  entry->state = PageState::kPresent;
  entry->dirty = dirty;
  entry->placed = placed;
  entry->generation = next_generation_++;
  fifo_.emplace_back(vpage, entry->generation);
  peak_ = std::max(peak_, ++present_);
}

void PageCache::AbortFetch(uint64_t vpage, bool poisoned) {
  PageEntry* entry = Find(vpage);
  CHECK(entry != nullptr && entry->state == PageState::kFetching);
  --fetching_;
  if (poisoned) {
    entry->state = PageState::kPoisoned;
  } else {
    pages_.erase(vpage);
  }
}

std::optional<PageCache::Victim> PageCache::NextVictim() {
  std::vector<std::pair<uint64_t, uint64_t>> pinned;
  std::optional<Victim> victim;
  while (!fifo_.empty()) {
    auto [vpage, generation] = fifo_.front();
    fifo_.pop_front();
    PageEntry* entry = Find(vpage);
    if (entry == nullptr || entry->state != PageState::kPresent ||
        entry->generation != generation) {
      continue;  // stale: the page left or came back since
    }
    if (entry->pins > 0) {
      pinned.emplace_back(vpage, generation);
      continue;
    }
    victim = Victim{vpage, entry->dirty, entry->placed};
    break;
  }
  fifo_.insert(fifo_.begin(), pinned.begin(), pinned.end());
  return victim;
}

void PageCache::Leave(PageEntry& entry) {
  switch (entry.state) {
    case PageState::kFetching:
      --fetching_;
      break;
    case PageState::kPresent:
      --present_;
      break;
    case PageState::kWritingBack:
      --writing_back_;
      break;
    case PageState::kPoisoned:
      break;
  }
}

void PageCache::Remove(uint64_t vpage) {
  auto it = pages_.find(vpage);
  if (it == pages_.end()) return;
  CHECK(it->second.state != PageState::kFetching) << "page cache: removing a page being fetched";
  Leave(it->second);
  pages_.erase(it);
}

void PageCache::Evicted(const std::vector<Victim>& sorted, const std::vector<bool>& writing_back) {
  auto it = pages_.end();
  for (size_t i = 0; i < sorted.size(); ++i) {
    const uint64_t vpage = sorted[i].vpage;
    if (it == pages_.end() || it->first != vpage) it = pages_.find(vpage);
    CHECK(it != pages_.end() && it->second.state == PageState::kPresent)
        << "page cache: evicting page 0x" << std::hex << vpage << " that is not present";
    if (writing_back[i]) {
      --present_;
      ++writing_back_;
      it->second.state = PageState::kWritingBack;
      it->second.dirty = false;
      it->second.placed = false;
      ++it;
    } else {
      Leave(it->second);
      it = pages_.erase(it);
    }
  }
}

void PageCache::MarkPoisoned(uint64_t vpage) {
  auto [it, inserted] = pages_.try_emplace(vpage);
  if (!inserted) Leave(it->second);
  it->second.state = PageState::kPoisoned;
  it->second.dirty = false;
  it->second.placed = false;
}

bool PageCache::BusyIn(uint64_t first, uint64_t last) const {
  for (auto it = pages_.lower_bound(first); it != pages_.end() && it->first < last; ++it) {
    if (it->second.state == PageState::kFetching || it->second.state == PageState::kWritingBack) {
      return true;
    }
  }
  return false;
}

bool PageCache::PinnedIn(uint64_t first, uint64_t last) const {
  for (auto it = pages_.lower_bound(first); it != pages_.end() && it->first < last; ++it) {
    if (it->second.pins > 0) return true;
  }
  return false;
}

}  // namespace disagg::runtime
