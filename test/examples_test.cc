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
#include <cstring>
#include <fstream>
#include <map>
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

// The value of "key" in the JSON line `json` ("" if absent).
std::string JsonValue(const std::string& json, const std::string& key) {
  const size_t at = json.find("\"" + key + "\":");
  if (at == std::string::npos) return "";
  const size_t begin = at + key.size() + 3;
  return json.substr(begin, json.find_first_of(",}", begin) - begin);
}

std::string LastLine(const std::string& out) {
  const size_t end = out.find_last_not_of('\n');
  if (end == std::string::npos) return "";
  const size_t begin = out.rfind('\n', end);
  return out.substr(begin == std::string::npos ? 0 : begin + 1, end + 1 - (begin + 1));
}

TEST_CASE("mapreduce: both shuffles agree with the plain count and a straggler's work is adopted") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 2 --memory 2 --pool-size 256M --cache-budget 32M") == 0);
  std::string out;
  // The straggler pauses 0.3 s after each of its 35 blocks: the others are done long before
  // it could finish (10 s), and it has committed its first block before its first pause.
  const int status =
      RunCommand(RunOn(rack, "cpu0",
                       Bin("mapreduce") + " --intermediate 48M --mappers 3 --reducers 2 --chunk 2M "
                                          "--slow-us 300000"),
                 &out);
  INFO(out);
  REQUIRE(status == 0);
  const std::string json = LastLine(out);
  REQUIRE(JsonValue(json, "counts_match") == "true");
  REQUIRE(std::stoull(JsonValue(json, "intermediate_bytes")) > (40ull << 20));
  REQUIRE(std::stod(JsonValue(json, "grant_shuffle_s")) > 0);
  REQUIRE(std::stod(JsonValue(json, "copy_shuffle_s")) > 0);
  REQUIRE(JsonValue(json, "straggler_adopted") == "true");
  const uint64_t done = std::stoull(JsonValue(json, "straggler_blocks_done"));
  const uint64_t blocks = std::stoull(JsonValue(json, "straggler_blocks"));
  REQUIRE(done >= 1);
  REQUIRE(done < blocks);
  REQUIRE(std::stoull(JsonValue(json, "straggler_adopted_bytes")) > 0);
  // The fresh mapper resumed where the log said, and the straggler learned it was replaced.
  REQUIRE(out.find("resumed at block " + std::to_string(done) + " of " + std::to_string(blocks)) !=
          std::string::npos);
  // It ends by itself: at its next touch of its stolen output (a fault: "revoked"), or with
  // the error of a Flush or Map under way when its memory was taken.
  REQUIRE(out.find("straggler: process " + JsonValue(json, "straggler_process") + " ended\n") !=
          std::string::npos);
}

TEST_CASE("scripts/mapreduce counts a given file right across its block boundaries") {
  // Words of 1 to 20 letters, some of 300 (counted as their first 255 bytes), separated by
  // runs of every kind of white space; a word straddles each 1 MiB block boundary.
  char path[] = "/tmp/disagg-mapreduce-input-XXXXXX";
  const int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  std::string text;
  uint64_t state = 42;
  auto next = [&] {
    return (state = state * 6364136223846793005ull + 1442695040888963407ull) >> 33;
  };
  const char* spaces = " \t\n\r\f\v";
  while (text.size() < (5u << 19)) {  // 2.5 MiB
    for (const size_t boundary : {size_t{1} << 20, size_t{2} << 20}) {
      // A step adds at most 305 bytes: the first time this holds, the word fits before.
      if (text.size() < boundary && text.size() + 340 > boundary) {
        text.append(std::max<size_t>(text.size() + 5, boundary) - 5 - text.size(), ' ');
        text += " straddlestheboundary ";  // from 4 bytes before the boundary to 16 after
      }
    }
    const uint64_t kind = next() % 100;
    const size_t len = kind == 0 ? 300 : 1 + next() % 20;
    const char first = static_cast<char>('a' + next() % 4);
    text.append(len, first);
    text += std::to_string(next() % 50);  // 4 x 20 x 50 spellings, 4 long ones
    for (uint64_t n = 1 + next() % 3; n > 0; --n) text += spaces[next() % 6];
  }
  for (const size_t boundary : {size_t{1} << 20, size_t{2} << 20}) {
    REQUIRE(text.compare(boundary - 4, 21, "straddlestheboundary ") == 0);
  }
  REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  close(fd);
  // The expected count, by a tokenizer of its own over the whole file.
  std::map<std::string, uint64_t> expected;
  uint64_t words = 0;
  for (size_t i = 0; i < text.size();) {
    if (std::strchr(spaces, text[i]) != nullptr) {
      ++i;
      continue;
    }
    const size_t start = i;
    while (i < text.size() && std::strchr(spaces, text[i]) == nullptr) ++i;
    ++expected[text.substr(start, std::min<size_t>(i - start, 255))];
    ++words;
  }
  REQUIRE(expected["straddlestheboundary"] == 2);
  std::string out;
  const int status = RunCommand(std::string("DISAGG_BIN=") + DISAGG_DAEMON_BIN_DIR + " " +
                                    DISAGG_SOURCE_DIR + "/scripts/mapreduce --intermediate 16M " +
                                    "--mappers 2 --reducers 3 --no-straggler --input " + path,
                                &out);
  unlink(path);
  INFO(out);
  REQUIRE(status == 0);
  const std::string json = LastLine(out);
  REQUIRE(JsonValue(json, "counts_match") == "true");
  REQUIRE(JsonValue(json, "words") == std::to_string(words));
  REQUIRE(JsonValue(json, "distinct_words") == std::to_string(expected.size()));
  REQUIRE(JsonValue(json, "straggler_adopted") == "false");
}

TEST_CASE("mapreduce refuses bad flags and a missing input with a clear message") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 64M") == 0);
  std::string out;
  REQUIRE(RunCommand(RunOn(rack, "cpu0", Bin("mapreduce") + " --intermediate lots"), &out) == 2);
  REQUIRE(out.find("bad flag or value: --intermediate lots") != std::string::npos);
  REQUIRE(RunCommand(RunOn(rack, "cpu0", Bin("mapreduce") + " --chunk 1M"), &out) == 2);
  REQUIRE(out.find("--chunk at least 2M") != std::string::npos);
  REQUIRE(RunCommand(RunOn(rack, "cpu0", Bin("mapreduce") + " --mappers 1"), &out) == 2);
  REQUIRE(out.find("a straggler needs at least 2 mappers") != std::string::npos);
  REQUIRE(RunCommand(RunOn(rack, "cpu0", Bin("mapreduce") + " --input /nonexistent/corpus"),
                     &out) == 1);
  REQUIRE(out.find("cannot read /nonexistent/corpus: No such file or directory") !=
          std::string::npos);
  REQUIRE(RunCommand(std::string(DISAGG_SOURCE_DIR) + "/scripts/mapreduce --intermediate 0",
                     &out) == 2);
  REQUIRE(out.find("--intermediate '0' is not a size") != std::string::npos);
}

}  // namespace
}  // namespace disagg::testing
