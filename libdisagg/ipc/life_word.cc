#include "ipc/life_word.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

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

LifeWatch::State LifeWatch::Check() {
  auto* word = reinterpret_cast<uint32_t*>(region_.data());
  uint32_t value = __atomic_load_n(word, __ATOMIC_ACQUIRE);
  while (true) {
    if (value & FUTEX_OWNER_DIED) return State::kDied;
    if ((value & FUTEX_TID_MASK) == 0) return State::kReleased;
    if (value & FUTEX_WAITERS) return State::kHeld;
    // Waited on from now: the kernel wakes waiters on an owner's death only if marked so.
    if (__atomic_compare_exchange_n(word, &value, value | FUTEX_WAITERS, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
      return State::kHeld;
    }
  }
}

}  // namespace disagg::ipc
