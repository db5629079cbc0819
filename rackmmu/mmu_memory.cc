// The Rack MMU's remote-memory requests: Join, Map, Unmap, and the programming of the memory
// elements' page tables that Map and Unmap entail.
#include <capnp/message.h>

#include "absl/strings/str_cat.h"
#include "internal/logging.h"
#include "ipc/wire.h"
#include "mmu.h"

namespace disagg::rackmmu {

ipc::Link* RackMmu::ElementLink(const std::string& name) {
  auto it = registry_.elements().find(name);
  if (it == registry_.elements().end() || it->second.link_id == 0) return nullptr;
  auto link = links_.find(it->second.link_id);
  return link == links_.end() ? nullptr : link->second;
}

uint32_t RackMmu::ProcessOf(const ipc::Link& link) const {
  auto it = process_by_link_.find(link.id());
  return it == process_by_link_.end() ? 0 : it->second;
}

absl::Status RackMmu::HandleJoin(ipc::Link& link, uint64_t seq, proto::Join::Reader request) {
  if (ProcessOf(link) != 0) {
    return link.ReplyError(seq, absl::FailedPreconditionError("mmu: this process already joined"));
  }
  absl::StatusOr<uint64_t> start_time = ipc::ProcessStartTime(link.peer());
  if (!start_time.ok()) return link.ReplyError(seq, start_time.status());
  absl::StatusOr<ProcessRecord*> p = memory_.Join(request.getName(), link.peer().pid, *start_time);
  if (!p.ok()) return link.ReplyError(seq, p.status());
  const std::string app = request.getApp();
  if (!app.empty() && !rackmon::ValidAppName(app)) {
    (void)memory_.Leave((*p)->id);
    return link.ReplyError(
        seq, absl::InvalidArgumentError(absl::StrCat("mmu: '", app,
                                                     "' is no application name (1-64 letters, "
                                                     "digits, '.', '_' or '-')")));
  }
  (*p)->element = request.getElement();
  (*p)->app = app;
  process_by_link_[link.id()] = (*p)->id;
  link.set_label(absl::StrCat("process ", (*p)->id, " (", request.getName().cStr(), ", pid ",
                              link.peer().pid, ")"));
  LOG(INFO) << "mmu: " << link.label() << " joined; window 0x" << std::hex << (*p)->window_base
            << std::dec;
  ipc::SmallMessage reply;
  auto joined = reply.Init(seq).initJoined();
  joined.setProcessId((*p)->id);
  joined.setWindowBase((*p)->window_base);
  joined.setWindowBytes(memory_.layout().window_bytes());
  joined.setRangeBase(memory_.layout().base);
  joined.setRangeBytes(memory_.layout().range_bytes());
  return link.Send(reply.builder());
}

absl::Status RackMmu::CallElement(const std::string& element,
                                  const std::function<void(proto::Message::Builder)>& fill,
                                  PendingCalls::Callback callback) {
  ipc::Link* link = ElementLink(element);
  if (link == nullptr) {
    return absl::UnavailableError(absl::StrCat("memory element ", element, " is gone"));
  }
  const uint64_t link_id = link->id();  // `link` may be gone once a failed send closed it
  const uint64_t seq = calls_.Add(link_id, std::move(callback));
  ipc::SmallMessage message;
  fill(message.Init(seq));
  if (absl::Status sent = link->Send(message.builder()); !sent.ok()) {
    // A send that fails closes the link, which may have answered the call already: the
    // callback then knows, and must not be told twice.
    if (!calls_.Drop(link_id, seq)) return absl::OkStatus();
    return absl::UnavailableError(
        absl::StrCat("memory element ", element, " cannot be reached: ", sent.message()));
  }
  return absl::OkStatus();
}

absl::Status RackMmu::HandleMap(ipc::Link& link, uint64_t seq, proto::MapRequest::Reader request) {
  const uint32_t process_id = ProcessOf(link);
  if (process_id == 0) {
    return link.ReplyError(seq, absl::FailedPreconditionError("mmu: join the rack before Map"));
  }
  absl::StatusOr<const Region*> region =
      memory_.Map(process_id, request.getBytes(), request.getPlacement());
  if (!region.ok()) return link.ReplyError(seq, region.status());
  const ProcessRecord* p = memory_.process(process_id);
  const uint64_t vaddr = (*region)->vaddr;
  const uint64_t token = next_busy_token_++;
  busy_[vaddr] = {vaddr + (*region)->bytes, token};
  auto batch =
      CallBatch::Make([this, link_id = link.id(), seq, process_id, incarnation = p->incarnation,
                       vaddr, token](const absl::Status& result) {
        FinishMap(link_id, seq, process_id, incarnation, vaddr, token, result);
      });
  for (const ExtentRecord& e : (*region)->extents) {
    batch->Expect();
    absl::Status sent = CallElement(
        e.element,
        [&](proto::Message::Builder m) {
          auto program = m.initProgramPages();
          program.setProcessId(process_id);
          program.setPid(p->pid);
          program.setStartTime(p->start_time);
          program.setVpage(e.vpage);
          program.setPages(e.pages);
          program.setPoolPage(e.pool_page);
        },
        [batch](const absl::StatusOr<proto::Message::Reader>& reply) {
          batch->Answer(reply.status());
        });
    if (!sent.ok()) batch->Answer(sent);
  }
  batch->Seal();
  return absl::OkStatus();
}

void RackMmu::ElementGone(const std::string& name, const std::string& reason) {
  memory_.SetUsable(name, false);
  auto it = registry_.elements().find(name);
  if (it == registry_.elements().end()) return;
  // Its death or hang-up is as sure a sign as the rack monitor's word, and comes first.
  if (it->second.kind == proto::ElementKind::MEMORY) MemoryFailed(name, reason);
  if (it->second.kind == proto::ElementKind::COMPUTE) ComputeFailed(name, reason);
}

void RackMmu::FinishMap(uint64_t link_id, uint64_t seq, uint32_t process_id, uint64_t incarnation,
                        uint64_t vaddr, uint64_t token, const absl::Status& result) {
  if (auto busy = busy_.find(vaddr); busy != busy_.end() && busy->second.token == token) {
    busy_.erase(busy);
  }
  auto app = links_.find(link_id);
  auto region = memory_.regions().find(vaddr);
  const ProcessRecord* p = memory_.process(process_id);
  // The process left meanwhile (its memory is released, or held for adoption), perhaps with
  // its id given to another process since.
  if (region == memory_.regions().end() || region->second.owner != process_id || p == nullptr ||
      p->incarnation != incarnation) {
    return;
  }
  if (!result.ok() || app == links_.end() || ProcessOf(*app->second) != process_id) {
    absl::StatusOr<Region> removed = memory_.Unmap(process_id, vaddr);
    if (removed.ok()) Release(process_id, removed->extents);
    if (app != links_.end()) (void)app->second->ReplyError(seq, result);
    return;
  }
  const Region& r = region->second;
  VLOG(1) << "mmu: process " << process_id << " mapped " << r.bytes << " bytes at 0x" << std::hex
          << r.vaddr << std::dec << " in " << r.extents.size() << " extents";
  (void)SendMapped(*app->second, seq, r);
}

absl::Status RackMmu::SendMapped(ipc::Link& link, uint64_t seq, const Region& r) {
  capnp::MallocMessageBuilder builder;
  auto reply = builder.initRoot<proto::Message>();
  reply.setSeq(seq);
  auto mapped = reply.initMapped();
  mapped.setVaddr(r.vaddr);
  mapped.setBytes(r.bytes);
  auto extents = mapped.initExtents(r.extents.size());
  for (size_t i = 0; i < r.extents.size(); ++i) {
    extents[i].setVpage(r.extents[i].vpage);
    extents[i].setPages(r.extents[i].pages);
    extents[i].setElement(r.extents[i].element);
    extents[i].setPoolPage(r.extents[i].pool_page);
  }
  return link.Send(builder);
}

absl::Status RackMmu::HandleTranslate(ipc::Link& link, uint64_t seq, uint64_t vpage) {
  const uint32_t process_id = ProcessOf(link);
  if (process_id == 0) {
    return link.ReplyError(seq,
                           absl::FailedPreconditionError("mmu: join the rack before Translate"));
  }
  absl::StatusOr<Region> region = memory_.Translate(process_id, vpage);
  if (!region.ok()) return link.ReplyError(seq, region.status());
  if (Busy(vpage << kPageShift, kPageBytes)) {
    // Its memory elements are not programmed yet (a Map that has not returned, a grant or
    // steal under way): the page is not usable yet.
    return link.ReplyError(
        seq, absl::AbortedError(absl::StrCat("0x", absl::Hex(vpage << kPageShift),
                                             " is being mapped, granted or stolen right now")));
  }
  return SendMapped(link, seq, *region);
}

absl::Status RackMmu::HandleUnmap(ipc::Link& link, uint64_t seq,
                                  proto::UnmapRequest::Reader request) {
  const uint32_t process_id = ProcessOf(link);
  if (process_id == 0) {
    return link.ReplyError(seq, absl::FailedPreconditionError("mmu: join the rack before Unmap"));
  }
  if (Busy(request.getVaddr(), kPageBytes)) {
    return link.ReplyError(
        seq, absl::FailedPreconditionError("mmu: that region is being mapped, granted or stolen"));
  }
  absl::StatusOr<Region> region = memory_.Unmap(process_id, request.getVaddr());
  if (!region.ok()) return link.ReplyError(seq, region.status());
  Release(process_id, region->extents);
  return link.ReplyOk(seq);
}

void RackMmu::Release(uint32_t process_id, const std::vector<ExtentRecord>& extents) {
  for (const ExtentRecord& e : extents) {
    if (!memory_.Current(e)) continue;  // an earlier incarnation of the element: gone with it
    absl::Status sent = CallElement(
        e.element,
        [&](proto::Message::Builder m) {
          auto revoke = m.initRevokePages();
          revoke.setProcessId(process_id);
          revoke.setVpage(e.vpage);
          revoke.setPages(e.pages);
        },
        [element = e.element](const absl::StatusOr<proto::Message::Reader>& reply) {
          if (!reply.ok()) {
            LOG(WARNING) << "mmu: " << element << " did not release pages: " << reply.status();
          }
        });
    (void)sent;  // a gone element holds nothing to release
  }
}

absl::Status RackMmu::HandleLeave(ipc::Link& link, uint64_t seq) {
  const uint32_t process_id = ProcessOf(link);
  if (process_id == 0) {
    return link.ReplyError(seq, absl::FailedPreconditionError("mmu: this process has not joined"));
  }
  process_by_link_.erase(link.id());
  ReleaseProcess(process_id);
  LOG(INFO) << "mmu: process " << process_id << " left the rack";
  return link.ReplyOk(seq);
}

void RackMmu::ReleaseProcess(uint32_t process_id) {
  event_links_.erase(process_id);
  write_domains_.erase(process_id);
  for (const Region& region : memory_.Leave(process_id)) Release(process_id, region.extents);
}

void RackMmu::ProcessLeft(uint64_t link_id) {
  auto it = process_by_link_.find(link_id);
  if (it == process_by_link_.end()) return;
  // Maps in flight for it are undone when their acknowledgements arrive (FinishMap).
  DeclareFailed(it->second, "it died (its connection to the Rack MMU closed)");
}

void RackMmu::ReleaseExpired() {
  loop_.Housekeeping();
  const absl::Time now = absl::Now();
  // Long enough for any compute element's relay of a failure to have come in.
  absl::erase_if(recently_failed_,
                 [&](const auto& entry) { return now - entry.second.at > absl::Seconds(10); });
  std::vector<uint32_t> expired;
  for (const auto& [id, p] : memory_.processes()) {
    if (p.dead && p.release_at <= now) expired.push_back(id);
  }
  for (uint32_t id : expired) {
    LOG(INFO) << "mmu: grace period of dead process " << id << " is over; its "
              << memory_.MappedBytes(id) << " bytes are freed";
    ReleaseProcess(id);
  }
}

}  // namespace disagg::rackmmu
