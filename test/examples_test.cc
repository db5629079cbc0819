// The examples, run as a user runs them: `rackctl run --on cpuN -- PROGRAM` on a private rack.
#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "disagg/disagg.h"
#include "rack_harness.h"

namespace disagg::testing {
namespace {

std::string Bin(const std::string& name) { return std::string(DISAGG_BIN_DIR) + "/" + name; }

std::string RunOn(const TestRack& rack, const std::string& element, const std::string& program) {
  return Bin("rackctl") + " --rack " + rack.dir() + " run --on " + element + " -- " + program;
}

TEST_CASE(
    "rackctl run starts hello on a compute element, which maps, writes, flushes, reads back") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 2 --memory 1 --pool-size 16M --cache-budget 1M") == 0);
  std::string out;
  REQUIRE(RunCommand(RunOn(rack, "cpu1", Bin("hello")), &out) == 0);
  INFO(out);
  // The whole line: the greeting, where it lives, and that Flush wrote its page back (a Flush
  // that did nothing would say 0 written back).
  REQUIRE(out.find("hello from process 1, at rack address 0x") == 0);
  REQUIRE(out.find(" (1 MiB region; 1 page(s) fetched, 1 written back)\n") != std::string::npos);
  REQUIRE(std::count(out.begin(), out.end(), '\n') == 1);
  SECTION("an unknown element or program is a clear error") {
    REQUIRE(RunCommand(RunOn(rack, "cpu7", Bin("hello")), &out) != 0);
    REQUIRE(out.find("no compute element 'cpu7' (it has: cpu0, cpu1)") != std::string::npos);
    REQUIRE(RunCommand(RunOn(rack, "cpu0", "/nonexistent/prog"), &out) != 0);
    REQUIRE(out.find("cannot run /nonexistent/prog") != std::string::npos);
  }
}

// Live children of `parent` (from /proc/*/stat).
std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> out;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return out;
  while (dirent* entry = ::readdir(proc)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(entry->d_name));
    if (pid <= 0) continue;
    std::ifstream stat(std::string("/proc/") + entry->d_name + "/stat");
    std::string line;
    std::getline(stat, line);
    const size_t paren = line.rfind(')');
    if (paren == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(line.c_str() + paren + 1, " %c %d", &state, &ppid) == 2 && ppid == parent &&
        state != 'Z') {
      out.push_back(pid);
    }
  }
  ::closedir(proc);
  return out;
}

// True once `pid` is gone (or a zombie), within 10 s.
bool GoneWithin10s(pid_t pid) {
  for (int i = 0; i < 1000 && ProcessAlive(pid); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return !ProcessAlive(pid);
}

// Starts `rackctl run --on cpu0 -- sleep 30` and returns its pid once the program runs;
// `program` is the sleep's pid. With `deaf`, the sleep ignores SIGTERM.
pid_t StartSleeper(const TestRack& rack, pid_t& program, bool deaf = false) {
  const pid_t procmon = rack.Pid("cpu0");
  const std::string rackctl = Bin("rackctl");
  std::vector<const char*> argv = {"rackctl", "--rack", rack.dir().c_str(), "run", "--on",
                                   "cpu0",    "--"};
  if (deaf) {
    argv.insert(argv.end(), {"/bin/sh", "-c", "trap '' TERM; exec sleep 30"});
  } else {
    argv.insert(argv.end(), {"sleep", "30"});
  }
  argv.push_back(nullptr);
  const pid_t child = ::fork();
  if (child == 0) {
    ::execv(rackctl.c_str(), const_cast<char* const*>(argv.data()));
    ::_exit(127);
  }
  for (int i = 0; i < 500 && ChildrenOf(procmon).empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const std::vector<pid_t> children = ChildrenOf(procmon);
  program = children.size() == 1 ? children[0] : 0;
  return child;
}

TEST_CASE("rackctl run makes the program a child of its compute element that ends as it ends") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M --cache-budget 1M") == 0);
  const pid_t procmon = rack.Pid("cpu0");
  std::string out;
  SECTION("its parent, environment, exit code and stdin") {
    // rackctl's own environment, with the element's entries added.
    REQUIRE(RunCommand("DISAGG_TEST_VAR=passed " +
                           RunOn(rack, "cpu0",
                                 "/bin/sh -c 'echo parent=$PPID element=$DISAGG_ELEMENT "
                                 "var=$DISAGG_TEST_VAR; exit 7'"),
                       &out) == 7);
    REQUIRE(out == "parent=" + std::to_string(procmon) + " element=cpu0 var=passed\n");
    REQUIRE(RunCommand("echo through stdin | " + RunOn(rack, "cpu0", "cat"), &out) == 0);
    REQUIRE(out == "through stdin\n");
  }
  SECTION("its working directory and standard error are rackctl's") {
    const std::string err = rack.dir() + "/program.err";
    REQUIRE(RunCommand("{ cd /usr/share && " +
                           RunOn(rack, "cpu0", "/bin/sh -c 'pwd; echo to-stderr >&2'") + " 2>" +
                           err + "; }",
                       &out) == 0);
    REQUIRE(out == "/usr/share\n");
    std::string written;
    RunCommand("cat " + err, &written);
    REQUIRE(written == "to-stderr\n");
  }
  SECTION("a signal to rackctl reaches the program, and rackctl ends by the same signal") {
    for (int sig : {SIGTERM, SIGINT}) {  // SIGINT: Ctrl-C
      INFO("signal " << sig);
      pid_t program = 0;
      const pid_t rackctl = StartSleeper(rack, program);
      REQUIRE(program > 0);
      REQUIRE(::kill(rackctl, sig) == 0);
      int status = 0;
      REQUIRE(::waitpid(rackctl, &status, 0) == rackctl);
      REQUIRE(WIFSIGNALED(status));
      REQUIRE(WTERMSIG(status) == sig);
      REQUIRE(GoneWithin10s(program));
    }
  }
  SECTION("rackctl run refuses an element that is suspect or failed") {
    const pid_t cpu0 = rack.Pid("cpu0");
    REQUIRE(::kill(cpu0, SIGSTOP) == 0);  // silent: suspect after 100 ms, failed after 2 s
    // Suspect after 100 ms without an answer (two periods); rackctl asks the monitor only (a
    // stopped element would not answer), and `timeout` ends it should it launch after all.
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    const int suspect = RunCommand("timeout 10 " + RunOn(rack, "cpu0", "/bin/true"), &out);
    ::kill(cpu0, SIGCONT);
    REQUIRE(suspect != 0);
    REQUIRE_THAT(out, Catch::Contains("compute element cpu0 is suspect"));
    REQUIRE(rack.WaitForState("cpu0", "healthy"));
    REQUIRE(::kill(cpu0, SIGKILL) == 0);
    REQUIRE(rack.WaitForState("cpu0", "failed"));
    REQUIRE(RunCommand(RunOn(rack, "cpu0", "/bin/true"), &out) != 0);
    REQUIRE_THAT(out, Catch::Contains("compute element cpu0 is failed"));
  }
  SECTION("rackctl killed outright: the element ends the program") {
    pid_t program = 0;
    const pid_t rackctl = StartSleeper(rack, program);
    REQUIRE(program > 0);
    REQUIRE(::kill(rackctl, SIGKILL) == 0);
    REQUIRE(::waitpid(rackctl, nullptr, 0) == rackctl);
    REQUIRE(GoneWithin10s(program));
  }
  SECTION("... with SIGKILL when SIGTERM is not enough") {
    pid_t program = 0;
    const pid_t rackctl = StartSleeper(rack, program, /*deaf=*/true);
    REQUIRE(program > 0);
    // The shell ignores SIGTERM once it ran its trap; it has when it became sleep (which keeps
    // the ignored signal across exec). Before that, SIGTERM alone would end it.
    bool deaf = false;
    for (int i = 0; i < 500 && !deaf; ++i) {
      std::ifstream comm("/proc/" + std::to_string(program) + "/comm");
      std::string name;
      std::getline(comm, name);
      deaf = name == "sleep";
      if (!deaf) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    REQUIRE(deaf);
    const auto start = std::chrono::steady_clock::now();
    REQUIRE(::kill(rackctl, SIGKILL) == 0);
    REQUIRE(::waitpid(rackctl, nullptr, 0) == rackctl);
    REQUIRE(GoneWithin10s(program));
    // SIGKILL came after the element's grace of 3 s, not at once; it says so in its log.
    REQUIRE(std::chrono::steady_clock::now() - start >= std::chrono::seconds(2));
    std::string log;
    RunCommand("cat " + rack.dir() + "/cpu0.log", &log);
    REQUIRE_THAT(log, Catch::Contains("pid " + std::to_string(program) + " outlived SIGTERM"));
  }
  SECTION("the compute element dies: the program dies with it, and rackctl says so") {
    pid_t program = 0;
    const pid_t rackctl = StartSleeper(rack, program);
    REQUIRE(program > 0);
    REQUIRE(::kill(procmon, SIGKILL) == 0);
    int status = 0;
    REQUIRE(::waitpid(rackctl, &status, 0) == rackctl);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 1);
    REQUIRE(GoneWithin10s(program));
  }
}

TEST_CASE("extsort sorts data 4x its cache through remote memory and verifies its output") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 2 --pool-size 32M --cache-budget 1M") == 0);
  std::string out;
  REQUIRE(RunCommand(RunOn(rack, "cpu0", Bin("extsort")), &out) == 0);
  INFO(out);
  REQUIRE(out.find("(4 MiB) in 8 runs through a 1024 KiB cache") != std::string::npos);
  REQUIRE(out.find("verified: output sorted") != std::string::npos);
}

TEST_CASE("Processes on one compute element share its cache budget") {
  constexpr uint64_t kBudget = 2 << 20;
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 64M --cache-budget 2M") == 0);
  JoinOptions options;
  options.rack_dir = rack.dir();
  options.element = "cpu0";
  auto app = Rack::Join(options);
  REQUIRE(app.ok());
  REQUIRE((*app)->cache_stats().quota_bytes == kBudget);  // alone: the whole budget
  auto region = (*app)->Map(4 * kBudget);
  REQUIRE(region.ok());
  for (uint64_t i = 0; i < 4 * kBudget; i += 4096) region->as<uint8_t>()[i] = 1;
  // The cache is (nearly: eviction frees a batch at a time) full.
  REQUIRE((*app)->cache_stats().cached_bytes > kBudget / 2);
  REQUIRE((*app)->cache_stats().cached_bytes <= kBudget);

  // A second process arrives: this one is asked to shrink to half, and the other gets the rest.
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    execl("/bin/sh", "sh", "-c", (RunOn(rack, "cpu0", Bin("extsort")) + " >/dev/null").c_str(),
          nullptr);
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while ((*app)->cache_stats().quota_bytes != kBudget / 2 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const CacheStats shrunk = (*app)->cache_stats();
  REQUIRE(shrunk.quota_bytes == kBudget / 2);
  REQUIRE(shrunk.cached_bytes <= kBudget / 2);
  // Its data survived the shrink (dirty pages were written back, not dropped).
  for (uint64_t i = 0; i < 4 * kBudget; i += 4096) REQUIRE(region->as<uint8_t>()[i] == 1);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);  // extsort verified its sort within its share
  // Alone again: the quota grows back.
  while ((*app)->cache_stats().quota_bytes != kBudget &&
         std::chrono::steady_clock::now() < deadline + std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  REQUIRE((*app)->cache_stats().quota_bytes == kBudget);
}

}  // namespace
}  // namespace disagg::testing
