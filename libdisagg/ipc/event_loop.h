// EventLoop: the one event loop of a daemon, on io_uring. It watches file descriptors
// (multishot poll), runs timers, turns SIGTERM/SIGINT into a clean stop, and drives
// "pollers" (shared-memory rings) with spin-then-sleep: after the last piece of work it keeps
// polling for `spin`, then asks every poller to arm its doorbell and blocks in io_uring.
//
// Thread-safety: single-threaded; every method is called from the loop's thread. Callbacks
// may add and remove watches, timers and pollers, including their own.
#ifndef DISAGG_IPC_EVENT_LOOP_H_
#define DISAGG_IPC_EVENT_LOOP_H_

#include <liburing.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ipc/fd.h"

namespace disagg::ipc {

struct EventLoopOptions {
  // How long to keep polling the rings after the last piece of work before sleeping.
  absl::Duration spin = absl::Microseconds(20);
  unsigned queue_entries = 256;
  // Stop cleanly on SIGTERM and SIGINT (blocks them for the calling thread).
  bool handle_signals = true;
};

class EventLoop {
 public:
  using WatchId = uint64_t;
  // Poll callback: receives the revents mask (POLLIN, POLLHUP, ...) or a negative errno.
  using FdCallback = std::function<void(int revents)>;
  // A poller does a bounded amount of work and says whether it did any.
  struct Poller {
    std::function<bool()> poll;
    // Arms the poller's doorbell; returns true if work arrived meanwhile (do not sleep).
    std::function<bool()> prepare_to_sleep;
    // Called after the loop woke from sleep.
    std::function<void()> awake;
  };

  // Sets up io_uring and probes the operations the loop needs. FAILED_PRECONDITION naming the
  // missing feature on kernels without them.
  static absl::StatusOr<std::unique_ptr<EventLoop>> Create(EventLoopOptions options = {});
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Calls `callback` whenever `fd` has any of `events`, until Unwatch. The fd must stay open
  // until Unwatch is called.
  WatchId WatchFd(int fd, uint32_t events, FdCallback callback);
  // Calls `callback` every `period` until Unwatch.
  WatchId AddTimer(absl::Duration period, std::function<void()> callback);
  WatchId AddPoller(Poller poller);
  // Calls `callback` whenever the 32-bit futex word at `word` (in memory shared with another
  // process) may have changed: the loop waits (IORING_OP_FUTEX_WAIT, shared) while it holds
  // `expected` (the value the caller last saw), and then, after each call, while it holds the
  // value read just before that call: a change in between is never missed. Until Unwatch.
  // The word must stay mapped until Unwatch. Requires futex_supported().
  WatchId WatchFutex(const uint32_t* word, uint32_t expected, std::function<void()> callback);
  // True if the kernel's io_uring waits on futexes (Linux 6.7+).
  bool futex_supported() const { return futex_supported_; }
  // Stops a watch, timer or poller. Its callback is never called again. Unknown ids are ignored.
  void Unwatch(WatchId id);

  // Runs until Stop() or a stop signal. Returns the reason for an abnormal end.
  absl::Status Run();
  void Stop() { stopped_ = true; }
  // Keeps polling for at least `spin` after the current turn's work instead of the usual spin
  // (until the loop next sleeps): for work that tends to come in bursts, such as page traffic,
  // while heartbeats and other stray messages keep the short spin.
  void KeepSpinning(absl::Duration spin) { burst_spin_ = std::max(burst_spin_, spin); }
  // Marks the current turn's work as housekeeping (a heartbeat answered): unless the turn also
  // did other work that did not say so, it starts no spin, so an idle daemon sleeps between
  // heartbeats instead of polling for `spin` after each.
  void Housekeeping() { housekeeping_ = true; }
  bool stopped() const { return stopped_; }

 private:
  enum class Kind { kFd, kTimer, kPoller, kFutex };
  struct Entry {
    Kind kind;
    int fd = -1;
    const uint32_t* word = nullptr;
    uint32_t futex_value = 0;  // kFutex: wait while *word holds this
    uint32_t events = 0;
    FdCallback on_fd;
    std::function<void()> on_timer;
    __kernel_timespec period{};
    Poller poller;
  };

  explicit EventLoop(EventLoopOptions options);
  io_uring_sqe* GetSqe();
  void ArmPoll(WatchId id, Entry& entry);
  void ArmFutex(WatchId id, Entry& entry);
  void ArmTimer(WatchId id, Entry& entry);
  // Handles every ready completion; returns true if any callback ran.
  bool ReapCompletions();
  void Dispatch(uint64_t id, int res, uint32_t flags);
  bool RunPollers();

  EventLoopOptions options_;
  io_uring ring_{};
  bool ring_ready_ = false;
  bool futex_supported_ = false;
  bool stopped_ = false;
  absl::Duration burst_spin_ = absl::ZeroDuration();  // see KeepSpinning
  bool housekeeping_ = false;                         // see Housekeeping
  WatchId next_id_ = 1;
  absl::flat_hash_map<WatchId, std::unique_ptr<Entry>> entries_;
  std::vector<WatchId> poller_ids_;
  std::vector<Entry*> pollers_;  // the pollers' entries, in poller_ids_ order, for the hot loop
  std::vector<std::unique_ptr<Entry>> graveyard_;  // unwatched this turn; freed next turn
  Fd signal_fd_;
};

}  // namespace disagg::ipc

#endif  // DISAGG_IPC_EVENT_LOOP_H_
