#include "runtime/userfaultfd.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "internal/status_macros.h"

// Linux 6.6 (the installed headers are older): poisoning a page through userfaultfd.
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
struct uffdio_poison {
  struct uffdio_range range;
  __u64 mode;
  __s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

// Linux 6.8: moving pages between registered ranges.
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#endif
#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05)
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)
struct uffdio_move {
  __u64 dst;
  __u64 src;
  __u64 len;
  __u64 mode;
  __s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif

namespace disagg::runtime {
namespace {

ipc::Fd OpenRaw(int flags) {
  int fd = static_cast<int>(syscall(SYS_userfaultfd, flags));
  if (fd >= 0) return ipc::Fd(fd);
  // Unprivileged processes may be refused the syscall but allowed /dev/userfaultfd.
  ipc::Fd dev(open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
  if (!dev.valid()) return ipc::Fd();
  return ipc::Fd(ioctl(dev.get(), USERFAULTFD_IOC_NEW, flags));
}

}  // namespace

absl::StatusOr<Userfaultfd> Userfaultfd::Open() {
  ipc::Fd fd = OpenRaw(O_CLOEXEC | O_NONBLOCK);
  if (!fd.valid()) {
    return ErrnoStatus(
        "userfaultfd is not available (neither the syscall nor "
        "/dev/userfaultfd; see vm.unprivileged_userfaultfd)");
  }
  // Moving pages is asked for first: it is optional (without it, pages are copied in).
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_POISON | UFFD_FEATURE_MOVE;
  if (ioctl(fd.get(), UFFDIO_API, &api) == 0) return Userfaultfd(std::move(fd), true);
  fd = OpenRaw(O_CLOEXEC | O_NONBLOCK);  // UFFDIO_API is allowed once per fd
  if (!fd.valid()) return ErrnoStatus("reopening userfaultfd");
  api = {};
  api.api = UFFD_API;
  api.features = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_POISON;
  if (ioctl(fd.get(), UFFDIO_API, &api) != 0) {
    // Ask again without features to learn which one is missing.
    ipc::Fd probe = OpenRaw(O_CLOEXEC | O_NONBLOCK);
    uffdio_api bare{};
    bare.api = UFFD_API;
    if (probe.valid() && ioctl(probe.get(), UFFDIO_API, &bare) == 0) {
      const char* missing = !(bare.features & UFFD_FEATURE_POISON)
                                ? "UFFD_FEATURE_POISON (Linux 6.6 or later)"
                                : "UFFD_FEATURE_PAGEFAULT_FLAG_WP (Linux 5.7 or later)";
      return absl::FailedPreconditionError(
          absl::StrCat("this kernel's userfaultfd lacks ", missing, ", which disagg needs"));
    }
    return ErrnoStatus("UFFDIO_API");
  }
  return Userfaultfd(std::move(fd), false);
}

absl::Status Userfaultfd::Register(uintptr_t base, uint64_t bytes) {
  uffdio_register reg{};
  reg.range = {base, bytes};
  reg.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP;
  if (ioctl(fd_.get(), UFFDIO_REGISTER, &reg) != 0) {
    return ErrnoStatus("registering the rack range with userfaultfd");
  }
  const uint64_t needed = (uint64_t{1} << _UFFDIO_COPY) | (uint64_t{1} << _UFFDIO_WRITEPROTECT) |
                          (uint64_t{1} << _UFFDIO_POISON) | (uint64_t{1} << _UFFDIO_WAKE);
  if ((reg.ioctls & needed) != needed) {
    return absl::FailedPreconditionError(absl::StrCat(
        "userfaultfd does not offer copy, write-protect, poison and wake on the rack range "
        "(ioctl mask 0x",
        absl::Hex(reg.ioctls), ")"));
  }
  return absl::OkStatus();
}

absl::Status Userfaultfd::RegisterStaging(uintptr_t base, uint64_t bytes) {
  uffdio_register reg{};
  reg.range = {base, bytes};
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (ioctl(fd_.get(), UFFDIO_REGISTER, &reg) != 0) {
    return ErrnoStatus("registering the staging range with userfaultfd");
  }
  if (!(reg.ioctls & (uint64_t{1} << _UFFDIO_MOVE))) {
    return absl::FailedPreconditionError(
        absl::StrCat("userfaultfd does not offer moves on the staging range (ioctl mask 0x",
                     absl::Hex(reg.ioctls), ")"));
  }
  return absl::OkStatus();
}

absl::Status Userfaultfd::Move(uintptr_t dst, uintptr_t src, uint64_t bytes, uint64_t& done) {
  done = 0;
  while (done < bytes) {
    uffdio_move move{};
    move.dst = dst + done;
    move.src = src + done;
    move.len = bytes - done;
    move.mode = UFFDIO_MOVE_MODE_DONTWAKE;
    if (ioctl(fd_.get(), UFFDIO_MOVE, &move) == 0) {
      done = bytes;
      return absl::OkStatus();
    }
    const int error = errno;
    if (move.move > 0) {
      done += move.move;  // a partial move: go on from where it stopped
      continue;
    }
    if (error == EAGAIN) continue;
    return ErrnoStatus(absl::StrCat("UFFDIO_MOVE of 0x", absl::Hex(bytes), " bytes to 0x",
                                    absl::Hex(dst), " (0x", absl::Hex(done), " moved)"),
                       error);
  }
  return absl::OkStatus();
}

absl::Status Userfaultfd::WakeRange(uintptr_t addr, uint64_t bytes) {
  uffdio_range range{addr, bytes};
  if (ioctl(fd_.get(), UFFDIO_WAKE, &range) == 0) return absl::OkStatus();
  return ErrnoStatus(absl::StrCat("UFFDIO_WAKE at 0x", absl::Hex(addr)));
}

absl::Status Userfaultfd::CopyRun(uintptr_t addr, const void* src, uint64_t pages,
                                  bool write_protect) {
  uint64_t done = 0;
  const uint64_t bytes = pages * kPageBytes;
  while (done < bytes) {
    uffdio_copy copy{};
    copy.dst = addr + done;
    copy.src = reinterpret_cast<uintptr_t>(src) + done;
    copy.len = bytes - done;
    copy.mode = write_protect ? UFFDIO_COPY_MODE_WP : 0;
    if (ioctl(fd_.get(), UFFDIO_COPY, &copy) == 0) return absl::OkStatus();
    const int error = errno;
    if (copy.copy > 0) {
      done += copy.copy;  // a partial copy: go on from where it stopped
      continue;
    }
    if (error == EEXIST) {  // present already: wake its waiters and skip it
      RETURN_IF_ERROR(Wake(addr + done));
      done += kPageBytes;
      continue;
    }
    if (error == EAGAIN) continue;
    return ErrnoStatus(absl::StrCat("UFFDIO_COPY at 0x", absl::Hex(addr + done)), error);
  }
  return Wake(addr);  // the last chunk ended in a skipped page: its run was not woken
}

absl::Status Userfaultfd::WriteProtect(uintptr_t addr, uint64_t bytes, bool protect) {
  uffdio_writeprotect wp{};
  wp.range = {addr, bytes};
  wp.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
  if (ioctl(fd_.get(), UFFDIO_WRITEPROTECT, &wp) == 0) return absl::OkStatus();
  return ErrnoStatus(absl::StrCat("UFFDIO_WRITEPROTECT at 0x", absl::Hex(addr)));
}

absl::Status Userfaultfd::Poison(uintptr_t addr) {
  uffdio_poison poison{};
  poison.range = {addr, kPageBytes};
  if (ioctl(fd_.get(), UFFDIO_POISON, &poison) == 0) return absl::OkStatus();
  if (errno == EEXIST) return Wake(addr);  // a page is present: the access will not fault
  return ErrnoStatus(absl::StrCat("UFFDIO_POISON at 0x", absl::Hex(addr)));
}

absl::Status Userfaultfd::Wake(uintptr_t addr) { return WakeRange(addr, kPageBytes); }

absl::Status Userfaultfd::Drop(uintptr_t addr, uint64_t bytes) {
  if (madvise(reinterpret_cast<void*>(addr), bytes, MADV_DONTNEED) == 0) return absl::OkStatus();
  return ErrnoStatus(absl::StrCat("dropping 0x", absl::Hex(addr)));
}

}  // namespace disagg::runtime
