// What a process does when the rack tells it of a failure: a memory element's pages are
// given up, or the whole process is fenced.
#include "absl/strings/str_cat.h"
#include "runtime/fault_signal.h"
#include "runtime/log.h"
#include "runtime/rack_impl.h"

namespace disagg::runtime {

void RackImpl::ElementFailed(const std::string& element) {
  // Cached copies of its pages go (their data is gone from the rack): their next touches
  // fault, and are refused at once instead of waiting for an element that cannot answer.
  uint64_t pages = 0;
  for (const ExtentInfo& e : translations_.ExtentsOn(element)) {
    failed_[e.vpage] = FailedRange{e.vpage + e.pages, element};
    pages += e.pages;
    (void)DropRange(e.vpage, e.vpage + e.pages, /*write_back=*/false);
  }
  RLOG(WARNING) << "disagg: memory element " << element << " failed; " << pages
                << " pages of this process are lost";
}

const RackImpl::FailedRange* RackImpl::FailedAt(uint64_t vpage) const {
  auto it = failed_.upper_bound(vpage);
  if (it == failed_.begin()) return nullptr;
  --it;
  return vpage < it->second.end ? &it->second : nullptr;
}

void RackImpl::ForgetFailed(uint64_t first, uint64_t last) {
  for (auto it = failed_.lower_bound(first); it != failed_.end() && it->first < last;) {
    it = failed_.erase(it);
  }
}

void RackImpl::Fenced(const std::string& reason) {
  if (fenced_) return;
  fenced_ = reason;
  RecordFenced();  // before the cache is dropped, with the causes recorded for its pages
  // Nothing of this process reaches rack memory any more: what it holds is dropped, and
  // its memory is kept, as it was last written back, for whoever adopts it.
  const uint64_t first = range_base_ >> kPageShift;
  (void)DropRange(first, first + (range_bytes_ >> kPageShift), /*write_back=*/false);
  std::fprintf(stderr, "disagg: process %u (pid %d) was declared failed and fenced: %s\n", id_,
               getpid(), reason.c_str());
}

}  // namespace disagg::runtime
