#include "ipc/event_loop.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "internal/logging.h"
#include "internal/status_macros.h"

namespace disagg::ipc {
namespace {

// user_data values below this are the loop's own bookkeeping, never dispatched.
constexpr uint64_t kIgnoredUserData = 0;

// io_uring's futex wait (Linux 6.7) and futex2's size flag: newer than the installed headers.
constexpr int kOpFutexWait = 51;      // IORING_OP_FUTEX_WAIT
constexpr int kFutex2SizeU32 = 0x02;  // FUTEX2_SIZE_U32

__kernel_timespec ToKernel(absl::Duration d) {
  timespec ts = absl::ToTimespec(d);
  return __kernel_timespec{ts.tv_sec, ts.tv_nsec};
}

}  // namespace

EventLoop::EventLoop(EventLoopOptions options) : options_(options) {}

EventLoop::~EventLoop() {
  if (ring_ready_) io_uring_queue_exit(&ring_);
}

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::Create(EventLoopOptions options) {
  std::unique_ptr<EventLoop> loop(new EventLoop(options));
  const int rc = io_uring_queue_init(options.queue_entries, &loop->ring_, 0);
  if (rc < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("io_uring is not available: ", strerror(-rc)));
  }
  loop->ring_ready_ = true;
  io_uring_probe* probe = io_uring_get_probe_ring(&loop->ring_);
  if (probe == nullptr) return absl::FailedPreconditionError("io_uring cannot be probed");
  const struct {
    int op;
    const char* name;
  } needed[] = {{IORING_OP_POLL_ADD, "POLL_ADD"},
                {IORING_OP_POLL_REMOVE, "POLL_REMOVE"},
                {IORING_OP_TIMEOUT, "TIMEOUT"},
                {IORING_OP_TIMEOUT_REMOVE, "TIMEOUT_REMOVE"}};
  for (const auto& n : needed) {
    if (!io_uring_opcode_supported(probe, n.op)) {
      io_uring_free_probe(probe);
      return absl::FailedPreconditionError(
          absl::StrCat("this kernel's io_uring lacks IORING_OP_", n.name));
    }
  }
  // Newer than the installed headers (6.1): defined here, used only where the kernel has it.
  loop->futex_supported_ = io_uring_opcode_supported(probe, kOpFutexWait);
  io_uring_free_probe(probe);
  if (!(loop->ring_.features & IORING_FEAT_NODROP)) {
    return absl::FailedPreconditionError("this kernel's io_uring lacks IORING_FEAT_NODROP (5.5+)");
  }
  if (options.handle_signals) {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (pthread_sigmask(SIG_BLOCK, &mask, nullptr) != 0) return ErrnoStatus("sigmask");
    loop->signal_fd_ = Fd(::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!loop->signal_fd_.valid()) return ErrnoStatus("signalfd");
    EventLoop* self = loop.get();
    loop->WatchFd(loop->signal_fd_.get(), POLLIN, [self](int) {
      signalfd_siginfo info;
      while (::read(self->signal_fd_.get(), &info, sizeof(info)) == sizeof(info)) {
        LOG(INFO) << "signal " << strsignal(info.ssi_signo) << ": stopping";
        self->Stop();
      }
    });
  }
  return loop;
}

io_uring_sqe* EventLoop::GetSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  CHECK(sqe != nullptr) << "io_uring submission queue stuck";
  return sqe;
}

void EventLoop::ArmPoll(WatchId id, Entry& entry) {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_poll_multishot(sqe, entry.fd, entry.events);
  io_uring_sqe_set_data64(sqe, id);
}

void EventLoop::ArmTimer(WatchId id, Entry& entry) {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_timeout(sqe, &entry.period, 0, 0);
  io_uring_sqe_set_data64(sqe, id);
}

EventLoop::WatchId EventLoop::WatchFd(int fd, uint32_t events, FdCallback callback) {
  const WatchId id = next_id_++;
  auto entry = std::make_unique<Entry>();
  entry->kind = Kind::kFd;
  entry->fd = fd;
  entry->events = events;
  entry->on_fd = std::move(callback);
  ArmPoll(id, *entry);
  entries_[id] = std::move(entry);
  return id;
}

EventLoop::WatchId EventLoop::AddTimer(absl::Duration period, std::function<void()> callback) {
  const WatchId id = next_id_++;
  auto entry = std::make_unique<Entry>();
  entry->kind = Kind::kTimer;
  entry->period = ToKernel(period);
  entry->on_timer = std::move(callback);
  ArmTimer(id, *entry);
  entries_[id] = std::move(entry);
  return id;
}

EventLoop::WatchId EventLoop::AddPoller(Poller poller) {
  const WatchId id = next_id_++;
  auto entry = std::make_unique<Entry>();
  entry->kind = Kind::kPoller;
  entry->poller = std::move(poller);
  pollers_.push_back(entry.get());
  entries_[id] = std::move(entry);
  poller_ids_.push_back(id);
  return id;
}

void EventLoop::Unwatch(WatchId id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  switch (it->second->kind) {
    case Kind::kFd: {
      io_uring_sqe* sqe = GetSqe();
      io_uring_prep_poll_remove(sqe, id);
      io_uring_sqe_set_data64(sqe, kIgnoredUserData);
      break;
    }
    case Kind::kFutex: {
      io_uring_sqe* sqe = GetSqe();
      io_uring_prep_cancel64(sqe, id, 0);
      io_uring_sqe_set_data64(sqe, kIgnoredUserData);
      break;
    }
    case Kind::kTimer: {
      io_uring_sqe* sqe = GetSqe();
      io_uring_prep_timeout_remove(sqe, id, 0);
      io_uring_sqe_set_data64(sqe, kIgnoredUserData);
      break;
    }
    case Kind::kPoller:
      poller_ids_.erase(std::remove(poller_ids_.begin(), poller_ids_.end(), id), poller_ids_.end());
      pollers_.erase(std::remove(pollers_.begin(), pollers_.end(), it->second.get()),
                     pollers_.end());
      break;
  }
  // Removal must reach the kernel before the caller closes the fd, and a prepared timeout
  // must reach it (the kernel copies its timespec at submission) before the entry goes.
  io_uring_submit(&ring_);
  // The entry stays alive until the loop's next turn: the callback running now may be its own.
  // A late completion for `id` finds nothing and is dropped.
  graveyard_.push_back(std::move(it->second));
  entries_.erase(it);
}

EventLoop::WatchId EventLoop::WatchFutex(const uint32_t* word, uint32_t expected,
                                         std::function<void()> callback) {
  const WatchId id = next_id_++;
  auto entry = std::make_unique<Entry>();
  entry->kind = Kind::kFutex;
  entry->word = word;
  entry->futex_value = expected;
  entry->on_timer = std::move(callback);
  ArmFutex(id, *entry);
  entries_[id] = std::move(entry);
  return id;
}

void EventLoop::ArmFutex(WatchId id, Entry& entry) {
  io_uring_sqe* sqe = GetSqe();
  // A shared (not FUTEX2_PRIVATE) 32-bit wait while *word == value, any bit of the mask.
  io_uring_prep_rw(kOpFutexWait, sqe, kFutex2SizeU32, entry.word, 0, entry.futex_value);
  sqe->addr3 = 0xffffffffu;
  io_uring_sqe_set_data64(sqe, id);
}

void EventLoop::Dispatch(uint64_t id, int res, uint32_t flags) {
  if (id == kIgnoredUserData) return;
  auto it = entries_.find(id);
  if (it == entries_.end()) return;  // unwatched meanwhile
  Entry& entry = *it->second;
  if (entry.kind == Kind::kFd) {
    if (res == -ECANCELED && !(flags & IORING_CQE_F_MORE)) {
      ArmPoll(id, entry);  // multishot ended (e.g. overflow): re-arm
      return;
    }
    const bool rearm = !(flags & IORING_CQE_F_MORE);
    entry.on_fd(res);  // may unwatch itself: the entry then lives on in graveyard_
    auto again = entries_.find(id);
    if (rearm && again != entries_.end()) ArmPoll(id, *again->second);
  } else if (entry.kind == Kind::kFutex) {
    if (res < 0 && res != -EAGAIN && res != -EINTR && res != -ECANCELED) {
      LOG(WARNING) << "futex wait " << id << " failed: " << strerror(-res);
    }
    // Read before the call: whatever changes after it ends the next wait at once.
    entry.futex_value = __atomic_load_n(entry.word, __ATOMIC_ACQUIRE);
    entry.on_timer();  // may unwatch itself: the entry then lives on in graveyard_
    auto again = entries_.find(id);
    if (again != entries_.end()) ArmFutex(id, *again->second);
  } else if (entry.kind == Kind::kTimer) {
    if (res != -ETIME && res < 0) {
      LOG(WARNING) << "timer " << id << " failed: " << strerror(-res);
    }
    ArmTimer(id, entry);
    entry.on_timer();
  }
}

bool EventLoop::ReapCompletions() {
  // The common case while spinning, answered inline: nothing completed and nothing overflowed
  // (io_uring_peek_cqe is a call into liburing that checks more).
  if (io_uring_cq_ready(&ring_) == 0 && !io_uring_cq_has_overflow(&ring_)) return false;
  bool any = false;
  io_uring_cqe* cqe;
  while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
    const uint64_t id = io_uring_cqe_get_data64(cqe);
    const int res = cqe->res;
    const uint32_t flags = cqe->flags;
    io_uring_cqe_seen(&ring_, cqe);
    if (id != kIgnoredUserData) {
      Dispatch(id, res, flags);
      any = true;
    }
  }
  return any;
}

bool EventLoop::RunPollers() {
  bool any = false;
  // Index loop: pollers may add or remove pollers (a removed one lives on in graveyard_ until
  // the next turn, so the pointer stays valid while its callback runs).
  for (size_t i = 0; i < pollers_.size(); ++i) any |= pollers_[i]->poller.poll();
  return any;
}

absl::Status EventLoop::Run() {
  absl::Time last_work = absl::InfinitePast();  // no work yet: nothing to spin for
  bool stamp_pending = false;
  uint32_t idle_rounds = 0;
  while (!stopped_) {
    graveyard_.clear();
    if (io_uring_sq_ready(&ring_) > 0) io_uring_submit(&ring_);
    bool worked = ReapCompletions();
    worked |= RunPollers();
    if (stopped_) break;
    if (worked) {
      // The clock is read later, once idle: reading it costs more than a look at the rings.
      // A turn of housekeeping alone (a heartbeat answered) starts no spin.
      if (!std::exchange(housekeeping_, false)) stamp_pending = true;
      idle_rounds = 0;
      continue;
    }
    // A loop that spins looks at the clock every 64th idle round (reading it costs more than a
    // look at the rings); one that does not spin goes to sleep at the first idle round.
    const bool spinning =
        options_.spin > absl::ZeroDuration() || burst_spin_ > absl::ZeroDuration();
    if (spinning && ++idle_rounds % 64 != 0) {
      __builtin_ia32_pause();
      continue;
    }
    const absl::Time now = absl::Now();
    if (stamp_pending) {  // the spin is counted from the first idle look after the last work
      last_work = now;
      stamp_pending = false;
    }
    if (now - last_work < std::max(options_.spin, burst_spin_)) continue;
    burst_spin_ = absl::ZeroDuration();
    bool pending = false;
    for (WatchId id : poller_ids_) {
      auto it = entries_.find(id);
      if (it != entries_.end() && it->second->poller.prepare_to_sleep) {
        pending |= it->second->poller.prepare_to_sleep();
      }
    }
    if (!pending) {
      const int rc = io_uring_submit_and_wait(&ring_, 1);
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
        return absl::InternalError(absl::StrCat("io_uring_submit_and_wait: ", strerror(-rc)));
      }
    }
    for (size_t i = 0; i < poller_ids_.size(); ++i) {
      auto it = entries_.find(poller_ids_[i]);
      if (it != entries_.end() && it->second->poller.awake) {
        it->second->poller.awake();
      }
    }
    // The spin restarts only if what woke the loop is work (see above): a daemon woken by a
    // heartbeat answers it and sleeps again.
  }
  return absl::OkStatus();
}

}  // namespace disagg::ipc
