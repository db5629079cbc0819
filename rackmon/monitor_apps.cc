// Applications and their fate-sharing specs at the rack monitor: `rackctl run --app NAME
// --fate FILE` (and `rackctl app`) registers a spec here. The monitor validates it (a
// malformed one is refused with its line number), keeps its failure handler, and hands the
// rest to the Rack MMU, which computes failure domains; the client hears ok once the Rack MMU
// holds it. The Rack MMU asks the monitor to end the processes that share a failure.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "internal/logging.h"
#include "ipc/wire.h"
#include "monitor.h"

namespace disagg::rackmon {
namespace {
constexpr size_t kMaxApps = 256;
}  // namespace

absl::Status RackMonitor::HandleRegisterApp(ipc::Link& link, uint64_t seq,
                                            proto::RegisterApp::Reader request) {
  const std::string app = request.getApp();
  auto refuse = [&](const absl::Status& why) {
    LOG(WARNING) << "mon: refused application " << app << " from " << link.label() << ": "
                 << why.message();
    return link.ReplyError(seq, why);
  };
  if (!ValidAppName(app)) {
    return refuse(absl::InvalidArgumentError(
        absl::StrCat("mon: '", app,
                     "' is no application name (1-64 letters, digits, '.', '_' or '-', not "
                     "starting with '.' or '-')")));
  }
  if (!apps_.contains(app) && apps_.size() >= kMaxApps) {
    return refuse(
        absl::ResourceExhaustedError(absl::StrCat("mon: at most ", kMaxApps, " applications")));
  }
  if (mmu_ == nullptr) {
    return refuse(absl::UnavailableError("mon: the Rack MMU is gone: no fate spec can be held"));
  }
  std::string file = request.getFile();
  if (file.empty()) file = "fate spec";
  absl::StatusOr<FateSpec> spec = ParseFateSpec(file, request.getText());
  if (!spec.ok()) return refuse(spec.status());
  auto launch = request.getHandler();
  bool matches = spec->handler_argv.size() == launch.getArgv().size() &&
                 request.getHandlerElement() == spec->handler_element;
  for (size_t i = 1; matches && i < spec->handler_argv.size(); ++i) {
    matches = launch.getArgv()[i] == spec->handler_argv[i];  // argv[0] is resolved by the client
  }
  if (!matches) {
    return refuse(
        absl::InvalidArgumentError("mon: the handler sent does not match the spec's handler line"));
  }
  if (launch.getArgv().size() > kMaxHandlerArgs || launch.getEnv().size() > kMaxHandlerArgs) {
    return refuse(absl::ResourceExhaustedError("mon: too many handler arguments or variables"));
  }
  if (!spec->handler_element.empty()) {
    auto it = elements_.find(spec->handler_element);
    if (it == elements_.end() || it->second.kind != proto::ElementKind::COMPUTE) {
      return refuse(
          absl::NotFoundError(absl::StrCat(file, ":", spec->handler_line, ": no compute element '",
                                           spec->handler_element, "' in the rack")));
    }
  }
  App entry;
  entry.spec = *spec;
  entry.file = file;
  if (launch.getArgv().size() > 0) {
    Handler h;
    h.element = spec->handler_element;
    for (auto a : launch.getArgv()) h.argv.push_back(a);
    for (auto e : launch.getEnv()) h.env.push_back(e);
    h.cwd = launch.getCwd();
    entry.handler = std::move(h);
  }
  // The Rack MMU holds the spec before the client hears ok: a process launched after that
  // shares fate as it says.
  capnp::MallocMessageBuilder builder;
  auto message = builder.initRoot<proto::Message>();
  const uint64_t to_mmu = next_seq_++;
  message.setSeq(to_mmu);
  auto fate = message.initAppFate();
  fate.setApp(app);
  SpecToProto(*spec, fate.initSpec());
  if (absl::Status sent = mmu_->Send(builder); !sent.ok()) {
    return refuse(
        absl::UnavailableError(absl::StrCat("mon: the Rack MMU cannot be told: ", sent.message())));
  }
  pending_apps_[to_mmu] = PendingApp{link.id(), seq, app, std::move(entry)};
  return absl::OkStatus();
}

bool RackMonitor::HandleMmuAnswer(proto::Message::Reader message) {
  auto it = pending_apps_.find(message.getSeq());
  if (it == pending_apps_.end()) return false;
  PendingApp pending = std::move(it->second);
  pending_apps_.erase(it);
  auto client = links_.find(pending.link_id);
  if (message.isError()) {
    const absl::Status why = ipc::ErrorToStatus(message.getError());
    LOG(WARNING) << "mon: the Rack MMU refused application " << pending.app << ": " << why;
    if (client != links_.end()) (void)client->second->ReplyError(pending.seq, why);
    return true;
  }
  const FateSpec& spec = pending.entry.spec;
  LOG(INFO) << "mon: application " << pending.app << " shares fate as model "
            << FateModelName(spec.model) << " (" << pending.entry.file << ")"
            << (pending.entry.handler
                    ? absl::StrCat("; its failure handler is ", pending.entry.handler->argv[0])
                    : "");
  apps_[pending.app] = std::move(pending.entry);
  if (client != links_.end()) (void)client->second->ReplyOk(pending.seq);
  return true;
}

absl::Status RackMonitor::HandleEndProcess(ipc::Link& link, proto::EndProcess::Reader end) {
  if (mmu_ == nullptr || &link != mmu_) {
    return absl::PermissionDeniedError("mon: only the Rack MMU ends processes for their fate");
  }
  const uint32_t id = end.getProcessId();
  const pid_t pid = end.getPid();
  const std::string reason = end.getReason();
  // The process as its compute element reported it, else as the kernel knows it now: its
  // pid with the start time the Rack MMU saw (a pid reused meanwhile is never signalled).
  ipc::Fd pidfd;
  if (auto it = processes_.find(id);
      it != processes_.end() && it->second.pid == pid && it->second.pidfd.valid()) {
    pidfd = ipc::Fd(::fcntl(it->second.pidfd.get(), F_DUPFD_CLOEXEC, 0));
  } else {
    pidfd = ipc::Fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    absl::StatusOr<uint64_t> start = ipc::StartTimeOfPid(pid);
    if (!start.ok() || *start != end.getStartTime()) pidfd.Reset();
  }
  if (!pidfd.valid() || ::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0) != 0) {
    LOG(INFO) << "mon: process " << id << " (pid " << pid << ") shares a failure but is gone "
              << "already: " << reason;
    return absl::OkStatus();
  }
  LOG(WARNING) << "mon: ended process " << id << " (pid " << pid << "): " << reason;
  if (!end.getRunHandler()) {
    if (ended_for_fate_.size() >= 1024) {
      // Forget those whose end was seen long since: their pidfds are readable.
      for (auto it = ended_for_fate_.begin(); it != ended_for_fate_.end();) {
        struct pollfd p = {it->second.get(), POLLIN, 0};
        it = ::poll(&p, 1, 0) == 1 ? ended_for_fate_.erase(it) : std::next(it);
      }
    }
    ended_for_fate_[{id, pid}] = std::move(pidfd);
  }
  return absl::OkStatus();
}

}  // namespace disagg::rackmon
