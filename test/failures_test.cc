// Failures end to end, on private racks of real daemons: a failed memory element reaches the
// handler of a process that touches its memory and the events of the processes that do not;
// a paused compute element or process is declared failed and fenced (nothing it writes back
// lands after that, and it learns so when it resumes); a failed process's group is told;
// fault injection refuses what it cannot do.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "ipc/client.h"
#include "ipc/wire.h"
#include "rack_harness.h"
#include "rack_peer_driver.h"
#include "rack_probes.h"

namespace disagg::testing {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

// Polls until every memory element in `elements` fenced process `id` (10 s at the most).
bool WaitForFence(const TestRack& rack, uint32_t id, std::initializer_list<const char*> elements) {
  for (int i = 0; i < 1000; ++i) {
    bool all = true;
    for (const char* e : elements) all = all && MemoryStatus(rack, e)[id].fenced;
    if (all) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

uint64_t Writebacks(const TestRack& rack, uint32_t id) {
  return MemoryStatus(rack, "mem0")[id].writebacks + MemoryStatus(rack, "mem1")[id].writebacks;
}

bool ProcessDead(TestRack& rack, uint32_t id) {
  for (const ProcessRow& p : rack.Processes()) {
    if (p.id == id) return p.dead;
  }
  return false;
}

bool WaitForDead(TestRack& rack, uint32_t id) {
  for (int i = 0; i < 1000; ++i) {
    if (ProcessDead(rack, id)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// Reaps `pid` (a child of this test) within 10 s; its wait status, or -1.
int Reap(pid_t pid) {
  for (int i = 0; i < 1000; ++i) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

// Peers joined to the trust group "team".
void JoinTeam(std::initializer_list<Peer*> peers) {
  for (Peer* p : peers) {
    INFO(p->error());
    REQUIRE(p->ok());
    REQUIRE(p->Ask("group team") == "ok");
  }
}

}  // namespace

TEST_CASE(
    "A failed memory element reaches the handler of a process touching it, the events of "
    "every process with memory there, and their groups; other memory is untouched") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 2 --memory 2 --pool-size 64M --cache-budget 1M") == 0);
  Peer toucher(rack.dir(), "cpu0");
  Peer holder(rack.dir(), "cpu1");
  Peer member(rack.dir(), "cpu1");   // holds no memory; in the group of both
  Peer contact(rack.dir(), "cpu0");  // in no group: the toucher's emergency contact
  JoinTeam({&toucher, &holder, &member});
  REQUIRE(contact.ok());
  REQUIRE(toucher.Ask("contacts " + std::to_string(contact.id())) == "ok");
  // Spread regions: each has pages on both memory elements.
  const uint64_t bytes = 8 * kMiB;
  const uint64_t a = Addr(toucher.Ask("map " + std::to_string(bytes)));
  const uint64_t b = Addr(holder.Ask("map " + std::to_string(bytes)));
  REQUIRE(toucher.Ask("fill " + Range(a, bytes) + " 7") == "ok");
  REQUIRE(toucher.Ask("flush " + Range(a, bytes)) == "ok");
  REQUIRE(holder.Ask("fill " + Range(b, bytes) + " 8") == "ok");
  REQUIRE(holder.Ask("flush " + Range(b, bytes)) == "ok");

  int rc = 0;
  const std::string said = Rackctl(rack, "fail mem0", &rc);
  INFO(said);
  REQUIRE(rc == 0);
  REQUIRE(rack.WaitForState("mem0", "failed"));

  // Every process with memory there is told at once, without touching it...
  const std::string a_lost = "memory-failed:" + std::to_string(toucher.id()) + ":" + HexAddr(a) +
                             ":" + std::to_string(bytes) + ":mem0";
  const std::string b_lost = "memory-failed:" + std::to_string(holder.id()) + ":" + HexAddr(b) +
                             ":" + std::to_string(bytes) + ":mem0";
  REQUIRE(WaitForEvent(toucher, a_lost));
  REQUIRE(WaitForEvent(holder, b_lost));
  // ...and so is their group, of both.
  REQUIRE(WaitForEvent(member, a_lost));
  REQUIRE(WaitForEvent(member, b_lost));
  REQUIRE(WaitForEvent(holder, a_lost));
  // The emergency contact hears of the toucher's memory only.
  REQUIRE(WaitForEvent(contact, a_lost));
  REQUIRE(contact.Ask("events").find(b_lost) == std::string::npos);

  // The toucher's handler gets the exact page, the element and the cause, for pages on mem0;
  // pages on mem1 keep their data. Which pages are where follows from the spread placement:
  // find one of each by touching.
  int on_mem0 = 0, on_mem1 = 0;
  for (uint64_t off = 0; off < bytes; off += 64 * 4096) {
    const std::string touched = toucher.Ask("touch " + HexAddr(a + off));
    if (touched == "ok") {
      ++on_mem1;
    } else {
      INFO(touched);
      REQUIRE(touched == "fault memory element failed at mem0");
      ++on_mem0;
    }
  }
  REQUIRE(on_mem0 > 0);
  REQUIRE(on_mem1 > 0);
  // The holder never touched its memory: on mem1 it reads back what was written, on mem0 it
  // is refused, naming the element.
  int held = 0, lost = 0;
  for (uint64_t off = 0; off < bytes; off += 64 * 4096) {
    const std::string verified = holder.Ask("verify " + Range(b + off, 4096) + " 8");
    INFO(verified);
    if (verified == "ok") {
      ++held;
    } else {
      REQUIRE(verified == "fault memory element failed at mem0");
      ++lost;
    }
  }
  REQUIRE(held > 0);
  REQUIRE(lost > 0);
}

TEST_CASE(
    "A compute element whose procmon stops is declared failed and its processes fenced: "
    "nothing they write back lands after that, while they run on") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 2 --memory 2 --pool-size 128M --cache-budget 1M "
                  "--heartbeat-ms 10 --silence-ms 200") == 0);
  Peer writer(rack.dir(), "cpu0");
  Peer bystander(rack.dir(), "cpu1");
  JoinTeam({&writer, &bystander});
  const uint64_t bytes = 16 * kMiB;  // 16 times the cache: every pass writes back
  const uint64_t a = Addr(writer.Ask("map " + std::to_string(bytes)));
  REQUIRE(writer.Ask("churn " + Range(a, bytes)) == "ok");
  for (int i = 0; i < 1000 && Writebacks(rack, writer.id()) < 1000; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(Writebacks(rack, writer.id()) >= 1000);

  // The blade's OS stops; the process on it runs on, faulting and writing back.
  const pid_t procmon = rack.Pid("cpu0");
  REQUIRE(::kill(procmon, SIGSTOP) == 0);
  REQUIRE(rack.WaitForState("cpu0", "failed"));
  REQUIRE(WaitForFence(rack, writer.id(), {"mem0", "mem1"}));
  const uint64_t landed = Writebacks(rack, writer.id());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  REQUIRE(Writebacks(rack, writer.id()) == landed);  // nothing landed after the fence
  const std::string churned = writer.Ask("churned");
  INFO(churned);
  REQUIRE(churned.find("fault fenced") != std::string::npos);
  REQUIRE(WaitForEvent(writer, "fenced:" + std::to_string(writer.id())));
  REQUIRE(writer.Ask("flush " + Range(a, 4096)).rfind("error FAILED_PRECONDITION", 0) == 0);
  REQUIRE(WaitForDead(rack, writer.id()));
  // Its group hears which process failed and where it ran.
  REQUIRE(WaitForEvent(bystander, "peer-failed:" + std::to_string(writer.id()) + ":0x0:0:cpu0"));
  // Its memory, as last written back, is held for adoption: the bystander can take it.
  REQUIRE(bystander.Ask("steal " + std::to_string(writer.id()) + " " + Range(a, bytes)) == "ok");

  // The stopped procmon, resumed, finds itself cut off and ends; so does its process.
  REQUIRE(::kill(procmon, SIGCONT) == 0);
  for (int i = 0; i < 1000 && ProcessAlive(procmon); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE_FALSE(ProcessAlive(procmon));
  REQUIRE(Reap(writer.pid()) != -1);
  REQUIRE(bystander.Ask("touch " + HexAddr(a)) == "ok");
}

TEST_CASE(
    "A paused process is declared failed by its compute element, fenced, and told when it "
    "resumes; its group is told") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 2 --memory 2 --pool-size 64M --cache-budget 1M "
                  "--heartbeat-ms 10 --silence-ms 200") == 0);
  Peer sleeper(rack.dir(), "cpu0");
  Peer member(rack.dir(), "cpu1");
  JoinTeam({&sleeper, &member});
  const uint64_t bytes = 512 * 1024;  // fits the cache: nothing is written back
  const uint64_t a = Addr(sleeper.Ask("map " + std::to_string(bytes)));
  REQUIRE(sleeper.Ask("fill " + Range(a, bytes) + " 3") == "ok");
  const uint64_t before = Writebacks(rack, sleeper.id());
  REQUIRE(before == 0);

  REQUIRE(::kill(sleeper.pid(), SIGSTOP) == 0);
  REQUIRE(WaitForDead(rack, sleeper.id()));
  REQUIRE(WaitForFence(rack, sleeper.id(), {"mem0", "mem1"}));
  REQUIRE(WaitForEvent(member, "peer-failed:" + std::to_string(sleeper.id())));
  REQUIRE(rack.Status()["cpu0"].state == "healthy");  // only the process failed

  REQUIRE(::kill(sleeper.pid(), SIGCONT) == 0);
  REQUIRE(WaitForEvent(sleeper, "fenced:" + std::to_string(sleeper.id())));
  // Its dirty pages were dropped, not written back; its touches and calls are refused.
  REQUIRE(sleeper.Ask("touch " + HexAddr(a)) == "fault fenced (this process was declared failed)");
  REQUIRE(sleeper.Ask("flush " + Range(a, bytes)).rfind("error FAILED_PRECONDITION", 0) == 0);
  REQUIRE(sleeper.Ask("map 4096").rfind("error FAILED_PRECONDITION", 0) == 0);
  REQUIRE(Writebacks(rack, sleeper.id()) == before);
  // The member adopts what was last written back: zeros, since nothing was.
  REQUIRE(member.Ask("steal " + std::to_string(sleeper.id()) + " " + Range(a, bytes)) == "ok");
  REQUIRE(member.Ask("zeros " + Range(a, bytes)) == "ok");
}

TEST_CASE(
    "rackctl kill, fail, pause and resume reach the named element or process; a failed "
    "process's group is told") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 2 --memory 2 --pool-size 64M --cache-budget 1M "
                  "--heartbeat-ms 10 --silence-ms 200") == 0);
  Peer victim(rack.dir(), "cpu0");
  Peer member(rack.dir(), "cpu1");
  Peer contact(rack.dir(), "cpu1");  // in no group: the victim's emergency contact
  JoinTeam({&victim, &member});
  REQUIRE(contact.ok());
  REQUIRE(victim.Ask("contacts " + std::to_string(contact.id())) == "ok");
  REQUIRE(victim.Ask("map 8388608").rfind("0x", 0) == 0);  // on both memory elements
  int rc = 0;

  SECTION("kill") {
    Rackctl(rack, "kill " + std::to_string(victim.id()), &rc);
    REQUIRE(rc == 0);
    const int status = Reap(victim.pid());
    REQUIRE(WIFSIGNALED(status));
    REQUIRE(WTERMSIG(status) == SIGKILL);
    REQUIRE(WaitForEvent(member, "peer-failed:" + std::to_string(victim.id())));
    // Its compute element tells its emergency contact, naming itself.
    REQUIRE(WaitForEvent(contact, "peer-failed:" + std::to_string(victim.id()) + ":0x0:0:cpu0"));
    REQUIRE(WaitForDead(rack, victim.id()));
  }
  SECTION("pause and resume a compute element") {
    const pid_t procmon = rack.Pid("cpu0");
    Rackctl(rack, "pause cpu0", &rc);
    REQUIRE(rc == 0);
    // The blade stops with its processes: the process is fenced with it.
    REQUIRE(rack.WaitForState("cpu0", "failed"));
    REQUIRE(WaitForEvent(member, "peer-failed:" + std::to_string(victim.id())));
    // Frozen with its blade: in the monitor's freezer cgroup (this machine has the v1 freezer),
    // else stopped.
    std::string where, state;
    RunCommand("grep freezer /proc/" + std::to_string(victim.pid()) + "/cgroup", &where);
    RunCommand("grep State: /proc/" + std::to_string(victim.pid()) + "/status", &state);
    INFO(where << state);
    REQUIRE((where.find("freezer:/disagg-") != std::string::npos ||
             state.find("stopped") != std::string::npos));
    Rackctl(rack, "resume cpu0", &rc);
    REQUIRE(rc == 0);
    for (int i = 0; i < 1000 && ProcessAlive(procmon); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    REQUIRE_FALSE(ProcessAlive(procmon));  // fenced: it leaves the rack
    REQUIRE(Reap(victim.pid()) != -1);
  }
  SECTION("pause --for resumes by itself") {
    const auto paused_at = std::chrono::steady_clock::now();
    Rackctl(rack, "pause mem1 --for 100", &rc);
    REQUIRE(rc == 0);
    const std::string again = Rackctl(rack, "pause mem1", &rc);
    REQUIRE(rc == 1);
    REQUIRE(again.find("mem1 is paused already") != std::string::npos);
    // A request to the paused element is answered once it resumed by itself.
    REQUIRE(MemoryStatus(rack, "mem1").count(victim.id()) == 1);
    REQUIRE(std::chrono::steady_clock::now() - paused_at >= std::chrono::milliseconds(100));
    Rackctl(rack, "resume mem1", &rc);
    REQUIRE(rc == 1);                                   // not paused any more
    REQUIRE(rack.Status()["mem1"].state == "healthy");  // 100 ms is under the 200 ms limit
  }
  SECTION("fail a compute element") {
    Rackctl(rack, "fail cpu0", &rc);
    REQUIRE(rc == 0);
    REQUIRE(rack.WaitForState("cpu0", "failed"));
    REQUIRE(Reap(victim.pid()) != -1);  // its processes end with it
    REQUIRE(WaitForEvent(member, "peer-failed:" + std::to_string(victim.id())));
    const std::string again = Rackctl(rack, "fail cpu0", &rc);
    REQUIRE(rc == 1);
    REQUIRE(again.find("cpu0 has failed already") != std::string::npos);
  }
}

std::string ReadAll(const std::string& path);

TEST_CASE(
    "A killed process, memory element or compute element is reported failed from its life "
    "word, before its memory is torn down") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 2 --memory 2 --pool-size 64M --cache-budget 1M") == 0);
  Peer holder(rack.dir(), "cpu1");
  Peer victim(rack.dir(), "cpu0");
  JoinTeam({&holder, &victim});
  const uint64_t bytes = 8 * kMiB;  // spread: pages on both memory elements
  const uint64_t a = Addr(holder.Ask("map " + std::to_string(bytes)));
  REQUIRE(holder.Ask("fill " + Range(a, bytes) + " 5") == "ok");
  SECTION("a process with 1 GiB of local memory") {
    REQUIRE(victim.Ask("map 65536").rfind("0x", 0) == 0);
    // 1 GiB takes tens of milliseconds to tear down; the hang-up comes after.
    REQUIRE(victim.Ask("balloon 1073741824") == "ok");
    REQUIRE(::kill(victim.pid(), SIGKILL) == 0);
    REQUIRE(WaitForEvent(holder, "peer-failed:" + std::to_string(victim.id())));
  }
  SECTION("a memory element") {
    const pid_t memmon = rack.Pid("mem0");
    REQUIRE(::kill(memmon, SIGKILL) == 0);
    REQUIRE(WaitForEvent(holder, "memory-failed:" + std::to_string(holder.id()) + ":" + HexAddr(a) +
                                     ":" + std::to_string(bytes) + ":mem0"));
    REQUIRE(rack.WaitForState("mem0", "failed"));
    // The Rack MMU's own copy of the word, and the rack monitor's.
    REQUIRE_THAT(ReadAll(rack.dir() + "/mmu.log"),
                 Catch::Contains("mmu: element mem0 failed: it died (its life word"));
    REQUIRE_THAT(ReadAll(rack.dir() + "/mon.log"),
                 Catch::Contains("mem0 (pid " + std::to_string(memmon) +
                                 ") failed: it died (its life word"));
  }
  SECTION("a compute element") {
    REQUIRE(::kill(rack.Pid("cpu0"), SIGKILL) == 0);
    REQUIRE(WaitForEvent(holder, "peer-failed:" + std::to_string(victim.id())));
    REQUIRE(rack.WaitForState("cpu0", "failed"));
    // cpu0's word, not that of its process (which ends with it a moment later).
    const std::string told = holder.Ask("reasons");
    INFO(told);
    REQUIRE(told.find("its compute element cpu0 failed: it died (its life word") !=
            std::string::npos);
    REQUIRE_THAT(ReadAll(rack.dir() + "/mmu.log"),
                 Catch::Contains("mmu: element cpu0 failed: it died (its life word"));
  }
  // Told from the life word (the Rack MMU's, procmon's and the rack monitor's copies), not
  // from the hang-up or the exit, which come once the memory is gone.
  const std::string reasons = holder.Ask("reasons");
  INFO(reasons);
  REQUIRE(reasons.find("it died (its life word was released by the kernel)") != std::string::npos);
  REQUIRE(reasons.find("hung up") == std::string::npos);
  REQUIRE(reasons.find("exited") == std::string::npos);
  REQUIRE(reasons.find("closed") == std::string::npos);
}

// What memory element `socket` answers a read of `vpage` by this process: "data", or the
// refusal's message.
std::string RawRead(const std::string& socket, uint64_t vpage) {
  absl::StatusOr<ipc::Client> client = ipc::Client::Connect(socket, absl::Seconds(5));
  if (!client.ok()) return "cannot connect: " + std::string(client.status().message());
  ipc::SmallMessage request;
  auto root = request.Init();
  root.initReadPage().setVpage(vpage);
  bool data = false;
  const absl::Status status = client->Call(request.builder(), root, [&](proto::Message::Reader r) {
    data = r.isPageData();
    return absl::OkStatus();
  });
  if (!status.ok()) return std::string(status.message());
  return data ? "data" : "no page data";
}

TEST_CASE(
    "A memory element refuses a new process that has a dead one's pid: a process is its pid "
    "and its start time") {
  // Handing out a chosen pid (kernel.ns_last_pid) takes root.
  if (::geteuid() != 0) {
    WARN("not run: reusing a pid on purpose needs root");
    return;
  }
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M --cache-budget 1M") == 0);
  Peer owner(rack.dir(), "cpu0");
  REQUIRE(owner.ok());
  const uint64_t a = Addr(owner.Ask("map 65536"));
  REQUIRE(owner.Ask("fill " + Range(a, 65536) + " 9") == "ok");
  REQUIRE(owner.Ask("flush " + Range(a, 65536)) == "ok");
  const pid_t pid = owner.pid();
  REQUIRE(::kill(pid, SIGKILL) == 0);
  REQUIRE(Reap(pid) != -1);
  REQUIRE(WaitForDead(rack, owner.id()));  // its memory is held for adoption, bound at mem0
  // A process with the same pid asks mem0 for the dead one's page.
  std::string answer;
  // Other tests running beside this one fork too and may take the pid first: try many times
  // (an attempt is one fork).
  for (int attempt = 0; attempt < 2000 && answer.empty(); ++attempt) {
    std::ofstream("/proc/sys/kernel/ns_last_pid") << pid - 1;  // the next pid is `pid`
    int report[2];
    REQUIRE(::pipe(report) == 0);
    const pid_t child = ::fork();
    if (child == 0) {
      ::close(report[0]);
      const std::string said = ::getpid() == pid ? RawRead(rack.Socket("mem0"), a >> 12) : "";
      (void)!::write(report[1], said.data(), said.size());
      ::_exit(0);
    }
    REQUIRE(child > 0);
    ::close(report[1]);
    char buf[512];
    ssize_t n;
    while ((n = ::read(report[0], buf, sizeof(buf))) > 0) answer.append(buf, n);
    ::close(report[0]);
    REQUIRE(::waitpid(child, nullptr, 0) == child);
  }
  INFO(answer);
  REQUIRE_FALSE(answer.empty());  // the pid was reused
  REQUIRE(answer.find("holds no memory on this element") != std::string::npos);
}

// The whole text of `path` ("" if it cannot be read).
std::string ReadAll(const std::string& path) {
  std::string out;
  RunCommand("cat " + path + " 2>/dev/null", &out);
  return out;
}

// Polls `path` until it contains `wanted` (20 s at the most).
bool WaitForText(const std::string& path, const std::string& wanted) {
  for (int i = 0; i < 2000; ++i) {
    if (ReadAll(path).find(wanted) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST_CASE(
    "A fast failure handler starts a successor on another compute element, which steals "
    "the failed process's state and verifies every word of it") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 2 --memory 2 --pool-size 64M --cache-budget 1M") == 0);
  const std::string failover = std::string(DISAGG_BIN_DIR) + "/failover";
  int rc = 0;
  const std::string said =
      Rackctl(rack, "on-failure failover --on cpu1 -- " + failover + " --every=100", &rc);
  INFO(said);
  REQUIRE(rc == 0);
  const std::string first_out = rack.dir() + "/first.out";
  const pid_t first = ::fork();
  REQUIRE(first >= 0);
  if (first == 0) {
    const std::string run = std::string(DISAGG_BIN_DIR) + "/rackctl --rack " + rack.dir() +
                            " run --on cpu0 -- " + failover + " --every=100 >" + first_out +
                            " 2>&1";
    ::execl("/bin/sh", "sh", "-c", run.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  REQUIRE(WaitForText(first_out, "failover: step 300"));
  Rackctl(rack, "kill failover", &rc);
  REQUIRE(rc == 0);
  const int status = Reap(first);
  REQUIRE(status != -1);
  const std::string log = rack.dir() + "/on-failure-failover.log";
  REQUIRE(WaitForText(log, "state at step"));
  const std::string adopted = ReadAll(log);
  INFO(adopted);
  REQUIRE(adopted.find("takes over from process 1") != std::string::npos);
  REQUIRE(adopted.find("adopted process 1's state at step") != std::string::npos);
  REQUIRE(adopted.find(": verified") != std::string::npos);
  // It adopted what the first one last made durable (every step is flushed): no less than
  // the last step the first one printed.
  const size_t at = adopted.find("state at step ") + std::strlen("state at step ");
  const uint64_t step = std::stoull(adopted.substr(at));
  REQUIRE(step >= 300);
  // And it carries on from there, on cpu1.
  REQUIRE(WaitForText(log, "failover: step " + std::to_string((step / 100 + 2) * 100)));
  bool on_cpu1 = false;
  for (const ProcessRow& p : rack.Processes()) on_cpu1 = on_cpu1 || (p.id == 2 && !p.dead);
  REQUIRE(on_cpu1);
  // Removing the handler: the next failure starts nothing.
  Rackctl(rack, "on-failure failover", &rc);
  REQUIRE(rc == 0);
  const std::string gone = Rackctl(rack, "on-failure failover", &rc);
  REQUIRE(rc == 1);
  REQUIRE(gone.find("no failure handler for 'failover'") != std::string::npos);
  const std::string bad = Rackctl(rack, "on-failure x --on cpu9 -- /bin/true", &rc);
  REQUIRE(rc == 1);
  REQUIRE(bad.find("no compute element 'cpu9'") != std::string::npos);
}

TEST_CASE("Bad emergency contacts are refused by the library") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 64M") == 0);
  Peer p(rack.dir(), "cpu0");
  REQUIRE(p.ok());
  REQUIRE(p.Ask("contacts " + std::to_string(p.id())).rfind("error INVALID_ARGUMENT", 0) == 0);
  REQUIRE(p.Ask("contacts 0").rfind("error INVALID_ARGUMENT", 0) == 0);
  std::string many = "contacts";
  for (int i = 0; i < 65; ++i) {
    many += ' ';
    many += std::to_string(100 + i);
  }
  REQUIRE(p.Ask(many).rfind("error INVALID_ARGUMENT", 0) == 0);
  REQUIRE(p.Ask("contacts") == "ok");  // none
  REQUIRE(p.Ask("id") == std::to_string(p.id()));
}

TEST_CASE("Bad fault-injection requests get a clear error and change nothing") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 64M") == 0);
  struct Case {
    const char* args;
    int rc;
    const char* says;
  };
  const Case cases[] = {
      {"fail nosuch", 1,
       "no compute or memory element 'nosuch' in the rack (there are: cpu0, mem0)"},
      {"fail mmu", 1, "no compute or memory element 'mmu'"},
      {"pause nosuch", 1, "no compute or memory element 'nosuch'"},
      {"resume cpu0", 1, "cpu0 is not paused"},
      {"kill 999", 1, "no running process '999'"},
      {"kill nobody", 1, "no running process 'nobody'"},
      {"pause cpu0 --for abc", 2, "--for abc: not a number of milliseconds"},
      {"pause cpu0 --for -5", 2, "not a number of milliseconds"},
      {"fail cpu0 --for 10", 2, "--for goes only with pause"},
      {"fail", 2, "unknown command or arguments"},
      {"pause cpu0 mem0", 2, "unknown command or arguments"},
  };
  for (const Case& c : cases) {
    int rc = 0;
    const std::string out = Rackctl(rack, c.args, &rc);
    INFO(c.args << " -> " << out);
    REQUIRE(rc == c.rc);
    REQUIRE(out.find(c.says) != std::string::npos);
  }
  for (const auto& [name, row] : rack.Status()) {
    INFO(name);
    REQUIRE(row.state == "healthy");
  }
}

}  // namespace disagg::testing
