// WriteDomain: a process's write-backs in flight, per memory element: the domain table
// {cpu, memory, start, ack} of tainted fate sharing (paper 003, section 4.1). For each memory
// element the process writes back to, it counts the batches of write-backs it started and
// the batches whose every acknowledgment it received. The table lives in a sealed 4 KiB
// memfd that the process hands to the Rack MMU (which copies it with pidfd_getfd), so the
// Rack MMU reads it after the process died or was fenced: an element with a batch started and
// not ended holds write-backs whose outcome the process never saw.
//
// The table is written by the process it judges, as its application membership is its own
// word (the rack runs its users' programs, as trust groups assume): what it says only widens
// or narrows the failure domain of the application it names. The reader trusts nothing else
// of it: it bounds the slot count and copies each name out before checking it.
#ifndef DISAGG_IPC_WRITE_DOMAIN_H_
#define DISAGG_IPC_WRITE_DOMAIN_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "internal/mutex.h"
#include "ipc/channel.h"
#include "ipc/fd.h"

namespace disagg::ipc {

inline constexpr size_t kWriteDomainBytes = 4096;
inline constexpr size_t kWriteDomainSlots = 64;
inline constexpr size_t kWriteDomainNameBytes = 40;  // element names are at most 32 bytes

// The table's layout in the memfd.
struct WriteDomainSlot {
  char element[kWriteDomainNameBytes];  // NUL-padded
  std::atomic<uint64_t> started;
  std::atomic<uint64_t> acked;
};
struct WriteDomainLayout {
  std::atomic<uint32_t> slots;     // slots in use; a slot's name is written before it counts
  std::atomic<uint32_t> overflow;  // batches not recorded: every slot was taken
  WriteDomainSlot slot[kWriteDomainSlots];
};
static_assert(sizeof(WriteDomainLayout) <= kWriteDomainBytes);

// The process's side. Thread-safe: any thread may start and end batches.
class WriteDomain {
 public:
  // A fresh, empty table in a sealed memfd.
  static absl::StatusOr<std::unique_ptr<WriteDomain>> Create();
  int fd() const { return fd_.get(); }

  // A batch of write-backs to `element` starts: returns the token to End it with, or -1 if
  // the table is full (64 elements: counted in `overflow`) or the name is too long.
  int Begin(const std::string& element);
  // The process saw the batch begun with `token` through: every write-back acknowledged, or
  // the batch failed and the process knows it (its pages are lost to it, not unknown).
  void End(int token);

 private:
  WriteDomain(Fd fd, ShmRegion region) : fd_(std::move(fd)), region_(std::move(region)) {}
  WriteDomainLayout* table() const { return reinterpret_cast<WriteDomainLayout*>(region_.data()); }

  Fd fd_;
  ShmRegion region_;
  Mutex mu_;
  absl::flat_hash_map<std::string, int> slot_of_ ABSL_GUARDED_BY(mu_);
};

// The Rack MMU's side: a copy of the memfd, mapped. Move-only.
class WriteDomainView {
 public:
  // INVALID_ARGUMENT if `fd` is no sealed memfd of 4 KiB.
  static absl::StatusOr<WriteDomainView> Adopt(Fd fd);
  WriteDomainView() = default;

  // The memory elements (by the names the table gives) with batches started and never
  // acknowledged, each with how many. Slots with a malformed name are skipped.
  struct Unacknowledged {
    std::string element;
    uint64_t batches;
  };
  std::vector<Unacknowledged> Tainted() const;
  // Batches the table could not record (it was full): nonzero means Tainted() may miss some.
  uint32_t overflow() const;

 private:
  explicit WriteDomainView(ShmRegion region) : region_(std::move(region)) {}
  ShmRegion region_;
};

}  // namespace disagg::ipc

#endif  // DISAGG_IPC_WRITE_DOMAIN_H_
