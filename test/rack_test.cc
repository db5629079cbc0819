// A whole rack of real daemons: start-up, status, failure detection, tear-down.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "rack_harness.h"

namespace disagg::testing {
namespace {

// Processes whose command line names run directory `dir` (found by scanning /proc).
std::vector<pid_t> PidsRunningIn(const std::string& dir) {
  std::vector<pid_t> pids;
  const std::string flag = "--run_dir=" + dir;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return pids;
  while (dirent* entry = ::readdir(proc)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(entry->d_name));
    if (pid <= 0 || !ProcessAlive(pid)) continue;
    std::ifstream cmdline(std::string("/proc/") + entry->d_name + "/cmdline");
    std::string args((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
    std::replace(args.begin(), args.end(), '\0', ' ');
    if (args.find(flag + " ") != std::string::npos) pids.push_back(pid);
  }
  ::closedir(proc);
  return pids;
}

bool AllGone(const std::vector<pid_t>& pids) {
  for (pid_t pid : pids) {
    if (ProcessAlive(pid)) return false;
  }
  return true;
}

TEST_CASE("A rack of 2 compute and 2 memory elements comes up, sees failures and goes down") {
  TestRack rack;
  std::string out;
  // Detection is the point: the default limit of silence (200 ms), with heartbeats every 10 ms
  // (not 50) so that a peer's last answer is never old when it is descheduled for a while.
  REQUIRE(rack.Up("--compute 2 --memory 2 --pool-size 64M --cache-budget 16M --heartbeat-ms 10 "
                  "--silence-ms 200",
                  &out) == 0);
  INFO(out);

  auto rows = rack.Status();
  REQUIRE(rows.size() == 6);
  for (const char* name : {"mmu", "mon", "cpu0", "cpu1", "mem0", "mem1"}) {
    INFO(name);
    REQUIRE(rows.count(name) == 1);
    REQUIRE(rows[name].state != "failed");
    REQUIRE(rack.WaitForState(name, "healthy"));
    REQUIRE(rows[name].pid == rack.Pid(name));
    REQUIRE(ProcessAlive(rows[name].pid));
  }
  REQUIRE(rows["mem0"].kind == "memory");
  REQUIRE(rows["mem0"].capacity_bytes == 64ull << 20);
  REQUIRE(rows["cpu1"].kind == "compute");
  REQUIRE(rows["cpu1"].capacity_bytes == 16ull << 20);
  const std::vector<pid_t> pids = rack.AllPids();
  REQUIRE(pids.size() == 6);

  SECTION("a memory element killed with SIGKILL is marked failed; the others stay healthy") {
    const auto start = std::chrono::steady_clock::now();
    REQUIRE(::kill(rack.Pid("mem0"), SIGKILL) == 0);
    REQUIRE(rack.WaitForState("mem0", "failed"));
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    WARN("mem0 seen failed " << ms << " ms after SIGKILL");
    rows = rack.Status();
    for (const char* name : {"mmu", "mon", "cpu0", "cpu1", "mem1"}) {
      INFO(name);
      REQUIRE(rows[name].state != "failed");
      REQUIRE(rack.WaitForState(name, "healthy"));
    }
  }
  SECTION("a compute element that stops answering heartbeats is marked failed and fenced") {
    const pid_t cpu1 = rack.Pid("cpu1");
    REQUIRE(::kill(cpu1, SIGSTOP) == 0);
    REQUIRE(rack.WaitForState("cpu1", "failed"));
    REQUIRE(ProcessAlive(cpu1));  // the process is still there: only heartbeats told
    REQUIRE(::kill(cpu1, SIGCONT) == 0);
    // Woken up, it finds itself cut off from the rack and stops.
    for (int i = 0; i < 1000 && ProcessAlive(cpu1); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    REQUIRE_FALSE(ProcessAlive(cpu1));
    REQUIRE(rack.Status()["cpu1"].state == "failed");
  }
  SECTION("a rack monitor that does not run for longer than the limit holds it against nobody") {
    const pid_t mon = rack.Pid("mon");
    REQUIRE(::kill(mon, SIGSTOP) == 0);  // the elements' answers wait in its rings meanwhile
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    REQUIRE(::kill(mon, SIGCONT) == 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(400));  // rounds after it
    rows = rack.Status();
    for (const char* name : {"mmu", "cpu0", "cpu1", "mem0", "mem1"}) {
      INFO(name);
      REQUIRE(rows[name].state != "failed");
      REQUIRE(rack.WaitForState(name, "healthy"));
    }
    std::string log;
    REQUIRE(RunCommand("cat " + rack.dir() + "/mon.log", &log) == 0);
    REQUIRE_THAT(log, Catch::Contains("not held against the elements"));
  }

  REQUIRE(rack.Down(&out) == 0);
  INFO(out);
  REQUIRE(AllGone(pids));
  struct stat st;
  REQUIRE(::stat((rack.dir() + "/mmu.sock").c_str(), &st) != 0);
  REQUIRE(::stat((rack.dir() + "/pids/mmu.pid").c_str(), &st) != 0);
}

TEST_CASE("A test process that ends without running its destructors still has its rack torn down") {
  // How the test process ends: _Exit, as libdisagg does when its compute element is gone; or
  // SIGTERM to its whole process group, as `timeout` and ctest send to a hung test (and Ctrl-C
  // at a terminal sends SIGINT).
  const bool by_group_signal = GENERATE(false, true);
  INFO((by_group_signal ? "SIGTERM to the process group" : "_Exit"));
  int report[2];
  REQUIRE(::pipe2(report, O_CLOEXEC) == 0);  // the rack's daemons must not hold it
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(report[0]);
    // The test framework's handlers of SIGTERM and SIGINT would report a failure from here.
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGINT, SIG_DFL);
    // Never outlives this test process, whatever becomes of it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() == 1) std::_Exit(71);
    // A group of its own, so that the signal does not reach this test process.
    if (by_group_signal) ::setpgid(0, 0);
    TestRack rack;
    std::string line = rack.dir();
    if (rack.Up("--compute 1 --memory 1 --pool-size 16M") == 0) {
      for (pid_t pid : rack.AllPids()) line.append(" ").append(std::to_string(pid));
    }
    line += "\n";
    (void)!::write(report[1], line.data(), line.size());
    if (by_group_signal) {
      ::alarm(60);  // a bound, should the signal never come
      while (true) ::pause();
    }
    std::_Exit(70);  // no destructors
  }
  ::close(report[1]);
  bool reaped = false;
  auto kill_child = absl::MakeCleanup([&] {  // on a failed REQUIRE before it was reaped
    if (reaped) return;
    ::kill(child, SIGKILL);  // and its group, if it made one
    if (by_group_signal) ::kill(-child, SIGKILL);
    ::waitpid(child, nullptr, 0);
  });
  std::string line;
  char buf[512];
  ssize_t n;
  while ((n = ::read(report[0], buf, sizeof(buf))) > 0) {
    line.append(buf, n);
    if (line.back() == '\n') break;
  }
  ::close(report[0]);
  if (by_group_signal) REQUIRE(::kill(-child, SIGTERM) == 0);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  reaped = true;
  if (by_group_signal) {
    CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM));
  } else {
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 70));
  }
  std::istringstream words(line);
  std::string dir;
  words >> dir;
  std::vector<pid_t> pids;
  for (pid_t pid; words >> pid;) pids.push_back(pid);
  INFO(line);
  // Whatever happens below, nothing this test started outlives it.
  auto cleanup = absl::MakeCleanup([&] {
    for (pid_t pid : pids) {
      if (ProcessAlive(pid)) ::kill(pid, SIGKILL);
    }
    if (!dir.empty()) RunCommand("rm -rf '" + dir + "'");
  });
  REQUIRE(pids.size() == 4);
  struct stat st;
  for (int i = 0; i < 300 && (!AllGone(pids) || ::stat(dir.c_str(), &st) == 0); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE(AllGone(pids));
  REQUIRE(::stat(dir.c_str(), &st) != 0);
}

TEST_CASE("scripts/rack down stops daemons whose binaries were rebuilt while they ran") {
  // A private copy of the daemons, replaced under the running rack as a rebuild would.
  struct TempDir {
    std::string path;
    ~TempDir() { RunCommand("rm -rf '" + path + "'"); }
  } bin_dir;
  char tmpl[] = "/tmp/disagg-bin-XXXXXX";
  bin_dir.path = ::mkdtemp(tmpl);
  const std::string& bin = bin_dir.path;
  const std::string copy = std::string("cp ") + DISAGG_BIN_DIR +
                           "/{rackmmu,rackmon,procmon,memmon,rackctl} " + bin + "/";
  REQUIRE(RunCommand("bash -c '" + copy + "'") == 0);
  {
    TestRack rack(bin);
    REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M") == 0);
    const std::vector<pid_t> pids = rack.AllPids();
    REQUIRE(pids.size() == 4);
    REQUIRE(RunCommand("bash -c 'rm " + bin + "/{rackmmu,rackmon,procmon,memmon} && " + copy +
                       "'") == 0);
    std::string out;
    REQUIRE(rack.Down(&out) == 0);
    INFO(out);
    REQUIRE(AllGone(pids));
  }
}

TEST_CASE("scripts/rack refuses a taken name and bad arguments, starting nothing") {
  TestRack rack;
  std::string out;
  SECTION("taken") {
    REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M") == 0);
    const std::vector<pid_t> before = rack.AllPids();
    REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M", &out) != 0);
    REQUIRE_THAT(out, Catch::Contains("already running"));
    REQUIRE(rack.AllPids() == before);
    for (pid_t pid : before) REQUIRE(ProcessAlive(pid));
  }
  SECTION("bad arguments") {
    for (const char* args : {"--compute x", "--memory -1", "--pool-size lots", "--bogus 1",
                             "--silence-ms 1", "--heartbeat-ms 0", "--compute 65"}) {
      INFO(args);
      REQUIRE(rack.Up(args, &out) != 0);
      REQUIRE_FALSE(out.empty());
      REQUIRE(rack.AllPids().empty());
    }
  }
  SECTION("a daemon that refuses its flags: up fails at once with its reason, nothing left") {
    const auto start = std::chrono::steady_clock::now();
    REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M --cache-budget 1K", &out) != 0);
    INFO(out);
    REQUIRE_THAT(out, Catch::Contains("cpu0 exited on start-up") &&
                          Catch::Contains("--cache_budget=1K: must be at least 64K"));
    REQUIRE(rack.AllPids().empty());
    // Said as soon as it happened, not after the wait for health ran out (15 s).
    REQUIRE(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
  }
  SECTION("... also when whoever reads its output stops reading at once") {
    RunCommand(std::string("DISAGG_BIN=") + DISAGG_BIN_DIR + " " + DISAGG_SOURCE_DIR +
               "/scripts/rack up --dir " + rack.dir() +
               " --compute 1 --memory 1 --pool-size 16M --cache-budget 1K 2>&1 | head -c 1");
    REQUIRE(PidsRunningIn(rack.dir()).empty());
  }
}

TEST_CASE("rackctl explains what is wrong instead of failing silently") {
  std::string out;
  REQUIRE(RunCommand(std::string(DISAGG_BIN_DIR) + "/rackctl --rack /nonexistent status", &out) ==
          1);
  REQUIRE_THAT(out, Catch::Contains("cannot reach the rack monitor"));
  REQUIRE(RunCommand(std::string(DISAGG_BIN_DIR) + "/rackctl --rack /tmp frobnicate", &out) == 2);
  REQUIRE_THAT(out, Catch::Contains("unknown command"));
}

TEST_CASE("rackctl --help shows rackctl's own commands and flags, --helpfull every flag") {
  const std::string rackctl = std::string(DISAGG_BIN_DIR) + "/rackctl";
  for (const std::string args : {"--help", "-h", "help", "status --help", "run --on cpu0 --help"}) {
    DYNAMIC_SECTION(args) {
      std::string out;
      REQUIRE(RunCommand(rackctl + " " + args, &out) == 0);
      REQUIRE_THAT(out, Catch::Contains("usage: rackctl") && Catch::Contains("check") &&
                            Catch::Contains("--timeout_ms") && Catch::Contains("--helpfull"));
      REQUIRE_THAT(out, !Catch::Contains("logtostderr"));  // the logging library's own
    }
  }
  std::string full;
  REQUIRE(RunCommand(rackctl + " --helpfull", &full) == 1);  // gflags' own exit status
  REQUIRE_THAT(full, Catch::Contains("logtostderr") && Catch::Contains("timeout_ms"));
}

TEST_CASE("rackctl status --json is JSON with stable snake_case keys") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M --silence-ms 2000") == 0);
  const std::string status =
      std::string(DISAGG_BIN_DIR) + "/rackctl --rack " + rack.dir() + " status --json";
  std::string out;
  // jq parses it as JSON (and fails on anything else), whatever the order or spacing.
  REQUIRE(RunCommand(status + " | jq -e '.rack and (.grace_period_ms == 10000) and "
                              "(.elements | length == 4) and (.elements | all(has(\"name\") and "
                              "has(\"kind\") and has(\"pid\") and has(\"state\") and "
                              "has(\"capacity_bytes\") and has(\"used_bytes\") and "
                              "has(\"heartbeat_age_ms\"))) and (.processes == [])'",
                     &out) == 0);
  REQUIRE(RunCommand(status + " | jq -r '.elements[] | select(.name == \"mem0\") | "
                              ".capacity_bytes | tonumber'",
                     &out) == 0);
  REQUIRE(out == std::to_string(16 << 20) + "\n");
  // The harness reads it with the codec that wrote it.
  REQUIRE(rack.Status().at("mem0").capacity_bytes == 16 << 20);
}

}  // namespace
}  // namespace disagg::testing
