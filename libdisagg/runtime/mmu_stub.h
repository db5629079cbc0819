// MmuStub: the application's typed calls to the Rack MMU (join, map, translate, grant,
// steal, groups, roots, leave), each one request and its reply on the process's connection
// to the Rack MMU. What the Rack MMU sends unasked travels on the separate event link (see
// RackImpl's control thread), never on this one.
//
// Thread-safety: all methods are thread-safe; calls are serialized on the one connection.
#ifndef DISAGG_RUNTIME_MMU_STUB_H_
#define DISAGG_RUNTIME_MMU_STUB_H_

#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "internal/mutex.h"
#include "ipc/client.h"
#include "runtime/translations.h"

namespace disagg::runtime {

struct JoinedInfo {
  uint32_t process_id = 0;
  uint64_t window_base = 0;
  uint64_t window_bytes = 0;
  uint64_t range_base = 0;
  uint64_t range_bytes = 0;
};

// A range and (some of) its extents, as the Rack MMU described it.
struct MappedRange {
  uint64_t vaddr = 0;
  RegionInfo info;
};

class MmuStub {
 public:
  // `timeout` bounds every call.
  MmuStub(ipc::Client client, absl::Duration timeout)
      : client_(std::move(client)), timeout_(timeout) {}

  // Errors: what the Rack MMU answered (with its reason), UNAVAILABLE if it is gone,
  // DEADLINE_EXCEEDED if it did not answer within the timeout, INTERNAL if the answer was
  // not of the request's kind.
  absl::StatusOr<JoinedInfo> Join(const std::string& name, const std::string& element,
                                  const std::string& app);
  absl::StatusOr<MappedRange> Map(uint64_t bytes, proto::Placement placement);
  absl::Status Unmap(uint64_t vaddr);
  // The region holding `vpage`, with the one extent that holds it.
  absl::StatusOr<MappedRange> Translate(uint64_t vpage);
  absl::Status Grant(uint64_t vaddr, uint64_t bytes, uint32_t to);
  // The stolen range with all its extents.
  absl::StatusOr<MappedRange> Steal(uint32_t from, uint64_t vaddr, uint64_t bytes);
  absl::Status JoinGroup(const std::string& name);
  absl::Status Publish(const std::string& name, uint64_t vaddr);
  absl::StatusOr<uint64_t> Lookup(uint32_t owner, const std::string& name);
  // Releases everything this process holds now (a clean exit; a death keeps it for the
  // grace period).
  absl::Status Leave();

 private:
  // One request built by `fill`, its reply checked by `on_reply`.
  absl::Status Call(absl::FunctionRef<void(proto::Message::Builder)> fill,
                    absl::FunctionRef<absl::Status(proto::Message::Reader)> on_reply);
  // A call whose answer is `ok`.
  absl::Status CallOk(absl::FunctionRef<void(proto::Message::Builder)> fill);
  absl::StatusOr<MappedRange> CallMapped(absl::FunctionRef<void(proto::Message::Builder)> fill);

  Mutex mu_;
  ipc::Client client_ ABSL_GUARDED_BY(mu_);
  const absl::Duration timeout_;
};

}  // namespace disagg::runtime

#endif  // DISAGG_RUNTIME_MMU_STUB_H_
