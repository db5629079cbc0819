#include "rack_harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>
#include <utility>

#include "status_decode.h"
#include "status_json.capnp.h"

namespace disagg::testing {

int RunCommand(const std::string& command, std::string* output) {
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  const int status = ::pclose(pipe);
  if (output != nullptr) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool ProcessAlive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return false;
  std::string line;
  std::getline(stat, line);
  const size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}

namespace {

std::string DownCommand(const std::string& bin_dir, const std::string& dir) {
  return "DISAGG_BIN=" + bin_dir + " " + DISAGG_SOURCE_DIR + "/scripts/rack down --dir " + dir;
}

}  // namespace

TestRack::TestRack(std::string bin_dir) : bin_dir_(std::move(bin_dir)) {
  char tmpl[] = "/tmp/disagg-test-XXXXXX";
  dir_ = ::mkdtemp(tmpl);
  // The reaper: a shell that waits on a pipe from this process. The destructor writes "done"
  // after tearing the rack down itself; if this process ends any other way (a library that
  // _Exits with its compute element, a signal, a crash) the pipe reads EOF and the reaper tears
  // the rack down instead. It runs in a session of its own: a signal to the test's process
  // group (`timeout`, ctest's kill of a hung test, Ctrl-C at a terminal) must not end it with
  // the test. It execs at once, so forking a threaded test process is safe.
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return;
  const std::string script = "read word; [ \"$word\" = done ] || { " + DownCommand(bin_dir_, dir_) +
                             "; rm -rf '" + dir_ + "'; }";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setsid();
    ::dup2(fds[0], STDIN_FILENO);  // dup2 clears close-on-exec on the copy
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, STDOUT_FILENO);  // ctest must not wait for the reaper's output
    ::dup2(null, STDERR_FILENO);
    ::execl("/bin/sh", "sh", "-c", script.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[0]);
  if (pid < 0) {
    ::close(fds[1]);
    return;
  }
  reaper_ = pid;
  reaper_pipe_ = fds[1];
}

// What the sanitizers said in the daemons' standard error (<dir>/<element>.out), if anything.
std::string SanitizerReports(const std::string& dir) {
  std::string out;
  RunCommand(
      "grep -l -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: "
      "ThreadSanitizer' '" +
          dir + "'/*.out 2>/dev/null | xargs -r tail -n 60",
      &out);
  return out;
}

TestRack::~TestRack() {
  Down();
  // A daemon's memory error or data race fails the test that ran it, with the report.
  const std::string reports = SanitizerReports(dir_);
  RunCommand("rm -rf '" + dir_ + "'");
  if (reaper_ > 0) {
    (void)!::write(reaper_pipe_, "done\n", 5);
    ::close(reaper_pipe_);
    ::waitpid(reaper_, nullptr, 0);
  }
  if (!reports.empty()) {
    std::fprintf(stderr, "a rack daemon's sanitizer reported:\n%s\n", reports.c_str());
    std::fflush(stderr);
    std::_Exit(1);
  }
}

int TestRack::Up(const std::string& args, std::string* output) {
  // Tests about something else than failure detection get a generous limit (2 s without an
  // answer to heartbeats): under a parallel suite on 2 cores a scheduling stall must not fence an
  // element and fail an unrelated test. Tests of detection name their own limit.
  const std::string limit =
      args.find("--silence-ms") == std::string::npos ? " --silence-ms 2000" : "";
  std::string out;
  const int rc =
      RunCommand("DISAGG_BIN=" + bin_dir_ + " " + DISAGG_SOURCE_DIR + "/scripts/rack up --dir " +
                     dir_ + " " + args + limit + " " + DISAGG_TEST_RACK_ARGS,
                 &out);
  // A rack that should have come up and did not: its own account (with the daemons' last log
  // lines) is what explains the failure.
  if (rc != 0 && output == nullptr)
    std::fprintf(stderr, "scripts/rack up failed:\n%s", out.c_str());
  if (output != nullptr) *output = std::move(out);
  return rc;
}

int TestRack::Down(std::string* output) { return RunCommand(DownCommand(bin_dir_, dir_), output); }

namespace {

// `rackctl status --json`, decoded with the codec that encoded it; false if rackctl failed or
// printed something that is not its JSON.
bool DecodeStatus(const std::string& bin_dir, const std::string& dir,
                  const std::function<void(rackctl::StatusJson::Reader)>& use) {
  std::string out;
  if (RunCommand(bin_dir + "/rackctl --rack " + dir + " status --json 2>/dev/null", &out) != 0) {
    return false;
  }
  return rackctl::DecodeStatusJson(out, use);
}

}  // namespace

std::map<std::string, ElementRow> TestRack::Status() {
  std::map<std::string, ElementRow> rows;
  DecodeStatus(bin_dir_, dir_, [&](rackctl::StatusJson::Reader status) {
    for (auto e : status.getElements()) {
      rows[e.getName()] =
          ElementRow{e.getKind(), e.getPid(), e.getState(), e.getCapacityBytes(), e.getUsedBytes()};
    }
  });
  return rows;
}

std::vector<ProcessRow> TestRack::Processes() {
  std::vector<ProcessRow> rows;
  DecodeStatus(bin_dir_, dir_, [&](rackctl::StatusJson::Reader status) {
    for (auto p : status.getProcesses()) {
      rows.push_back(ProcessRow{p.getId(), p.getName(), p.getMappedBytes(), p.getCachedBytes(),
                                p.getCacheQuotaBytes(), p.getDead()});
    }
  });
  return rows;
}

bool TestRack::WaitForState(const std::string& name, const std::string& state, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    auto rows = Status();
    auto it = rows.find(name);
    if (it != rows.end() && it->second.state == state) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

pid_t TestRack::Pid(const std::string& element) const {
  std::ifstream f(dir_ + "/pids/" + element + ".pid");
  pid_t pid = 0;
  f >> pid;
  return pid;
}

std::vector<pid_t> TestRack::AllPids() const {
  std::vector<pid_t> pids;
  DIR* d = ::opendir((dir_ + "/pids").c_str());
  if (d == nullptr) return pids;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() > 4 && name.substr(name.size() - 4) == ".pid") {
      pids.push_back(Pid(name.substr(0, name.size() - 4)));
    }
  }
  ::closedir(d);
  return pids;
}

}  // namespace disagg::testing
