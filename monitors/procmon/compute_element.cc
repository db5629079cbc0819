#include "compute_element.h"

#include <capnp/message.h>
#include <limits.h>
#include <stdlib.h>

#include <algorithm>

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

ComputeElement::ComputeElement(ipc::EventLoop& loop, ElementOptions options)
    : Element(loop,
              [&] {
                options.used_bytes = [this] { return CachedBytes(); };
                return std::move(options);
              }()),
      budget_pages_(this->options().capacity_bytes / kPageBytes),
      launcher_(loop, this->options().name, ProgramEnvironment(this->options())) {}

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
  if (budget_pages_ / (processes_.size() + 1) < kMinSharePages) {
    const absl::Status refusal = absl::ResourceExhaustedError(absl::StrCat(
        me, ": its cache budget of ", budget_pages_ * kPageBytes, " bytes is shared by ",
        processes_.size(), " processes already; another would get less than ",
        kMinSharePages * kPageBytes, " bytes"));
    LOG(WARNING) << refusal.message();
    return link.ReplyError(seq, refusal);
  }
  Process& p = processes_[link.id()];
  p.link = &link;
  p.process_id = attach.getProcessId();
  p.name = attach.getName();
  p.pid = link.peer().pid;
  link.set_label(absl::StrCat("process ", p.process_id, " (", p.name, ", pid ", p.pid, ")"));
  LOG(INFO) << me << ": " << link.label() << " attached";
  // Its first quota (the answer) is what is free now; it grows as the others shrink.
  Rebalance();
  p.attached = true;
  SendQuota(p, p.granted_pages, seq);
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
    if (p.cached_bytes > p.shrink_to * kPageBytes) {
      LOG(WARNING) << options().name << ": " << link.label() << " reports " << p.cached_bytes
                   << " cached bytes over its quota of " << p.shrink_to * kPageBytes;
      return absl::OkStatus();  // it stays counted at its old quota
    }
    p.granted_pages = p.shrink_to;
    p.shrink_seq = 0;
    Rebalance();
  }
  return absl::OkStatus();
}

void ComputeElement::SendQuota(Process& p, uint64_t pages, uint64_t seq) {
  ipc::SmallMessage message;
  message.Init(seq).initCacheQuota().setBytes(pages * kPageBytes);
  absl::Status status = p.link->Send(message.builder());
  if (!status.ok()) LOG(WARNING) << options().name << ": " << p.link->label() << ": " << status;
}

void ComputeElement::Rebalance() {
  if (processes_.empty()) return;
  const uint64_t share = budget_pages_ / processes_.size();
  uint64_t used = 0;
  for (auto& [id, p] : processes_) {
    const bool needs_shrink = p.shrink_seq == 0 ? p.granted_pages > share : p.shrink_to > share;
    if (needs_shrink) {
      p.shrink_to = share;
      p.shrink_seq = next_seq_++;
      SendQuota(p, share, p.shrink_seq);
    }
    used += p.granted_pages;
  }
  CHECK_LE(used, budget_pages_) << "cache quotas exceed the budget";
  uint64_t free = budget_pages_ - used;
  for (auto& [id, p] : processes_) {
    if (free == 0) break;
    if (p.shrink_seq != 0 || p.granted_pages >= share) continue;
    const uint64_t give = std::min(share - p.granted_pages, free);
    p.granted_pages += give;
    free -= give;
    if (p.attached) SendQuota(p, p.granted_pages, 0);
  }
}

void ComputeElement::LinkClosed(ipc::Link& link) {
  launcher_.LinkClosed(link);
  auto it = processes_.find(link.id());
  if (it == processes_.end()) return;
  LOG(INFO) << options().name << ": " << link.label() << " left";
  processes_.erase(it);
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
    row.setCacheQuotaBytes(p.granted_pages * kPageBytes);
  }
  return link.Send(builder);
}

}  // namespace disagg::procmon
