#include "element.h"

#include <capnp/message.h>

#include "absl/strings/str_cat.h"
#include "internal/daemon.h"
#include "internal/logging.h"
#include "internal/status_macros.h"
#include "ipc/wire.h"

namespace disagg {

Element::Element(ipc::EventLoop& loop, ElementOptions options)
    : loop_(loop), options_(std::move(options)), hub_(loop, *this, options_.name) {
  hub_.set_slot_pages(options_.slot_pages);
}

absl::Status Element::Start() {
  RETURN_IF_ERROR(hub_.Listen(SocketPath(options_.run_dir, options_.name)));
  ASSIGN_OR_RETURN(mmu_, hub_.Dial(SocketPath(options_.run_dir, "mmu")));
  mmu_->set_label("mmu");
  RETURN_IF_ERROR(RegisterWith(*mmu_));
  ASSIGN_OR_RETURN(mon_, hub_.Dial(SocketPath(options_.run_dir, "mon")));
  mon_->set_label("mon");
  RETURN_IF_ERROR(RegisterWith(*mon_));
  // The life words, one for the Rack MMU and one for the rack monitor: both see this element
  // die as soon as the kernel releases them, before its memory (its pool, its processes'
  // caches) is torn down. Held by a thread of their own (LifeWordHolder).
  absl::StatusOr<std::unique_ptr<ipc::LifeWordHolder>> lives = ipc::LifeWordHolder::Start(2);
  if (!lives.ok()) {
    LOG(WARNING) << options_.name << ": no life words (" << lives.status()
                 << "): its death is seen at its hang-up";
    return absl::OkStatus();
  }
  lives_ = std::move(*lives);
  size_t i = 0;
  for (ipc::Link* to : {mmu_, mon_}) {
    ipc::SmallMessage told;
    told.Init(0).initLifeWord().setFd(lives_->fd(i++));
    RETURN_IF_ERROR(to->Send(told.builder()));
  }
  return absl::OkStatus();
}

void Element::Stopped() { lives_.reset(); }  // a clean stop: released

absl::Status Element::RegisterWith(ipc::Link& link) {
  capnp::MallocMessageBuilder builder;
  auto message = builder.initRoot<proto::Message>();
  message.setSeq(1);
  auto reg = message.initRegister();
  reg.setName(options_.name);
  reg.setKind(options_.kind);
  reg.setCapacityBytes(options_.capacity_bytes);
  return link.Send(builder);
}

absl::Status Element::SendToMonitor(capnp::MessageBuilder& message) {
  if (mon_ == nullptr) return absl::UnavailableError("the rack monitor is gone");
  return mon_->Send(message);
}

absl::Status Element::SendToMmu(capnp::MessageBuilder& message) {
  if (mmu_ == nullptr) return absl::UnavailableError("the Rack MMU is gone");
  return mmu_->Send(message);
}

void Element::Fail(absl::Status why) {
  if (status_.ok()) status_ = std::move(why);
  loop_.Stop();
}

absl::Status Element::OnMessage(ipc::Link& link, proto::Message::Reader message) {
  const uint64_t seq = message.getSeq();
  switch (message.which()) {
    case proto::Message::PING: {
      loop().Housekeeping();
      capnp::MallocMessageBuilder builder;
      auto pong = builder.initRoot<proto::Message>();
      pong.setSeq(seq);
      auto body = pong.initPong();
      body.setSentNanos(message.getPing().getSentNanos());
      body.setUsedBytes(options_.used_bytes());
      return link.Send(builder);
    }
    case proto::Message::REGISTERED:
      LOG(INFO) << options_.name << ": registered with " << link.label();
      return absl::OkStatus();
    case proto::Message::OK:
      return absl::OkStatus();
    case proto::Message::ERROR:
      if (&link == mmu_ || &link == mon_) {
        Fail(absl::FailedPreconditionError(
            absl::StrCat(link.label(), " refused ", options_.name, ": ",
                         ipc::ErrorToStatus(message.getError()).message())));
      }
      return absl::OkStatus();
    case proto::Message::ECHO:
      return link.ReplyEcho(message);
    default:
      return HandleOther(link, message);
  }
}

absl::Status Element::HandleOther(ipc::Link& link, proto::Message::Reader message) {
  return link.ReplyUnserved(options_.name, message);
}

void Element::OnClose(ipc::Link& link, const absl::Status& why) {
  LinkClosed(link);
  if (&link == mon_) {
    mon_ = nullptr;
    Fail(absl::UnavailableError(absl::StrCat("lost the rack monitor: ", why.message())));
  } else if (&link == mmu_) {
    mmu_ = nullptr;
    LOG(ERROR) << options_.name << ": lost the Rack MMU: " << why.message();
  }
}

absl::Status RunElement(ipc::EventLoop& loop, Element& element, const std::string& what) {
  RETURN_IF_ERROR(element.Start());
  LOG(INFO) << element.name() << ": " << what;
  absl::Status ran = loop.Run();
  element.Stopped();
  RETURN_IF_ERROR(ran);
  LOG(INFO) << element.name() << ": stopped";
  return element.status();
}

}  // namespace disagg
