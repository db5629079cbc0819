#include "mmu.h"

#include <capnp/message.h>

#include "absl/strings/str_cat.h"
#include "internal/logging.h"
#include "ipc/wire.h"

namespace disagg::rackmmu {

RackMmu::RackMmu(ipc::EventLoop& loop, MmuOptions options)
    : loop_(loop), options_(options), memory_(options.layout) {
  // Dead processes' memory is freed within a tenth of a second of its grace period's end.
  loop_.AddTimer(absl::Milliseconds(100), [this] { ReleaseExpired(); });
}

absl::Status RackMmu::OnMessage(ipc::Link& link, proto::Message::Reader message) {
  const uint64_t seq = message.getSeq();
  if (auto fenced = fenced_links_.find(link.id()); fenced != fenced_links_.end()) {
    // A process declared failed that still runs: told so, whatever it asks.
    if (message.isPing() || message.isOk() || message.isError()) return absl::OkStatus();
    return link.ReplyError(
        seq, absl::FailedPreconditionError(absl::StrCat(
                 "mmu: this process was declared failed and is fenced: ", fenced->second)));
  }
  switch (message.which()) {
    case proto::Message::REGISTER:
      return HandleRegister(link, seq, message.getRegister());
    case proto::Message::HEALTH_CHANGE:
      return HandleHealthChange(link, seq, message.getHealthChange());
    case proto::Message::PROCESS_FAILED:
      return HandleProcessFailed(link, seq, message.getProcessFailed());
    case proto::Message::RELAY:
      return HandleRelay(link, seq, message.getRelay());
    case proto::Message::LIFE_WORD:
      return HandleLifeWord(link, message.getLifeWord());
    case proto::Message::JOIN:
      return HandleJoin(link, seq, message.getJoin());
    case proto::Message::MAP:
      return HandleMap(link, seq, message.getMap());
    case proto::Message::UNMAP:
      return HandleUnmap(link, seq, message.getUnmap());
    case proto::Message::TRANSLATE:
      return HandleTranslate(link, seq, message.getTranslate().getVpage());
    case proto::Message::LEAVE:
      return HandleLeave(link, seq);
    case proto::Message::GRANT:
      return HandleGrant(link, seq, message.getGrant());
    case proto::Message::STEAL:
      return HandleSteal(link, seq, message.getSteal());
    case proto::Message::JOIN_GROUP:
      return HandleJoinGroup(link, seq, message.getJoinGroup());
    case proto::Message::PUBLISH:
      return HandlePublish(link, seq, message.getPublish());
    case proto::Message::LOOKUP:
      return HandleLookup(link, seq, message.getLookup());
    case proto::Message::SUBSCRIBE:
      return HandleSubscribe(link, seq, message.getSubscribe());
    case proto::Message::APP_FATE:
      return HandleAppFate(link, seq, message.getAppFate());
    case proto::Message::WRITE_DOMAIN:
      return HandleWriteDomain(link, seq, message.getWriteDomain());
    case proto::Message::CHECK_REQUEST:
      return HandleCheck(link, seq);
    case proto::Message::OK:
    case proto::Message::ERROR:
    case proto::Message::PAGE_TABLE:
      HandleReply(link, message);
      return absl::OkStatus();
    case proto::Message::STATUS_REQUEST:
      return HandleStatus(link, seq);
    case proto::Message::PING: {
      loop_.Housekeeping();
      capnp::MallocMessageBuilder builder;
      auto pong = builder.initRoot<proto::Message>();
      pong.setSeq(seq);
      pong.initPong().setSentNanos(message.getPing().getSentNanos());
      return link.Send(builder);
    }
    case proto::Message::ECHO:
      return link.ReplyEcho(message);
    default:
      return link.ReplyUnserved("mmu", message);
  }
}

void RackMmu::HandleReply(ipc::Link& link, proto::Message::Reader message) {
  absl::StatusOr<proto::Message::Reader> reply = message;
  if (message.isError()) reply = ipc::ErrorToStatus(message.getError());
  if (!calls_.Complete(link.id(), message.getSeq(), reply)) {
    LOG(WARNING) << "mmu: " << link.label() << " answered request " << message.getSeq()
                 << " that it was not asked: " << reply.status();
  }
}

absl::Status RackMmu::HandleRegister(ipc::Link& link, uint64_t seq,
                                     proto::Register::Reader request) {
  const std::string name = request.getName();
  absl::StatusOr<uint32_t> id = registry_.Register(name, request.getKind(), link.peer().pid,
                                                   request.getCapacityBytes(), link.id());
  if (!id.ok()) {
    LOG(WARNING) << "mmu: refused registration from " << link.label() << ": " << id.status();
    return link.ReplyError(seq, id.status());
  }
  link.set_label(name);
  if (request.getKind() == proto::ElementKind::RACKMON) monitor_link_ = link.id();
  if (request.getKind() == proto::ElementKind::MEMORY) {
    memory_.AddElement(name, request.getCapacityBytes());
    failed_memory_.erase(name);
  }
  LOG(INFO) << "mmu: registered " << name << " (" << ipc::KindName(request.getKind()) << ", pid "
            << link.peer().pid << ", capacity " << request.getCapacityBytes() << " bytes) as #"
            << *id;
  capnp::MallocMessageBuilder builder;
  auto reply = builder.initRoot<proto::Message>();
  reply.setSeq(seq);
  reply.initRegistered().setElementId(*id);
  return link.Send(builder);
}

absl::Status RackMmu::HandleHealthChange(ipc::Link& link, uint64_t seq,
                                         proto::HealthChange::Reader change) {
  if (link.id() != monitor_link_) {
    return link.ReplyError(
        seq, absl::PermissionDeniedError("mmu: only the rack monitor reports element health"));
  }
  const std::string name = change.getName();
  absl::Status status = registry_.SetHealth(name, change.getHealth());
  memory_.SetUsable(name, change.getHealth() != proto::Health::FAILED);
  if (status.ok()) {
    LOG(INFO) << "mmu: " << name << " is " << ipc::HealthName(change.getHealth()) << ": "
              << change.getReason().cStr();
    if (change.getHealth() == proto::Health::FAILED) {
      const proto::ElementKind kind = registry_.elements().at(name).kind;
      if (kind == proto::ElementKind::COMPUTE) ComputeFailed(name, change.getReason());
      if (kind == proto::ElementKind::MEMORY) MemoryFailed(name, change.getReason());
    }
  }
  return status.ok() ? link.ReplyOk(seq) : link.ReplyError(seq, status);
}

absl::Status RackMmu::HandleStatus(ipc::Link& link, uint64_t seq) {
  capnp::MallocMessageBuilder builder;
  auto reply = builder.initRoot<proto::Message>();
  reply.setSeq(seq);
  auto status = reply.initStatus();
  const auto& elements = registry_.elements();
  auto rows = status.initElements(elements.size());
  size_t i = 0;
  for (const auto& [name, record] : elements) {
    auto row = rows[i++];
    row.setName(name);
    row.setKind(record.kind);
    row.setPid(record.pid);
    row.setHealth(record.health);
    row.setCapacityBytes(record.capacity_bytes);
    row.setLastHeartbeatAgeNanos(-1);
  }
  const auto& processes = memory_.processes();
  auto process_rows = status.initProcesses(processes.size());
  status.setGracePeriodNanos(absl::ToInt64Nanoseconds(options_.grace_period));
  const absl::Time now = absl::Now();
  i = 0;
  for (const auto& [id, record] : processes) {
    auto row = process_rows[i++];
    row.setProcessId(id);
    row.setName(record.name);
    row.setPid(record.pid);
    row.setElement(record.element);
    row.setMappedBytes(memory_.MappedBytes(id));
    row.setDead(record.dead);
    row.setApp(record.app);
    row.setFate(rackmon::ModelToProto(FateOf(record).model));
    row.setReleaseInNanos(record.dead ? absl::ToInt64Nanoseconds(record.release_at - now) : 0);
    auto groups = row.initGroups(record.groups.size());
    size_t g = 0;
    for (const std::string& group : record.groups) groups.set(g++, group);
  }
  return link.Send(builder);
}

void RackMmu::OnClose(ipc::Link& link, const absl::Status& why) {
  links_.erase(link.id());
  lives_.Forget(link.id());
  fenced_links_.erase(link.id());
  if (link.id() == monitor_link_) monitor_link_ = 0;
  for (auto it = event_links_.begin(); it != event_links_.end(); ++it) {
    if (it->second == link.id()) {
      event_links_.erase(it);
      break;
    }
  }
  ProcessLeft(link.id());
  calls_.FailLink(link.id(), absl::UnavailableError(absl::StrCat(link.label(), " is gone")));
  const std::string name = registry_.Disconnected(link.id());
  if (!name.empty()) {
    LOG(INFO) << "mmu: element " << name << " disconnected: " << why.message();
    ElementGone(name, "it hung up");
  }
}

}  // namespace disagg::rackmmu
