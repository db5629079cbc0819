// Fault injection at the rack monitor: `rackctl fail`, `kill`, `pause` and `resume`. The
// monitor knows every element's pid (by pidfd) and every process its compute elements
// reported, so a fault reaches exactly the process it names, never a reused pid.
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "internal/logging.h"
#include "internal/status_macros.h"
#include "ipc/wire.h"
#include "monitor.h"

namespace disagg::rackmon {
namespace {

absl::Status SignalPidfd(int pidfd, int sig, const std::string& what) {
  if (pidfd < 0 || ::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " cannot be signalled: ", pidfd < 0 ? "gone" : std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RackMonitor::HandleInject(ipc::Link& link, uint64_t seq,
                                       proto::Inject::Reader inject) {
  const std::string target = inject.getTarget();
  absl::Status done;
  switch (inject.getAction()) {
    case proto::FaultAction::FAIL:
      done = Fail(target);
      break;
    case proto::FaultAction::KILL:
      done = Kill(target);
      break;
    case proto::FaultAction::PAUSE:
      done = inject.getForNanos() < 0
                 ? absl::InvalidArgumentError("mon: a pause cannot last a negative time")
                 : Pause(target, absl::Nanoseconds(inject.getForNanos()));
      break;
    case proto::FaultAction::RESUME:
      done = Resume(target);
      break;
    case proto::FaultAction::PARTITION:
      done = inject.getForNanos() < 0
                 ? absl::InvalidArgumentError("mon: a partition cannot last a negative time")
                 : Partition(target, inject.getPeer(), absl::Nanoseconds(inject.getForNanos()));
      break;
    case proto::FaultAction::HEAL:
      done = Heal(target, inject.getPeer());
      break;
    case proto::FaultAction::DELAY:
      done = inject.getForNanos() < 0
                 ? absl::InvalidArgumentError("mon: a delay cannot last a negative time")
                 : Delay(target, absl::Nanoseconds(inject.getDelayNanos()),
                         absl::Nanoseconds(inject.getForNanos()));
      break;
    default:
      done = absl::InvalidArgumentError("mon: unknown fault action");
  }
  if (!done.ok()) {
    LOG(WARNING) << "mon: refused fault injection from " << link.label() << ": " << done.message();
    return link.ReplyError(seq, done);
  }
  return link.ReplyOk(seq);
}

absl::StatusOr<RackMonitor::Watched*> RackMonitor::Element(const std::string& target) {
  auto it = elements_.find(target);
  if (it != elements_.end() && (it->second.kind == proto::ElementKind::COMPUTE ||
                                it->second.kind == proto::ElementKind::MEMORY)) {
    return &it->second;
  }
  std::vector<std::string> names;
  for (const auto& [name, w] : elements_) {
    if (w.kind == proto::ElementKind::COMPUTE || w.kind == proto::ElementKind::MEMORY) {
      names.push_back(name);
    }
  }
  return absl::NotFoundError(absl::StrCat("mon: no compute or memory element '", target,
                                          "' in the rack (there are: ", absl::StrJoin(names, ", "),
                                          ")"));
}

absl::Status RackMonitor::Fail(const std::string& target) {
  ASSIGN_OR_RETURN(Watched * w, Element(target));
  if (w->health == proto::Health::FAILED) {
    return absl::FailedPreconditionError(absl::StrCat("mon: ", target, " has failed already"));
  }
  RETURN_IF_ERROR(SignalPidfd(w->pidfd.get(), SIGKILL, target));
  LOG(WARNING) << "mon: fault injection: killed " << target << " (pid " << w->pid << ")";
  // A paused element dies as soon as it is thawed; its death is seen as any other.
  if (w->resume_timer != 0) loop_.Unwatch(w->resume_timer);
  w->resume_timer = 0;
  w->paused.reset();  // resumes it
  return absl::OkStatus();
}

absl::Status RackMonitor::Kill(const std::string& target) {
  Process* found = nullptr;
  uint32_t id = 0;
  if (absl::SimpleAtoi(target, &id)) {
    auto it = processes_.find(id);
    if (it != processes_.end()) found = &it->second;
  } else {
    for (auto& [pid, p] : processes_) {
      if (p.name != target) continue;
      if (found != nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("mon: several processes are named '", target,
                                                       "': name one by its rack id"));
      }
      found = &p;
    }
  }
  if (found == nullptr) {
    return absl::NotFoundError(absl::StrCat("mon: no running process '", target, "' in the rack (",
                                            processes_.size(),
                                            " run; `rackctl status` lists them)"));
  }
  RETURN_IF_ERROR(SignalPidfd(found->pidfd.get(), SIGKILL, absl::StrCat("process ", target)));
  LOG(WARNING) << "mon: fault injection: killed process " << found->id << " (" << found->name
               << ", pid " << found->pid << ")";
  return absl::OkStatus();
}

absl::Status RackMonitor::Pause(const std::string& target, absl::Duration for_how_long) {
  ASSIGN_OR_RETURN(Watched * w, Element(target));
  if (w->health == proto::Health::FAILED) {
    return absl::FailedPreconditionError(absl::StrCat("mon: ", target, " has failed"));
  }
  if (w->paused) {
    return absl::FailedPreconditionError(absl::StrCat("mon: ", target, " is paused already"));
  }
  // A stopped blade stops everything on it: the daemon, the programs it launched and every
  // process that runs there.
  std::vector<pid_t> pids{w->pid};
  if (w->kind == proto::ElementKind::COMPUTE) {
    for (pid_t child : Descendants(w->pid)) pids.push_back(child);
    for (const auto& [id, p] : processes_) {
      if (p.element == target && std::find(pids.begin(), pids.end(), p.pid) == pids.end()) {
        pids.push_back(p.pid);
      }
    }
  }
  absl::StatusOr<Freezer> frozen = Freezer::Pause(target, pids);
  if (!frozen.ok()) {
    return absl::Status(frozen.status().code(), absl::StrCat("mon: cannot pause ", target, ": ",
                                                             frozen.status().message()));
  }
  LOG(WARNING) << "mon: fault injection: paused " << target << " with " << frozen->processes()
               << " processes (" << frozen->how() << ")"
               << (for_how_long > absl::ZeroDuration()
                       ? absl::StrCat(" for ", absl::FormatDuration(for_how_long))
                       : "");
  w->paused = std::move(*frozen);
  if (for_how_long > absl::ZeroDuration()) {
    const std::string name = target;
    w->resume_timer = loop_.AddTimer(for_how_long, [this, name] { (void)Resume(name); });
  }
  return absl::OkStatus();
}

absl::Status RackMonitor::Resume(const std::string& target) {
  ASSIGN_OR_RETURN(Watched * w, Element(target));
  if (!w->paused) {
    return absl::FailedPreconditionError(absl::StrCat("mon: ", target, " is not paused"));
  }
  if (w->resume_timer != 0) loop_.Unwatch(w->resume_timer);
  w->resume_timer = 0;
  w->paused->Resume();
  w->paused.reset();
  LOG(WARNING) << "mon: fault injection: resumed " << target;
  return absl::OkStatus();
}

}  // namespace disagg::rackmon
