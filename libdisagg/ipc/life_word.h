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
// own watch. Each watcher gets a word of its own: the kernel wakes one waiter of a dead
// owner's word.
#ifndef DISAGG_IPC_LIFE_WORD_H_
#define DISAGG_IPC_LIFE_WORD_H_

#include <pthread.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ipc/channel.h"
#include "ipc/event_loop.h"
#include "ipc/fd.h"

namespace disagg::ipc {

inline constexpr size_t kLifeWordBytes = 4096;
// Why a process whose life word told of its death failed, in logs and events.
inline constexpr char kLifeWordDied[] = "it died (its life word was released by the kernel)";

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

// Life words held by a thread of their own that does nothing but wait: at a kill, the kernel
// releases them as soon as that thread exits, without waiting for the rest of the process
// (an event loop's thread first cancels its io_uring requests, which takes a while).
// Destroying the holder releases the words (a clean end) and joins the thread.
class LifeWordHolder {
 public:
  // `count` fresh words, held by the new thread once this returns.
  static absl::StatusOr<std::unique_ptr<LifeWordHolder>> Start(int count);
  ~LifeWordHolder();
  LifeWordHolder(const LifeWordHolder&) = delete;
  LifeWordHolder& operator=(const LifeWordHolder&) = delete;
  // The memfd of word `i`, to hand to its watcher.
  int fd(size_t i) const { return words_[i].fd(); }
  size_t count() const { return words_.size(); }

 private:
  LifeWordHolder() = default;
  std::vector<LifeWord> words_;
  Fd stop_;  // an eventfd: written to end the thread
  std::thread thread_;
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
  // kernel wakes the watcher when the owner dies or releases it. `seen` (if given) gets the
  // value the verdict is about: the value to wait on while it holds.
  State Check(uint32_t* seen = nullptr);
  const uint32_t* word() const { return reinterpret_cast<const uint32_t*>(region_.data()); }
  bool valid() const { return region_.data() != nullptr; }

 private:
  explicit LifeWatch(ShmRegion region) : region_(std::move(region)) {}
  ShmRegion region_;
};

// The life words of many peers, watched on one event loop, each under a key (a link's id).
// A word's `on_death` runs once, when its holder dies; a released word (a clean exit) ends
// its watch silently. A peer that wakes its watcher for nothing more than 1,000 times in a
// second loses its watch (logged): its death is then seen at its hang-up.
// Single-threaded, on the loop's thread; the loop must outlive this.
class LifeWatches {
 public:
  LifeWatches(EventLoop& loop, std::string owner) : loop_(loop), owner_(std::move(owner)) {}
  ~LifeWatches();
  LifeWatches(const LifeWatches&) = delete;
  LifeWatches& operator=(const LifeWatches&) = delete;

  // Copies file `remote_fd` of the process behind `pidfd` (pidfd_getfd) and watches it as
  // the life word of `who` (for the log), under `key`. OK too when it cannot be watched here
  // (this kernel's io_uring has no futex wait, or the copy is refused): that is logged, and
  // the death is seen at the hang-up. INVALID_ARGUMENT if the file is no life word,
  // FAILED_PRECONDITION if the word is not held or `key` has one already: the peer broke
  // the protocol.
  absl::Status Watch(uint64_t key, int pidfd, int remote_fd, const std::string& who,
                     std::function<void()> on_death);
  // Stops watching `key`'s word and forgets the key (unknown keys are ignored); its on_death
  // never runs. For a closed link.
  void Forget(uint64_t key);
  bool watching(uint64_t key) const { return watches_.contains(key); }

 private:
  struct Watched {
    LifeWatch life;
    EventLoop::WatchId watch = 0;
    std::string who;
    std::function<void()> on_death;
    absl::Time window_start;
    int spurious = 0;  // wakes for nothing since window_start
  };
  void Changed(uint64_t key);

  EventLoop& loop_;
  std::string owner_;
  absl::flat_hash_map<uint64_t, Watched> watches_;
  absl::flat_hash_set<uint64_t> dropped_;  // keys whose watch was dropped: no second word
};

}  // namespace disagg::ipc

#endif  // DISAGG_IPC_LIFE_WORD_H_
