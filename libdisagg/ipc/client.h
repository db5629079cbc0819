// Client: a blocking request/reply connection to a rack daemon, for programs without an event
// loop (rackctl, tests, benchmarks). Waits spin briefly, then sleep on the doorbell.
//
// Thread-safety: one thread at a time. Move-only resource.
#ifndef DISAGG_IPC_CLIENT_H_
#define DISAGG_IPC_CLIENT_H_

#include <capnp/message.h>

#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ipc/fabric.h"
#include "ipc/socket.h"
#include "proto/rack.capnp.h"

namespace disagg::ipc {

class Client {
 public:
  // Connects to the daemon socket at `path`.
  static absl::StatusOr<Client> Connect(const std::string& path,
                                        absl::Duration timeout = absl::Seconds(5));

  // Sends `request` (its seq is set here) and waits up to `timeout` for the reply with the
  // same seq, which is passed to `on_reply`. A reply carrying an Error becomes that status.
  // Messages with another seq are skipped. UNAVAILABLE if the daemon hangs up,
  // DEADLINE_EXCEEDED if it does not answer in time.
  absl::Status Call(capnp::MessageBuilder& request, proto::Message::Builder root,
                    absl::FunctionRef<absl::Status(proto::Message::Reader)> on_reply,
                    absl::Duration timeout = absl::Seconds(5));

  // Pipelining: Send sends `request` with a fresh seq and returns that seq without waiting;
  // Await waits for the reply to `seq` as Call does. Replies to other seqs arriving first
  // are skipped, so await replies in the order the requests were sent.
  absl::StatusOr<uint64_t> Send(capnp::MessageBuilder& request, proto::Message::Builder root);
  absl::Status Await(uint64_t seq, absl::FunctionRef<absl::Status(proto::Message::Reader)> on_reply,
                     absl::Duration timeout = absl::Seconds(5));

  // How long to spin before sleeping while waiting for a reply.
  void set_spin(absl::Duration spin) { spin_ = spin; }
  // From now on each request and each reply passes `fabric`'s gate for the channel between
  // `local` and `remote` (ipc/fabric.h): held while partitioned (a Send at most `timeout`,
  // then UNAVAILABLE), delayed as injected.
  void set_fabric(std::shared_ptr<const Fabric> fabric, std::string local, std::string remote,
                  absl::Duration timeout) {
    fabric_ = std::move(fabric);
    local_ = std::move(local);
    remote_ = std::move(remote);
    fabric_timeout_ = timeout;
  }
  Connection& connection() { return conn_; }

 private:
  explicit Client(Connection conn) : conn_(std::move(conn)) {}

  Connection conn_;
  uint64_t next_seq_ = 1;
  absl::Duration spin_ = absl::Microseconds(50);
  std::vector<uint64_t> words_;
  std::shared_ptr<const Fabric> fabric_;  // null: no gate
  std::string local_, remote_;
  absl::Duration fabric_timeout_;
};

}  // namespace disagg::ipc

#endif  // DISAGG_IPC_CLIENT_H_
