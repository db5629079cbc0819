#include "page_pool.h"

#include "absl/strings/str_cat.h"

namespace disagg::rackmmu {

PagePool::PagePool(uint64_t pages) : total_(pages), free_(pages) {
  if (pages > 0) runs_[0] = pages;
}

absl::StatusOr<PageRun> PagePool::AllocateContiguous(uint64_t pages, uint64_t align) {
  if (pages == 0) return absl::InvalidArgumentError("allocation of zero pages");
  for (auto it = runs_.begin(); it != runs_.end(); ++it) {
    const uint64_t start = (it->first + align - 1) & ~(align - 1);
    const uint64_t end = it->first + it->second;
    if (start >= end || end - start < pages) continue;
    const uint64_t first = it->first;
    runs_.erase(it);
    if (start > first) runs_[first] = start - first;
    if (start + pages < end) runs_[start + pages] = end - (start + pages);
    free_ -= pages;
    return PageRun{start, pages};
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("no run of ", pages, " free pages (", free_, " of ", total_, " free)"));
}

std::vector<PageRun> PagePool::AllocateUpTo(uint64_t pages) {
  std::vector<PageRun> out;
  while (pages > 0 && !runs_.empty()) {
    auto it = runs_.begin();
    const uint64_t take = std::min(pages, it->second);
    out.push_back({it->first, take});
    if (take < it->second) runs_[it->first + take] = it->second - take;
    runs_.erase(it);
    free_ -= take;
    pages -= take;
  }
  return out;
}

absl::Status PagePool::Free(PageRun run) {
  if (run.count == 0 || run.first >= total_ || total_ - run.first < run.count) {
    return absl::InvalidArgumentError(
        absl::StrCat("pages [", run.first, ", +", run.count, ") are outside a pool of ", total_));
  }
  auto next = runs_.lower_bound(run.first);
  if (next != runs_.end() && next->first < run.first + run.count) {
    return absl::InvalidArgumentError(absl::StrCat("page ", next->first, " is already free"));
  }
  auto prev = next == runs_.begin() ? runs_.end() : std::prev(next);
  if (prev != runs_.end() && prev->first + prev->second > run.first) {
    return absl::InvalidArgumentError(absl::StrCat("page ", run.first, " is already free"));
  }
  uint64_t first = run.first, count = run.count;
  if (prev != runs_.end() && prev->first + prev->second == first) {
    first = prev->first;
    count += prev->second;
    runs_.erase(prev);
  }
  if (next != runs_.end() && next->first == run.first + run.count) {
    count += next->second;
    runs_.erase(next);
  }
  runs_[first] = count;
  free_ += run.count;
  return absl::OkStatus();
}

}  // namespace disagg::rackmmu
