// Programmable fate sharing end to end, on private racks of real daemons: for each model, a
// failure reaches exactly the failure domain its spec names, while a process of no
// application (or another one) beside it goes on untouched; malformed specs are refused at
// launch with their line number, and nothing runs.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
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
constexpr uint64_t kStripe = 64 * 4096;  // spread placement alternates elements every 256 KiB
constexpr char kRackArgs[] =
    "--compute 2 --memory 2 --pool-size 64M --cache-budget 1M --silence-ms 2000";

#define REQUIRE_PEER(p) \
  INFO((p).error());    \
  REQUIRE((p).ok())

std::string WriteFile(const TestRack& rack, const std::string& name, const std::string& text) {
  const std::string path = rack.dir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

// Registers `spec` for application `app` with `rackctl app`.
void RegisterApp(const TestRack& rack, const std::string& app, const std::string& spec) {
  int rc = 0;
  const std::string out =
      Rackctl(rack, "app " + app + " --fate " + WriteFile(rack, app + ".fate", spec), &rc);
  INFO(out);
  REQUIRE(rc == 0);
}

// A rack_peer of application `app` ("" for none) on `element`.
std::unique_ptr<Peer> AppPeer(const TestRack& rack, const std::string& element,
                              const std::string& app) {
  std::vector<std::string> env;
  if (!app.empty()) env.push_back("DISAGG_APP=" + app);
  return std::make_unique<Peer>(rack.dir(), element, "", "rack_peer", std::vector<std::string>{},
                                env);
}

// Maps `bytes` in `peer`, fills them with `seed` and flushes them; the address.
uint64_t Filled(Peer& peer, uint64_t bytes, int seed) {
  const uint64_t a = Addr(peer.Ask("map " + std::to_string(bytes)));
  REQUIRE(peer.Ask("fill " + Range(a, bytes) + " " + std::to_string(seed)) == "ok");
  REQUIRE(peer.Ask("flush " + Range(a, bytes)) == "ok");
  return a;
}

// Polls until `pid` (a child of this test) has ended (10 s at the most).
bool WaitForEnd(pid_t pid) {
  for (int i = 0; i < 1000; ++i) {
    if (!ProcessAlive(pid)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// Whether the Rack MMU lists process `id` (live, or dead with its memory held).
bool Listed(TestRack& rack, uint32_t id) {
  for (const ProcessRow& p : rack.Processes()) {
    if (p.id == id) return true;
  }
  return false;
}

bool WaitUnlisted(TestRack& rack, uint32_t id) {
  for (int i = 0; i < 1000; ++i) {
    if (!Listed(rack, id)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

uint64_t BoundBytes(const TestRack& rack, uint32_t id) {
  return MemoryStatus(rack, "mem0")[id].bound_bytes + MemoryStatus(rack, "mem1")[id].bound_bytes;
}

// Verifies [a, +bytes) of `peer` stripe by stripe: how many stripes read back `seed` ("ok")
// and how many are refused as lost on `lost_on`; anything else fails the test.
std::pair<int, int> VerifyStripes(Peer& peer, uint64_t a, uint64_t bytes, int seed,
                                  const std::string& lost_on) {
  int ok = 0, lost = 0;
  for (uint64_t off = 0; off < bytes; off += kStripe) {
    const std::string said =
        peer.Ask("verify " + Range(a + off, 4096) + " " + std::to_string(seed));
    INFO(said);
    if (said == "ok") {
      ++ok;
    } else {
      REQUIRE(said == "fault memory element failed at " + lost_on);
      ++lost;
    }
  }
  return {ok, lost};
}

}  // namespace

TEST_CASE(
    "Complete fate sharing: a process's failure ends its whole application, releases its "
    "memory and runs its handler once; other processes go on") {
  TestRack rack;
  REQUIRE(rack.Up(kRackArgs) == 0);
  const std::string handled = rack.dir() + "/handled";
  const std::string script = WriteFile(
      rack, "handler.sh", "#!/bin/sh\necho \"$DISAGG_FAILED_PROCESS\" >> " + handled + "\n");
  REQUIRE(::chmod(script.c_str(), 0755) == 0);
  const std::string spec =
      WriteFile(rack, "web.fate",
                "# the web tier fails as one machine\nmodel complete\nhandler " + script + "\n");
  // Both through `rackctl run --app`: the first registers the spec, the second joins.
  const std::string peer = std::string(DISAGG_BIN_DIR) + "/rack_peer";
  Peer first(
      rack.dir(), "cpu0", "", "rackctl",
      {"--rack", rack.dir(), "run", "--app", "web", "--fate", spec, "--on", "cpu0", "--", peer});
  Peer second(rack.dir(), "cpu1", "", "rackctl",
              {"--rack", rack.dir(), "run", "--app", "web", "--on", "cpu1", "--", peer});
  auto other = AppPeer(rack, "cpu1", "");
  REQUIRE_PEER(first);
  REQUIRE_PEER(second);
  REQUIRE_PEER(*other);
  const std::string status = Rackctl(rack, "status --json");
  INFO(status);
  REQUIRE(status.find("\"app\":\"web\",\"fate\":\"complete\"") != std::string::npos);
  Filled(first, 2 * kMiB, 1);
  Filled(second, 2 * kMiB, 2);
  const uint64_t c = Filled(*other, 2 * kMiB, 3);

  int rc = 0;
  Rackctl(rack, "kill " + std::to_string(first.id()), &rc);
  REQUIRE(rc == 0);
  // The rest of the application ends with it (its rackctl ends as its program did)...
  REQUIRE(WaitForEnd(second.pid()));
  // ...and nothing of either is held for adoption or bound at a memory element.
  REQUIRE(WaitUnlisted(rack, first.id()));
  REQUIRE(WaitUnlisted(rack, second.id()));
  REQUIRE(BoundBytes(rack, first.id()) == 0);
  REQUIRE(BoundBytes(rack, second.id()) == 0);
  // The process of no application is untouched.
  REQUIRE(other->Ask("verify " + Range(c, 2 * kMiB) + " 3") == "ok");
  // The handler ran for the process that failed, not for the one that shared its fate.
  std::string ran;
  for (int i = 0; i < 1000 && ran.empty(); ++i) {
    std::ifstream in(handled);
    std::getline(in, ran);
    if (ran.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(ran == std::to_string(first.id()));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::ifstream in(handled);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(all == std::to_string(first.id()) + "\n");
  REQUIRE_CONSISTENT(rack);
}

// The lines of `path` once it has `lines` of them (10 s at the most), then 300 ms later.
std::string HandledLines(const std::string& path, int lines) {
  for (int i = 0; i < 1000; ++i) {
    std::ifstream in(path);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (std::count(all.begin(), all.end(), '\n') >= lines) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST_CASE(
    "Complete fate sharing: a failed compute element ends the application and runs its handler "
    "once") {
  TestRack rack;
  REQUIRE(rack.Up(kRackArgs) == 0);
  const std::string handled = rack.dir() + "/handled";
  const std::string script =
      WriteFile(rack, "handler.sh", "#!/bin/sh\necho \"$DISAGG_FAILED_NAME\" >> " + handled + "\n");
  REQUIRE(::chmod(script.c_str(), 0755) == 0);
  RegisterApp(rack, "svc", "model complete\nhandler --on cpu1 " + script + "\n");
  auto a = AppPeer(rack, "cpu0", "svc");
  auto b = AppPeer(rack, "cpu0", "svc");
  auto c = AppPeer(rack, "cpu1", "svc");
  REQUIRE_PEER(*a);
  REQUIRE_PEER(*b);
  REQUIRE_PEER(*c);
  int rc = 0;
  Rackctl(rack, "fail cpu0", &rc);
  REQUIRE(rc == 0);
  REQUIRE(WaitForEnd(c->pid()));
  REQUIRE(HandledLines(handled, 1) == "rack_peer\n");
}

// Application "app" of `model`: `user` (cpu0) has memory on both elements, `idle` (cpu1) none;
// `other` (cpu1) is of no application, with memory on both. Then mem1 fails.
struct MemoryFailureRack {
  TestRack rack;
  std::unique_ptr<Peer> user, idle, other;
  uint64_t c = 0;  // other's memory
  explicit MemoryFailureRack(const std::string& model) {
    REQUIRE(rack.Up(kRackArgs) == 0);
    RegisterApp(rack, "app", "model " + model + "\n");
    user = AppPeer(rack, "cpu0", "app");
    idle = AppPeer(rack, "cpu1", "app");
    other = AppPeer(rack, "cpu1", "");
    REQUIRE_PEER(*user);
    REQUIRE_PEER(*idle);
    REQUIRE_PEER(*other);
    Filled(*user, 2 * kMiB, 1);
    c = Filled(*other, 2 * kMiB, 3);
    int rc = 0;
    Rackctl(rack, "fail mem1", &rc);
    REQUIRE(rc == 0);
    // The user ends, and nothing of it stays, also on mem0.
    REQUIRE(WaitForEnd(user->pid()));
    REQUIRE(WaitUnlisted(rack, user->id()));
    REQUIRE(MemoryStatus(rack, "mem0")[user->id()].bound_bytes == 0);
    // The other process loses its pages on mem1 only, and lives.
    REQUIRE(WaitForEvent(*other, "memory-failed:" + std::to_string(other->id())));
    const auto [ok, lost] = VerifyStripes(*other, c, 2 * kMiB, 3, "mem1");
    REQUIRE(ok > 0);
    REQUIRE(lost > 0);
  }
};

TEST_CASE(
    "Complete fate sharing: a memory element the application uses fails it whole, also its "
    "processes that hold nothing there") {
  MemoryFailureRack r("complete");
  REQUIRE(WaitForEnd(r.idle->pid()));
}

TEST_CASE(
    "Partial fate sharing: a failed process's memory fails with it at once, and no peer can "
    "adopt it; no fate sharing holds it for steal") {
  TestRack rack;
  REQUIRE(rack.Up(kRackArgs) == 0);
  RegisterApp(rack, "mr", "model partial\n");
  RegisterApp(rack, "kv", "model none\n");
  auto mapper = AppPeer(rack, "cpu0", "mr");
  auto store = AppPeer(rack, "cpu0", "kv");
  auto peer = AppPeer(rack, "cpu1", "mr");  // adopts what it may, for both
  REQUIRE_PEER(*mapper);
  REQUIRE_PEER(*store);
  REQUIRE_PEER(*peer);
  for (Peer* p : {mapper.get(), store.get(), peer.get()}) REQUIRE(p->Ask("group team") == "ok");
  const uint64_t a = Filled(*mapper, 2 * kMiB, 1);
  const uint64_t b = Filled(*store, 2 * kMiB, 2);

  mapper->Kill();
  store->Kill();
  REQUIRE(WaitForEvent(*peer, "peer-failed:" + std::to_string(mapper->id())));
  REQUIRE(WaitForEvent(*peer, "peer-failed:" + std::to_string(store->id())));
  // partial: gone, from the map and from every memory element, before anyone could read it.
  REQUIRE(WaitUnlisted(rack, mapper->id()));
  REQUIRE(BoundBytes(rack, mapper->id()) == 0);
  const std::string refused =
      peer->Ask("steal " + std::to_string(mapper->id()) + " " + Range(a, 2 * kMiB));
  INFO(refused);
  REQUIRE(refused.rfind("error ", 0) == 0);
  // none: held for adoption, and adopted with its data.
  REQUIRE(peer->Ask("steal " + std::to_string(store->id()) + " " + Range(b, 2 * kMiB)) == "ok");
  REQUIRE(peer->Ask("verify " + Range(b, 2 * kMiB) + " 2") == "ok");
  // The peer of the partial application lives on.
  REQUIRE(ProcessAlive(peer->pid()));
  REQUIRE_CONSISTENT(rack);
}

TEST_CASE("Partial fate sharing: a process whose memory element fails fails with it") {
  MemoryFailureRack r("partial");
  // One of the application that holds no memory there is not in the failure.
  REQUIRE(ProcessAlive(r.idle->pid()));
  REQUIRE(r.idle->Ask("id") == std::to_string(r.idle->id()));
}

// Tainted: `writer` dies with write-backs to mem1 under way (mem1 is paused as it flushes);
// `stop` is the spec's taint-stops-at.
struct TaintedRack {
  TestRack rack;
  std::unique_ptr<Peer> writer, user, other;
  uint64_t b = 0, c = 0;
  explicit TaintedRack(const std::string& stop) {
    REQUIRE(rack.Up(kRackArgs) == 0);
    RegisterApp(rack, "dsm", "model tainted\ntaint-stops-at " + stop + "\n");
    writer = AppPeer(rack, "cpu0", "dsm");
    user = AppPeer(rack, "cpu1", "dsm");
    other = AppPeer(rack, "cpu1", "");
    REQUIRE_PEER(*writer);
    REQUIRE_PEER(*user);
    REQUIRE_PEER(*other);
    b = Filled(*user, 2 * kMiB, 2);
    c = Filled(*other, 2 * kMiB, 3);
    {
      // A process of the application that dies with everything acknowledged taints nothing.
      auto quiet = AppPeer(rack, "cpu0", "dsm");
      REQUIRE_PEER(*quiet);
      Filled(*quiet, 2 * kMiB, 4);
      quiet->Kill();
      REQUIRE(WaitForFence(quiet->id()));
    }
    REQUIRE(user->Ask("events").find("memory-failed") == std::string::npos);
    REQUIRE(user->Ask("verify " + Range(b, 2 * kMiB) + " 2") == "ok");
    // 2 MiB through a 1 MiB cache: its last 1 MiB, on both elements, is dirty.
    const uint64_t a = Addr(writer->Ask("map " + std::to_string(2 * kMiB)));
    REQUIRE(writer->Ask("fill " + Range(a, 2 * kMiB) + " 1") == "ok");
    int rc = 0;
    Rackctl(rack, "pause mem1", &rc);
    REQUIRE(rc == 0);
    writer->Send("flush " + Range(a, 2 * kMiB));  // mem0's batch is acknowledged, mem1's hangs
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    writer->Kill();
    Rackctl(rack, "resume mem1", &rc);
    REQUIRE(rc == 0);
  }
  bool WaitForFence(uint32_t id) {
    for (int i = 0; i < 1000; ++i) {
      if (MemoryStatus(rack, "mem0")[id].fenced || !Listed(rack, id)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
};

TEST_CASE(
    "Tainted fate sharing: the application's memory on an element holding unacknowledged "
    "write-backs fails with the writer; its memory elsewhere and other applications' stay") {
  TaintedRack t("memory");
  const std::string lost = "memory-failed:" + std::to_string(t.user->id()) + ":" + HexAddr(t.b) +
                           ":" + std::to_string(2 * kMiB) + ":mem1";
  REQUIRE(WaitForEvent(*t.user, lost));
  const auto [ok, gone] = VerifyStripes(*t.user, t.b, 2 * kMiB, 2, "mem1");
  REQUIRE(ok > 0);    // on mem0: not tainted (its write-backs were acknowledged)
  REQUIRE(gone > 0);  // on mem1
  REQUIRE(t.user->Ask("events").find(":mem0") == std::string::npos);
  // Taken away at the element too, not only in the user's cache; the taint stops at memory.
  REQUIRE(MemoryStatus(t.rack, "mem1")[t.user->id()].bound_bytes == 0);
  REQUIRE(MemoryStatus(t.rack, "mem0")[t.user->id()].bound_bytes > 0);
  REQUIRE(ProcessAlive(t.user->pid()));
  // Another application's memory on the same element is untouched.
  REQUIRE(t.other->Ask("verify " + Range(t.c, 2 * kMiB) + " 3") == "ok");
  REQUIRE(t.other->Ask("events").find("memory-failed") == std::string::npos);
  REQUIRE_CONSISTENT(t.rack);
}

TEST_CASE("Tainted fate sharing that stops at users ends the processes with memory there") {
  TaintedRack t("users");
  REQUIRE(WaitForEnd(t.user->pid()));
  REQUIRE(t.other->Ask("verify " + Range(t.c, 2 * kMiB) + " 3") == "ok");
  REQUIRE_CONSISTENT(t.rack);
}

TEST_CASE("A malformed fate spec is refused at launch with its line number, and nothing runs") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M") == 0);
  const std::string marker = rack.dir() + "/ran";
  const std::string bad =
      WriteFile(rack, "bad.fate", "# comment\nmodel complete\nnotify everyone\n");
  int rc = 0;
  std::string out =
      Rackctl(rack, "run --app web --fate " + bad + " --on cpu0 -- /bin/touch " + marker, &rc);
  INFO(out);
  CHECK(rc != 0);
  CHECK(out.find(bad + ":3: notify: unknown party 'everyone' (groups, app or none)") !=
        std::string::npos);
  CHECK(::access(marker.c_str(), F_OK) != 0);

  struct Case {
    std::string args;
    std::string says;
  };
  const std::string good = WriteFile(rack, "good.fate", "model partial\n");
  const std::string handler =
      WriteFile(rack, "h.fate", "model none\nhandler --on cpu9 /bin/true\n");
  const std::string missing = WriteFile(rack, "m.fate", "model none\nhandler ./no-such-program\n");
  for (const Case& c : std::vector<Case>{
           {"app web --fate " + rack.dir() + "/nothing.fate", "cannot read"},
           {"app web", "app takes NAME and --fate FILE only"},
           {"app web --fate " + good + " --on cpu0", "app takes NAME and --fate FILE only"},
           {"app 'a b' --fate " + good, "is no application name"},
           {"app web --fate " + handler, "h.fate:2: no compute element 'cpu9' in the rack"},
           {"app web --fate " + missing, "m.fate:2: handler: "},
           {"run --fate " + good + " --on cpu0 -- /bin/true", "--fate goes with --app NAME"},
           {"status --app web", "--app goes only with run"},
           {"run --app .x --on cpu0 -- /bin/true", "is no application name"},
       }) {
    out = Rackctl(rack, c.args, &rc);
    INFO(c.args << " -> " << out);
    CHECK(rc != 0);
    CHECK(out.find(c.says) != std::string::npos);
  }

  // The rack monitor checks for itself what a client sends.
  absl::StatusOr<ipc::Client> mon = ipc::Client::Connect(rack.Socket("mon"), absl::Seconds(5));
  REQUIRE(mon.ok());
  auto ask = [&](const std::string& app, const std::string& text) {
    capnp::MallocMessageBuilder builder;
    auto root = builder.initRoot<proto::Message>();
    auto request = root.initRegisterApp();
    request.setApp(app);
    request.setFile("raw.fate");
    request.setText(text);
    return mon->Call(
        builder, root, [](proto::Message::Reader) { return absl::OkStatus(); }, absl::Seconds(5));
  };
  absl::Status refused = ask("web", "model tainted\n\ntaint-stops-at nowhere\n");
  CHECK(absl::IsInvalidArgument(refused));
  CHECK(refused.message() == "raw.fate:3: taint-stops-at takes memory or users");
  refused = ask("web", "model none\nhandler /bin/true\n");  // a handler line, but no launch
  CHECK(refused.message() == "mon: the handler sent does not match the spec's handler line");
  CHECK(absl::IsInvalidArgument(ask("../x", "model none\n")));
  CHECK(ask("web", "model tainted\n").ok());
  // And it serves on.
  out = Rackctl(rack, "app web --fate " + good, &rc);
  CHECK(rc == 0);
  // A process that names an application it may not have is refused by the Rack MMU.
  Peer bad_name(rack.dir(), "cpu0", "", "rack_peer", {}, {"DISAGG_APP=no/such"});
  CHECK_FALSE(bad_name.ok());
  CHECK(bad_name.error().find("is no application name") != std::string::npos);
}

}  // namespace disagg::testing
