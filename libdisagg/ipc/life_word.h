// LifeWord: a process's death, told before its memory is torn down.
//
// The kernel ends a killed process in order: first it releases the robust futexes its threads
// hold (marking each FUTEX_OWNER_DIED and waking its waiters), then it tears down its memory
// (milliseconds per GiB), and only then closes its files: a socket's hang-up and the pidfd
// come last. A LifeWord is a robust, process-shared mutex in a sealed 4 KiB memfd, held for
// the process's life by one of its threads. The process hands the memfd to its watcher
// (which copies it with pidfd_getfd); the watcher's event loop waits on the mutex's word
// (EventLoop::WatchFutex) and reads what happened:
//   kHeld      the process lives
//   kReleased  it released the word on purpose (a clean exit)
//   kDied      the holding thread, and with it the process, died
// The word is written by an untrusted process: anything it says about itself only ends its
// own watch.
#ifndef DISAGG_IPC_LIFE_WORD_H_
#define DISAGG_IPC_LIFE_WORD_H_

#include <pthread.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "ipc/channel.h"
#include "ipc/fd.h"

namespace disagg::ipc {

inline constexpr size_t kLifeWordBytes = 4096;

// The owner's side. Move-only.
class LifeWord {
 public:
  // A fresh, unheld word in a sealed memfd.
  static absl::StatusOr<LifeWord> Create();
  LifeWord(LifeWord&&) = default;
  LifeWord& operator=(LifeWord&&) = default;

  // Held by the calling thread until Release, which must be called on the same thread (or
  // never: the thread's death releases it, as OWNER_DIED).
  absl::Status Hold();
  void Release();
  int fd() const { return fd_.get(); }

 private:
  LifeWord(Fd fd, ShmRegion region) : fd_(std::move(fd)), region_(std::move(region)) {}
  pthread_mutex_t* mutex() const { return reinterpret_cast<pthread_mutex_t*>(region_.data()); }
  Fd fd_;
  ShmRegion region_;
  bool held_ = false;
};

// The watcher's side. Move-only.
class LifeWatch {
 public:
  enum class State { kHeld, kReleased, kDied };
  // Maps a word the owner made: INVALID_ARGUMENT if the memfd is not sealed against
  // shrinking or is too small.
  static absl::StatusOr<LifeWatch> Adopt(Fd fd);
  LifeWatch() = default;
  LifeWatch(LifeWatch&&) = default;
  LifeWatch& operator=(LifeWatch&&) = default;

  // What the word says now. While held, marks it as waited on (FUTEX_WAITERS), so that the
  // kernel wakes the watcher when the owner dies or releases it.
  State Check();
  const uint32_t* word() const { return reinterpret_cast<const uint32_t*>(region_.data()); }
  bool valid() const { return region_.data() != nullptr; }

 private:
  explicit LifeWatch(ShmRegion region) : region_(std::move(region)) {}
  ShmRegion region_;
};

}  // namespace disagg::ipc

#endif  // DISAGG_IPC_LIFE_WORD_H_
