#include "runtime/mmu_stub.h"

#include "internal/status_macros.h"
#include "ipc/wire.h"

namespace disagg::runtime {

absl::Status MmuStub::Call(absl::FunctionRef<void(proto::Message::Builder)> fill,
                           absl::FunctionRef<absl::Status(proto::Message::Reader)> on_reply) {
  MutexLock lock(&mu_);
  ipc::SmallMessage request;
  auto root = request.Init();
  fill(root);
  return client_.Call(request.builder(), root, on_reply, timeout_);
}

absl::Status MmuStub::CallOk(absl::FunctionRef<void(proto::Message::Builder)> fill) {
  return Call(fill, [](proto::Message::Reader reply) {
    return reply.isOk() ? absl::OkStatus()
                        : absl::InternalError("the Rack MMU answered with something else than ok");
  });
}

absl::StatusOr<MappedRange> MmuStub::CallMapped(
    absl::FunctionRef<void(proto::Message::Builder)> fill) {
  MappedRange out;
  RETURN_IF_ERROR(Call(fill, [&](proto::Message::Reader reply) {
    if (!reply.isMapped()) return absl::InternalError("the Rack MMU answered oddly (not mapped)");
    auto mapped = reply.getMapped();
    out.vaddr = mapped.getVaddr();
    out.info.bytes = mapped.getBytes();
    for (auto e : mapped.getExtents()) {
      out.info.extents.push_back({e.getVpage(), e.getPages(), e.getElement()});
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<JoinedInfo> MmuStub::Join(const std::string& name, const std::string& element,
                                         const std::string& app) {
  JoinedInfo out;
  RETURN_IF_ERROR(Call(
      [&](proto::Message::Builder m) {
        auto join = m.initJoin();
        join.setName(name);
        join.setElement(element);
        join.setApp(app);
      },
      [&](proto::Message::Reader reply) {
        if (!reply.isJoined()) return absl::InternalError("the Rack MMU answered Join oddly");
        auto joined = reply.getJoined();
        out = {joined.getProcessId(), joined.getWindowBase(), joined.getWindowBytes(),
               joined.getRangeBase(), joined.getRangeBytes()};
        return absl::OkStatus();
      }));
  return out;
}

absl::StatusOr<MappedRange> MmuStub::Map(uint64_t bytes, proto::Placement placement) {
  return CallMapped([&](proto::Message::Builder m) {
    auto map = m.initMap();
    map.setBytes(bytes);
    map.setPlacement(placement);
  });
}

absl::Status MmuStub::Unmap(uint64_t vaddr) {
  return CallOk([&](proto::Message::Builder m) { m.initUnmap().setVaddr(vaddr); });
}

absl::StatusOr<MappedRange> MmuStub::Translate(uint64_t vpage) {
  ASSIGN_OR_RETURN(MappedRange range, CallMapped([&](proto::Message::Builder m) {
                     m.initTranslate().setVpage(vpage);
                   }));
  if (range.info.extents.size() != 1 || vpage < range.info.extents[0].vpage ||
      vpage - range.info.extents[0].vpage >= range.info.extents[0].pages) {
    return absl::InternalError("the Rack MMU translated a page to an extent without it");
  }
  return range;
}

absl::Status MmuStub::Grant(uint64_t vaddr, uint64_t bytes, uint32_t to) {
  return CallOk([&](proto::Message::Builder m) {
    auto grant = m.initGrant();
    grant.setVaddr(vaddr);
    grant.setBytes(bytes);
    grant.setTo(to);
  });
}

absl::StatusOr<MappedRange> MmuStub::Steal(uint32_t from, uint64_t vaddr, uint64_t bytes) {
  return CallMapped([&](proto::Message::Builder m) {
    auto steal = m.initSteal();
    steal.setVaddr(vaddr);
    steal.setBytes(bytes);
    steal.setFrom(from);
  });
}

absl::Status MmuStub::JoinGroup(const std::string& name) {
  return CallOk([&](proto::Message::Builder m) { m.initJoinGroup().setName(name); });
}

absl::Status MmuStub::Publish(const std::string& name, uint64_t vaddr) {
  return CallOk([&](proto::Message::Builder m) {
    auto publish = m.initPublish();
    publish.setName(name);
    publish.setVaddr(vaddr);
  });
}

absl::StatusOr<uint64_t> MmuStub::Lookup(uint32_t owner, const std::string& name) {
  uint64_t vaddr = 0;
  RETURN_IF_ERROR(Call(
      [&](proto::Message::Builder m) {
        auto lookup = m.initLookup();
        lookup.setOwner(owner);
        lookup.setName(name);
      },
      [&](proto::Message::Reader reply) {
        if (!reply.isRoot()) return absl::InternalError("the Rack MMU answered Lookup oddly");
        vaddr = reply.getRoot().getVaddr();
        return absl::OkStatus();
      }));
  return vaddr;
}

absl::Status MmuStub::Leave() {
  return CallOk([](proto::Message::Builder m) { m.setLeave(); });
}

}  // namespace disagg::runtime
