// Hub: a daemon's set of connections on its event loop. It accepts peers on a listening
// socket (and dials out), drains every peer's ring, decodes each message and hands it to the
// daemon's Handler, and cuts off any peer that breaks the protocol (corrupt ring, malformed
// message, stray socket data, a ring it never drains) with a logged reason, while every other
// peer is served on.
//
// Thread-safety: single-threaded, on the loop's thread.
// Lifetimes: the Hub must outlive nothing it hands out: a Link& is valid until the Handler's
// OnClose for it returns. The EventLoop and Handler must outlive the Hub.
#ifndef DISAGG_IPC_HUB_H_
#define DISAGG_IPC_HUB_H_

#include <capnp/message.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ipc/event_loop.h"
#include "ipc/socket.h"
#include "proto/rack.capnp.h"

namespace disagg::ipc {

class Hub;

// One peer connection owned by a Hub.
class Link {
 public:
  uint64_t id() const { return id_; }
  const PeerIdentity& peer() const { return conn_.peer; }
  // How the peer appears in logs: "pid 123" until the daemon names it.
  const std::string& label() const { return label_; }
  void set_label(std::string label) { label_ = std::move(label); }
  bool closed() const { return closed_; }
  // The channel's page slots (none unless the Hub was given some, see set_slot_pages).
  uint8_t* slot(size_t index) const { return conn_.channel.slot(index); }
  size_t slot_pages() const { return conn_.channel.slot_pages(); }

  // Sends `message` to the peer. A peer whose ring is full or corrupt is cut off (the error
  // is returned too); INVALID_ARGUMENT (message too large) leaves the link open.
  absl::Status Send(capnp::MessageBuilder& message);
  // Replies to request `seq` with an Error carrying `error`, or with `ok`.
  absl::Status ReplyError(uint64_t seq, const absl::Status& error);
  absl::Status ReplyOk(uint64_t seq);
  // Answers an Echo request with the same bytes (liveness probes, benchmarks).
  absl::Status ReplyEcho(proto::Message::Reader request);
  // Answers a request the daemon `who` does not serve. The link stays open: an unknown
  // request is the peer's mistake, not a protocol break.
  absl::Status ReplyUnserved(const std::string& who, proto::Message::Reader request);

 private:
  friend class Hub;
  Link(Hub* hub, uint64_t id, Connection conn);

  Hub* hub_;
  uint64_t id_;
  Connection conn_;
  std::string label_;
  bool closed_ = false;
  EventLoop::WatchId socket_watch_ = 0;
  EventLoop::WatchId doorbell_watch_ = 0;
};

class Hub {
 public:
  class Handler {
   public:
    virtual ~Handler() = default;
    // A new peer connected (accepted or dialed).
    virtual void OnOpen(Link& link) {}
    // One message from `link`. A non-OK status cuts the link off with that reason.
    virtual absl::Status OnMessage(Link& link, proto::Message::Reader message) = 0;
    // `link` is gone; called exactly once per link.
    virtual void OnClose(Link& link, const absl::Status& why) {}
  };

  // `name` is the daemon's element name, for logs.
  Hub(EventLoop& loop, Handler& handler, std::string name);
  ~Hub();
  Hub(const Hub&) = delete;
  Hub& operator=(const Hub&) = delete;

  // Channels of peers accepted from now on carry `pages` page slots (ipc/channel.h).
  void set_slot_pages(size_t pages) { slot_pages_ = pages; }
  // Accepts peers on a socket at `path` from now on.
  absl::Status Listen(const std::string& path);
  // Connects to the daemon listening at `path`; the link is served like an accepted one.
  absl::StatusOr<Link*> Dial(const std::string& path);
  // Cuts `link` off: logs `why`, calls OnClose, frees the link on the next turn.
  void Close(Link& link, const absl::Status& why);
  // Open links (not closed).
  std::vector<Link*> Links();

 private:
  Link* Adopt(Connection conn);
  void AcceptAll();
  void OnSocketEvent(Link& link, int revents);
  bool Poll();
  bool PrepareToSleep();
  void Awake();

  EventLoop& loop_;
  Handler& handler_;
  std::string name_;
  Fd listen_fd_;
  std::string listen_path_;
  EventLoop::WatchId listen_watch_ = 0;
  EventLoop::WatchId poller_ = 0;
  uint64_t next_link_id_ = 1;
  size_t slot_pages_ = 0;
  // Closed links stay here until the next Poll. std::map: insertion keeps iterators valid.
  std::map<uint64_t, std::unique_ptr<Link>> links_;
  bool closed_pending_ = false;
  std::vector<uint64_t> words_;  // receive buffer, reused
};

}  // namespace disagg::ipc

#endif  // DISAGG_IPC_HUB_H_
