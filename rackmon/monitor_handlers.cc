// Fast failure handlers: when a process fails, the monitor starts the command registered for
// its name on a healthy compute element (as `rackctl run` would), so that a successor can
// adopt the failed process's memory while the Rack MMU holds it.
#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "internal/daemon.h"
#include "internal/logging.h"
#include "ipc/wire.h"
#include "monitor.h"

namespace disagg::rackmon {
namespace {
constexpr size_t kMaxHandlers = 256;
}  // namespace

absl::Status RackMonitor::HandleAddHandler(ipc::Link& link, uint64_t seq,
                                           proto::FailureHandler::Reader handler) {
  const std::string name = handler.getProcessName();
  const std::string element = handler.getElement();
  auto launch = handler.getLaunch();
  // The name becomes part of the log's file name.
  if (name.empty() || name.size() > 255 || name[0] == '.' ||
      name.find_first_of("/\\") != std::string::npos) {
    return link.ReplyError(seq, absl::InvalidArgumentError(absl::StrCat(
                                    "mon: a failure handler needs a process name of 1-255 bytes, "
                                    "without '/' and not starting with '.', not '",
                                    name, "'")));
  }
  if (launch.getArgv().size() == 0) {
    const bool had = handlers_.erase(name) > 0;
    LOG(INFO) << "mon: " << (had ? "removed the" : "no") << " failure handler for " << name;
    return had ? link.ReplyOk(seq)
               : link.ReplyError(seq, absl::NotFoundError(absl::StrCat(
                                          "mon: no failure handler for '", name, "'")));
  }
  if (!element.empty()) {
    auto it = elements_.find(element);
    if (it == elements_.end() || it->second.kind != proto::ElementKind::COMPUTE) {
      return link.ReplyError(seq, absl::NotFoundError(absl::StrCat("mon: no compute element '",
                                                                   element, "' in the rack")));
    }
  }
  if (launch.getArgv().size() > kMaxHandlerArgs || launch.getEnv().size() > kMaxHandlerArgs ||
      (!handlers_.contains(name) && handlers_.size() >= kMaxHandlers)) {
    return link.ReplyError(seq, absl::ResourceExhaustedError(
                                    "mon: too many failure handlers, arguments or variables"));
  }
  Handler h;
  h.element = element;
  for (auto a : launch.getArgv()) h.argv.push_back(a);
  for (auto e : launch.getEnv()) h.env.push_back(e);
  h.cwd = launch.getCwd();
  LOG(INFO) << "mon: when a process named " << name << " fails, " << h.argv[0] << " starts on "
            << (element.empty() ? "a healthy compute element" : element);
  handlers_[name] = std::move(h);
  return link.ReplyOk(seq);
}

void RackMonitor::RunHandler(const Process& p, const std::string& reason) {
  if (!RunsHandler(p)) return;
  // Its application's handler, else the one registered for its name (either name is
  // checked, and names its log).
  Handler* found = nullptr;
  std::string key;
  if (auto app = apps_.find(p.app); !p.app.empty() && app != apps_.end() && app->second.handler) {
    found = &*app->second.handler;
    key = p.app;
  } else if (auto named = handlers_.find(p.name); named != handlers_.end()) {
    found = &named->second;
    key = p.name;
  }
  if (found == nullptr) return;
  Handler& h = *found;
  // Where: the element asked for if it is healthy and did not run the failed process, else
  // the first healthy compute element that did not.
  auto usable = [&](const Watched& w) {
    return w.kind == proto::ElementKind::COMPUTE && w.health == proto::Health::HEALTHY &&
           w.link != nullptr && !w.paused && w.name != p.element;
  };
  std::string where;
  if (auto e = elements_.find(h.element); e != elements_.end() && usable(e->second)) {
    where = h.element;
  }
  for (const auto& [name, w] : elements_) {
    if (where.empty() && usable(w)) where = name;
  }
  const uint64_t run = ++h.runs;
  if (where.empty()) {
    LOG(ERROR) << "mon: process " << p.id << " (" << p.name << ") failed, but no healthy compute "
               << "element is left to start its handler " << h.argv[0] << " on";
    return;
  }
  Started started;
  started.what =
      absl::StrCat("the failure handler of process ", p.id, " (", p.name, ") on ", where);
  const std::string log = absl::StrCat(options_.run_dir, "/on-failure-", key, ".log");
  started.in = ipc::Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  started.out = ipc::Fd(::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!started.in.valid() || !started.out.valid()) {
    LOG(ERROR) << "mon: cannot start " << started.what << ": " << log << ": "
               << std::strerror(errno);
    return;
  }
  absl::StatusOr<ipc::Link*> link = hub_->Dial(SocketPath(options_.run_dir, where));
  if (!link.ok()) {
    LOG(ERROR) << "mon: cannot start " << started.what << ": " << link.status();
    return;
  }
  (*link)->set_label(started.what);
  // The compute element copies the program's stdio out of this process (pidfd_getfd); where
  // Yama restricts that to ancestors, this lets it.
  (void)::prctl(PR_SET_PTRACER, static_cast<unsigned long>(elements_[where].pid), 0, 0, 0);
  capnp::MallocMessageBuilder builder;
  auto message = builder.initRoot<proto::Message>();
  message.setSeq(next_seq_++);
  auto launch = message.initLaunch();
  auto argv = launch.initArgv(h.argv.size());
  for (size_t i = 0; i < h.argv.size(); ++i) argv.set(i, h.argv[i]);
  const std::string failed[] = {absl::StrCat("DISAGG_FAILED_PROCESS=", p.id),
                                absl::StrCat("DISAGG_FAILED_NAME=", p.name),
                                absl::StrCat("DISAGG_FAILED_REASON=", reason)};
  auto env = launch.initEnv(h.env.size() + 3);
  for (size_t i = 0; i < h.env.size(); ++i) env.set(i, h.env[i]);
  for (size_t i = 0; i < 3; ++i) env.set(h.env.size() + i, failed[i]);
  launch.setCwd(h.cwd);
  auto stdio = launch.initStdio(3);
  stdio.set(0, started.in.get());
  stdio.set(1, started.out.get());
  stdio.set(2, started.out.get());
  if (absl::Status sent = (*link)->Send(builder); !sent.ok()) {
    LOG(ERROR) << "mon: cannot start " << started.what << ": " << sent;
    hub_->Close(**link, sent);
    return;
  }
  LOG(WARNING) << "mon: starting " << started.what << " (run " << run << "): " << h.argv[0]
               << "; its output goes to " << log;
  launches_[(*link)->id()] = std::move(started);
}

bool RackMonitor::RunsHandler(const Process& p) {
  // A process ended because it shared another's failure: the handler ran for that one.
  return ended_for_fate_.erase({p.id, p.pid}) == 0;
}

void RackMonitor::HandleLaunchReply(ipc::Link& link, proto::Message::Reader message) {
  auto it = launches_.find(link.id());
  if (it == launches_.end()) {
    LOG(WARNING) << "mon: " << link.label() << " sent a launch reply for no launch";
    return;
  }
  Started& s = it->second;
  if (message.isLaunched()) {
    LOG(INFO) << "mon: " << s.what << " runs as pid " << message.getLaunched().getPid();
    s.in.Reset();  // the compute element has its copies
    s.out.Reset();
    return;
  }
  if (message.isExited()) {
    auto e = message.getExited();
    LOG(INFO) << "mon: " << s.what << " ended: "
              << (e.getSignal() != 0 ? absl::StrCat("signal ", e.getSignal())
                                     : absl::StrCat("exit ", e.getExitCode()));
  } else {
    LOG(ERROR) << "mon: " << s.what
               << " could not start: " << ipc::ErrorToStatus(message.getError());
  }
  launches_.erase(it);
  hub_->Close(link, absl::UnavailableError("its program ended"));
}

}  // namespace disagg::rackmon
