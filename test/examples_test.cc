// The examples, run as a user runs them: `rackctl run --on cpuN -- PROGRAM` on a private rack.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

#include "disagg/disagg.h"
#include "rack_harness.h"

namespace disagg::testing {
namespace {

std::string Bin(const std::string& name) { return std::string(DISAGG_BIN_DIR) + "/" + name; }

std::string RunOn(const TestRack& rack, const std::string& element, const std::string& program) {
  return Bin("rackctl") + " --rack " + rack.dir() + " run --on " + element + " -- " + program;
}

TEST_CASE("rackctl run starts hello on a compute element, which maps, writes, flushes, reads back") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 2 --memory 1 --pool-size 16M --cache-budget 1M") == 0);
  std::string out;
  REQUIRE(RunCommand(RunOn(rack, "cpu1", Bin("hello")), &out) == 0);
  INFO(out);
  REQUIRE(out.find("hello from process 1, at rack address 0x") != std::string::npos);
  SECTION("an unknown element or program is a clear error") {
    REQUIRE(RunCommand(RunOn(rack, "cpu7", Bin("hello")), &out) != 0);
    REQUIRE(out.find("no compute element 'cpu7' (it has: cpu0, cpu1)") != std::string::npos);
    REQUIRE(RunCommand(RunOn(rack, "cpu0", "/nonexistent/prog"), &out) != 0);
    REQUIRE(out.find("cannot run /nonexistent/prog") != std::string::npos);
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
