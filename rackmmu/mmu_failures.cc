// Failures at the Rack MMU: a process declared failed is fenced at every memory element and
// its memory held for adoption; a failed compute element fails its processes; a failed
// memory element's regions are reported to their owners and to the owners' groups. The rack
// monitor detects; this computes who is affected, since it owns the maps.
#include <capnp/message.h>

#include <set>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "internal/logging.h"
#include "ipc/wire.h"
#include "mmu.h"

namespace disagg::rackmmu {

absl::Status RackMmu::HandleProcessFailed(ipc::Link& link, uint64_t seq,
                                          proto::ProcessFailed::Reader failed) {
  if (link.id() != monitor_link_) {
    return link.ReplyError(
        seq, absl::PermissionDeniedError("mmu: only the rack monitor declares processes failed"));
  }
  const ProcessRecord* p = memory_.process(failed.getProcessId());
  // Gone already, or the id belongs to another process by now: nothing to do.
  if (p != nullptr && !p->dead && p->pid == failed.getPid()) {
    DeclareFailed(p->id, failed.getReason());
  }
  return seq == 0 ? absl::OkStatus() : link.ReplyOk(seq);
}

void RackMmu::DeclareFailed(uint32_t process_id, const std::string& reason, bool share) {
  ProcessRecord* p = memory_.process(process_id);
  // Once: a send below that fails closes a link, and what that fails may name it again.
  if (p == nullptr || p->dead || !declaring_.insert(process_id).second) return;
  absl::Cleanup done = [this, process_id] { declaring_.erase(process_id); };
  const pid_t pid = p->pid;
  const uint64_t start_time = p->start_time;
  const ProcessRecord copy = *p;                // sends below may close links, and change the map
  const rackmon::FateSpec spec = FateOf(copy);  // a copy: specs may be replaced meanwhile
  // Taken now (its record may be released before the fence holds), read once the fence holds
  // at every memory element: a process that still runs may start a batch until then.
  std::shared_ptr<ipc::WriteDomainView> domain =
      share && spec.model == rackmon::FateModel::kTainted ? TakeWriteDomain(copy) : nullptr;
  // Its peers first, so that they hear of it at once. Whatever they do about it (a steal)
  // reaches the memory elements after the fence: this goes to each of them ahead of anything
  // the Rack MMU asks later, on the same connection. The rest of an application that fails
  // whole is ended with it: its members are not told of each other.
  TellPeers(copy, spec.notify_groups,
            spec.notify_app && (share || spec.model != rackmon::FateModel::kComplete),
            proto::EventKind::PEER_FAILED, 0, 0, copy.element, reason);
  // The fence, so that nothing the process still sends lands after this moment.
  Fence(process_id, pid, start_time, reason, [this, copy, spec, domain, reason] {
    if (domain != nullptr) ShareTaint(copy, spec, TaintedBy(copy, *domain), reason);
  });
  // Its connection is kept, but serves it no more.
  for (auto it = process_by_link_.begin(); it != process_by_link_.end();) {
    if (it->second == process_id) {
      fenced_links_[it->first] = reason;
      process_by_link_.erase(it++);
    } else {
      ++it;
    }
  }
  recently_failed_[process_id] = {pid, copy.element, absl::Now()};
  SendEvent(process_id, copy.incarnation, proto::EventKind::FENCED, process_id, 0, 0, "", reason);
  p = memory_.process(process_id);
  if (p == nullptr || p->dead || p->incarnation != copy.incarnation) return;
  const bool worth_keeping = memory_.MappedBytes(process_id) > 0 || !p->roots.empty();
  const bool fails_with_it =
      spec.model == rackmon::FateModel::kPartial || spec.model == rackmon::FateModel::kComplete;
  if (!worth_keeping || fails_with_it || options_.grace_period <= absl::ZeroDuration()) {
    // Behind the fence on each memory element's connection: no peer reads it from now on.
    const uint64_t bytes = memory_.MappedBytes(process_id);
    ReleaseProcess(process_id);
    LOG(INFO) << "mmu: process " << process_id << " (pid " << pid << ") failed: " << reason
              << (fails_with_it && worth_keeping
                      ? absl::StrCat("; its ", bytes, " bytes fail with it (",
                                     rackmon::FateModelName(spec.model), " fate sharing)")
                      : std::string("; it held nothing to adopt"));
  } else {
    memory_.MarkDead(process_id, absl::Now() + options_.grace_period);
    event_links_.erase(process_id);
    LOG(INFO) << "mmu: process " << process_id << " (pid " << pid << ") failed: " << reason
              << "; its " << memory_.MappedBytes(process_id) << " bytes are held for adoption for "
              << absl::FormatDuration(options_.grace_period);
  }
  if (share) ShareFate(copy, spec, reason);
}

void RackMmu::Fence(uint32_t process_id, pid_t pid, uint64_t start_time, const std::string& reason,
                    std::function<void()> then) {
  const absl::Time started = absl::Now();
  auto batch =
      CallBatch::Make([process_id, started, then = std::move(then)](const absl::Status& result) {
        if (result.ok()) {
          VLOG(1) << "mmu: process " << process_id << " fenced in "
                  << absl::FormatDuration(absl::Now() - started);
        } else {
          // An element that cannot be reached serves nobody; one that refused is logged.
          LOG(WARNING) << "mmu: fencing process " << process_id << ": " << result;
        }
        if (then) then();
      });
  for (const auto& [name, record] : registry_.elements()) {
    if (record.kind != proto::ElementKind::MEMORY || record.link_id == 0) continue;
    batch->Expect();
    absl::Status sent = CallElement(
        name,
        [&](proto::Message::Builder m) {
          auto fence = m.initFence();
          fence.setProcessId(process_id);
          fence.setPid(pid);
          fence.setStartTime(start_time);
          fence.setReason(reason);
        },
        [batch](const absl::StatusOr<proto::Message::Reader>& reply) {
          batch->Answer(reply.status());
        });
    if (!sent.ok()) batch->Answer(sent);
  }
  batch->Seal();
}

void RackMmu::TellPeers(const ProcessRecord& p, bool groups, bool app, proto::EventKind kind,
                        uint64_t vaddr, uint64_t bytes, const std::string& element,
                        const std::string& reason) {
  app = app && !p.app.empty();
  if (!app && (!groups || p.groups.empty())) return;
  // Recipients first: a send that fails closes a link, which may change the map (and `p`).
  std::vector<std::pair<uint32_t, uint64_t>> to;
  for (const auto& [id, q] : memory_.processes()) {
    if (id == p.id || q.dead) continue;
    const bool shares =
        (groups && std::any_of(q.groups.begin(), q.groups.end(),
                               [&](const std::string& g) { return p.groups.contains(g); })) ||
        (app && q.app == p.app);
    if (shares) to.emplace_back(id, q.incarnation);
  }
  const uint32_t about = p.id;
  for (const auto& [id, incarnation] : to) {
    SendEvent(id, incarnation, kind, about, vaddr, bytes, element, reason);
  }
}

absl::Status RackMmu::HandleRelay(ipc::Link& link, uint64_t seq, proto::Relay::Reader relay) {
  constexpr size_t kMaxContacts = 64;
  std::string element;
  for (const auto& [name, record] : registry_.elements()) {
    if (record.link_id == link.id() && record.kind == proto::ElementKind::COMPUTE) element = name;
  }
  auto event = relay.getEvent();
  // The process may be gone from the map already (it held nothing to adopt): its record of
  // failure says where it ran.
  const ProcessRecord* about = memory_.process(event.getProcess());
  std::string about_element;
  pid_t about_pid = 0;
  if (about != nullptr) {
    about_element = about->element;
    about_pid = about->pid;
  }
  if (about == nullptr || about_pid != relay.getPid()) {
    if (auto f = recently_failed_.find(event.getProcess()); f != recently_failed_.end()) {
      about_element = f->second.element;
      about_pid = f->second.pid;
    }
  }
  absl::Status refused;
  if (element.empty()) {
    refused = absl::PermissionDeniedError("mmu: only compute elements relay notices");
  } else if (about_pid != relay.getPid() || about_element != element) {
    refused = absl::PermissionDeniedError(
        absl::StrCat("mmu: process ", event.getProcess(), " does not run on ", element));
  } else if (event.getKind() != proto::EventKind::MEMORY_FAILED &&
             event.getKind() != proto::EventKind::PEER_FAILED) {
    refused = absl::InvalidArgumentError("mmu: only failures are relayed");
  } else if (relay.getTo().size() > kMaxContacts) {
    refused = absl::InvalidArgumentError("mmu: too many emergency contacts");
  }
  if (!refused.ok()) {
    LOG(WARNING) << "mmu: refused a relay from " << link.label() << ": " << refused.message();
    return seq == 0 ? absl::OkStatus() : link.ReplyError(seq, refused);
  }
  // Recipients first: a send that fails closes a link, which may change the map.
  std::vector<std::pair<uint32_t, uint64_t>> to;
  for (uint32_t id : relay.getTo()) {
    const ProcessRecord* q = memory_.process(id);
    if (q != nullptr && !q->dead && id != event.getProcess()) to.emplace_back(id, q->incarnation);
  }
  const std::string what = event.getElement(), why = event.getReason();
  for (const auto& [id, incarnation] : to) {
    SendEvent(id, incarnation, event.getKind(), event.getProcess(), event.getVaddr(),
              event.getBytes(), what, why);
  }
  return seq == 0 ? absl::OkStatus() : link.ReplyOk(seq);
}

absl::Status RackMmu::HandleLifeWord(ipc::Link& link, proto::LifeWord::Reader word) {
  const uint64_t link_id = link.id();
  for (const auto& [name, record] : registry_.elements()) {
    if (record.link_id != link_id) continue;
    if (record.kind != proto::ElementKind::COMPUTE && record.kind != proto::ElementKind::MEMORY) {
      break;  // the rack monitor: watched by its own means
    }
    return lives_.Watch(link_id, link.peer().pidfd.get(), word.getFd(), name,
                        [this, link_id, name = name] {
                          auto it = registry_.elements().find(name);
                          if (it == registry_.elements().end() || it->second.link_id != link_id) {
                            return;  // re-registered by another process meanwhile
                          }
                          (void)registry_.SetHealth(name, proto::Health::FAILED);
                          ElementGone(name, ipc::kLifeWordDied);
                          LOG(INFO) << "mmu: element " << name << " failed: " << ipc::kLifeWordDied;
                        });
  }
  for (const auto& [process_id, event_link] : event_links_) {
    if (event_link != link_id) continue;
    const ProcessRecord* p = memory_.process(process_id);
    if (p == nullptr || p->dead) break;
    return lives_.Watch(link_id, link.peer().pidfd.get(), word.getFd(), link.label(),
                        [this, id = process_id, incarnation = p->incarnation] {
                          const ProcessRecord* q = memory_.process(id);
                          if (q != nullptr && q->incarnation == incarnation)
                            DeclareFailed(id, ipc::kLifeWordDied);
                        });
  }
  return absl::FailedPreconditionError(
      "mmu: a life word from neither an element nor a process's event link");
}

void RackMmu::TellComputeElement(const ProcessRecord& p, proto::EventKind kind, uint64_t vaddr,
                                 uint64_t bytes, const std::string& element,
                                 const std::string& reason) {
  ipc::Link* link = ElementLink(p.element);
  if (link == nullptr) return;
  capnp::MallocMessageBuilder builder;
  auto event = builder.initRoot<proto::Message>().initRackEvent();
  event.setKind(kind);
  event.setProcess(p.id);
  event.setVaddr(vaddr);
  event.setBytes(bytes);
  event.setElement(element);
  event.setReason(reason);
  if (absl::Status s = link->Send(builder); !s.ok()) {
    LOG(WARNING) << "mmu: cannot tell " << p.element << " of process " << p.id << ": " << s;
  }
}

void RackMmu::ComputeFailed(const std::string& name, const std::string& reason) {
  std::vector<uint32_t> on_it;
  for (const auto& [id, p] : memory_.processes()) {
    if (!p.dead && p.element == name) on_it.push_back(id);
  }
  for (uint32_t id : on_it) {
    DeclareFailed(id, absl::StrCat("its compute element ", name, " failed: ", reason));
  }
  if (!on_it.empty()) {
    LOG(INFO) << "mmu: " << name << " failed with " << on_it.size() << " processes; all fenced";
  }
}

void RackMmu::MemoryFailed(const std::string& name, const std::string& reason) {
  if (!failed_memory_.insert(name).second) return;  // told already
  // Every region with pages on the element, once per region.
  struct Hit {
    uint32_t owner;
    uint64_t vaddr;
    uint64_t bytes;
  };
  std::vector<Hit> hits;
  for (const auto& [vaddr, region] : memory_.regions()) {
    for (const ExtentRecord& e : region.extents) {
      if (e.element == name && memory_.Current(e)) {
        hits.push_back({region.owner, region.vaddr, region.bytes});
        break;
      }
    }
  }
  std::set<uint32_t> owners;
  for (const Hit& h : hits) {
    if (memory_.process(h.owner) == nullptr) continue;
    owners.insert(h.owner);
    ReportLostRegion(h.owner, h.vaddr, h.bytes, name, reason);
  }
  LOG(INFO) << "mmu: memory element " << name << " failed: " << hits.size() << " regions of "
            << owners.size() << " processes are lost";
  MemoryFailedFate(owners, name, reason);
}

void RackMmu::ReportLostRegion(uint32_t owner, uint64_t vaddr, uint64_t bytes,
                               const std::string& element, const std::string& reason) {
  const ProcessRecord* p = memory_.process(owner);
  if (p == nullptr) return;
  const ProcessRecord copy = *p;  // sends below may close links, and change the map
  const rackmon::FateSpec& spec = FateOf(copy);
  SendEvent(owner, copy.incarnation, proto::EventKind::MEMORY_FAILED, owner, vaddr, bytes, element,
            reason);
  TellPeers(copy, spec.notify_groups, spec.notify_app, proto::EventKind::MEMORY_FAILED, vaddr,
            bytes, element, reason);
  // Its compute element tells its emergency contacts.
  if (!copy.dead) {
    TellComputeElement(copy, proto::EventKind::MEMORY_FAILED, vaddr, bytes, element, reason);
  }
}

}  // namespace disagg::rackmmu
