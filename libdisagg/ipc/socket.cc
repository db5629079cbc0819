#include "ipc/socket.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "internal/status_macros.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77  // Linux 6.5; the installed headers predate it
#endif

namespace disagg::ipc {
namespace {

constexpr uint64_t kHelloMagic = 0x6469736167674853ull;  // "disaggHS"
constexpr uint32_t kHelloVersion = 1;
constexpr int kChannelFdCount = 3;

struct Hello {
  uint64_t magic;
  uint32_t version;
  uint32_t reserved;
};

absl::StatusOr<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "socket path '", path, "' is empty or longer than ", sizeof(addr.sun_path) - 1, " bytes"));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

absl::Status SendHello(int sock, const ChannelFds& fds) {
  Hello hello{kHelloMagic, kHelloVersion, 0};
  iovec iov{&hello, sizeof(hello)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kChannelFdCount)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int) * kChannelFdCount);
  const int raw[kChannelFdCount] = {fds.memfd.get(), fds.doorbell_to_creator.get(),
                                    fds.doorbell_to_attacher.get()};
  std::memcpy(CMSG_DATA(cmsg), raw, sizeof(raw));
  if (::sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) != sizeof(hello)) {
    return ErrnoStatus("send handshake");
  }
  return absl::OkStatus();
}

absl::StatusOr<ChannelFds> ReceiveHello(int sock, absl::Duration timeout) {
  pollfd pfd{sock, POLLIN, 0};
  const int rc = ::poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  if (rc < 0) return ErrnoStatus("poll handshake");
  if (rc == 0) return absl::DeadlineExceededError("no handshake from the daemon in time");
  Hello hello{};
  iovec iov{&hello, sizeof(hello)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kChannelFdCount)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  const ssize_t n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  if (n < 0) return ErrnoStatus("receive handshake");
  // Take ownership of whatever descriptors arrived before judging the message.
  ChannelFds fds;
  int count = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const int k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (int i = 0; i < k; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      Fd owned(fd);
      if (count == 0) fds.memfd = std::move(owned);
      if (count == 1) fds.doorbell_to_creator = std::move(owned);
      if (count == 2) fds.doorbell_to_attacher = std::move(owned);
      ++count;
    }
  }
  if (n == 0) return absl::UnavailableError("the daemon closed the connection during handshake");
  if (n != sizeof(hello) || hello.magic != kHelloMagic || hello.version != kHelloVersion ||
      count != kChannelFdCount || (msg.msg_flags & MSG_CTRUNC)) {
    return absl::InvalidArgumentError("malformed handshake from the daemon");
  }
  return fds;
}

}  // namespace

absl::Status ProbeKernelSupport() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return ErrnoStatus("socketpair");
  }
  Fd a(sv[0]), b(sv[1]);
  auto peer = IdentifyPeer(a.get());
  if (!peer.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this kernel cannot identify socket peers by pidfd (SO_PEERPIDFD needs Linux 6.5): ",
        peer.status().message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<PeerIdentity> IdentifyPeer(int fd) {
  PeerIdentity id;
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return ErrnoStatus("SO_PEERCRED");
  }
  int pidfd = -1;
  len = sizeof(pidfd);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) != 0) {
    return ErrnoStatus("SO_PEERPIDFD");
  }
  id.pid = cred.pid;
  id.uid = cred.uid;
  id.pidfd = Fd(pidfd);
  return id;
}

absl::StatusOr<uint64_t> StartTimeOfPid(pid_t pid) {
  const std::string path = absl::StrCat("/proc/", pid, "/stat");
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return absl::UnavailableError(absl::StrCat("process ", pid, " is gone"));
  char buf[1024];
  const ssize_t n = ::read(fd.get(), buf, sizeof(buf) - 1);
  if (n <= 0) return absl::UnavailableError(absl::StrCat("process ", pid, " is gone"));
  buf[n] = 0;
  // Fields after the command name (which may hold spaces) start after the last ')'.
  const char* p = std::strrchr(buf, ')');
  uint64_t start_time = 0;
  int field = 2;
  for (; p != nullptr && *p != 0 && field < 22; ++p) {
    if (*p == ' ') ++field;
  }
  if (p == nullptr || field != 22 || std::sscanf(p, "%lu", &start_time) != 1) {
    return absl::InternalError(absl::StrCat("cannot parse ", path));
  }
  return start_time;
}

absl::StatusOr<uint64_t> ProcessStartTime(const PeerIdentity& peer) {
  ASSIGN_OR_RETURN(const uint64_t start_time, StartTimeOfPid(peer.pid));
  // If the pidfd's process is still alive, /proc/<pid> was that process and not a successor.
  if (::syscall(SYS_pidfd_send_signal, peer.pidfd.get(), 0, nullptr, 0) != 0) {
    return absl::UnavailableError(absl::StrCat("process ", peer.pid, " has exited"));
  }
  return start_time;
}

absl::StatusOr<Fd> ListenUnix(const std::string& path) {
  ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(path));
  Fd sock(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!sock.valid()) return ErrnoStatus("socket");
  if (::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno != EADDRINUSE) return ErrnoStatus(absl::StrCat("bind ", path));
    // A socket file exists: refuse if someone still listens there, else replace it.
    Fd probe(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " is already served by a live daemon"));
    }
    ::unlink(path.c_str());
    if (::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      return ErrnoStatus(absl::StrCat("bind ", path));
    }
  }
  if (::listen(sock.get(), 64) != 0) return ErrnoStatus(absl::StrCat("listen ", path));
  return sock;
}

absl::StatusOr<Connection> AcceptConnection(int listen_fd, size_t ring_bytes, size_t slot_pages) {
  Fd sock(::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  if (!sock.valid()) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return absl::UnavailableError("no connection");
    return ErrnoStatus("accept");
  }
  ASSIGN_OR_RETURN(PeerIdentity peer, IdentifyPeer(sock.get()));
  ASSIGN_OR_RETURN(Channel channel, Channel::Create(ring_bytes, slot_pages));
  ASSIGN_OR_RETURN(ChannelFds fds, channel.DupForPeer());
  RETURN_IF_ERROR(SendHello(sock.get(), fds));
  return Connection{std::move(sock), std::move(channel), std::move(peer)};
}

absl::StatusOr<Connection> DialUnix(const std::string& path, absl::Duration timeout) {
  ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(path));
  Fd sock(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!sock.valid()) return ErrnoStatus("socket");
  if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoStatus(absl::StrCat("connect ", path));
  }
  ASSIGN_OR_RETURN(PeerIdentity peer, IdentifyPeer(sock.get()));
  ASSIGN_OR_RETURN(ChannelFds fds, ReceiveHello(sock.get(), timeout));
  ASSIGN_OR_RETURN(Channel channel, Channel::Attach(std::move(fds)));
  return Connection{std::move(sock), std::move(channel), std::move(peer)};
}

}  // namespace disagg::ipc

namespace disagg {

std::string SocketPath(const std::string& run_dir, const std::string& name) {
  return absl::StrCat(run_dir, "/", name, ".sock");
}

}  // namespace disagg
