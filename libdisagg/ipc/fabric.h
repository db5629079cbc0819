// Fabric: the rack's injected network faults, partitions between two elements and added
// latency on an element's channels (`rackctl partition A B`, `heal`, `delay ELEMENT US`). The
// rack monitor keeps them in a 4 KiB file in the run directory (<run_dir>/fabric), under a
// sequence lock; every application process maps it read-only when it joins and consults it
// on each message of its channels to memory elements and the Rack MMU: a partitioned
// channel delivers nothing, either way, until healed (a call waits, and fails UNAVAILABLE at
// its timeout); a delayed one holds each message, each way, for the sum of its two ends'
// delays. The daemons' own channels (heartbeats, reports) are not gated: a partition of the
// data fabric does not by itself make the monitor declare anything failed.
#ifndef DISAGG_IPC_FABRIC_H_
#define DISAGG_IPC_FABRIC_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ipc/channel.h"
#include "ipc/fd.h"

namespace disagg::ipc {

inline constexpr size_t kFabricBytes = 4096;
inline constexpr size_t kFabricRules = 40;
inline constexpr size_t kFabricNameBytes = 40;

struct FabricRule {
  std::string a;  // an element ("cpu0", "mem1", "mmu")
  std::string b;  // partition: the other element; empty for a delay of a's channels
  uint64_t delay_ns = 0;
};

// The monitor's side: the only writer. Not thread-safe.
class FabricWriter {
 public:
  // Creates (or takes over, emptied) the file at `path`.
  static absl::StatusOr<FabricWriter> Create(const std::string& path);
  FabricWriter() = default;
  // Replaces every rule; INVALID_ARGUMENT if there are more than kFabricRules or a name is
  // too long.
  absl::Status Set(const std::vector<FabricRule>& rules);

 private:
  explicit FabricWriter(ShmRegion region) : region_(std::move(region)) {}
  ShmRegion region_;
};

// What the fabric does to the channel between two elements now.
struct FabricGate {
  bool partitioned = false;
  absl::Duration delay;  // each message, each way
};

// A process's side. Thread-safe (reads only).
class Fabric {
 public:
  // Maps the file at `path` read-only; NOT_FOUND if the rack has none.
  static absl::StatusOr<std::shared_ptr<const Fabric>> Open(const std::string& path);
  ~Fabric();
  Fabric(const Fabric&) = delete;
  Fabric& operator=(const Fabric&) = delete;
  FabricGate Gate(const std::string& local, const std::string& remote) const;

  // Waits while the channel between `local` and `remote` is partitioned (until `deadline`:
  // then UNAVAILABLE naming the partition), then for its delay.
  absl::Status Pass(const std::string& local, const std::string& remote, absl::Time deadline) const;

 private:
  explicit Fabric(const void* data) : data_(data) {}
  const void* data_;  // kFabricBytes, mapped read-only
};

}  // namespace disagg::ipc

#endif  // DISAGG_IPC_FABRIC_H_
