// The Rack MMU's grant and steal (zero-copy moves of memory between processes, at the same
// addresses), trust groups, named roots and the event links that tell processes of moves.
#include <capnp/message.h>

#include "absl/strings/str_cat.h"
#include "internal/logging.h"
#include "ipc/wire.h"
#include "mmu.h"

namespace disagg::rackmmu {
namespace {

constexpr size_t kMaxNameBytes = 255;
constexpr size_t kMaxGroups = 64;
constexpr size_t kMaxRoots = 1024;

absl::Status CheckName(const char* what, const std::string& name) {
  if (name.empty() || name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("a ", what, " name is 1 to ", kMaxNameBytes, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

bool RackMmu::Busy(uint64_t vaddr, uint64_t bytes) const {
  auto it = busy_.upper_bound(vaddr + bytes - 1);
  if (it == busy_.begin()) return false;
  --it;
  // Busy ranges never overlap each other: the one starting last at or before the range's end
  // is the only candidate.
  return it->second.end > vaddr;
}

void RackMmu::Rebind(uint32_t from, uint32_t to, const std::vector<ExtentRecord>& extents,
                     const std::shared_ptr<CallBatch>& batch,
                     const std::shared_ptr<std::vector<bool>>& moved) {
  const ProcessRecord* taker = memory_.process(to);
  CHECK(taker != nullptr);
  const pid_t pid = taker->pid;
  const uint64_t start_time = taker->start_time;
  if (moved) moved->assign(extents.size(), false);
  for (size_t i = 0; i < extents.size(); ++i) {
    const ExtentRecord& e = extents[i];
    // Pages of an earlier incarnation of the element died with it: nothing to rebind.
    if (!memory_.Current(e)) continue;
    batch->Expect();
    absl::Status sent = CallElement(
        e.element,
        [&](proto::Message::Builder m) {
          auto move = m.initMovePages();
          move.setFromProcess(from);
          move.setToProcess(to);
          move.setToPid(pid);
          move.setToStartTime(start_time);
          move.setVpage(e.vpage);
          move.setPages(e.pages);
        },
        [batch, moved, i](const absl::StatusOr<proto::Message::Reader>& reply) {
          if (moved && reply.ok()) (*moved)[i] = true;
          // An element that went away holds nothing of the range any more: not a refusal.
          batch->Answer(absl::IsUnavailable(reply.status()) ? absl::OkStatus() : reply.status());
        });
    if (!sent.ok()) batch->Answer(absl::OkStatus());  // the element is gone, as above
  }
}

absl::Status RackMmu::StartMove(uint32_t from, uint32_t to, uint64_t vaddr, uint64_t bytes,
                                std::function<void(const absl::Status&)> done) {
  if (bytes != 0 && vaddr + bytes > vaddr && Busy(vaddr, bytes)) {
    return absl::AbortedError(absl::StrCat("[0x", absl::Hex(vaddr), ", +", bytes,
                                           ") is being mapped, granted or stolen right now"));
  }
  absl::StatusOr<std::vector<ExtentRecord>> moved = memory_.Move(from, to, vaddr, bytes);
  if (!moved.ok()) return moved.status();
  const uint64_t token = next_busy_token_++;
  busy_[vaddr] = {vaddr + bytes, token};
  auto rebound = std::make_shared<std::vector<bool>>();
  auto batch = CallBatch::Make([this, from, to, vaddr, bytes, token, extents = *moved, rebound,
                                done = std::move(done)](const absl::Status& result) {
    auto finish = [this, vaddr, token, done](const absl::Status& status) {
      auto it = busy_.find(vaddr);
      if (it != busy_.end() && it->second.token == token) busy_.erase(it);
      done(status);
    };
    if (result.ok()) {
      finish(result);
      return;
    }
    // An element refused (its table disagrees with the map): undo the move everywhere, and
    // answer once the elements acknowledged the undoing.
    LOG(ERROR) << "mmu: moving [0x" << std::hex << vaddr << std::dec << ", +" << bytes
               << ") from process " << from << " to " << to << " failed: " << result
               << "; undoing it";
    std::vector<ExtentRecord> back, stale;  // rebound to `to`, still bound to `from`
    for (size_t i = 0; i < extents.size(); ++i) {
      ((*rebound)[i] ? back : stale).push_back(extents[i]);
    }
    auto undone = CallBatch::Make([finish, result](const absl::Status&) { finish(result); });
    const bool giver_known = memory_.process(from) != nullptr;
    if (memory_.UndoMove(from, to, vaddr, bytes) && giver_known) {
      Rebind(to, from, back, undone, nullptr);
    } else {
      // The giver (or the taker) left meanwhile and the map released the range: so do the
      // elements, whoever they bind it to now.
      Release(to, back);
      Release(from, stale);
    }
    undone->Seal();
  });
  Rebind(from, to, *moved, batch, rebound);
  batch->Seal();
  return absl::OkStatus();
}

absl::Status RackMmu::HandleGrant(ipc::Link& link, uint64_t seq,
                                  proto::GrantRequest::Reader request) {
  const uint32_t giver = ProcessOf(link);
  if (giver == 0) {
    return link.ReplyError(seq, absl::FailedPreconditionError("mmu: join the rack before Grant"));
  }
  const uint32_t to = request.getTo();
  const uint64_t vaddr = request.getVaddr(), bytes = request.getBytes();
  const ProcessRecord* taker = memory_.process(to);
  const uint64_t incarnation = taker != nullptr ? taker->incarnation : 0;
  absl::Status started = StartMove(
      giver, to, vaddr, bytes,
      [this, link_id = link.id(), seq, giver, to, incarnation, vaddr,
       bytes](const absl::Status& result) {
        auto app = links_.find(link_id);
        if (result.ok()) {
          LOG(INFO) << "mmu: process " << giver << " granted [0x" << std::hex << vaddr << std::dec
                    << ", +" << bytes << ") to process " << to;
          SendEvent(to, incarnation, proto::EventKind::GRANTED, giver, vaddr, bytes);
        }
        if (app == links_.end()) return;
        (void)(result.ok() ? app->second->ReplyOk(seq) : app->second->ReplyError(seq, result));
      });
  if (!started.ok()) {
    return link.ReplyError(
        seq, absl::Status(started.code(), absl::StrCat("mmu: grant refused: ", started.message())));
  }
  return absl::OkStatus();
}

absl::Status RackMmu::HandleSteal(ipc::Link& link, uint64_t seq,
                                  proto::StealRequest::Reader request) {
  const uint32_t thief = ProcessOf(link);
  if (thief == 0) {
    return link.ReplyError(seq, absl::FailedPreconditionError("mmu: join the rack before Steal"));
  }
  const uint32_t from = request.getFrom();
  const uint64_t vaddr = request.getVaddr(), bytes = request.getBytes();
  const ProcessRecord* victim = memory_.process(from);
  if (victim == nullptr) {
    return link.ReplyError(seq, absl::NotFoundError(absl::StrCat("mmu: steal refused: no process ",
                                                                 from, " in the rack")));
  }
  if (from == thief) {
    return link.ReplyError(
        seq, absl::InvalidArgumentError("mmu: steal refused: a process cannot steal from itself"));
  }
  const ProcessRecord* self = memory_.process(thief);
  bool shared = false;
  for (const std::string& group : self->groups) shared |= victim->groups.contains(group);
  if (!shared) {
    return link.ReplyError(seq, absl::PermissionDeniedError(
                                    absl::StrCat("mmu: steal refused: processes ", thief, " and ",
                                                 from, " share no trust group (JoinGroup)")));
  }
  const uint64_t incarnation = victim->incarnation;
  absl::Status started =
      StartMove(from, thief, vaddr, bytes,
                [this, link_id = link.id(), seq, from, thief, incarnation, vaddr,
                 bytes](const absl::Status& result) {
                  if (result.ok()) {
                    LOG(INFO) << "mmu: process " << thief << " stole [0x" << std::hex << vaddr
                              << std::dec << ", +" << bytes << ") from process " << from;
                    SendEvent(from, incarnation, proto::EventKind::REVOKED, thief, vaddr, bytes);
                  }
                  auto app = links_.find(link_id);
                  if (app == links_.end()) return;
                  if (!result.ok()) {
                    (void)app->second->ReplyError(seq, result);
                    return;
                  }
                  Region range{vaddr, bytes, thief, {}};
                  for (auto it = memory_.regions().find(vaddr);
                       it != memory_.regions().end() && it->first < vaddr + bytes; ++it) {
                    range.extents.insert(range.extents.end(), it->second.extents.begin(),
                                         it->second.extents.end());
                  }
                  (void)SendMapped(*app->second, seq, range);
                });
  if (!started.ok()) {
    return link.ReplyError(
        seq, absl::Status(started.code(), absl::StrCat("mmu: steal refused: ", started.message())));
  }
  return absl::OkStatus();
}

void RackMmu::SendEvent(uint32_t process_id, uint64_t incarnation, proto::EventKind kind,
                        uint32_t other, uint64_t vaddr, uint64_t bytes, const std::string& element,
                        const std::string& reason) {
  const ProcessRecord* p = memory_.process(process_id);
  if (p == nullptr || p->incarnation != incarnation) return;  // gone; the id may be another's
  auto it = event_links_.find(process_id);
  if (it == event_links_.end()) return;  // dead, or never subscribed
  auto link = links_.find(it->second);
  if (link == links_.end()) return;
  capnp::MallocMessageBuilder builder;
  auto event = builder.initRoot<proto::Message>().initRackEvent();
  event.setKind(kind);
  event.setProcess(other);
  event.setVaddr(vaddr);
  event.setBytes(bytes);
  event.setElement(element);
  event.setReason(reason);
  if (kind == proto::EventKind::GRANTED) {
    std::vector<const ExtentRecord*> extents;
    for (auto r = memory_.regions().find(vaddr);
         r != memory_.regions().end() && r->first < vaddr + bytes; ++r) {
      for (const ExtentRecord& e : r->second.extents) extents.push_back(&e);
    }
    auto list = event.initExtents(extents.size());
    for (size_t i = 0; i < extents.size(); ++i) {
      list[i].setVpage(extents[i]->vpage);
      list[i].setPages(extents[i]->pages);
      list[i].setElement(extents[i]->element);
      list[i].setPoolPage(extents[i]->pool_page);
    }
  }
  if (absl::Status s = link->second->Send(builder); !s.ok()) {
    LOG(WARNING) << "mmu: cannot tell process " << process_id << " of an event: " << s;
  }
}

absl::Status RackMmu::HandleSubscribe(ipc::Link& link, uint64_t seq,
                                      proto::Subscribe::Reader request) {
  const uint32_t process_id = request.getProcessId();
  if (ProcessOf(link) != 0) {
    return link.ReplyError(seq, absl::FailedPreconditionError(
                                    "mmu: the event link is a connection of its own, not the "
                                    "one the process joined on"));
  }
  const ProcessRecord* p = memory_.process(process_id);
  absl::StatusOr<uint64_t> start_time = ipc::ProcessStartTime(link.peer());
  // Only the process itself, as the kernel identifies it, may take its events.
  if (p == nullptr || p->dead || !start_time.ok() || p->pid != link.peer().pid ||
      p->start_time != *start_time) {
    return link.ReplyError(seq, absl::PermissionDeniedError(absl::StrCat(
                                    "mmu: pid ", link.peer().pid, " is not process ", process_id)));
  }
  event_links_[process_id] = link.id();
  link.set_label(absl::StrCat("process ", process_id, "'s event link"));
  return link.ReplyOk(seq);
}

absl::Status RackMmu::HandleJoinGroup(ipc::Link& link, uint64_t seq,
                                      proto::JoinGroup::Reader request) {
  const uint32_t process_id = ProcessOf(link);
  if (process_id == 0) {
    return link.ReplyError(seq,
                           absl::FailedPreconditionError("mmu: join the rack before JoinGroup"));
  }
  const std::string name = request.getName();
  if (absl::Status s = CheckName("group", name); !s.ok()) return link.ReplyError(seq, s);
  ProcessRecord* p = memory_.process(process_id);
  if (p->groups.size() >= kMaxGroups && !p->groups.contains(name)) {
    return link.ReplyError(seq, absl::ResourceExhaustedError(absl::StrCat(
                                    "mmu: a process joins at most ", kMaxGroups, " groups")));
  }
  p->groups.insert(name);
  return link.ReplyOk(seq);
}

absl::Status RackMmu::HandlePublish(ipc::Link& link, uint64_t seq, proto::Publish::Reader request) {
  const uint32_t process_id = ProcessOf(link);
  if (process_id == 0) {
    return link.ReplyError(seq, absl::FailedPreconditionError("mmu: join the rack before Publish"));
  }
  const std::string name = request.getName();
  if (absl::Status s = CheckName("root", name); !s.ok()) return link.ReplyError(seq, s);
  const uint64_t vaddr = request.getVaddr();
  absl::StatusOr<Region> at = memory_.Translate(process_id, vaddr >> kPageShift);
  if (!at.ok()) {
    return link.ReplyError(
        seq, absl::InvalidArgumentError(absl::StrCat(
                 "mmu: a root must point into memory the process owns: ", at.status().message())));
  }
  ProcessRecord* p = memory_.process(process_id);
  if (p->roots.size() >= kMaxRoots && !p->roots.contains(name)) {
    return link.ReplyError(seq, absl::ResourceExhaustedError(absl::StrCat(
                                    "mmu: a process publishes at most ", kMaxRoots, " roots")));
  }
  p->roots[name] = vaddr;
  return link.ReplyOk(seq);
}

absl::Status RackMmu::HandleLookup(ipc::Link& link, uint64_t seq, proto::Lookup::Reader request) {
  const std::string name = request.getName();
  const ProcessRecord* p = memory_.process(request.getOwner());
  if (p == nullptr) {
    return link.ReplyError(seq, absl::NotFoundError(absl::StrCat(
                                    "mmu: no process ", request.getOwner(), " in the rack")));
  }
  auto root = p->roots.find(name);
  if (root == p->roots.end()) {
    return link.ReplyError(seq, absl::NotFoundError(absl::StrCat(
                                    "mmu: process ", p->id, " published no root '", name, "'")));
  }
  ipc::SmallMessage reply;
  reply.Init(seq).initRoot().setVaddr(root->second);
  return link.Send(reply.builder());
}

}  // namespace disagg::rackmmu
