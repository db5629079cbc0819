// What a process does when the rack tells it of a failure: a memory element's pages are
// given up, or the whole process is fenced.
#include "absl/strings/str_cat.h"
#include "runtime/log.h"
#include "runtime/rack_impl.h"

namespace disagg::runtime {

void RackImpl::ElementFailed(const std::string& element) {
  if (!failed_elements_.insert(element).second) return;
  // Cached copies of its pages go (their data is gone from the rack): their next touches
  // fault, and are refused at once instead of waiting for an element that cannot answer.
  for (const ExtentInfo& e : translations_.ExtentsOn(element)) {
    (void)DropRange(e.vpage, e.vpage + e.pages, /*write_back=*/false);
  }
  RLOG(WARNING) << "disagg: memory element " << element << " failed; its pages are lost";
}

void RackImpl::Fenced(const std::string& reason) {
  if (fenced_) return;
  fenced_ = reason;
  // Nothing of this process reaches rack memory any more: what it holds is dropped, and
  // its memory is kept, as it was last written back, for whoever adopts it.
  const uint64_t first = range_base_ >> kPageShift;
  (void)DropRange(first, first + (range_bytes_ >> kPageShift), /*write_back=*/false);
  std::fprintf(stderr, "disagg: process %u (pid %d) was declared failed and fenced: %s\n", id_,
               getpid(), reason.c_str());
}

}  // namespace disagg::runtime
