#include "compute_element.h"

#include <capnp/message.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "internal/logging.h"
#include "ipc/wire.h"

namespace disagg::procmon {
namespace {
constexpr uint64_t kPageBytes = 4096;

// What a program launched here finds in its environment to join the rack by.
std::vector<std::string> ProgramEnvironment(const ElementOptions& options) {
  char resolved[PATH_MAX];
  const std::string rack =
      ::realpath(options.run_dir.c_str(), resolved) != nullptr ? resolved : options.run_dir;
  return {"DISAGG_RACK=" + rack, "DISAGG_ELEMENT=" + options.name};
}

}  // namespace

ComputeElement::ComputeElement(ipc::EventLoop& loop, ElementOptions options, HeartbeatOptions watch)
    : Element(loop,
              [&] {
                options.used_bytes = [this] { return CachedBytes(); };
                return std::move(options);
              }()),
      watch_(watch),
      timer_(loop, watch.period,
             [this](bool ping, absl::Duration away, bool judge) { Beat(ping, away, judge); }),
      quotas_(this->options().capacity_bytes / kPageBytes),
      lives_(loop, this->options().name),
      launcher_(loop, this->options().name, ProgramEnvironment(this->options())) {}

ComputeElement::~ComputeElement() = default;

void ComputeElement::Beat(bool ping, absl::Duration away, bool judge) {
  ipc::SmallMessage message;
  message.Init(0).initPing();
  const absl::Time now = LivenessNow();
  absl::Time first_deadline = absl::InfiniteFuture();
  // A Send that fails closes the link at once, which erases its process: look each up anew.
  std::vector<uint64_t> links;
  for (const auto& [id, p] : processes_) links.push_back(id);
  for (uint64_t link : links) {
    auto it = processes_.find(link);
    if (it == processes_.end()) continue;
    Process& p = it->second;
    if (!p.attached || p.failed || p.left) continue;
    if (p.beat.Turn(now, away, judge) == Heartbeat::State::kFailed) {
      p.failed = true;
      const std::string reason = absl::StrCat(p.beat.Why(now), " on ", options().name);
      ReportDown(p, reason, /*clean=*/false);
      LOG(WARNING) << options().name << ": " << p.link->label() << " failed: " << reason;
      continue;
    }
    first_deadline = std::min(first_deadline, p.beat.deadline());
    // One ping in flight at a time; a full ring cuts the link: LinkClosed reports it.
    if (ping && p.beat.Ping()) (void)p.link->Send(message.builder());
  }
  timer_.WakeAt(first_deadline);
}

absl::Status ComputeElement::HandleContacts(ipc::Link& link,
                                            proto::EmergencyContacts::Reader contacts) {
  constexpr size_t kMaxContacts = 64;
  auto it = processes_.find(link.id());
  if (it == processes_.end()) {
    return absl::FailedPreconditionError("emergency contacts before attaching");
  }
  if (contacts.getContacts().size() > kMaxContacts) {
    return absl::InvalidArgumentError(
        absl::StrCat("more than ", kMaxContacts, " emergency contacts"));
  }
  it->second.contacts.clear();
  for (uint32_t c : contacts.getContacts()) it->second.contacts.push_back(c);
  LOG(INFO) << options().name << ": " << link.label() << " has " << it->second.contacts.size()
            << " emergency contacts";
  return absl::OkStatus();
}

absl::Status ComputeElement::HandleLifeWord(ipc::Link& link, proto::LifeWord::Reader word) {
  if (!processes_.contains(link.id())) {
    return absl::FailedPreconditionError("a life word before attaching");
  }
  const uint64_t link_id = link.id();
  return lives_.Watch(link_id, link.peer().pidfd.get(), word.getFd(), link.label(),
                      [this, link_id] { Died(link_id); });
}

void ComputeElement::Died(uint64_t link_id) {
  auto it = processes_.find(link_id);
  if (it == processes_.end()) return;
  Process& p = it->second;
  if (p.left || p.failed) return;
  // Dead: told now, not once its memory is gone and its connection hangs up.
  p.failed = true;
  ReportDown(p, ipc::kLifeWordDied, /*clean=*/false);
  LOG(INFO) << options().name << ": " << p.link->label() << " " << ipc::kLifeWordDied;
}

absl::Status ComputeElement::HandleMmuEvent(proto::RackEvent::Reader event) {
  for (const auto& [id, p] : processes_) {
    if (p.process_id == event.getProcess()) TellContacts(p, event);
  }
  return absl::OkStatus();
}

void ComputeElement::TellContacts(const Process& p, proto::RackEvent::Reader event) {
  if (p.contacts.empty()) return;
  capnp::MallocMessageBuilder builder;
  auto relay = builder.initRoot<proto::Message>().initRelay();
  auto to = relay.initTo(p.contacts.size());
  for (size_t i = 0; i < p.contacts.size(); ++i) to.set(i, p.contacts[i]);
  relay.setEvent(event);
  relay.setPid(p.pid);
  if (absl::Status s = SendToMmu(builder); !s.ok()) {
    LOG(WARNING) << options().name << ": cannot tell the emergency contacts of " << p.link->label()
                 << ": " << s;
  }
}

void ComputeElement::ReportDown(const Process& p, const std::string& reason, bool clean) {
  if (!clean) {
    capnp::MallocMessageBuilder builder;
    auto event = builder.initRoot<proto::RackEvent>();
    event.setKind(proto::EventKind::PEER_FAILED);
    event.setProcess(p.process_id);
    event.setElement(options().name);
    event.setReason(reason);
    TellContacts(p, event.asReader());
  }
  capnp::MallocMessageBuilder builder;
  auto down = builder.initRoot<proto::Message>().initProcessDown();
  down.setProcessId(p.process_id);
  down.setReason(reason);
  down.setClean(clean);
  down.setPid(p.pid);
  if (absl::Status s = SendToMonitor(builder); !s.ok()) {
    LOG(WARNING) << options().name << ": cannot tell the rack monitor that " << p.link->label()
                 << " is gone: " << s;
  }
}

uint64_t ComputeElement::CachedBytes() const {
  uint64_t total = 0;
  for (const auto& [id, p] : processes_) total += p.cached_bytes;
  return total;
}

absl::Status ComputeElement::HandleOther(ipc::Link& link, proto::Message::Reader message) {
  const uint64_t seq = message.getSeq();
  switch (message.which()) {
    case proto::Message::ATTACH:
      return HandleAttach(link, seq, message.getAttach());
    case proto::Message::CACHE_USAGE:
      return HandleUsage(link, seq, message.getCacheUsage());
    case proto::Message::PONG: {
      auto it = processes_.find(link.id());
      if (it != processes_.end() && !it->second.failed) {
        it->second.beat.Answered(LivenessNow());
      }
      return absl::OkStatus();
    }
    case proto::Message::EMERGENCY_CONTACTS:
      return HandleContacts(link, message.getEmergencyContacts());
    case proto::Message::LIFE_WORD:
      return HandleLifeWord(link, message.getLifeWord());
    case proto::Message::RACK_EVENT:
      if (!IsRackMmu(link)) {
        return absl::PermissionDeniedError("only the Rack MMU tells of rack events");
      }
      return HandleMmuEvent(message.getRackEvent());
    case proto::Message::LEAVE: {
      auto it = processes_.find(link.id());
      if (it != processes_.end()) it->second.left = true;
      return absl::OkStatus();
    }
    case proto::Message::STATUS_REQUEST:
      return HandleStatus(link, seq);
    case proto::Message::LAUNCH:
      return launcher_.HandleLaunch(link, seq, message.getLaunch());
    case proto::Message::SIGNAL_PROGRAM:
      return launcher_.HandleSignal(link, seq, message.getSignalProgram());
    default:
      return Element::HandleOther(link, message);
  }
}

absl::Status ComputeElement::HandleAttach(ipc::Link& link, uint64_t seq,
                                          proto::Attach::Reader attach) {
  const std::string& me = options().name;
  if (processes_.count(link.id()) != 0) {
    return link.ReplyError(
        seq, absl::FailedPreconditionError(absl::StrCat(me, ": this process is attached already")));
  }
  if (!quotas_.Admits()) {
    const absl::Status refusal = absl::ResourceExhaustedError(absl::StrCat(
        me, ": its cache budget of ", quotas_.budget_pages() * kPageBytes, " bytes is shared by ",
        processes_.size(), " processes already; another would get less than ",
        kMinSharePages * kPageBytes, " bytes"));
    LOG(WARNING) << refusal.message();
    return link.ReplyError(seq, refusal);
  }
  Process& p = processes_[link.id()];
  quotas_.Add(link.id());
  p.beat = Heartbeat(watch_, LivenessNow());
  timer_.Start();
  p.link = &link;
  p.process_id = attach.getProcessId();
  p.name = attach.getName();
  p.app = attach.getApp();
  p.pid = link.peer().pid;
  link.set_label(absl::StrCat("process ", p.process_id, " (", p.name, ", pid ", p.pid, ")"));
  LOG(INFO) << me << ": " << link.label() << " attached";
  {
    capnp::MallocMessageBuilder builder;
    auto up = builder.initRoot<proto::Message>().initProcessUp();
    up.setProcessId(p.process_id);
    up.setName(p.name);
    up.setPid(p.pid);
    up.setApp(p.app);
    if (absl::Status s = SendToMonitor(builder); !s.ok()) {
      LOG(WARNING) << me << ": cannot tell the rack monitor of " << link.label() << ": " << s;
    }
  }
  // Its first quota (the answer) is what is free now; it grows as the others shrink.
  Rebalance();
  p.attached = true;
  SendQuota(p, quotas_.granted(link.id()), seq);
  return absl::OkStatus();
}

absl::Status ComputeElement::HandleUsage(ipc::Link& link, uint64_t seq,
                                         proto::CacheUsage::Reader usage) {
  auto it = processes_.find(link.id());
  if (it == processes_.end()) {
    return link.ReplyError(seq, absl::FailedPreconditionError(
                                    absl::StrCat(options().name, ": attach before reporting")));
  }
  Process& p = it->second;
  p.cached_bytes = usage.getCachedBytes();
  if (seq != 0 && seq == p.shrink_seq) {
    const uint64_t target = quotas_.shrink_target(link.id());
    if (p.cached_bytes > target * kPageBytes) {
      LOG(WARNING) << options().name << ": " << link.label() << " reports " << p.cached_bytes
                   << " cached bytes over its quota of " << target * kPageBytes;
      return absl::OkStatus();  // it stays counted at its old quota
    }
    quotas_.Shrunk(link.id());
    p.shrink_seq = 0;
    Rebalance();
  }
  return absl::OkStatus();
}

void ComputeElement::SendQuota(Process& p, uint64_t pages, uint64_t seq) {
  ipc::SmallMessage message;
  message.Init(seq).initCacheQuota().setBytes(pages * kPageBytes);
  // A send that fails closes the link at once, which erases `p`; the Link itself lives on
  // until the hub's next poll.
  ipc::Link* link = p.link;
  absl::Status status = link->Send(message.builder());
  if (!status.ok()) LOG(WARNING) << options().name << ": " << link->label() << ": " << status;
}

void ComputeElement::Rebalance() {
  // A send that fails closes its link, whose LinkClosed rebalances again: that round runs
  // here, after this one, so that no process is told a quota older than its current one.
  if (rebalancing_) {
    rebalance_again_ = true;
    return;
  }
  rebalancing_ = true;
  do {
    rebalance_again_ = false;
    for (const QuotaSplit::Order& order : quotas_.Rebalance()) {
      auto it = processes_.find(order.key);  // closed by a failed send meanwhile
      if (it == processes_.end()) continue;
      Process& p = it->second;
      if (order.shrink) {
        p.shrink_seq = next_seq_++;
        SendQuota(p, order.pages, p.shrink_seq);
      } else if (p.attached) {
        SendQuota(p, order.pages, 0);  // a process attaching now has it in the answer
      }
    }
  } while (rebalance_again_);
  rebalancing_ = false;
}

void ComputeElement::LinkClosed(ipc::Link& link) {
  launcher_.LinkClosed(link);
  auto it = processes_.find(link.id());
  if (it == processes_.end()) return;
  LOG(INFO) << options().name << ": " << link.label() << " left";
  const Process& p = it->second;
  lives_.Forget(link.id());
  if (p.attached && !p.failed) {
    ReportDown(p,
               p.left ? "it left the rack"
                      : absl::StrCat("it died (its connection to ", options().name, " closed)"),
               /*clean=*/p.left);
  }
  processes_.erase(it);
  if (processes_.empty()) timer_.Stop();  // an element without processes sleeps
  quotas_.Remove(link.id());
  Rebalance();
}

absl::Status ComputeElement::HandleStatus(ipc::Link& link, uint64_t seq) {
  capnp::MallocMessageBuilder builder;
  auto reply = builder.initRoot<proto::Message>();
  reply.setSeq(seq);
  auto status = reply.initStatus();
  auto rows = status.initProcesses(processes_.size());
  size_t i = 0;
  for (const auto& [id, p] : processes_) {
    auto row = rows[i++];
    row.setProcessId(p.process_id);
    row.setName(p.name);
    row.setPid(p.pid);
    row.setElement(options().name);
    row.setCachedBytes(p.cached_bytes);
    row.setCacheQuotaBytes(quotas_.granted(id) * kPageBytes);
  }
  return link.Send(builder);
}

}  // namespace disagg::procmon
