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
  absl::StatusOr<ProcessRecord*> p =
      memory_.Join(request.getName(), link.peer().pid, *start_time);
  if (!p.ok()) return link.ReplyError(seq, p.status());
  (*p)->element = request.getElement();
  process_by_link_[link.id()] = (*p)->id;
  link.set_label(absl::StrCat("process ", (*p)->id, " (", request.getName().cStr(), ", pid ",
                              link.peer().pid, ")"));
  LOG(INFO) << "mmu: " << link.label() << " joined; window 0x" << std::hex << (*p)->window_base << std::dec;
  ipc::SmallMessage reply;
  auto joined = reply.Init(seq).initJoined();
  joined.setProcessId((*p)->id);
  joined.setWindowBase((*p)->window_base);
  joined.setWindowBytes(uint64_t{1} << kWindowShift);
  joined.setRangeBase(kRangeBase);
  joined.setRangeBytes(kRangeBytes);
  return link.Send(reply.builder());
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
  const uint64_t op_id = next_op_++;
  PendingMap& op = pending_maps_[op_id];
  op = PendingMap{link.id(), seq, process_id, (*region)->vaddr, 0, absl::OkStatus()};
  for (const ExtentRecord& e : (*region)->extents) {
    ipc::Link* element = ElementLink(e.element);
    if (element == nullptr) {
      op.failure = absl::UnavailableError(absl::StrCat("memory element ", e.element, " is gone"));
      break;
    }
    const uint64_t program_seq = next_seq_++;
    ipc::SmallMessage message;
    auto program = message.Init(program_seq).initProgramPages();
    program.setProcessId(process_id);
    program.setPid(p->pid);
    program.setStartTime(p->start_time);
    program.setVpage(e.vpage);
    program.setPages(e.pages);
    program.setPoolPage(e.pool_page);
    if (!element->Send(message.builder()).ok()) {
      op.failure = absl::UnavailableError(absl::StrCat("memory element ", e.element,
                                                       " cannot be reached"));
      break;
    }
    acks_by_seq_[program_seq] = {op_id, e.element};
    ++op.acks_left;
  }
  if (op.acks_left == 0) FinishMap(op_id);
  return absl::OkStatus();
}

void RackMmu::HandleProgramAck(ipc::Link& link, uint64_t seq, const absl::Status& result) {
  auto ack = acks_by_seq_.find(seq);
  if (ack == acks_by_seq_.end() || ElementLink(ack->second.element) != &link) {
    LOG(WARNING) << "mmu: " << link.label() << " answered request " << seq
                 << " that it was not asked: " << result;
    return;
  }
  const uint64_t op_id = ack->second.op_id;
  acks_by_seq_.erase(ack);
  auto op = pending_maps_.find(op_id);
  if (op == pending_maps_.end()) return;
  if (!result.ok() && op->second.failure.ok()) op->second.failure = result;
  if (--op->second.acks_left == 0) FinishMap(op_id);
}

void RackMmu::ElementGone(const std::string& name) {
  memory_.SetUsable(name, false);
  std::vector<uint64_t> orphaned;
  for (const auto& [seq, ack] : acks_by_seq_) {
    if (ack.element == name) orphaned.push_back(seq);
  }
  for (uint64_t seq : orphaned) {
    const uint64_t op_id = acks_by_seq_[seq].op_id;
    acks_by_seq_.erase(seq);
    auto op = pending_maps_.find(op_id);
    if (op == pending_maps_.end()) continue;
    op->second.failure = absl::UnavailableError(absl::StrCat("memory element ", name, " failed"));
    if (--op->second.acks_left == 0) FinishMap(op_id);
  }
}

void RackMmu::FinishMap(uint64_t op_id) {
  PendingMap op = std::move(pending_maps_[op_id]);
  pending_maps_.erase(op_id);
  auto app = links_.find(op.link_id);
  const ProcessRecord* p = memory_.process(op.process_id);
  if (p == nullptr) return;  // the process left meanwhile; its memory is already released
  auto region = p->regions.find(op.vaddr);
  if (region == p->regions.end()) return;
  if (!op.failure.ok() || app == links_.end()) {
    absl::StatusOr<Region> removed = memory_.Unmap(op.process_id, op.vaddr);
    if (removed.ok()) Revoke(op.process_id, *removed);
    if (app != links_.end()) (void)app->second->ReplyError(op.seq, op.failure);
    return;
  }
  const Region& r = region->second;
  VLOG(1) << "mmu: process " << op.process_id << " mapped " << r.bytes << " bytes at 0x" << std::hex
          << r.vaddr << std::dec << " in " << r.extents.size() << " extents";
  (void)SendMapped(*app->second, op.seq, r);
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
    return link.ReplyError(seq, absl::FailedPreconditionError("mmu: join the rack before Translate"));
  }
  absl::StatusOr<Region> region = memory_.Translate(process_id, vpage);
  if (!region.ok()) return link.ReplyError(seq, region.status());
  for (const auto& [id, op] : pending_maps_) {
    if (op.process_id == process_id && op.vaddr == region->vaddr) {
      // Its memory elements are not programmed yet: the page is not usable before Map returns.
      return link.ReplyError(seq, absl::NotFoundError(absl::StrCat(
                                      "0x", absl::Hex(vpage << kPageShift),
                                      " belongs to a region whose Map has not returned yet")));
    }
  }
  return SendMapped(link, seq, *region);
}

absl::Status RackMmu::HandleUnmap(ipc::Link& link, uint64_t seq,
                                  proto::UnmapRequest::Reader request) {
  const uint32_t process_id = ProcessOf(link);
  if (process_id == 0) {
    return link.ReplyError(seq, absl::FailedPreconditionError("mmu: join the rack before Unmap"));
  }
  for (const auto& [id, op] : pending_maps_) {
    if (op.process_id == process_id && op.vaddr == request.getVaddr()) {
      return link.ReplyError(seq, absl::FailedPreconditionError("mmu: that region is still being mapped"));
    }
  }
  absl::StatusOr<Region> region = memory_.Unmap(process_id, request.getVaddr());
  if (!region.ok()) return link.ReplyError(seq, region.status());
  Revoke(process_id, *region);
  return link.ReplyOk(seq);
}

void RackMmu::Revoke(uint32_t process_id, const Region& region) {
  for (const ExtentRecord& e : region.extents) {
    ipc::Link* element = ElementLink(e.element);
    if (element == nullptr) continue;  // a gone element holds nothing to revoke
    ipc::SmallMessage message;
    // Acknowledgements of revocations need no bookkeeping: seq 0 asks for none.
    auto revoke = message.Init(0).initRevokePages();
    revoke.setProcessId(process_id);
    revoke.setVpage(e.vpage);
    revoke.setPages(e.pages);
    (void)element->Send(message.builder());
  }
}

void RackMmu::ProcessLeft(uint64_t link_id) {
  auto it = process_by_link_.find(link_id);
  if (it == process_by_link_.end()) return;
  const uint32_t process_id = it->second;
  process_by_link_.erase(it);
  // Maps in flight for it are dropped when their acknowledgements arrive (FinishMap finds
  // no region). Its memory is released now; keeping it for steal comes with grant/steal.
  for (auto& [id, op] : pending_maps_) {
    if (op.process_id == process_id) op.link_id = 0;
  }
  for (const Region& region : memory_.Leave(process_id)) Revoke(process_id, region);
  LOG(INFO) << "mmu: process " << process_id << " left the rack";
}

}  // namespace disagg::rackmmu
