#include "launcher.h"

#include <capnp/message.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "internal/daemon.h"
#include "internal/logging.h"
#include "internal/status_macros.h"

#ifndef P_PIDFD
#define P_PIDFD 3  // Linux 5.4; older glibc headers lack the name
#endif

namespace disagg::procmon {
namespace {

// Debian 12's <sys/pidfd.h> declares these without C linkage; the system calls are direct.
int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int PidfdGetfd(int pidfd, int fd) {
  return static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, fd, 0));
}
int PidfdSignal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

constexpr size_t kMaxStrings = 4096;  // argv or env entries in one request

// A Text field as a C string, refused if it carries a NUL inside (exec would cut it there).
absl::StatusOr<std::string> CString(capnp::Text::Reader text, const char* what) {
  std::string s(text.cStr(), text.size());
  if (s.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(what, " contains a NUL byte"));
  }
  return s;
}

absl::StatusOr<std::vector<std::string>> Strings(capnp::List<capnp::Text>::Reader list,
                                                 const char* what) {
  if (list.size() > kMaxStrings) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has ", list.size(), " entries (limit ", kMaxStrings, ")"));
  }
  std::vector<std::string> out;
  out.reserve(list.size());
  for (auto text : list) {
    absl::StatusOr<std::string> s = CString(text, what);
    if (!s.ok()) return s.status();
    out.push_back(*std::move(s));
  }
  return out;
}

std::vector<char*> CArray(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// What the child reports through its close-on-exec pipe when it cannot start the program.
struct SpawnFailure {
  int stage;  // 0: chdir, 1: exec
  int error;
};

}  // namespace

std::vector<std::string> MergeEnvironment(std::vector<std::string> caller,
                                          const std::vector<std::string>& additions) {
  std::vector<std::string> out;
  for (auto& entry : caller) {
    bool replaced = false;
    for (const auto& add : additions) {
      replaced |= absl::StartsWith(entry, add.substr(0, add.find('=') + 1));
    }
    if (!replaced) out.push_back(std::move(entry));
  }
  out.insert(out.end(), additions.begin(), additions.end());
  return out;
}

Launcher::Launcher(ipc::EventLoop& loop, std::string element,
                   std::vector<std::string> env_additions)
    : loop_(loop), element_(std::move(element)), env_additions_(std::move(env_additions)) {}

Launcher::~Launcher() {
  // The programs end with procmon (PR_SET_PDEATHSIG); only the watches are ours to drop.
  for (auto& [pid, program] : programs_) {
    loop_.Unwatch(program.watch);
    if (program.kill_timer != 0) loop_.Unwatch(program.kill_timer);
  }
}

absl::StatusOr<Launcher::Request> Launcher::Parse(ipc::Link& link, proto::Launch::Reader request) {
  Request out;
  ASSIGN_OR_RETURN(out.argv, Strings(request.getArgv(), "argv"));
  if (out.argv.empty() || out.argv[0].empty()) {
    return absl::InvalidArgumentError("argv names no program");
  }
  ASSIGN_OR_RETURN(std::vector<std::string> env, Strings(request.getEnv(), "env"));
  ASSIGN_OR_RETURN(out.cwd, CString(request.getCwd(), "cwd"));
  if (out.cwd.empty() || out.cwd[0] != '/') {
    return absl::InvalidArgumentError("cwd must be an absolute path");
  }
  auto stdio = request.getStdio();
  if (stdio.size() != 3) {
    return absl::InvalidArgumentError(absl::StrCat("stdio names ", stdio.size(), " fds, not 3"));
  }
  for (int i = 0; i < 3; ++i) {
    const int fd = stdio[i];
    if (fd < 0) return absl::InvalidArgumentError(absl::StrCat("stdio fd ", fd));
    out.stdio[i] = ipc::Fd(PidfdGetfd(link.peer().pidfd.get(), fd));
    if (!out.stdio[i].valid()) {
      const int error = errno;
      const std::string why =
          absl::StrCat(element_, ": cannot take the caller's fd ", fd, ": ", std::strerror(error));
      if (error == EBADF) return absl::InvalidArgumentError(why);
      return absl::PermissionDeniedError(
          absl::StrCat(why, " (the caller must allow it with PR_SET_PTRACER, as rackctl does)"));
    }
  }
  // The caller's environment, with the element's own entries instead of any of the same name.
  out.env = MergeEnvironment(std::move(env), env_additions_);
  return out;
}

absl::Status Launcher::HandleLaunch(ipc::Link& link, uint64_t seq, proto::Launch::Reader request) {
  auto refuse = [&](const absl::Status& why) {
    LOG(WARNING) << element_ << ": refused to launch for " << link.label() << ": " << why;
    return link.ReplyError(seq, why);
  };
  // The program runs as procmon's user: only that user (or root) may start one.
  if (link.peer().uid != ::getuid() && link.peer().uid != 0) {
    return refuse(absl::PermissionDeniedError(absl::StrCat(
        element_, ": uid ", link.peer().uid, " may not start programs as uid ", ::getuid())));
  }
  if (program_by_link_.count(link.id()) != 0) {
    return refuse(absl::FailedPreconditionError(
        absl::StrCat(element_, ": this connection already runs a program")));
  }
  absl::StatusOr<Request> parsed = Parse(link, request);
  if (!parsed.ok()) return refuse(parsed.status());
  const int stdio[3] = {parsed->stdio[0].get(), parsed->stdio[1].get(), parsed->stdio[2].get()};
  absl::StatusOr<pid_t> pid = SpawnProgram(parsed->argv, parsed->env, parsed->cwd, stdio);
  if (!pid.ok()) return refuse(pid.status());
  ipc::Fd pidfd(PidfdOpen(*pid));
  if (!pidfd.valid()) {  // out of fds, say: a program we cannot watch is not kept
    const int error = errno;
    ::kill(*pid, SIGKILL);
    ::waitpid(*pid, nullptr, 0);
    return refuse(absl::ResourceExhaustedError(
        absl::StrCat(element_, ": cannot watch a new program: ", std::strerror(error))));
  }
  Program& program = programs_[*pid];
  program.pid = *pid;
  program.launcher = &link;
  program.seq = seq;
  program.watch = loop_.WatchFd(pidfd.get(), POLLIN, [this, p = *pid](int) { Reap(p); });
  program.pidfd = std::move(pidfd);
  program_by_link_[link.id()] = *pid;
  LOG(INFO) << element_ << ": started " << parsed->argv[0] << " as pid " << *pid << " for "
            << link.label();
  capnp::MallocMessageBuilder reply;
  auto root = reply.initRoot<proto::Message>();
  root.setSeq(seq);
  root.initLaunched().setPid(static_cast<uint32_t>(*pid));
  return link.Send(reply);
}

absl::StatusOr<pid_t> SpawnProgram(const std::vector<std::string>& argv_in,
                                   const std::vector<std::string>& env_in, const std::string& cwd,
                                   const int (&stdio)[3]) {
  if (argv_in.empty()) return absl::InvalidArgumentError("argv names no program");
  for (int fd : stdio) {
    if (fd < 3) return absl::InvalidArgumentError(absl::StrCat("stdio fd ", fd, " is below 3"));
  }
  // Everything the child needs is made before fork: after it, only async-signal-safe calls.
  // The caller waits for the exec (or its failure) through the report pipe: a few
  // milliseconds on a local file system.
  std::vector<std::string> argv_copy = argv_in, env_copy = env_in;
  std::vector<char*> argv = CArray(argv_copy), env = CArray(env_copy);
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(report[0]);
    ::close(report[1]);
    return absl::ResourceExhaustedError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a process does not outlive its compute element
    if (::getppid() != parent) ::_exit(127);
    ::setpgid(0, 0);
    ::setpriority(PRIO_PROCESS, 0, BaseNice());       // an application, not part of the rack
    for (int i = 0; i < 3; ++i) ::dup2(stdio[i], i);  // the copies are all >= 3
    ::dup3(report[1], 3, O_CLOEXEC);
    ::close_range(4, ~0U, 0);
    for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);  // the loop blocks SIGTERM and SIGINT
    SpawnFailure failure{0, 0};
    if (::chdir(cwd.c_str()) == 0) {
      ::execve(argv[0], argv.data(), env.data());
      failure.stage = 1;
    }
    failure.error = errno;
    (void)!::write(3, &failure, sizeof(failure));
    ::_exit(127);
  }
  ::close(report[1]);
  SpawnFailure failure;
  ssize_t n;
  do {
    n = ::read(report[0], &failure, sizeof(failure));  // EOF: the exec went through
  } while (n < 0 && errno == EINTR);
  ::close(report[0]);
  if (n == sizeof(failure)) {
    ::waitpid(pid, nullptr, 0);
    return absl::NotFoundError(
        failure.stage == 0
            ? absl::StrCat("cannot enter ", cwd, ": ", std::strerror(failure.error))
            : absl::StrCat("cannot run ", argv_in[0], ": ", std::strerror(failure.error)));
  }
  return pid;
}

void Launcher::Reap(pid_t pid) {
  auto it = programs_.find(pid);
  if (it == programs_.end()) return;
  Program& program = it->second;
  siginfo_t info{};
  if (::waitid(static_cast<idtype_t>(P_PIDFD), program.pidfd.get(), &info, WEXITED | WNOHANG) !=
      0) {
    // Not ours to reap any more (it cannot be waited for): count it as ended, with an unknown
    // status, rather than be woken by its pidfd again and again.
    LOG(WARNING) << element_ << ": waitid of pid " << pid << ": " << std::strerror(errno);
    info.si_code = CLD_EXITED;
    info.si_status = 255;
  } else if (info.si_pid == 0) {
    return;  // not ended after all
  }
  const bool exited = info.si_code == CLD_EXITED;
  LOG(INFO) << element_ << ": pid " << pid << (exited ? " exited with " : " ended by signal ")
            << info.si_status;
  if (program.launcher != nullptr) {
    capnp::MallocMessageBuilder message;
    auto root = message.initRoot<proto::Message>();
    root.setSeq(program.seq);
    auto body = root.initExited();
    body.setPid(static_cast<uint32_t>(pid));
    body.setExitCode(exited ? info.si_status : 0);
    body.setSignal(exited ? 0 : info.si_status);
    absl::Status sent = program.launcher->Send(message);
    if (!sent.ok()) LOG(WARNING) << element_ << ": " << sent;
    program_by_link_.erase(program.launcher->id());
  }
  loop_.Unwatch(program.watch);  // before the pidfd closes
  if (program.kill_timer != 0) loop_.Unwatch(program.kill_timer);
  programs_.erase(it);
}

absl::Status Launcher::HandleSignal(ipc::Link& link, uint64_t seq,
                                    proto::SignalProgram::Reader request) {
  auto it = program_by_link_.find(link.id());
  if (it == program_by_link_.end()) {
    return link.ReplyError(seq, absl::FailedPreconditionError(
                                    absl::StrCat(element_, ": this connection runs no program")));
  }
  const int sig = request.getSignal();
  if (sig <= 0 || sig >= NSIG) {
    return link.ReplyError(seq, absl::InvalidArgumentError(absl::StrCat("no signal ", sig)));
  }
  if (PidfdSignal(programs_[it->second].pidfd.get(), sig) != 0) {
    return link.ReplyError(
        seq, absl::InternalError(absl::StrCat("pidfd_send_signal: ", std::strerror(errno))));
  }
  return link.ReplyOk(seq);
}

void Launcher::LinkClosed(ipc::Link& link) {
  auto it = program_by_link_.find(link.id());
  if (it == program_by_link_.end()) return;
  Program& program = programs_[it->second];
  program.launcher = nullptr;
  program_by_link_.erase(it);
  LOG(INFO) << element_ << ": the launcher of pid " << program.pid
            << " hung up: sending it SIGTERM";
  PidfdSignal(program.pidfd.get(), SIGTERM);
  // The timer goes with the program's record (Reap); if it fires, the program outstayed SIGTERM.
  const pid_t pid = program.pid;
  program.kill_timer = loop_.AddTimer(kKillGrace, [this, pid] {
    auto it = programs_.find(pid);
    if (it == programs_.end()) return;
    LOG(WARNING) << element_ << ": pid " << pid << " outlived SIGTERM by "
                 << absl::FormatDuration(kKillGrace) << ": SIGKILL";
    PidfdSignal(it->second.pidfd.get(), SIGKILL);
    loop_.Unwatch(it->second.kill_timer);
    it->second.kill_timer = 0;
  });
}

}  // namespace disagg::procmon
