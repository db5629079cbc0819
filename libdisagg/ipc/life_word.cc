#include "ipc/life_word.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "internal/logging.h"

namespace disagg::ipc {

absl::StatusOr<LifeWord> LifeWord::Create() {
  Fd fd(::memfd_create("disagg-life", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) return absl::InternalError(absl::StrCat("memfd_create: ", strerror(errno)));
  if (::ftruncate(fd.get(), kLifeWordBytes) != 0 ||
      ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return absl::InternalError(absl::StrCat("sealing the life word: ", strerror(errno)));
  }
  absl::StatusOr<ShmRegion> region = ShmRegion::Map(fd.get(), kLifeWordBytes);
  if (!region.ok()) return region.status();
  LifeWord word(std::move(fd), std::move(*region));
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  const int rc = pthread_mutex_init(word.mutex(), &attr);
  pthread_mutexattr_destroy(&attr);
  if (rc != 0) return absl::InternalError(absl::StrCat("pthread_mutex_init: ", strerror(rc)));
  return word;
}

absl::Status LifeWord::Hold() {
  const int rc = pthread_mutex_lock(mutex());
  if (rc != 0 && rc != EOWNERDEAD) {
    return absl::InternalError(absl::StrCat("holding the life word: ", strerror(rc)));
  }
  if (rc == EOWNERDEAD) pthread_mutex_consistent(mutex());
  held_ = true;
  return absl::OkStatus();
}

void LifeWord::Release() {
  if (!held_) return;
  held_ = false;
  pthread_mutex_unlock(mutex());
}

absl::StatusOr<std::unique_ptr<LifeWordHolder>> LifeWordHolder::Start(int count) {
  std::unique_ptr<LifeWordHolder> holder(new LifeWordHolder());
  for (int i = 0; i < count; ++i) {
    absl::StatusOr<LifeWord> word = LifeWord::Create();
    if (!word.ok()) return word.status();
    holder->words_.push_back(std::move(*word));
  }
  holder->stop_ = Fd(::eventfd(0, EFD_CLOEXEC));
  if (!holder->stop_.valid()) {
    return absl::InternalError(absl::StrCat("eventfd: ", strerror(errno)));
  }
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", strerror(errno)));
  }
  Fd ready_in(ready[0]), ready_out(ready[1]);
  LifeWordHolder* h = holder.get();
  holder->thread_ = std::thread([h, out = ready_out.Release()] {
    pthread_setname_np(pthread_self(), "life-words");
    // Only this thread's death releases them; it blocks every signal meant for the process.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    char held = 1;
    for (LifeWord& word : h->words_) {
      if (!word.Hold().ok()) held = 0;
    }
    (void)!::write(out, &held, 1);
    ::close(out);
    uint64_t value;
    while (::read(h->stop_.get(), &value, sizeof(value)) < 0 && errno == EINTR) {
    }
    for (LifeWord& word : h->words_) word.Release();
  });
  char held = 0;
  if (::read(ready_in.get(), &held, 1) != 1 || held != 1) {
    return absl::InternalError("the life words could not be held");  // the thread is joined
  }
  return holder;
}

LifeWordHolder::~LifeWordHolder() {
  if (!thread_.joinable()) return;
  const uint64_t one = 1;
  (void)!::write(stop_.get(), &one, sizeof(one));
  thread_.join();
}

absl::StatusOr<LifeWatch> LifeWatch::Adopt(Fd fd) {
  const int seals = ::fcntl(fd.get(), F_GET_SEALS);
  struct stat st;
  if (seals < 0 || !(seals & F_SEAL_SHRINK) || ::fstat(fd.get(), &st) != 0 ||
      st.st_size < static_cast<off_t>(kLifeWordBytes)) {
    return absl::InvalidArgumentError(
        "the life word is not a memfd of 4 KiB sealed against shrinking");
  }
  absl::StatusOr<ShmRegion> region = ShmRegion::Map(fd.get(), kLifeWordBytes);
  if (!region.ok()) return region.status();
  return LifeWatch(std::move(*region));
}

LifeWatch::State LifeWatch::Check(uint32_t* seen) {
  auto* word = reinterpret_cast<uint32_t*>(region_.data());
  uint32_t value = __atomic_load_n(word, __ATOMIC_ACQUIRE);
  while (true) {
    if (seen != nullptr) *seen = value;
    if (value & FUTEX_OWNER_DIED) return State::kDied;
    if ((value & FUTEX_TID_MASK) == 0) return State::kReleased;
    if (value & FUTEX_WAITERS) return State::kHeld;
    // Waited on from now: the kernel wakes waiters on an owner's death only if marked so.
    if (__atomic_compare_exchange_n(word, &value, value | FUTEX_WAITERS, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
      if (seen != nullptr) *seen = value | FUTEX_WAITERS;
      return State::kHeld;
    }
  }
}

LifeWatches::~LifeWatches() {
  for (auto& [key, w] : watches_) loop_.Unwatch(w.watch);
}

absl::Status LifeWatches::Watch(uint64_t key, int pidfd, int remote_fd, const std::string& who,
                                std::function<void()> on_death) {
  if (watches_.contains(key) || dropped_.contains(key)) {
    return absl::FailedPreconditionError(absl::StrCat(who, " sent a second life word"));
  }
  if (!loop_.futex_supported()) {
    LOG_FIRST_N(INFO, 1) << owner_ << ": this kernel's io_uring cannot wait on futexes "
                         << "(Linux 6.7+): deaths are seen at their hang-up, after the dead "
                         << "process's memory is torn down";
    return absl::OkStatus();
  }
  Fd fd(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, remote_fd, 0)));
  if (!fd.valid()) {
    LOG(WARNING) << owner_ << ": cannot take the life word of " << who << ": "
                 << std::strerror(errno) << "; its death is seen at its hang-up";
    return absl::OkStatus();
  }
  absl::StatusOr<LifeWatch> life = LifeWatch::Adopt(std::move(fd));
  if (!life.ok()) return life.status();
  uint32_t seen = 0;
  if (life->Check(&seen) != LifeWatch::State::kHeld) {
    return absl::FailedPreconditionError(absl::StrCat("the life word of ", who, " is not held"));
  }
  Watched& w = watches_[key];
  w.life = std::move(*life);
  w.who = who;
  w.on_death = std::move(on_death);
  w.window_start = absl::Now();
  // Waits while the word holds what Check saw: a death since then ends the wait at once.
  w.watch = loop_.WatchFutex(w.life.word(), seen, [this, key] { Changed(key); });
  return absl::OkStatus();
}

void LifeWatches::Forget(uint64_t key) {
  dropped_.erase(key);
  auto it = watches_.find(key);
  if (it == watches_.end()) return;
  loop_.Unwatch(it->second.watch);
  watches_.erase(it);
}

void LifeWatches::Changed(uint64_t key) {
  auto it = watches_.find(key);
  if (it == watches_.end()) return;
  Watched& w = it->second;
  const LifeWatch::State state = w.life.Check();
  if (state == LifeWatch::State::kHeld) {
    // Woken for nothing: the word's holder may wake it at will, but not without end.
    const absl::Time now = absl::Now();
    if (now - w.window_start > absl::Seconds(1)) {
      w.window_start = now;
      w.spurious = 0;
    }
    if (++w.spurious <= 1000) return;
    LOG(WARNING) << owner_ << ": " << w.who << " wakes its life word's watcher for nothing; "
                 << "no longer watched (its death is seen at its hang-up)";
    Forget(key);
    dropped_.insert(key);  // and it may not send another
    return;
  }
  std::function<void()> on_death = std::move(w.on_death);
  Forget(key);  // before on_death, which may close the peer's link and forget it again
  if (state == LifeWatch::State::kDied) on_death();
}

}  // namespace disagg::ipc
