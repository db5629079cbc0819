#include "monitor.h"

#include <capnp/message.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "internal/logging.h"
#include "ipc/wire.h"

namespace disagg::rackmon {
namespace {

uint64_t MonotonicNanos() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

// Rows in `rackctl status` order: mmu, mon, compute elements, memory elements.
int KindOrder(proto::ElementKind kind) {
  switch (kind) {
    case proto::ElementKind::RACKMMU:
      return 0;
    case proto::ElementKind::RACKMON:
      return 1;
    case proto::ElementKind::COMPUTE:
      return 2;
    case proto::ElementKind::MEMORY:
      return 3;
    default:
      return 4;
  }
}

}  // namespace

RackMonitor::RackMonitor(ipc::EventLoop& loop, MonitorOptions options)
    : loop_(loop), options_(std::move(options)) {}

RackMonitor::~RackMonitor() {
  timer_.Stop();
  for (auto& [id, r] : fabric_rules_) {
    if (r.timer != 0) loop_.Unwatch(r.timer);
  }
  for (auto& [name, w] : elements_) {
    if (w.pidfd_watch != 0) loop_.Unwatch(w.pidfd_watch);
    if (w.resume_timer != 0) loop_.Unwatch(w.resume_timer);
    // w.paused resumes what it paused: a rack monitor never leaves a blade frozen.
  }
}

void RackMonitor::Start(ipc::Hub& hub, ipc::Link& mmu) {
  Freezer::SweepStale();
  hub_ = &hub;
  mmu_ = &mmu;
  absl::StatusOr<ipc::FabricWriter> fabric =
      ipc::FabricWriter::Create(absl::StrCat(options_.run_dir, "/fabric"));
  if (fabric.ok()) {
    fabric_ = std::move(*fabric);
  } else {
    LOG(ERROR) << "mon: no partitions or delays can be injected: " << fabric.status();
  }
  Watched& w = elements_["mmu"];
  w.name = "mmu";
  w.kind = proto::ElementKind::RACKMMU;
  Watch(w, mmu);
  timer_.Start();
}

void RackMonitor::Watch(Watched& w, ipc::Link& link) {
  // A new incarnation of the element: whatever paused the old one is over.
  if (w.resume_timer != 0) loop_.Unwatch(w.resume_timer);
  w.resume_timer = 0;
  w.paused.reset();
  w.pid = link.peer().pid;
  w.link = &link;
  w.health = proto::Health::HEALTHY;
  w.last_heard = absl::Now();
  w.beat = Heartbeat(options_.heartbeat, LivenessNow());
  by_link_[link.id()] = w.name;
  if (w.pidfd_watch != 0) loop_.Unwatch(w.pidfd_watch);
  w.pidfd = ipc::Fd(::fcntl(link.peer().pidfd.get(), F_DUPFD_CLOEXEC, 0));
  Watched* wp = &w;  // std::map nodes are stable
  w.pidfd_watch = loop_.WatchFd(w.pidfd.get(), POLLIN, [this, wp](int) {
    SetHealth(*wp, proto::Health::FAILED, absl::StrCat("process ", wp->pid, " exited"));
  });
}

RackMonitor::Watched* RackMonitor::ByLink(const ipc::Link& link) {
  auto it = by_link_.find(link.id());
  if (it == by_link_.end()) return nullptr;
  auto w = elements_.find(it->second);
  return w == elements_.end() ? nullptr : &w->second;
}

absl::Status RackMonitor::OnMessage(ipc::Link& link, proto::Message::Reader message) {
  const uint64_t seq = message.getSeq();
  switch (message.which()) {
    case proto::Message::PONG: {
      loop_.Housekeeping();
      Watched* w = ByLink(link);
      if (w == nullptr || w->health == proto::Health::FAILED) return absl::OkStatus();
      w->last_heard = absl::Now();
      w->beat.Answered(LivenessNow());
      w->used_bytes = message.getPong().getUsedBytes();
      if (w->health == proto::Health::SUSPECT) {
        SetHealth(*w, proto::Health::HEALTHY, "answers heartbeats again");
      }
      return absl::OkStatus();
    }
    case proto::Message::REGISTER:
      return HandleRegister(link, seq, message.getRegister());
    case proto::Message::STATUS_REQUEST:
      return HandleStatus(link, seq);
    case proto::Message::LIFE_WORD:
      return HandleLifeWord(link, message.getLifeWord());
    case proto::Message::PROCESS_UP:
      return HandleProcessUp(link, message.getProcessUp());
    case proto::Message::PROCESS_DOWN:
      return HandleProcessDown(link, message.getProcessDown());
    case proto::Message::INJECT:
      return HandleInject(link, seq, message.getInject());
    case proto::Message::REGISTER_APP:
      return HandleRegisterApp(link, seq, message.getRegisterApp());
    case proto::Message::END_PROCESS:
      return HandleEndProcess(link, message.getEndProcess());
    case proto::Message::ADD_FAILURE_HANDLER:
      return HandleAddHandler(link, seq, message.getAddFailureHandler());
    case proto::Message::LAUNCHED:
    case proto::Message::EXITED:
      HandleLaunchReply(link, message);
      return absl::OkStatus();
    case proto::Message::ECHO:
      return link.ReplyEcho(message);
    case proto::Message::OK:
    case proto::Message::REGISTERED:
      if (&link == mmu_) (void)HandleMmuAnswer(message);
      return absl::OkStatus();  // the Rack MMU acknowledging our own messages
    case proto::Message::ERROR:
      if (&link == mmu_ && HandleMmuAnswer(message)) return absl::OkStatus();
      if (launches_.contains(link.id())) {
        HandleLaunchReply(link, message);
        return absl::OkStatus();
      }
      LOG(WARNING) << "mon: " << link.label() << " refused request " << seq << ": "
                   << ipc::ErrorToStatus(message.getError());
      return absl::OkStatus();
    default:
      return link.ReplyUnserved("mon", message);
  }
}

absl::Status RackMonitor::HandleRegister(ipc::Link& link, uint64_t seq,
                                         proto::Register::Reader request) {
  const std::string name = request.getName();
  const proto::ElementKind kind = request.getKind();
  if (kind != proto::ElementKind::COMPUTE && kind != proto::ElementKind::MEMORY) {
    return link.ReplyError(
        seq, absl::InvalidArgumentError("mon: only compute and memory elements register here"));
  }
  if (name.empty() || name == "mmu" || name == "mon" || name.size() > 32) {
    return link.ReplyError(seq, absl::InvalidArgumentError(
                                    absl::StrCat("mon: element name '", name, "' is not allowed")));
  }
  if (ByLink(link) != nullptr) {
    return link.ReplyError(seq, absl::FailedPreconditionError("mon: already registered"));
  }
  auto it = elements_.find(name);
  if (it != elements_.end() && it->second.health != proto::Health::FAILED) {
    return link.ReplyError(
        seq, absl::AlreadyExistsError(
                 absl::StrCat("mon: element name ", name, " is taken by pid ", it->second.pid)));
  }
  Watched& w = elements_[name];
  w.name = name;
  w.kind = kind;
  w.capacity_bytes = request.getCapacityBytes();
  w.used_bytes = 0;
  Watch(w, link);
  link.set_label(name);
  LOG(INFO) << "mon: watching " << name << " (pid " << w.pid << ")";
  capnp::MallocMessageBuilder builder;
  auto reply = builder.initRoot<proto::Message>();
  reply.setSeq(seq);
  reply.initRegistered();
  return link.Send(builder);
}

absl::Status RackMonitor::HandleStatus(ipc::Link& link, uint64_t seq) {
  std::vector<const Watched*> rows;
  for (const auto& [name, w] : elements_) rows.push_back(&w);
  std::stable_sort(rows.begin(), rows.end(), [](const Watched* a, const Watched* b) {
    return KindOrder(a->kind) < KindOrder(b->kind);
  });
  capnp::MallocMessageBuilder builder;
  auto reply = builder.initRoot<proto::Message>();
  reply.setSeq(seq);
  auto status = reply.initStatus();
  status.setRackName(options_.rack_name);
  auto list = status.initElements(rows.size() + 1);
  const absl::Time now = absl::Now();
  size_t i = 0;
  auto put = [&](const Watched& w) {
    auto row = list[i++];
    row.setName(w.name);
    row.setKind(w.kind);
    row.setPid(w.pid);
    row.setHealth(w.health);
    row.setCapacityBytes(w.capacity_bytes);
    row.setUsedBytes(w.used_bytes);
    row.setLastHeartbeatAgeNanos(
        w.last_heard == absl::InfinitePast() ? -1 : absl::ToInt64Nanoseconds(now - w.last_heard));
  };
  Watched self;
  self.name = "mon";
  self.kind = proto::ElementKind::RACKMON;
  self.pid = ::getpid();
  self.last_heard = now;
  size_t at = 0;
  while (at < rows.size() && KindOrder(rows[at]->kind) <= KindOrder(self.kind)) put(*rows[at++]);
  put(self);
  while (at < rows.size()) put(*rows[at++]);
  return link.Send(builder);
}

void RackMonitor::Beat(bool ping, absl::Duration away, bool judge) {
  if (away > options_.heartbeat.limit / 4) {
    LOG(INFO) << "mon: did not run for " << absl::FormatDuration(away)
              << "; not held against the elements";
  }
  capnp::MallocMessageBuilder builder;
  auto message = builder.initRoot<proto::Message>();
  message.initPing().setSentNanos(MonotonicNanos());
  const absl::Time now = LivenessNow();
  absl::Time first_deadline = absl::InfiniteFuture();
  for (auto& [name, w] : elements_) {
    if (w.health == proto::Health::FAILED || w.link == nullptr) continue;
    const Heartbeat::State state = w.beat.Turn(now, away, judge);
    if (state == Heartbeat::State::kFailed) {
      SetHealth(w, proto::Health::FAILED, w.beat.Why(now));
      continue;
    }
    if (state == Heartbeat::State::kSuspect && w.health == proto::Health::HEALTHY) {
      SetHealth(w, proto::Health::SUSPECT, w.beat.Why(now));
    }
    first_deadline = std::min(first_deadline, w.beat.deadline());
    // One ping in flight at a time: a stalled ring stays short. A full or corrupt ring cuts
    // the link: OnClose handles it.
    if (ping && w.beat.Ping()) (void)w.link->Send(builder);
  }
  timer_.WakeAt(first_deadline);
}

void RackMonitor::SetHealth(Watched& w, proto::Health health, const std::string& reason) {
  if (w.health == health || w.health == proto::Health::FAILED) return;
  w.health = health;
  // The Rack MMU first: it fences and tells the processes that care, and every moment counts.
  if (mmu_ != nullptr && w.kind != proto::ElementKind::RACKMMU) {
    capnp::MallocMessageBuilder builder;
    auto message = builder.initRoot<proto::Message>();
    message.setSeq(next_seq_++);
    auto change = message.initHealthChange();
    change.setName(w.name);
    change.setHealth(health);
    change.setReason(reason);
    (void)mmu_->Send(builder);
  }
  if (health != proto::Health::FAILED) {
    LOG(INFO) << "mon: " << w.name << " is " << ipc::HealthName(health) << ": " << reason;
    return;
  }
  LOG(WARNING) << "mon: " << w.name << " (pid " << w.pid << ") failed: " << reason;
  if (w.pidfd_watch != 0) loop_.Unwatch(w.pidfd_watch);
  w.pidfd_watch = 0;
  w.pidfd.Reset();
  if (w.link != nullptr) {
    ipc::Link* link = w.link;
    w.link = nullptr;
    by_link_.erase(link->id());
    lives_.Forget(link->id());
    // Fence: a paused element that wakes up finds itself cut off from the rack.
    hub_->Close(*link, absl::UnavailableError(absl::StrCat("fenced: ", reason)));
  }
  if (w.kind == proto::ElementKind::RACKMMU) {
    mmu_ = nullptr;
    for (auto& [seq, pending] : pending_apps_) {
      if (auto client = links_.find(pending.link_id); client != links_.end()) {
        (void)client->second->ReplyError(
            pending.seq,
            absl::UnavailableError("mon: the Rack MMU failed before it held the spec"));
      }
    }
    pending_apps_.clear();
  }
  if (w.kind == proto::ElementKind::COMPUTE) {
    // The Rack MMU fails and fences its processes when it hears of this; their handlers
    // run here.
    std::vector<Process> gone;
    for (auto it = processes_.begin(); it != processes_.end();) {
      if (it->second.element == w.name) {
        gone.push_back(std::move(it->second));
        it = processes_.erase(it);
      } else {
        ++it;
      }
    }
    // An application that fails whole runs its handler once.
    std::set<std::string> whole;
    for (const Process& p : gone) {
      auto app = apps_.find(p.app);
      if (app != apps_.end() && app->second.spec.model == FateModel::kComplete &&
          !whole.insert(p.app).second) {
        continue;
      }
      RunHandler(p, absl::StrCat("its compute element ", w.name, " failed: ", reason));
    }
  }
}

absl::Status RackMonitor::HandleLifeWord(ipc::Link& link, proto::LifeWord::Reader word) {
  Watched* w = ByLink(link);
  if (w == nullptr || w->kind == proto::ElementKind::RACKMMU) {
    return absl::FailedPreconditionError("mon: a life word from no registered element");
  }
  const uint64_t link_id = link.id();
  return lives_.Watch(link_id, link.peer().pidfd.get(), word.getFd(), w->name, [this, link_id] {
    auto it = by_link_.find(link_id);
    if (it == by_link_.end()) return;
    auto e = elements_.find(it->second);
    if (e == elements_.end()) return;
    SetHealth(e->second, proto::Health::FAILED, ipc::kLifeWordDied);
  });
}

absl::Status RackMonitor::HandleProcessUp(ipc::Link& link, proto::ProcessUp::Reader up) {
  Watched* w = ByLink(link);
  if (w == nullptr || w->kind != proto::ElementKind::COMPUTE) {
    LOG(WARNING) << "mon: " << link.label() << " reported a process but is no compute element";
    return absl::OkStatus();  // reports carry seq 0: nothing to answer
  }
  Process p;
  p.id = up.getProcessId();
  p.name = up.getName();
  p.pid = up.getPid();
  p.app = up.getApp();
  p.element = w->name;
  p.pidfd = ipc::Fd(static_cast<int>(::syscall(SYS_pidfd_open, p.pid, 0)));
  processes_[p.id] = std::move(p);
  return absl::OkStatus();
}

absl::Status RackMonitor::HandleProcessDown(ipc::Link& link, proto::ProcessDown::Reader down) {
  Watched* w = ByLink(link);
  auto it = processes_.find(down.getProcessId());
  if (w == nullptr || it == processes_.end() || it->second.element != w->name ||
      it->second.pid != down.getPid()) {
    // Not its process, or an earlier holder of a recycled id.
    LOG(WARNING) << "mon: " << link.label() << " reported process " << down.getProcessId()
                 << " (pid " << down.getPid() << ") gone, which it does not host";
    return absl::OkStatus();
  }
  if (down.getClean()) {
    processes_.erase(it);
    return absl::OkStatus();
  }
  Process p = std::move(it->second);
  processes_.erase(it);
  ProcessFailed(p, down.getReason());
  return absl::OkStatus();
}

void RackMonitor::ProcessFailed(const Process& p, const std::string& reason) {
  // The Rack MMU first (it fences the process, tells its groups, holds its memory for
  // adoption), then the process's fast failure handler, whose program may adopt that memory.
  if (mmu_ != nullptr) {
    capnp::MallocMessageBuilder builder;
    auto message = builder.initRoot<proto::Message>();
    message.setSeq(next_seq_++);
    auto failed = message.initProcessFailed();
    failed.setProcessId(p.id);
    failed.setPid(p.pid);
    failed.setReason(reason);
    (void)mmu_->Send(builder);
  }
  LOG(WARNING) << "mon: process " << p.id << " (" << p.name << ", pid " << p.pid << ") on "
               << p.element << " failed: " << reason;
  RunHandler(p, reason);
}

void RackMonitor::OnClose(ipc::Link& link, const absl::Status& why) {
  links_.erase(link.id());
  launches_.erase(link.id());
  lives_.Forget(link.id());
  Watched* w = ByLink(link);
  if (w == nullptr) return;  // a client such as rackctl
  by_link_.erase(link.id());
  w->link = nullptr;
  SetHealth(*w, proto::Health::FAILED, absl::StrCat("connection lost: ", why.message()));
}

}  // namespace disagg::rackmon
