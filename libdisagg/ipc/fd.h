// Fd: sole owner of one file descriptor. Move-only; closes on destruction. Not thread-safe.
#ifndef DISAGG_IPC_FD_H_
#define DISAGG_IPC_FD_H_

#include <unistd.h>

#include <utility>

namespace disagg::ipc {

class Fd {
 public:
  Fd() = default;
  // Takes ownership of `fd` (may be -1 for "none").
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership without closing.
  int Release() { return std::exchange(fd_, -1); }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

}  // namespace disagg::ipc

#endif  // DISAGG_IPC_FD_H_
