#include "freezer.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "internal/logging.h"

namespace disagg::rackmon {
namespace {

constexpr char kFreezerRoot[] = "/sys/fs/cgroup/freezer";

bool WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.flush();
  return static_cast<bool>(out);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int PidfdSignal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

}  // namespace

std::vector<pid_t> Descendants(pid_t pid) {
  std::vector<pid_t> out;
  std::vector<pid_t> todo{pid};
  while (!todo.empty() && out.size() < 4096) {
    const pid_t p = todo.back();
    todo.pop_back();
    std::istringstream children(ReadFile(absl::StrCat("/proc/", p, "/task/", p, "/children")));
    pid_t child;
    while (children >> child) {
      out.push_back(child);
      todo.push_back(child);
    }
  }
  return out;
}

absl::StatusOr<Freezer> Freezer::Pause(const std::string& name, const std::vector<pid_t>& pids) {
  Freezer f;
  for (pid_t pid : pids) {
    ipc::Fd fd(PidfdOpen(pid));
    if (!fd.valid()) continue;  // gone already
    f.pids_.push_back(pid);
    f.pidfds_.push_back(std::move(fd));
  }
  if (f.pids_.empty()) {
    return absl::FailedPreconditionError("none of its processes is running");
  }
  struct stat st;
  if (::stat(absl::StrCat(kFreezerRoot, "/cgroup.procs").c_str(), &st) == 0) {
    const std::string dir = absl::StrCat(kFreezerRoot, "/disagg-", name, "-", ::getpid());
    if (::mkdir(dir.c_str(), 0755) == 0 || errno == EEXIST) {
      bool moved = true;
      for (pid_t pid : f.pids_)
        moved = WriteFile(dir + "/cgroup.procs", absl::StrCat(pid)) && moved;
      if (moved && WriteFile(dir + "/freezer.state", "FROZEN")) {
        // FREEZING until every task stopped; a task in an uninterruptible sleep may delay it.
        const absl::Time deadline = absl::Now() + absl::Milliseconds(500);
        while (ReadFile(dir + "/freezer.state").rfind("FROZEN", 0) != 0 && absl::Now() < deadline) {
          absl::SleepFor(absl::Microseconds(200));
        }
        f.cgroup_ = dir;
        f.paused_ = true;
        return f;
      }
      LOG(WARNING) << "mon: the cgroup freezer at " << dir << " did not take; using SIGSTOP";
      WriteFile(dir + "/freezer.state", "THAWED");
      for (pid_t pid : f.pids_)
        WriteFile(absl::StrCat(kFreezerRoot, "/cgroup.procs"), absl::StrCat(pid));
      ::rmdir(dir.c_str());
    }
  }
  for (const ipc::Fd& fd : f.pidfds_) (void)PidfdSignal(fd.get(), SIGSTOP);
  f.paused_ = true;
  return f;
}

void Freezer::Resume() {
  if (!paused_) return;
  paused_ = false;
  if (!cgroup_.empty()) {
    WriteFile(cgroup_ + "/freezer.state", "THAWED");
    // Back to the root cgroup, so that the cgroup can go: what is in it now (a pid that ended
    // left it, so no other process is moved).
    std::istringstream left(ReadFile(cgroup_ + "/cgroup.procs"));
    pid_t pid;
    while (left >> pid) WriteFile(absl::StrCat(kFreezerRoot, "/cgroup.procs"), absl::StrCat(pid));
    if (::rmdir(cgroup_.c_str()) != 0) {
      LOG(WARNING) << "mon: cannot remove " << cgroup_ << ": " << std::strerror(errno);
    }
    return;
  }
  for (const ipc::Fd& fd : pidfds_) (void)PidfdSignal(fd.get(), SIGCONT);
}

Freezer::~Freezer() { Resume(); }

void Freezer::SweepStale() {
  DIR* dir = ::opendir(kFreezerRoot);
  if (dir == nullptr) return;
  while (dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name.rfind("disagg-", 0) != 0) continue;
    const size_t dash = name.rfind('-');
    const pid_t owner = static_cast<pid_t>(std::atoi(name.c_str() + dash + 1));
    if (owner > 0 && (::kill(owner, 0) == 0 || errno != ESRCH)) continue;  // its monitor runs
    const std::string path = absl::StrCat(kFreezerRoot, "/", name);
    LOG(WARNING) << "mon: thawing " << path << ", left frozen by a rack monitor that died";
    WriteFile(path + "/freezer.state", "THAWED");
    std::istringstream left(ReadFile(path + "/cgroup.procs"));
    pid_t pid;
    while (left >> pid) WriteFile(absl::StrCat(kFreezerRoot, "/cgroup.procs"), absl::StrCat(pid));
    ::rmdir(path.c_str());
  }
  ::closedir(dir);
}

}  // namespace disagg::rackmon
