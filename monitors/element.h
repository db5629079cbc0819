// Element: what every compute and memory element daemon does to be part of the rack. It
// registers with the Rack MMU and with the rack monitor, answers heartbeats (reporting its
// use), and serves its own socket for the rack's clients. Losing the rack monitor means the
// element was fenced (or the rack is gone): the element stops.
//
// Single-threaded, on the element's loop. The loop must outlive the Element.
#ifndef DISAGG_MONITORS_ELEMENT_H_
#define DISAGG_MONITORS_ELEMENT_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ipc/event_loop.h"
#include "ipc/hub.h"
#include "ipc/life_word.h"

namespace disagg {

struct ElementOptions {
  std::string run_dir;
  std::string name;  // "cpu0", "mem1", ...
  proto::ElementKind kind = proto::ElementKind::COMPUTE;
  uint64_t capacity_bytes = 0;
  // The element's current use of its capacity, reported with every heartbeat.
  std::function<uint64_t()> used_bytes = [] { return uint64_t{0}; };
  // Page slots in the channel of every peer that connects (ipc/channel.h).
  size_t slot_pages = 0;
};

class Element : public ipc::Hub::Handler {
 public:
  Element(ipc::EventLoop& loop, ElementOptions options);

  // Listens at <run_dir>/<name>.sock, registers with the Rack MMU and the rack monitor and
  // hands each a life word. The
  // registrations' answers arrive on the loop; a refusal stops the loop (see status()).
  absl::Status Start();
  // The loop ended: releases the life words (a clean stop).
  void Stopped();

  const std::string& name() const { return options_.name; }
  // Why the element stopped on its own (OK when stopped by a signal).
  const absl::Status& status() const { return status_; }

  absl::Status OnMessage(ipc::Link& link, proto::Message::Reader message) override;
  void OnClose(ipc::Link& link, const absl::Status& why) override;

 protected:
  // The messages a kind of element serves beyond the common ones. The default answers
  // UNIMPLEMENTED. A non-OK return cuts the link off.
  virtual absl::Status HandleOther(ipc::Link& link, proto::Message::Reader message);
  // `link` is gone (called for every link, before the element's own bookkeeping).
  virtual void LinkClosed(ipc::Link& link) {}
  bool IsRackMmu(const ipc::Link& link) const { return &link == mmu_; }
  // Sends `message` to the rack monitor; UNAVAILABLE once it is gone.
  absl::Status SendToMonitor(capnp::MessageBuilder& message);
  // Sends `message` to the Rack MMU; UNAVAILABLE once it is gone.
  absl::Status SendToMmu(capnp::MessageBuilder& message);
  ipc::EventLoop& loop() { return loop_; }
  const ElementOptions& options() const { return options_; }

 private:
  absl::Status RegisterWith(ipc::Link& link);
  void Fail(absl::Status why);

  ipc::EventLoop& loop_;
  ElementOptions options_;
  ipc::Hub hub_;
  ipc::Link* mmu_ = nullptr;
  ipc::Link* mon_ = nullptr;
  std::unique_ptr<ipc::LifeWordHolder> lives_;
  absl::Status status_;
};

// Runs `element`, built on `loop`: starts it, runs the loop until a stop signal or the
// element's own failure, and returns why it stopped. `what` describes it for the log.
absl::Status RunElement(ipc::EventLoop& loop, Element& element, const std::string& what);

}  // namespace disagg

#endif  // DISAGG_MONITORS_ELEMENT_H_
