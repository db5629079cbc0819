// Programmable fate sharing at the Rack MMU, the rack's controller (paper 003, section 4):
// each application's spec (rackmon/fate_spec.h), handed over by the rack monitor, decides
// what else fails when one of its processes or the memory it uses fails. The Rack MMU
// computes the failure domain, since it owns the maps and the processes' write domains, and
// enforces it: fences, releases memory, takes the application's memory on a tainted element
// away from it, and has the rack monitor end the processes that share the failure.
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "internal/logging.h"
#include "ipc/wire.h"
#include "mmu.h"

namespace disagg::rackmmu {
namespace {

constexpr size_t kMaxApps = 256;

}  // namespace

absl::Status RackMmu::HandleAppFate(ipc::Link& link, uint64_t seq, proto::AppFate::Reader fate) {
  if (link.id() != monitor_link_) {
    return link.ReplyError(
        seq, absl::PermissionDeniedError("mmu: only the rack monitor hands over fate specs"));
  }
  const std::string app = fate.getApp();
  if (!rackmon::ValidAppName(app)) {
    return link.ReplyError(
        seq, absl::InvalidArgumentError(absl::StrCat("mmu: '", app, "' is no application name")));
  }
  if (!apps_.contains(app) && apps_.size() >= kMaxApps) {
    return link.ReplyError(seq, absl::ResourceExhaustedError(
                                    absl::StrCat("mmu: at most ", kMaxApps, " applications")));
  }
  const rackmon::FateSpec spec = rackmon::SpecFromProto(fate.getSpec());
  apps_[app] = spec;
  LOG(INFO) << "mmu: application " << app << " shares fate as model "
            << rackmon::FateModelName(spec.model)
            << (spec.model == rackmon::FateModel::kTainted
                    ? absl::StrCat(" (taint stops at ", rackmon::TaintStopName(spec.taint_stop),
                                   ")")
                    : "");
  return link.ReplyOk(seq);
}

absl::Status RackMmu::HandleWriteDomain(ipc::Link& link, uint64_t seq,
                                        proto::WriteDomain::Reader domain) {
  uint32_t process_id = 0;
  for (const auto& [id, event_link] : event_links_) {
    if (event_link == link.id()) process_id = id;
  }
  const ProcessRecord* p = memory_.process(process_id);
  if (p == nullptr || p->dead) {
    return absl::FailedPreconditionError("mmu: a write domain on no process's event link");
  }
  if (auto it = write_domains_.find(process_id);
      it != write_domains_.end() && it->second.incarnation == p->incarnation) {
    return absl::FailedPreconditionError("mmu: a second write domain");
  }
  ipc::Fd fd(
      static_cast<int>(::syscall(SYS_pidfd_getfd, link.peer().pidfd.get(), domain.getFd(), 0)));
  if (!fd.valid()) {
    LOG(WARNING) << "mmu: cannot take the write domain of " << link.label() << ": "
                 << std::strerror(errno) << "; its failures taint no memory";
    return absl::OkStatus();
  }
  absl::StatusOr<ipc::WriteDomainView> view = ipc::WriteDomainView::Adopt(std::move(fd));
  if (!view.ok()) return view.status();  // cuts the link off: the protocol is broken
  write_domains_[process_id] =
      Domain{p->incarnation, std::make_shared<ipc::WriteDomainView>(std::move(*view))};
  return seq == 0 ? absl::OkStatus() : link.ReplyOk(seq);
}

const rackmon::FateSpec& RackMmu::FateOf(const ProcessRecord& p) const {
  static const rackmon::FateSpec kNone;
  auto it = apps_.find(p.app);
  return p.app.empty() || it == apps_.end() ? kNone : it->second;
}

std::shared_ptr<ipc::WriteDomainView> RackMmu::TakeWriteDomain(const ProcessRecord& p) {
  auto d = write_domains_.find(p.id);
  if (d == write_domains_.end() || d->second.incarnation != p.incarnation) {
    LOG(WARNING) << "mmu: process " << p.id << " of tainted application " << p.app
                 << " gave no write domain: its failure taints no memory";
    return nullptr;
  }
  std::shared_ptr<ipc::WriteDomainView> view = std::move(d->second.view);
  write_domains_.erase(d);
  return view;
}

std::vector<std::string> RackMmu::TaintedBy(const ProcessRecord& p,
                                            const ipc::WriteDomainView& domain) const {
  std::vector<std::string> out;
  if (const uint32_t missed = domain.overflow(); missed > 0) {
    LOG(WARNING) << "mmu: process " << p.id << "'s write domain was full for " << missed
                 << " batches of write-backs: the taint may miss elements";
  }
  for (const auto& u : domain.Tainted()) {
    auto e = registry_.elements().find(u.element);
    if (e == registry_.elements().end() || e->second.kind != proto::ElementKind::MEMORY ||
        failed_memory_.contains(u.element)) {
      continue;  // no memory element of this rack, or failed already
    }
    LOG(INFO) << "mmu: process " << p.id << " failed with " << u.batches << " batches of "
              << "write-backs to " << u.element << " under way";
    out.push_back(u.element);
  }
  return out;
}

void RackMmu::ShareFate(const ProcessRecord& failed, const rackmon::FateSpec& spec,
                        const std::string& reason) {
  if (failed.app.empty() || spec.model != rackmon::FateModel::kComplete) return;
  std::vector<uint32_t> rest;
  for (const auto& [id, q] : memory_.processes()) {
    if (!q.dead && q.app == failed.app && id != failed.id) rest.push_back(id);
  }
  for (uint32_t id : rest) {
    EndForFate(id,
               absl::StrCat("process ", failed.id, " of application ", failed.app,
                            " failed (complete fate sharing): ", reason),
               /*share=*/false);
  }
  // It too, if it still runs (paused, cut off): the whole application ends. Its own failure
  // runs its handler, once.
  AskMonitorToEnd(failed.id, failed.pid, failed.start_time, reason, /*run_handler=*/true);
  if (!rest.empty()) {
    LOG(WARNING) << "mmu: application " << failed.app << " fails whole: " << rest.size()
                 << " more processes end with process " << failed.id;
  }
}

void RackMmu::ShareTaint(const ProcessRecord& failed, const rackmon::FateSpec& spec,
                         const std::vector<std::string>& tainted, const std::string& reason) {
  for (const std::string& element : tainted) {
    std::set<uint32_t> owners;
    for (const auto& [id, q] : memory_.processes()) {
      if (q.app == failed.app) owners.insert(id);
    }
    const std::string why = absl::StrCat(
        "tainted: ", element, " holds write-backs of failed process ", failed.id,
        " that it never saw acknowledged (application ", failed.app, ": ", reason, ")");
    std::vector<Region> lost = memory_.LoseExtents(owners, element);
    std::set<uint32_t> users;
    for (const Region& region : lost) {
      Release(region.owner, region.extents);  // the element refuses them from now on
      if (region.owner != failed.id) users.insert(region.owner);
      ReportLostRegion(region.owner, region.vaddr, region.bytes, element, why);
    }
    LOG(WARNING) << "mmu: " << why << "; " << lost.size()
                 << " of its regions lose their pages there";
    if (spec.taint_stop != rackmon::TaintStop::kUsers) continue;
    for (uint32_t id : users) {
      EndForFate(id,
                 absl::StrCat("it used memory on ", element, ", which failed with process ",
                              failed.id, " (tainted fate sharing; the taint stops here)"),
                 /*share=*/false);
    }
  }
}

void RackMmu::EndForFate(uint32_t id, const std::string& reason, bool share) {
  const ProcessRecord* p = memory_.process(id);
  if (p == nullptr || p->dead) return;
  const pid_t pid = p->pid;
  const uint64_t start_time = p->start_time;
  DeclareFailed(id, reason, share);
  AskMonitorToEnd(id, pid, start_time, reason, /*run_handler=*/share);
}

void RackMmu::AskMonitorToEnd(uint32_t id, pid_t pid, uint64_t start_time,
                              const std::string& reason, bool run_handler) {
  auto monitor = links_.find(monitor_link_);
  if (monitor == links_.end()) {
    LOG(ERROR) << "mmu: process " << id << " (pid " << pid << ") is fenced, but no rack monitor "
               << "is there to end it: " << reason;
    return;
  }
  capnp::MallocMessageBuilder builder;
  auto end = builder.initRoot<proto::Message>().initEndProcess();
  end.setProcessId(id);
  end.setPid(pid);
  end.setStartTime(start_time);
  end.setReason(reason);
  end.setRunHandler(run_handler);
  if (absl::Status s = monitor->second->Send(builder); !s.ok()) {
    LOG(ERROR) << "mmu: cannot have the rack monitor end process " << id << ": " << s;
  }
}

void RackMmu::MemoryFailedFate(const std::set<uint32_t>& owners, const std::string& element,
                               const std::string& reason) {
  for (uint32_t id : owners) {
    const ProcessRecord* p = memory_.process(id);
    if (p == nullptr || p->dead) continue;  // also: ended already with its application
    const rackmon::FateModel model = FateOf(*p).model;
    if (model == rackmon::FateModel::kComplete) {
      // Through its spec, the rest of its application fails with it.
      EndForFate(id,
                 absl::StrCat("memory element ", element, " of application ", p->app,
                              " failed (complete fate sharing): ", reason),
                 /*share=*/true);
    } else if (model == rackmon::FateModel::kPartial) {
      EndForFate(id,
                 absl::StrCat("its memory on ", element,
                              " failed, and it fails with it (partial fate sharing): ", reason),
                 /*share=*/true);
    }
  }
}

}  // namespace disagg::rackmmu
