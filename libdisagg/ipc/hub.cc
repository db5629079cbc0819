#include "ipc/hub.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "internal/logging.h"
#include "internal/status_macros.h"
#include "ipc/wire.h"

namespace disagg::ipc {
namespace {

// Messages taken from one peer per turn, so that one busy peer cannot starve the others.
constexpr int kBatchPerPeer = 64;

}  // namespace

Link::Link(Hub* hub, uint64_t id, Connection conn)
    : hub_(hub), id_(id), conn_(std::move(conn)), label_(absl::StrCat("pid ", conn_.peer.pid)) {}

absl::Status Link::Send(capnp::MessageBuilder& message) {
  if (closed_) return absl::UnavailableError(absl::StrCat(label_, " is disconnected"));
  absl::Status status = conn_.channel.Send(message);
  if (!status.ok() && !absl::IsInvalidArgument(status)) {
    hub_->Close(*this, status);
  }
  return status;
}

absl::Status Link::ReplyError(uint64_t seq, const absl::Status& error) {
  SmallMessage message;
  SetError(message.Init(seq).initError(), error);
  return Send(message.builder());
}

absl::Status Link::ReplyOk(uint64_t seq) {
  SmallMessage message;
  message.Init(seq).setOk();
  return Send(message.builder());
}

absl::Status Link::ReplyEcho(proto::Message::Reader request) {
  SmallMessage message;
  message.Init(request.getSeq()).setEcho(request.getEcho());
  return Send(message.builder());
}

absl::Status Link::ReplyUnserved(const std::string& who, proto::Message::Reader request) {
  return ReplyError(request.getSeq(), absl::UnimplementedError(absl::StrCat(
                                          who, ": message kind ", static_cast<int>(request.which()),
                                          " is not served here")));
}

Hub::Hub(EventLoop& loop, Handler& handler, std::string name)
    : loop_(loop), handler_(handler), name_(std::move(name)) {
  poller_ = loop_.AddPoller(
      {[this] { return Poll(); }, [this] { return PrepareToSleep(); }, [this] { Awake(); }});
}

Hub::~Hub() {
  loop_.Unwatch(poller_);
  if (listen_watch_ != 0) loop_.Unwatch(listen_watch_);
  for (auto& [id, link] : links_) {
    if (!link->closed_) {
      loop_.Unwatch(link->socket_watch_);
      loop_.Unwatch(link->doorbell_watch_);
    }
  }
  if (!listen_path_.empty()) ::unlink(listen_path_.c_str());
}

absl::Status Hub::Listen(const std::string& path) {
  ASSIGN_OR_RETURN(listen_fd_, ListenUnix(path));
  listen_path_ = path;
  listen_watch_ = loop_.WatchFd(listen_fd_.get(), POLLIN, [this](int) { AcceptAll(); });
  return absl::OkStatus();
}

void Hub::AcceptAll() {
  while (true) {
    absl::StatusOr<Connection> conn =
        AcceptConnection(listen_fd_.get(), kDefaultRingBytes, slot_pages_);
    if (!conn.ok()) {
      if (!absl::IsUnavailable(conn.status())) {
        LOG(WARNING) << name_ << ": refused a connection: " << conn.status();
        continue;
      }
      return;
    }
    Adopt(*std::move(conn));
  }
}

absl::StatusOr<Link*> Hub::Dial(const std::string& path) {
  ASSIGN_OR_RETURN(Connection conn, DialUnix(path));
  return Adopt(std::move(conn));
}

Link* Hub::Adopt(Connection conn) {
  const uint64_t id = next_link_id_++;
  auto owned = std::unique_ptr<Link>(new Link(this, id, std::move(conn)));
  Link* link = owned.get();
  links_[id] = std::move(owned);
  link->socket_watch_ = loop_.WatchFd(link->conn_.socket.get(), POLLIN | POLLRDHUP,
                                      [this, link](int revents) { OnSocketEvent(*link, revents); });
  link->doorbell_watch_ = loop_.WatchFd(link->conn_.channel.doorbell_fd(), POLLIN,
                                        [link](int) { link->conn_.channel.DrainDoorbell(); });
  VLOG(1) << name_ << ": connected " << link->label();
  handler_.OnOpen(*link);
  return link;
}

void Hub::OnSocketEvent(Link& link, int revents) {
  if (link.closed_) return;
  if (revents < 0) {
    Close(link, absl::InternalError(absl::StrCat("poll socket: ", strerror(-revents))));
    return;
  }
  char byte;
  const ssize_t n = ::recv(link.conn_.socket.get(), &byte, 1, MSG_DONTWAIT);
  if (n == 0 || (revents & (POLLRDHUP | POLLHUP | POLLERR))) {
    // Drain what the peer managed to send before it went.
    Poll();
    if (!link.closed_) Close(link, absl::UnavailableError("peer hung up"));
  } else if (n > 0) {
    Close(link, absl::InvalidArgumentError("peer sent stray data on the handshake socket"));
  }
}

void Hub::Close(Link& link, const absl::Status& why) {
  if (link.closed_) return;
  link.closed_ = true;
  closed_pending_ = true;
  if (absl::IsUnavailable(why)) {
    VLOG(1) << name_ << ": " << link.label() << " disconnected: " << why.message();
  } else {
    LOG(WARNING) << name_ << ": cutting off " << link.label() << ": " << why;
  }
  loop_.Unwatch(link.socket_watch_);
  loop_.Unwatch(link.doorbell_watch_);
  handler_.OnClose(link, why);
  // The Link itself stays in links_ until the next Poll: callers up the stack may hold it.
}

std::vector<Link*> Hub::Links() {
  std::vector<Link*> out;
  for (auto& [id, link] : links_) {
    if (!link->closed_) out.push_back(link.get());
  }
  return out;
}

bool Hub::Poll() {
  if (closed_pending_) {
    std::erase_if(links_, [](const auto& entry) { return entry.second->closed_; });
    closed_pending_ = false;
  }
  bool any = false;
  // Handlers may dial (insert) or close links; std::map keeps the iterators valid for both.
  for (auto& [id, owned] : links_) {
    Link& link = *owned;
    for (int i = 0; i < kBatchPerPeer && !link.closed_; ++i) {
      absl::StatusOr<bool> got = link.conn_.channel.Receive(words_);
      if (!got.ok()) {
        Close(link, got.status());
        break;
      }
      if (!*got) break;
      any = true;
      absl::Status status = DecodeMessage(
          words_, [&](proto::Message::Reader m) { return handler_.OnMessage(link, m); });
      if (!status.ok()) Close(link, status);
    }
  }
  return any;
}

bool Hub::PrepareToSleep() {
  bool pending = false;
  for (auto& [id, link] : links_) {
    if (!link->closed_) pending |= link->conn_.channel.PrepareToSleep();
  }
  return pending;
}

void Hub::Awake() {
  for (auto& [id, link] : links_) link->conn_.channel.Awake();
}

}  // namespace disagg::ipc
