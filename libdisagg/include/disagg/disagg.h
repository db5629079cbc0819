// <disagg/disagg.h>: the application's view of a disagg rack.
//
// A process joins the rack once (Rack::Join), maps regions of remote memory that live on the
// rack's memory elements (Rack::Map), and uses them with ordinary loads and stores. A bounded
// local cache, leased from the compute element the process runs on, holds the pages in use:
// the first touch of a page fetches it from its memory element, eviction writes dirty pages
// back, Flush makes written data durable at the memory element. Addresses are rack-wide: a
// region lives in its owner's fixed window of the rack range, which every rack process
// reserves, so an address means the same thing in every process.
//
// An access the rack refuses (nothing mapped there, another process's page, a memory
// element that refuses or failed) never reads garbage or a zero page: it raises SIGBUS at
// the exact address, which reaches the handler set with OnMemoryFault. With no handler the
// process ends with a message naming the address and the cause, like a hardware memory
// error.
//
// Every call that can fail returns absl::Status or absl::StatusOr; no exceptions cross the
// API. Thread-safety: a Rack is safe to use from any number of threads; faults from many
// threads are served concurrently. One Rack per process at a time. A child made by fork()
// gets neither the rack range (it is not inherited) nor the Rack: it must not use the
// parent's Rack object; a program it execs may Join on its own.
#ifndef DISAGG_DISAGG_H_
#define DISAGG_DISAGG_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace disagg {

struct JoinOptions {
  // The rack's run directory. Empty: $DISAGG_RACK (set by `rackctl run`).
  std::string rack_dir;
  // The compute element this process runs on, whose cache budget bounds the local cache.
  // Empty: $DISAGG_ELEMENT (set by `rackctl run --on cpuN`).
  std::string element;
  // A name for logs and `rackctl status`. Empty: the program's name.
  std::string name;
  // The application this process belongs to, whose fate-sharing spec applies to it (see
  // `rackctl run --app NAME --fate FILE`). Empty: $DISAGG_APP, set by `rackctl run --app`;
  // none at all: no application, which shares fate as the model `none` does.
  std::string app;
  // Threads that serve page faults (each holds its own connections to memory elements).
  int fault_threads = 1;
  // After serving a fault, one fault thread polls for the next one this long before it
  // sleeps: bursts of faults then cost no wake-up. Zero: always sleep.
  absl::Duration fault_spin = absl::Microseconds(50);
  // The most pages one fault of a sequential stream reads (the faulting page and those after
  // it, in one run): 1 (no read-ahead) to 128. Longer runs cost fewer calls per page to
  // install and to evict; shorter ones keep the first touch's wait short.
  int readahead_pages = 32;
  // Sequential streams in a cache of 24 MiB or more are read in 2 MiB units, which the memory
  // element writes straight into this process and the kernel moves into place (no page is
  // copied or allocated here). Needs Linux 6.8 (UFFDIO_MOVE) and that the memory element may
  // write into this process (the kernel's ptrace access check: the same user, or root); where
  // either is missing, streams are read in runs of readahead_pages. False: always in runs.
  bool unit_installs = true;
  // How long to wait for the rack's daemons on any one request.
  absl::Duration timeout = absl::Seconds(5);
};

enum class Placement {
  kSpread,  // stripe the region across the memory elements
  kFill,    // fill one memory element before using the next
};

struct MapOptions {
  Placement placement = Placement::kSpread;
};

// A region of remote memory: [data(), data() + size()). A value; the memory stays mapped
// until Rack::Unmap or until the process leaves the rack.
class Region {
 public:
  Region() = default;
  Region(void* data, size_t size) : data_(data), size_(size) {}
  void* data() const { return data_; }
  size_t size() const { return size_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

// Why the rack refused an access.
enum class FaultCause {
  kNotMapped,      // nothing is mapped at that address
  kNotYours,       // another process owns the memory at that address
  kRefused,        // the memory element holding the page refused this process
  kElementFailed,  // the memory element holding the page failed or cannot be reached
  kLost,           // a dirty page could not be written back: its latest data is lost
  kRevoked,        // this process granted the memory away, or another process stole it
  kFenced,         // this process was declared failed: the rack refuses it for good
};

// A short, static description of `cause` ("not mapped", ...).
const char* FaultCauseName(FaultCause cause);

struct MemoryFault {
  void* address;  // the exact address of the access
  FaultCause cause;
  // kElementFailed, kRefused, kLost: the memory element that held the page (NUL-terminated;
  // empty if unknown).
  char element[33];
};

// Called on the faulting thread, inside the SIGBUS handler: only async-signal-safe calls
// are allowed. It may leave with siglongjmp (to a sigsetjmp(env, 1) point). If it returns,
// the process ends by SIGBUS after printing the fault, as without a handler.
using MemoryFaultHandler = void (*)(const MemoryFault& fault);

// What the rack tells a process unasked (see Rack::OnEvent).
enum class EventKind {
  kGranted,  // `process` granted [address, +size) to this process: it may use it at once
  kRevoked,  // `process` stole [address, +size) from this process: touches fault (kRevoked)
  // Memory element `element` failed, and with it the region [address, +size) of `process`:
  // this process's own (its touches there fault with kElementFailed), or that of a member of
  // a group of this process, or of a process that named this one an emergency contact.
  kMemoryFailed,
  // Process `process`, a member of a group of this process, failed (`reason`); it ran on
  // compute element `element`. Its memory is held for adoption (Steal) for the grace period.
  kPeerFailed,
  // This process was declared failed (`reason`): it was paused or cut off too long, or its
  // compute element failed. The rack refuses it for good: its memory is held for whoever
  // adopts it, touches of rack memory fault with kFenced, and calls fail. Leave and exit.
  kFenced,
};

struct Event {
  EventKind kind;
  uint32_t process;  // the giver (kGranted), the taker (kRevoked), the one that failed
  void* address;     // kGranted, kRevoked, kMemoryFailed: the range
  size_t size;
  std::string element;  // kMemoryFailed: the memory element; kPeerFailed: the compute element
  std::string reason;   // kMemoryFailed, kPeerFailed, kFenced: why, as the rack saw it
};

// Called on a libdisagg thread of its own, one event at a time, in the order they happened.
// It may call the Rack's methods. It must not destroy the Rack.
using EventHandler = std::function<void(const Event& event)>;

// What the local cache holds and has done so far.
struct CacheStats {
  uint64_t quota_bytes = 0;        // what the compute element leases this process now
  uint64_t cached_bytes = 0;       // pages present in the local cache now
  uint64_t peak_cached_bytes = 0;  // the most it ever held
  uint64_t faults = 0;             // pages fetched from memory elements
  uint64_t read_ahead = 0;         // of those, pages of a run read ahead of any fault
  uint64_t placed = 0;             // of those, pages placed in 2 MiB units (unit_installs)
  uint64_t evictions = 0;          // pages dropped to make room
  uint64_t writebacks = 0;         // dirty pages written back (eviction and Flush)
};

class Rack {
 public:
  // Joins the rack: registers with the Rack MMU (which gives this process its rack id and
  // window), attaches to the compute element for a cache lease, reserves the rack range and
  // starts serving its faults. Errors: INVALID_ARGUMENT when no rack or compute element is
  // named; UNAVAILABLE when a daemon cannot be reached; FAILED_PRECONDITION when this process
  // already joined, the rack range is taken, or the kernel lacks a userfaultfd feature.
  static absl::StatusOr<std::unique_ptr<Rack>> Join(JoinOptions options = {});

  // Leaves the rack: stops serving faults, drops the reservation of the rack range (later
  // accesses to it crash with SIGSEGV) and releases this process's regions and roots at once.
  // Unflushed writes are lost, as in a crash. A process that ends without leaving (a crash,
  // a kill, exit without destroying the Rack) has its memory held for adoption for the
  // rack's grace period instead.
  virtual ~Rack() = default;

  // This process's rack-wide id.
  virtual uint32_t self() const = 0;
  // This process's window of the rack address space.
  virtual uintptr_t window_base() const = 0;
  virtual size_t window_bytes() const = 0;

  // Maps `bytes` (rounded up to 4 KiB pages) of remote memory, zero-filled, in this
  // process's window. RESOURCE_EXHAUSTED if the rack's memory elements cannot hold it (then
  // nothing is allocated); INVALID_ARGUMENT for 0 bytes or more than a window.
  virtual absl::StatusOr<Region> Map(size_t bytes, MapOptions options = {}) = 0;

  // Unmaps the region that starts at `data` and frees its memory; its cached pages are
  // dropped without write-back. Later accesses fault with kNotMapped. NOT_FOUND if no region
  // starts there.
  virtual absl::Status Unmap(void* data) = 0;

  // Writes back every page of [addr, addr + len) written since it was last written back, and
  // returns once the memory elements hold the data. INVALID_ARGUMENT if the range is not
  // inside this process's mapped regions; UNAVAILABLE if a memory element fails (the pages
  // stay dirty; the call names the element); FAILED_PRECONDITION once this process was
  // fenced (kFenced event).
  virtual absl::Status Flush(const void* addr, size_t len) = 0;

  // Grants [addr, addr + len) to process `to`, without copying: the pages written since
  // their last write-back are written back first, then the Rack MMU makes `to` their owner
  // at the same addresses (every pointer into them stays valid) and reprograms the memory
  // elements; this process's cached copies and translations are dropped, and its later
  // touches of the range fault with kRevoked. `to` gets a kGranted event. The range may be a
  // whole region or any part of one, or span several; parts become regions of their own.
  // The cost grows with the number of extents, not with the bytes. Errors:
  // INVALID_ARGUMENT for an empty or unaligned range, one not wholly mapped, or `to` being
  // this process; PERMISSION_DENIED if this process does not own all of it; NOT_FOUND if
  // `to` is not a live process of the rack; ABORTED if a grant or steal of an overlapping
  // range is under way; UNAVAILABLE if a dirty page could not be written back (nothing was
  // granted then).
  virtual absl::Status Grant(void* addr, size_t len, uint32_t to) = 0;

  // Takes [addr, addr + len) from process `from`, which may be running, paused or dead
  // (a dead process's memory is held for the rack's grace period): the memory elements
  // refuse `from` there before this returns, so it can never again read or write back the
  // range (its touches fault with kRevoked once it hears of it; its write-backs are refused
  // and logged); what `from` had not written back is lost. Returns the range, now this
  // process's, at the same addresses. Errors: PERMISSION_DENIED if this process and `from`
  // share no trust group (JoinGroup) or `from` does not own all of the range; NOT_FOUND
  // if `from` is unknown; INVALID_ARGUMENT and ABORTED as for Grant.
  virtual absl::StatusOr<Region> Steal(uint32_t from, void* addr, size_t len) = 0;

  // Joins the trust group `name` (1 to 255 bytes; created on first use). Members of a
  // common group may steal from each other.
  virtual absl::Status JoinGroup(const std::string& name) = 0;

  // Publishes the named root `name` -> `addr`, which must lie in memory this process owns;
  // kept by the Rack MMU, also for the grace period after this process dies, so that
  // whoever adopts its memory finds its state. Publishing a name again replaces it.
  virtual absl::Status Publish(const std::string& name, const void* addr) = 0;
  // The root `name` of process `owner` (live, or dead within the grace period).
  // NOT_FOUND if there is no such process or root.
  virtual absl::StatusOr<void*> Lookup(uint32_t owner, const std::string& name) = 0;

  // Names the processes to tell (a kPeerFailed event) when this process fails, and (a
  // kMemoryFailed event) when memory it owns fails. The list, at most 64 rack process ids,
  // replaces the earlier one; it is kept by this process's compute element, so the notice
  // goes out even when this process or its memory is gone. INVALID_ARGUMENT for this
  // process's own id, 0, or too many; UNAVAILABLE if the compute element is gone.
  virtual absl::Status SetEmergencyContacts(const std::vector<uint32_t>& contacts) = 0;

  // Sets the handler for rack events (nullptr: none; events then go unreported).
  virtual void OnEvent(EventHandler handler) = 0;

  // Sets the handler for refused accesses (nullptr: the default message and SIGBUS).
  virtual void OnMemoryFault(MemoryFaultHandler handler) = 0;

  virtual CacheStats cache_stats() const = 0;
};

}  // namespace disagg

#endif  // DISAGG_DISAGG_H_
