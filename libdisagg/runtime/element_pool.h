// ElementPool: connections from an application process to the rack's memory elements, for
// page reads and write-backs. A thread borrows a connection for one operation, so any number
// of threads fault and flush at once; connections that broke are dropped, not reused.
//
// Thread-safety: all methods are thread-safe. The pool must outlive its operations.
#ifndef DISAGG_RUNTIME_ELEMENT_POOL_H_
#define DISAGG_RUNTIME_ELEMENT_POOL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "internal/mutex.h"
#include "ipc/client.h"

namespace disagg::runtime {

// One page to write back: its virtual page number and its 4 KiB of data.
struct PageWrite {
  uint64_t vpage;
  const uint8_t* data;
};

class ElementPool {
 public:
  // `fabric` (may be null) gates every connection, as the channel between compute element
  // `local` and its memory element (ipc/fabric.h).
  ElementPool(std::string run_dir, absl::Duration timeout,
              std::shared_ptr<const ipc::Fabric> fabric = nullptr, std::string local = "")
      : run_dir_(std::move(run_dir)),
        timeout_(timeout),
        fabric_(std::move(fabric)),
        local_(std::move(local)) {}

  // Reads runs of consecutive pages from `element` through the channel's page slots,
  // pipelined as far as the slots go, and calls `use` for each run in order with its index,
  // how many of its pages were read (from its start; the element ends a run at the first
  // page it may not read) or the element's refusal of its first page, and the pages read,
  // one after another (valid during the call only). The returned status is the transport's
  // (UNAVAILABLE: the element cannot be reached; then runs not yet passed to `use` were not
  // read) or the first error `use` returned.
  struct PageRun {
    uint64_t vpage;
    size_t pages;  // 1 to kMaxRun
  };
  static constexpr size_t kMaxRun = 128;
  absl::Status ReadRuns(
      const std::string& element, absl::Span<const PageRun> runs,
      absl::FunctionRef<absl::Status(size_t, absl::StatusOr<size_t>, const uint8_t*)> use);

  // Has `element` write units of pages straight into this process (PlaceUnit), each at its
  // `dst`, all requests sent before the first reply is awaited, and calls `use` for each unit
  // in order with its index, how many of its pages were written (from its start), or the
  // element's refusal (UNIMPLEMENTED: the element may not write into this process; ABORTED:
  // it could not write this unit). The returned
  // status is the transport's (UNAVAILABLE: units not yet passed to `use` were not placed, but
  // the first `sent` of them may still be written) or the first error `use` returned.
  struct UnitPlacement {
    uint64_t vpage;
    size_t pages;  // 1 to kUnitPages
    uintptr_t dst;
  };
  absl::Status PlaceUnits(const std::string& element, absl::Span<const UnitPlacement> units,
                          absl::FunctionRef<absl::Status(size_t, absl::StatusOr<size_t>)> use,
                          size_t& sent);

  // Writes `pages` back to `element` through the channel's page slots, runs of consecutive
  // pages pipelined, and returns once it acknowledged them all.
  absl::Status WritePages(const std::string& element, absl::Span<const PageWrite> pages);

 private:
  absl::StatusOr<std::unique_ptr<ipc::Client>> Borrow(const std::string& element);
  void Return(const std::string& element, std::unique_ptr<ipc::Client> client);

  const std::string run_dir_;
  const absl::Duration timeout_;
  const std::shared_ptr<const ipc::Fabric> fabric_;
  const std::string local_;
  Mutex mu_;
  absl::flat_hash_map<std::string, std::vector<std::unique_ptr<ipc::Client>>> idle_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace disagg::runtime

#endif  // DISAGG_RUNTIME_ELEMENT_POOL_H_
