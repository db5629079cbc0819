// Connection set-up over Unix-domain sockets. The accepting side (a daemon) creates the
// channel and passes its memfd and doorbells to the connecting side with SCM_RIGHTS; both
// sides learn the peer's identity from the kernel (SO_PEERCRED and SO_PEERPIDFD), never from
// what the peer claims. The socket stays open for the connection's lifetime: its hang-up is
// the peer's death signal.
#ifndef DISAGG_IPC_SOCKET_H_
#define DISAGG_IPC_SOCKET_H_

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ipc/channel.h"
#include "ipc/fd.h"

namespace disagg::ipc {

// Who is on the other end of a socket, as the kernel says.
struct PeerIdentity {
  pid_t pid = 0;
  uid_t uid = 0;
  Fd pidfd;  // refers to the peer process itself; stays valid if the pid is reused
};

// One established connection: the socket, the channel, the peer.
struct Connection {
  Fd socket;
  Channel channel;
  PeerIdentity peer;
};

// Checks at start-up that the kernel offers SO_PEERPIDFD and pidfds. FAILED_PRECONDITION
// with a clear message if not.
absl::Status ProbeKernelSupport();

// Binds a listening, non-blocking SOCK_SEQPACKET socket at `path`, replacing a stale socket
// file. FAILED_PRECONDITION if a live listener already answers there.
absl::StatusOr<Fd> ListenUnix(const std::string& path);

// Accepts one pending connection on `listen_fd` and performs the creator side of the
// handshake. UNAVAILABLE if nothing is pending.
absl::StatusOr<Connection> AcceptConnection(int listen_fd, size_t ring_bytes = kDefaultRingBytes,
                                            size_t slot_pages = 0);

// Connects to `path` and performs the attacher side of the handshake within `timeout`.
absl::StatusOr<Connection> DialUnix(const std::string& path,
                                    absl::Duration timeout = absl::Seconds(5));

// Identity of the process on the other end of connected socket `fd`.
absl::StatusOr<PeerIdentity> IdentifyPeer(int fd);

// The peer's start time (clock ticks after boot, /proc/<pid>/stat field 22). With the pid it
// names one process for good, so that two daemons can agree on "the same process" without
// passing file descriptors. Checked against the pidfd: UNAVAILABLE if the peer has exited.
absl::StatusOr<uint64_t> ProcessStartTime(const PeerIdentity& peer);
// The start time of whatever process has `pid` now (unchecked: the pid may be reused at any
// moment). UNAVAILABLE if there is none.
absl::StatusOr<uint64_t> StartTimeOfPid(pid_t pid);

}  // namespace disagg::ipc

namespace disagg {

// The socket path of element `name` in run directory `run_dir`: <run_dir>/<name>.sock.
std::string SocketPath(const std::string& run_dir, const std::string& name);

}  // namespace disagg

#endif  // DISAGG_IPC_SOCKET_H_
