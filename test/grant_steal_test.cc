// Grant and steal end to end: application processes (rack_peer) on a private rack of real
// daemons move memory between each other without copying it, at the same addresses. Every
// test ends by comparing the Rack MMU's map with the memory elements' page tables.
#include <dirent.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <functional>
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

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
// Failure detection is not the point here: a generous limit keeps a loaded machine's
// scheduling stalls from failing elements.
constexpr char kRackArgs[] =
    "--compute 2 --memory 2 --pool-size 64M --cache-budget 1M --silence-ms 2000";

std::string Status(const TestRack& rack) {
  std::string out;
  RunCommand(std::string(DISAGG_BIN_DIR) + "/rackctl --rack " + rack.dir() + " status", &out);
  return out;
}

#define REQUIRE_PEER(p) \
  INFO((p).error());    \
  REQUIRE((p).ok())

// A private rack (kRackArgs unless told) and an application process on each of its two
// compute elements.
struct PeerRack {
  TestRack rack;
  std::unique_ptr<Peer> first, second;
  explicit PeerRack(const std::string& args = kRackArgs) {
    REQUIRE(rack.Up(args) == 0);
    first = std::make_unique<Peer>(rack.dir(), "cpu0");
    second = std::make_unique<Peer>(rack.dir(), "cpu1");
    REQUIRE_PEER(*first);
    REQUIRE_PEER(*second);
  }
};

TEST_CASE("Grant moves memory to another process at the same address, dirty pages included") {
  PeerRack peers;
  TestRack& rack = peers.rack;
  Peer &a = *peers.first, &b = *peers.second;
  // 4 MiB through a 1 MiB cache: some pages were evicted and written back, the last ones are
  // dirty in a's cache, none was flushed.
  const uint64_t addr = Addr(a.Ask("map " + std::to_string(4 * kMiB)));
  REQUIRE(addr != 0);
  REQUIRE(a.Ask("fill " + Range(addr, 4 * kMiB) + " 7") == "ok");
  REQUIRE(a.Ask("grant " + Range(addr, 4 * kMiB) + " " + std::to_string(b.id())) == "ok");

  const std::string event =
      "granted:" + std::to_string(a.id()) + ":" + HexAddr(addr) + ":" + std::to_string(4 * kMiB);
  REQUIRE(WaitForEvent(b, event));
  REQUIRE(b.Ask("verify " + Range(addr, 4 * kMiB) + " 7") == "ok");
  REQUIRE(a.Ask("touch " + HexAddr(addr)) == "fault revoked (granted away or stolen)");
  REQUIRE(a.Ask("touch " + HexAddr(addr + 4 * kMiB - 8)) ==
          "fault revoked (granted away or stolen)");
  // The receiver owns it now: it writes, flushes and frees it like its own.
  REQUIRE(b.Ask("fill " + Range(addr, 4 * kMiB) + " 8") == "ok");
  REQUIRE(b.Ask("flush " + Range(addr, 4 * kMiB)) == "ok");
  REQUIRE_CONSISTENT(rack);
}

TEST_CASE("Grant of part of a region splits it, and the receiver can grant it back") {
  PeerRack peers;
  TestRack& rack = peers.rack;
  Peer &a = *peers.first, &b = *peers.second;
  const uint64_t q = 256 * kKiB;
  const uint64_t addr = Addr(a.Ask("map " + std::to_string(4 * q)));
  REQUIRE(addr != 0);
  for (int i = 0; i < 4; ++i) {
    REQUIRE(a.Ask("fill " + Range(addr + i * q, q) + " " + std::to_string(i + 1)) == "ok");
  }
  const std::string second = Range(addr + q, q);
  REQUIRE(a.Ask("grant " + second + " " + std::to_string(b.id())) == "ok");
  REQUIRE(a.Ask("touch " + HexAddr(addr + q)) == "fault revoked (granted away or stolen)");
  REQUIRE(a.Ask("verify " + Range(addr, q) + " 1") == "ok");
  REQUIRE(a.Ask("verify " + Range(addr + 2 * q, q) + " 3") == "ok");
  REQUIRE(a.Ask("flush " + Range(addr, q)) == "ok");
  REQUIRE(a.Ask("flush " + Range(addr + q, q)).rfind("error INVALID_ARGUMENT", 0) == 0);
  REQUIRE(b.Ask("verify " + second + " 2") == "ok");
  REQUIRE_CONSISTENT(rack);

  SECTION("back to the giver, with the receiver's writes") {
    REQUIRE(b.Ask("fill " + second + " 22") == "ok");
    REQUIRE(b.Ask("grant " + second + " " + std::to_string(a.id())) == "ok");
    REQUIRE(WaitForEvent(a, "granted:" + std::to_string(b.id())));
    REQUIRE(a.Ask("verify " + second + " 22") == "ok");
    REQUIRE(a.Ask("verify " + Range(addr + 3 * q, q) + " 4") == "ok");
    REQUIRE(b.Ask("touch " + HexAddr(addr + q)) == "fault revoked (granted away or stolen)");
    REQUIRE_CONSISTENT(rack);
  }
  SECTION("the giver unmaps what it kept; the receiver keeps its part") {
    REQUIRE(a.Ask("unmap " + HexAddr(addr)) == "ok");  // now a region of one quarter
    REQUIRE(a.Ask("unmap " + HexAddr(addr + 2 * q)) == "ok");
    REQUIRE(a.Ask("unmap " + HexAddr(addr + q)).rfind("error NOT_FOUND", 0) == 0);
    REQUIRE(b.Ask("verify " + second + " 2") == "ok");
    REQUIRE_CONSISTENT(rack);
  }
}

TEST_CASE("Memory granted away piece by piece and back at once is usable at once") {
  PeerRack peers;
  TestRack& rack = peers.rack;
  Peer &a = *peers.first, &b = *peers.second;
  const uint64_t addr = Addr(a.Ask("map " + std::to_string(64 * kKiB)));
  REQUIRE(a.Ask("fill " + Range(addr, 64 * kKiB) + " 5") == "ok");
  for (int i = 0; i < 4; ++i) {  // four grants: four ranges a knows it gave away
    REQUIRE(a.Ask("grant " + Range(addr + i * 4096, 4096) + " " + std::to_string(b.id())) == "ok");
  }
  REQUIRE(b.Ask("grant " + Range(addr, 4 * 4096) + " " + std::to_string(a.id())) == "ok");
  // At once, without waiting for the event: each page is a's again.
  for (int i = 0; i < 4; ++i) REQUIRE(a.Ask("touch " + HexAddr(addr + i * 4096)) == "ok");
  REQUIRE(a.Ask("verify " + Range(addr, 64 * kKiB) + " 5") == "ok");
  // b no longer reaches it. Which refusal it gets depends on a known race (seen once under
  // ASan in CI): a granted event b's control thread handles only after b granted the page
  // back makes b's runtime think the page its own again, and the memory element refuses it.
  const std::string touched = b.Ask("touch " + HexAddr(addr));
  INFO(touched);
  REQUIRE((touched == "fault revoked (granted away or stolen)" ||
           touched == "fault refused by the memory element at mem0" ||
           touched == "fault refused by the memory element at mem1"));
  REQUIRE_CONSISTENT(rack);
}

TEST_CASE("Steal takes memory from a live, paused or dead peer of the same trust group") {
  PeerRack peers;
  TestRack& rack = peers.rack;
  Peer &victim = *peers.first, &thief = *peers.second;
  REQUIRE(victim.Ask("group workers") == "ok");
  REQUIRE(thief.Ask("group workers") == "ok");
  const uint64_t addr = Addr(victim.Ask("map " + std::to_string(kMiB)));
  REQUIRE(addr != 0);
  const std::string all = Range(addr, kMiB);
  REQUIRE(victim.Ask("fill " + all + " 5") == "ok");
  REQUIRE(victim.Ask("flush " + all) == "ok");
  REQUIRE(victim.Ask("publish state " + HexAddr(addr + 64)) == "ok");
  const std::string from = std::to_string(victim.id());

  SECTION("live: the victim's later touches fault as revoked") {
    REQUIRE(Addr(thief.Ask("lookup " + from + " state")) == addr + 64);
    REQUIRE(thief.Ask("steal " + from + " " + all) == "ok");
    REQUIRE(thief.Ask("verify " + all + " 5") == "ok");
    REQUIRE(WaitForEvent(victim, "revoked:" + std::to_string(thief.id())));
    REQUIRE(victim.Ask("touch " + HexAddr(addr)) == "fault revoked (granted away or stolen)");
  }
  SECTION("paused: its unflushed writes never land, before or after it resumes") {
    REQUIRE(victim.Ask("fill " + all + " 6") == "ok");  // dirty in its cache only
    REQUIRE(kill(victim.pid(), SIGSTOP) == 0);
    REQUIRE(thief.Ask("steal " + from + " " + all) == "ok");
    REQUIRE(thief.Ask("verify " + all + " 5") == "ok");
    REQUIRE(kill(victim.pid(), SIGCONT) == 0);
    REQUIRE(victim.Ask("flush " + all).rfind("error", 0) == 0);
    REQUIRE(thief.Ask("verify " + all + " 5") == "ok");
    REQUIRE(WaitForEvent(victim, "revoked:" + std::to_string(thief.id())));
    REQUIRE(victim.Ask("touch " + HexAddr(addr)) == "fault revoked (granted away or stolen)");
  }
  SECTION("dead: its memory and roots are held for adoption") {
    victim.End("crash");
    bool held = false;  // once the Rack MMU has seen the death
    for (int i = 0; i < 500 && !held; ++i) {
      held = Status(rack).find("dead, held") != std::string::npos;
      if (!held) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    REQUIRE(held);
    REQUIRE(Addr(thief.Ask("lookup " + from + " state")) == addr + 64);
    REQUIRE(thief.Ask("steal " + from + " " + all) == "ok");
    REQUIRE(thief.Ask("verify " + all + " 5") == "ok");
  }
  REQUIRE_CONSISTENT(rack);
}

// The thread of process `pid` named `name` (libdisagg names its threads), or 0.
pid_t ThreadNamed(pid_t pid, const std::string& name) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  DIR* dir = ::opendir(tasks.c_str());
  if (dir == nullptr) return 0;
  pid_t found = 0;
  while (dirent* e = ::readdir(dir)) {
    std::string comm;
    std::getline(std::ifstream(tasks + "/" + e->d_name + "/comm"), comm);
    if (comm == name) found = static_cast<pid_t>(std::atoi(e->d_name));
  }
  ::closedir(dir);
  return found;
}

// Holds one thread of a child process stopped (ptrace) while it lives; the rest run on.
class ThreadStop {
 public:
  explicit ThreadStop(pid_t tid) : tid_(tid) {
    int status = 0;
    stopped_ = ::ptrace(PTRACE_SEIZE, tid_, nullptr, nullptr) == 0 &&
               ::ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr) == 0 &&
               ::waitpid(tid_, &status, __WALL) == tid_;
  }
  ~ThreadStop() { ::ptrace(PTRACE_DETACH, tid_, nullptr, nullptr); }
  bool stopped() const { return stopped_; }

 private:
  pid_t tid_;
  bool stopped_ = false;
};

TEST_CASE(
    "A memory element's refusal of a touch faults as refused: a stolen page touched before "
    "the revocation arrived") {
  // Heartbeats are not the point: the victim's control thread is held stopped for a while.
  PeerRack peers("--compute 2 --memory 1 --pool-size 64M --cache-budget 1M --silence-ms 20000");
  Peer &victim = *peers.first, &thief = *peers.second;
  REQUIRE(victim.Ask("group workers") == "ok");
  REQUIRE(thief.Ask("group workers") == "ok");
  // Mapped, never touched: the victim knows where its pages are, and caches none of them.
  const uint64_t addr = Addr(victim.Ask("map 65536"));
  REQUIRE(addr != 0);
  const pid_t control = ThreadNamed(victim.pid(), "disagg-control");
  REQUIRE(control != 0);
  {
    // The control thread reads the Rack MMU's events: held, the revocation waits in its ring.
    ThreadStop hold(control);
    REQUIRE(hold.stopped());
    REQUIRE(thief.Ask("steal " + std::to_string(victim.id()) + " " + Range(addr, 65536)) == "ok");
    // The touch goes to the memory element with what the victim knew: the page is not its own
    // there any more.
    REQUIRE(victim.Ask("touch " + HexAddr(addr)) == "fault refused by the memory element at mem0");
  }
  // Once the revocation arrived, other pages of the range fault as revoked.
  REQUIRE(WaitForEvent(victim, "revoked:" + std::to_string(thief.id())));
  REQUIRE(victim.Ask("touch " + HexAddr(addr + 4096)) == "fault revoked (granted away or stolen)");
  REQUIRE(thief.Ask("zeros " + Range(addr, 65536)) == "ok");
}

TEST_CASE("A dead process's memory and roots are freed when its grace period ends") {
  PeerRack peers(std::string(kRackArgs) + " --grace-ms 300");
  TestRack& rack = peers.rack;
  Peer &victim = *peers.first, &thief = *peers.second;
  REQUIRE(victim.Ask("group g") == "ok");
  REQUIRE(thief.Ask("group g") == "ok");
  const uint64_t addr = Addr(victim.Ask("map " + std::to_string(kMiB)));
  REQUIRE(victim.Ask("publish state " + HexAddr(addr)) == "ok");
  const std::string from = std::to_string(victim.id());
  victim.End("crash");
  bool freed = false;
  for (int i = 0; i < 300 && !freed; ++i) {
    freed = thief.Ask("lookup " + from + " state").rfind("error NOT_FOUND", 0) == 0;
    if (!freed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(freed);
  REQUIRE(thief.Ask("steal " + from + " " + Range(addr, kMiB)).rfind("error NOT_FOUND", 0) == 0);
  REQUIRE(Status(rack).find("dead, held") == std::string::npos);
  REQUIRE_CONSISTENT(rack);
}

TEST_CASE("Steal outside a shared trust group is refused and changes nothing") {
  PeerRack peers;
  TestRack& rack = peers.rack;
  Peer &victim = *peers.first, &thief = *peers.second;
  REQUIRE(victim.Ask("group one") == "ok");
  REQUIRE(thief.Ask("group two") == "ok");
  const uint64_t addr = Addr(victim.Ask("map " + std::to_string(kMiB)));
  REQUIRE(victim.Ask("fill " + Range(addr, kMiB) + " 9") == "ok");
  REQUIRE(thief.Ask("steal " + std::to_string(victim.id()) + " " + Range(addr, kMiB))
              .rfind("error PERMISSION_DENIED", 0) == 0);
  REQUIRE(victim.Ask("flush " + Range(addr, kMiB)) == "ok");
  REQUIRE(victim.Ask("verify " + Range(addr, kMiB) + " 9") == "ok");
  REQUIRE(thief.Ask("touch " + HexAddr(addr)) == "fault not yours (another process's memory)");
  REQUIRE_CONSISTENT(rack);
}

TEST_CASE("Bad grants and steals are refused with the reason and change nothing") {
  PeerRack peers;
  TestRack& rack = peers.rack;
  Peer &a = *peers.first, &b = *peers.second;
  const uint64_t addr = Addr(a.Ask("map " + std::to_string(kMiB)));
  const uint64_t theirs = Addr(b.Ask("map " + std::to_string(kMiB)));
  REQUIRE(a.Ask("fill " + Range(addr, kMiB) + " 3") == "ok");
  const std::string to_b = " " + std::to_string(b.id());
  auto refused = [](const std::string& answer, const std::string& code) {
    INFO(answer);
    return answer.rfind("error " + code, 0) == 0;
  };
  CHECK(refused(a.Ask("grant " + Range(addr, kMiB) + " 999"), "NOT_FOUND"));
  CHECK(refused(a.Ask("grant " + Range(theirs, kMiB) + to_b), "PERMISSION_DENIED"));
  CHECK(refused(a.Ask("grant " + Range(addr + 1, 4096) + to_b), "INVALID_ARGUMENT"));
  CHECK(refused(a.Ask("grant " + Range(addr, 4097) + to_b), "INVALID_ARGUMENT"));
  CHECK(refused(a.Ask("grant " + Range(addr, 0) + to_b), "INVALID_ARGUMENT"));
  CHECK(refused(a.Ask("grant " + Range(addr, 4 * kMiB) + to_b), "INVALID_ARGUMENT"));
  CHECK(refused(a.Ask("grant " + Range(addr, kMiB) + " " + std::to_string(a.id())),
                "INVALID_ARGUMENT"));
  CHECK(refused(a.Ask("steal " + std::to_string(a.id()) + " " + Range(addr, kMiB)),
                "INVALID_ARGUMENT"));
  CHECK(refused(a.Ask("steal 999 " + Range(addr, kMiB)), "NOT_FOUND"));
  CHECK(refused(a.Ask("publish x " + HexAddr(theirs)), "INVALID_ARGUMENT"));
  CHECK(refused(a.Ask("lookup " + std::to_string(b.id()) + " nothing"), "NOT_FOUND"));
  REQUIRE(a.Ask("verify " + Range(addr, kMiB) + " 3") == "ok");
  REQUIRE(a.Ask("flush " + Range(addr, kMiB)) == "ok");
  REQUIRE_CONSISTENT(rack);
}

TEST_CASE("Concurrent grant and steal of the same range: exactly one wins") {
  TestRack rack;
  REQUIRE(rack.Up(kRackArgs) == 0);
  Peer owner(rack.dir(), "cpu0"), receiver(rack.dir(), "cpu1"), thief(rack.dir(), "cpu1");
  REQUIRE_PEER(owner);
  REQUIRE_PEER(receiver);
  REQUIRE_PEER(thief);
  REQUIRE(owner.Ask("group g") == "ok");
  REQUIRE(thief.Ask("group g") == "ok");
  int grants = 0, steals = 0;
  for (int round = 0; round < 10; ++round) {
    const uint64_t addr = Addr(owner.Ask("map " + std::to_string(256 * kKiB)));
    const std::string head = Range(addr, 128 * kKiB), tail = Range(addr + 128 * kKiB, 128 * kKiB);
    REQUIRE(owner.Ask("fill " + head + " 1") == "ok");
    REQUIRE(owner.Ask("fill " + tail + " 2") == "ok");
    // Flushed: a steal takes only what reached the memory elements.
    REQUIRE(owner.Ask("flush " + Range(addr, 256 * kKiB)) == "ok");
    // Part of the range overlaps: the steal takes its second half.
    owner.Send("grant " + Range(addr, 256 * kKiB) + " " + std::to_string(receiver.id()));
    thief.Send("steal " + std::to_string(owner.id()) + " " + tail);
    const std::string granted = owner.Answer(), stolen = thief.Answer();
    INFO(granted + " / " + stolen);
    REQUIRE((granted == "ok") != (stolen == "ok"));
    grants += granted == "ok";
    steals += stolen == "ok";
    // Whoever won holds the data the owner wrote.
    if (granted == "ok") {
      REQUIRE(receiver.Ask("verify " + head + " 1") == "ok");
      REQUIRE(receiver.Ask("verify " + tail + " 2") == "ok");
      REQUIRE(thief.Ask("touch " + HexAddr(addr + 128 * kKiB)) ==
              "fault not yours (another process's memory)");
    } else {
      REQUIRE(thief.Ask("verify " + tail + " 2") == "ok");
      REQUIRE(owner.Ask("verify " + head + " 1") == "ok");
    }
  }
  INFO("grants won " << grants << ", steals won " << steals);
  REQUIRE_CONSISTENT(rack);
}

TEST_CASE("Process ids are reused once their processes left") {
  TestRack rack;
  REQUIRE(rack.Up(kRackArgs) == 0);
  uint32_t first = 0;
  for (int i = 0; i < 5; ++i) {
    Peer p(rack.dir(), "cpu0");
    REQUIRE_PEER(p);
    REQUIRE(Addr(p.Ask("map 4096")) != 0);
    if (i == 0) first = p.id();
    if (p.id() != first) {  // the previous one did not leave and release everything
      std::string mmu, cpu;
      RunCommand("grep -h 'process' " + rack.dir() + "/mmu.log", &mmu);
      RunCommand("grep -h 'process' " + rack.dir() + "/cpu0.log", &cpu);
      FAIL("process id " << p.id() << ", not " << first << "; what the Rack MMU logged:\n"
                         << mmu << "\nwhat cpu0 logged:\n"
                         << cpu);
    }
    // It leaves and exits on its own: a crash, an abort or the destructor's kill would hold
    // its memory, and so its id, for the grace period.
    const int status = p.End("quit");
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
  }
  REQUIRE_CONSISTENT(rack);
}

// One request from a raw client; the reply's status.
absl::Status Call(ipc::Client& client, const std::function<void(proto::Message::Builder)>& fill,
                  uint64_t* root_vaddr = nullptr) {
  ipc::SmallMessage m;
  auto root = m.Init();
  fill(root);
  return client.Call(m.builder(), root, [&](proto::Message::Reader reply) {
    if (root_vaddr != nullptr && reply.isMapped()) *root_vaddr = reply.getMapped().getVaddr();
    return absl::OkStatus();
  });
}

TEST_CASE("Grant and steal requests out of protocol are refused, and the daemons serve on") {
  TestRack rack;
  REQUIRE(rack.Up(kRackArgs) == 0);
  Peer bystander(rack.dir(), "cpu0");  // connected before the attack, served after it
  REQUIRE_PEER(bystander);
  const uint64_t mine = Addr(bystander.Ask("map " + std::to_string(kMiB)));
  REQUIRE(bystander.Ask("fill " + Range(mine, kMiB) + " 4") == "ok");
  auto client = ipc::Client::Connect(rack.Socket("mmu"));
  REQUIRE(client.ok());

  SECTION("before joining") {
    CHECK(absl::IsFailedPrecondition(Call(*client, [](auto m) { m.initGrant().setBytes(4096); })));
    CHECK(absl::IsFailedPrecondition(Call(*client, [](auto m) { m.initSteal().setFrom(1); })));
    CHECK(
        absl::IsFailedPrecondition(Call(*client, [](auto m) { m.initJoinGroup().setName("g"); })));
    CHECK(absl::IsFailedPrecondition(Call(*client, [](auto m) { m.initPublish().setName("r"); })));
    CHECK(absl::IsFailedPrecondition(Call(*client, [](auto m) { m.setLeave(); })));
  }
  SECTION("impossible ranges, names and parties") {
    REQUIRE(Call(*client, [](auto m) { m.initJoin().setName("hostile"); }).ok());
    uint64_t vaddr = 0;
    REQUIRE(Call(
                *client, [](auto m) { m.initMap().setBytes(64 * kKiB); }, &vaddr)
                .ok());
    auto grant = [&](uint64_t at, uint64_t bytes, uint32_t to) {
      return Call(*client, [&](auto m) {
        auto g = m.initGrant();
        g.setVaddr(at);
        g.setBytes(bytes);
        g.setTo(to);
      });
    };
    const uint32_t other = bystander.id();
    CHECK(absl::IsInvalidArgument(grant(vaddr, ~uint64_t{0} - 4095, other)));  // wraps around
    CHECK(absl::IsInvalidArgument(grant(~uint64_t{0} & ~uint64_t{4095}, 8192, other)));
    CHECK(absl::IsInvalidArgument(grant(vaddr, 0, other)));
    CHECK(absl::IsNotFound(grant(vaddr, 4096, 0)));
    CHECK(absl::IsNotFound(grant(vaddr, 4096, ~uint32_t{0})));
    CHECK(absl::IsPermissionDenied(grant(mine, 4096, other)));  // the bystander's own memory
    CHECK(absl::IsInvalidArgument(Call(*client, [](auto m) { m.initJoinGroup().setName(""); })));
    CHECK(absl::IsInvalidArgument(
        Call(*client, [](auto m) { m.initJoinGroup().setName(std::string(300, 'g')); })));
    CHECK(absl::IsPermissionDenied(Call(*client, [&](auto m) {
      auto s = m.initSteal();
      s.setFrom(other);
      s.setVaddr(mine);
      s.setBytes(4096);
    })));
    absl::Status published;
    int roots = 0;
    for (; roots < 2000 && published.ok(); ++roots) {
      published = Call(*client, [&](auto m) {
        auto p = m.initPublish();
        p.setName("root" + std::to_string(roots));
        p.setVaddr(vaddr);
      });
    }
    CHECK(absl::IsResourceExhausted(published));
    CHECK(roots == 1025);
    // The event link is a connection of its own...
    CHECK(absl::IsFailedPrecondition(
        Call(*client, [&](auto m) { m.initSubscribe().setProcessId(other); })));
    // ...and only the process itself may take its events.
    auto second = ipc::Client::Connect(rack.Socket("mmu"));
    REQUIRE(second.ok());
    CHECK(absl::IsPermissionDenied(
        Call(*second, [&](auto m) { m.initSubscribe().setProcessId(other); })));
  }
  SECTION("stray replies to the Rack MMU are logged and change nothing") {
    for (uint64_t seq = 0; seq < 64; ++seq) {
      ipc::SmallMessage m;
      auto root = m.Init(seq);
      if (seq % 3 == 0) root.setOk();
      if (seq % 3 == 1) ipc::SetError(root.initError(), absl::InternalError("lies"));
      if (seq % 3 == 2) root.initPageTable().initEntries(3);
      REQUIRE(client->connection().channel.Send(m.builder()).ok());
    }
    REQUIRE(Call(*client, [](auto m) { m.setStatusRequest(); }).ok());
  }
  SECTION("page-table requests to a memory element from anyone but the Rack MMU") {
    auto mem = ipc::Client::Connect(rack.Socket("mem0"));
    REQUIRE(mem.ok());
    CHECK(absl::IsPermissionDenied(Call(*mem, [](auto m) { m.setPageTableRequest(); })));
    CHECK(absl::IsPermissionDenied(Call(*mem, [&](auto m) {
      auto mv = m.initMovePages();
      mv.setFromProcess(bystander.id());
      mv.setToProcess(99);
      mv.setVpage(mine >> 12);
      mv.setPages(1);
    })));
    CHECK(absl::IsPermissionDenied(Call(*mem, [&](auto m) {
      auto r = m.initRevokePages();
      r.setProcessId(bystander.id());
      r.setVpage(mine >> 12);
      r.setPages(256);
    })));
  }
  // The bystander's memory and the maps are intact, and grant still works.
  REQUIRE(bystander.Ask("flush " + Range(mine, kMiB)) == "ok");
  REQUIRE(bystander.Ask("verify " + Range(mine, kMiB) + " 4") == "ok");
  Peer late(rack.dir(), "cpu1");
  REQUIRE_PEER(late);
  REQUIRE(bystander.Ask("grant " + Range(mine, kMiB) + " " + std::to_string(late.id())) == "ok");
  REQUIRE(late.Ask("verify " + Range(mine, kMiB) + " 4") == "ok");
  REQUIRE_CONSISTENT(rack);
}

TEST_CASE("An application that did not set up logging sees one clear message for a memory fault") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 64M --cache-budget 1M --silence-ms 2000") ==
          0);
  const std::string err_file = rack.dir() + "/peer.err";
  Peer peer(rack.dir(), "cpu0", err_file);
  REQUIRE_PEER(peer);
  const uint64_t addr = Addr(peer.Ask("map " + std::to_string(kMiB)));
  REQUIRE(addr != 0);
  // The memory element fails: the touch is refused, which the runtime would also log.
  REQUIRE(kill(rack.Pid("mem0"), SIGKILL) == 0);
  REQUIRE(rack.WaitForState("mem0", "failed"));
  REQUIRE(peer.Ask("nohandler") == "ok");
  const int status = peer.End("touch " + HexAddr(addr + 8192));
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(WTERMSIG(status) == SIGBUS);
  std::string err;
  RunCommand("cat " + err_file, &err);
  INFO(err);
  REQUIRE(err.find("disagg: memory fault at " + HexAddr(addr + 8192)) == 0);
  REQUIRE(err.find("memory element failed") != std::string::npos);
  REQUIRE(err.find('\n') == err.size() - 1);  // one line: nothing of glog's own
}

TEST_CASE("Memory a process unmapped or left behind reads as zeros for the next owner") {
  TestRack rack;
  // One element whose whole pool each region takes: the next owner gets the same pool pages.
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 1M --cache-budget 1M --silence-ms 2000") ==
          0);
  Peer next(rack.dir(), "cpu0");
  REQUIRE_PEER(next);
  for (const std::string how : {"unmap", "leave"}) {
    DYNAMIC_SECTION(how) {
      Peer first(rack.dir(), "cpu0");
      REQUIRE_PEER(first);
      const uint64_t addr = Addr(first.Ask("map " + std::to_string(kMiB)));
      REQUIRE(addr != 0);
      REQUIRE(first.Ask("fill " + Range(addr, kMiB) + " 9") == "ok");
      REQUIRE(first.Ask("flush " + Range(addr, kMiB)) == "ok");
      if (how == "unmap") {
        REQUIRE(first.Ask("unmap " + HexAddr(addr)) == "ok");
      } else {
        REQUIRE(WIFEXITED(first.End("quit")));  // ~Rack leaves the rack: memory freed now
      }
      uint64_t mine = 0;  // the pool is free again at once, for the next owner
      for (int i = 0; i < 500 && mine == 0; ++i) {
        mine = Addr(next.Ask("map " + std::to_string(kMiB)));
        if (mine == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      REQUIRE(mine != 0);
      REQUIRE(next.Ask("zeros " + Range(mine, kMiB)) == "ok");
      REQUIRE(next.Ask("unmap " + HexAddr(mine)) == "ok");
    }
  }
  REQUIRE_CONSISTENT(rack);
}

TEST_CASE("A fault handler that returns: the fault's message, then SIGBUS") {
  TestRack rack;
  REQUIRE(rack.Up(kRackArgs) == 0);
  const std::string err_file = rack.dir() + "/peer.err";
  Peer peer(rack.dir(), "cpu0", err_file);
  REQUIRE_PEER(peer);
  const uint64_t addr = Addr(peer.Ask("map " + std::to_string(kMiB)));
  REQUIRE(peer.Ask("unmap " + HexAddr(addr)) == "ok");
  REQUIRE(peer.Ask("returning-handler") == "ok");
  const int status = peer.End("touch " + HexAddr(addr));
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(WTERMSIG(status) == SIGBUS);
  std::string err;
  RunCommand("cat " + err_file, &err);
  INFO(err);
  REQUIRE(err.find("disagg: memory fault at " + HexAddr(addr) + ": not mapped") == 0);
}

}  // namespace
}  // namespace disagg::testing
