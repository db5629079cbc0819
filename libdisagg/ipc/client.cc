#include "ipc/client.h"

#include <optional>

#include "internal/status_macros.h"
#include "ipc/wire.h"

namespace disagg::ipc {

absl::StatusOr<Client> Client::Connect(const std::string& path, absl::Duration timeout) {
  ASSIGN_OR_RETURN(Connection conn, DialUnix(path, timeout));
  return Client(std::move(conn));
}

absl::Status Client::Call(capnp::MessageBuilder& request, proto::Message::Builder root,
                          absl::FunctionRef<absl::Status(proto::Message::Reader)> on_reply,
                          absl::Duration timeout) {
  ASSIGN_OR_RETURN(uint64_t seq, Send(request, root));
  return Await(seq, on_reply, timeout);
}

absl::StatusOr<uint64_t> Client::Send(capnp::MessageBuilder& request,
                                      proto::Message::Builder root) {
  if (fabric_ != nullptr) {
    RETURN_IF_ERROR(fabric_->Pass(local_, remote_, absl::Now() + fabric_timeout_));
  }
  const uint64_t seq = next_seq_++;
  root.setSeq(seq);
  RETURN_IF_ERROR(conn_.channel.Send(request));
  return seq;
}

absl::Status Client::Await(uint64_t seq,
                           absl::FunctionRef<absl::Status(proto::Message::Reader)> on_reply,
                           absl::Duration timeout) {
  // A reply often arrives within a microsecond or two: look for it before reading the clock,
  // which costs more than a look at the ring.
  if (spin_ > absl::ZeroDuration()) {
    for (int i = 0; i < 256 && !conn_.channel.HasData(); ++i) __builtin_ia32_pause();
  }
  std::optional<absl::Time> deadline;
  while (true) {
    if (!conn_.channel.HasData()) {
      if (!deadline) deadline = absl::Now() + timeout;
      RETURN_IF_ERROR(conn_.channel.WaitReadable(*deadline, spin_, conn_.socket.get()));
    }
    ASSIGN_OR_RETURN(bool got, conn_.channel.Receive(words_));
    if (!got) continue;
    bool matched = false;
    RETURN_IF_ERROR(DecodeMessage(words_, [&](proto::Message::Reader reply) -> absl::Status {
      if (reply.getSeq() != seq) return absl::OkStatus();
      matched = true;
      if (fabric_ != nullptr) {
        // The reply crosses the fabric too: held while partitioned, delayed as injected.
        RETURN_IF_ERROR(fabric_->Pass(local_, remote_, deadline.value_or(absl::Now() + timeout)));
      }
      if (reply.isError()) return ErrorToStatus(reply.getError());
      return on_reply(reply);
    }));
    if (matched) return absl::OkStatus();
  }
}

}  // namespace disagg::ipc
