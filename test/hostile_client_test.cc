// Clients that break the protocol are cut off with a logged reason; the daemon serves on.
#include <capnp/message.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>
#include <vector>

#include "ipc/client.h"
#include "ipc/life_word.h"
#include "ipc/socket.h"
#include "ipc/wire.h"
#include "rack_harness.h"
#include "rack_peer_driver.h"

namespace disagg::testing {
namespace {

using ipc::Connection;
using ipc::RingControl;

// The ring this client writes into, as raw shared memory.
struct RawRing {
  RingControl* control;
  uint8_t* data;
};

RawRing OutgoingRing(Connection& conn) {
  auto& ch = conn.channel;
  const int k = ch.outgoing_ring_index();
  uint8_t* base = ch.shared_memory().data();
  return {reinterpret_cast<RingControl*>(base + ipc::kChannelHeaderBytes + k * sizeof(RingControl)),
          base + ipc::kChannelDataOffset + k * ch.ring_bytes()};
}

// True if the daemon hung up on `conn` within `timeout_ms`.
bool CutOff(Connection& conn, int timeout_ms = 10000) {
  pollfd pfd{conn.socket.get(), POLLRDHUP, 0};
  if (::poll(&pfd, 1, timeout_ms) != 1) return false;
  char byte;
  return (pfd.revents & (POLLRDHUP | POLLHUP)) != 0 ||
         ::recv(conn.socket.get(), &byte, 1, MSG_DONTWAIT) == 0;
}

// A well-behaved client still gets an echo back.
// The rack has `elements` elements, none failed, all healthy again within the wait (suspect
// for a moment is fair on a loaded machine; failed is not).
void RequireNoneFailed(TestRack& rack, size_t elements) {
  auto rows = rack.Status();
  REQUIRE(rows.size() == elements);
  for (const auto& [name, row] : rows) {
    INFO(name);
    REQUIRE(row.state != "failed");
    REQUIRE(rack.WaitForState(name, "healthy"));
  }
}

void RequireServingOn(ipc::Client& client);

void RequireServing(const std::string& socket) {
  auto client = ipc::Client::Connect(socket);
  REQUIRE(client.ok());
  RequireServingOn(*client);
}

// `client` (connected before some attack, say) is still answered.
void RequireServingOn(ipc::Client& client) {
  capnp::MallocMessageBuilder builder;
  auto request = builder.initRoot<proto::Message>();
  const uint8_t payload[] = {1, 2, 3, 4, 5};
  request.setEcho(kj::arrayPtr(payload, sizeof(payload)));
  bool echoed = false;
  absl::Status status = client.Call(builder, request, [&](proto::Message::Reader reply) {
    echoed = reply.isEcho() && reply.getEcho().size() == sizeof(payload) &&
             std::memcmp(reply.getEcho().begin(), payload, sizeof(payload)) == 0;
    return absl::OkStatus();
  });
  REQUIRE(status.ok());
  REQUIRE(echoed);
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

TEST_CASE("A daemon cuts off a client that corrupts its ring and keeps serving the others") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M") == 0);
  for (const char* daemon : {"mmu", "mon", "mem0", "cpu0"}) {
    DYNAMIC_SECTION(daemon) {
      const std::string socket = rack.Socket(daemon);
      auto before = ipc::Client::Connect(socket);  // a peer served before the attack...
      REQUIRE(before.ok());
      auto conn = ipc::DialUnix(socket);
      REQUIRE(conn.ok());
      RawRing ring = OutgoingRing(*conn);
      std::string expected_reason;

      SECTION("hostile head index") {
        ring.control->head.store(1ull << 40);
        expected_reason = "impossible ring head";
      }
      SECTION("head not on a frame boundary") {
        ring.control->head.store(12);
        expected_reason = "impossible ring head";
      }
      SECTION("garbage frame header") {
        std::memset(ring.data, 0xEE, 64);
        ring.control->head.store(64);
        expected_reason = "corrupt frame header";
      }
      SECTION("head index published without a frame") {
        ring.control->head.store(64);
        expected_reason = "no frame header";
      }
      SECTION("well-framed bytes that are not a Cap'n Proto message") {
        const uint32_t header[2] = {56, 56 ^ ipc::kFrameTag};
        std::memcpy(ring.data, header, sizeof(header));
        for (int i = 0; i < 56; ++i) ring.data[8 + i] = uint8_t(0x9D * (i + 1));
        ring.control->head.store(64);
        expected_reason = "malformed message";
      }
      SECTION("a one-segment message whose root pointer leaves the message") {
        const uint32_t header[2] = {16, 16 ^ ipc::kFrameTag};
        const uint64_t words[2] = {uint64_t{1} << 32,                   // 1 segment of 1 word
                                   (uint64_t{2} << 32) | (100u << 2)};  // struct 100 words on
        std::memcpy(ring.data, header, sizeof(header));
        std::memcpy(ring.data + 8, words, sizeof(words));
        ring.control->head.store(24);
        expected_reason = "outside the message";
      }
      SECTION("stray data on the handshake socket") {
        REQUIRE(::send(conn->socket.get(), "hello?", 6, 0) == 6);
        expected_reason = "stray data";
      }
      SECTION("a client that never reads its replies") {
        capnp::MallocMessageBuilder builder;
        auto request = builder.initRoot<proto::Message>();
        request.initEcho(1024);
        for (int i = 0; i < 100000; ++i) {
          absl::Status s = conn->channel.Send(builder);
          if (absl::IsResourceExhausted(s)) {
            usleep(100);
            if (CutOff(*conn, 0)) break;
            continue;
          }
          REQUIRE(s.ok());
        }
        expected_reason = "ring full";
      }
      conn->channel.RingDoorbell();
      REQUIRE(CutOff(*conn));
      const std::string log = ReadFile(rack.dir() + "/" + daemon + ".log");
      REQUIRE_THAT(log, Catch::Contains("cutting off") && Catch::Contains(expected_reason));
      RequireServingOn(*before);  // ...is served after it, on the same connection
      RequireServing(socket);
    }
  }
  RequireNoneFailed(rack, 4);
}

TEST_CASE("A client that corrupts the daemon's ring to it, or floods its doorbell, is handled") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M") == 0);
  for (const char* daemon : {"mmu", "mon", "mem0", "cpu0"}) {
    DYNAMIC_SECTION(daemon) {
      const std::string socket = rack.Socket(daemon);
      auto before = ipc::Client::Connect(socket);
      REQUIRE(before.ok());
      auto hostile = ipc::Client::Connect(socket);
      REQUIRE(hostile.ok());
      SECTION("an impossible consumer tail on the daemon-to-client ring: cut off") {
        // The client consumes the daemon's ring: it owns that ring's tail, and lies about it.
        auto& ch = hostile->connection().channel;
        uint8_t* base = ch.shared_memory().data();
        auto* incoming = reinterpret_cast<RingControl*>(
            base + ipc::kChannelHeaderBytes + (1 - ch.outgoing_ring_index()) * sizeof(RingControl));
        incoming->tail.store(uint64_t{1} << 40);
        // The daemon reads the shared tail when its own copy says its ring is full: echoes the
        // client never reads fill it.
        std::vector<uint8_t> payload(1024, 9);
        for (int i = 0; i < 400; ++i) {
          capnp::MallocMessageBuilder builder;
          auto request = builder.initRoot<proto::Message>();
          request.setEcho(kj::arrayPtr(payload.data(), payload.size()));
          absl::StatusOr<uint64_t> sent = hostile->Send(builder, request);
          if (!sent.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        REQUIRE(CutOff(hostile->connection()));
        const std::string log = ReadFile(rack.dir() + "/" + daemon + ".log");
        REQUIRE_THAT(log, Catch::Contains("impossible ring tail"));
      }
      SECTION("a flood of doorbells with nothing behind them: served on") {
        // Each ring wakes the daemon to find nothing new; it must neither spin nor cut off.
        for (int i = 0; i < 100000; ++i) hostile->connection().channel.RingDoorbell();
        RequireServingOn(*hostile);
      }
      RequireServingOn(*before);
      RequireServing(socket);
    }
  }
  RequireNoneFailed(rack, 4);
}

TEST_CASE("An unknown request is answered with an error, and the client stays connected") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M") == 0);
  auto client = ipc::Client::Connect(rack.Socket("mmu"));
  REQUIRE(client.ok());
  capnp::MallocMessageBuilder builder;
  auto request = builder.initRoot<proto::Message>();
  request.initRegistered();
  absl::Status status =
      client->Call(builder, request, [](proto::Message::Reader) { return absl::OkStatus(); });
  REQUIRE(absl::IsUnimplemented(status));
  REQUIRE_THAT(std::string(status.message()), Catch::Contains("not served"));

  SECTION("a registration under a taken name is refused") {
    capnp::MallocMessageBuilder reg;
    auto r = reg.initRoot<proto::Message>();
    r.initRegister().setName("mem0");
    r.getRegister().setKind(proto::ElementKind::MEMORY);
    r.getRegister().setCapacityBytes(1 << 20);
    status = client->Call(reg, r, [](proto::Message::Reader) { return absl::OkStatus(); });
    REQUIRE(absl::IsAlreadyExists(status));
  }
  SECTION("health reports from anyone but the rack monitor are refused") {
    capnp::MallocMessageBuilder change;
    auto c = change.initRoot<proto::Message>();
    c.initHealthChange().setName("mem0");
    c.getHealthChange().setHealth(proto::Health::FAILED);
    status = client->Call(change, c, [](proto::Message::Reader) { return absl::OkStatus(); });
    REQUIRE(absl::IsPermissionDenied(status));
  }
  RequireServing(rack.Socket("mmu"));
  // The refusals left the rack as it was: mem0 is still healthy, and still the element the
  // Rack MMU talks to as mem0 (its check asks mem0 for its page table over that connection).
  REQUIRE(rack.Status()["mem0"].state == "healthy");
  REQUIRE(rack.Status()["mem0"].pid == rack.Pid("mem0"));
  std::string out;
  REQUIRE(RunCommand(std::string(DISAGG_BIN_DIR) + "/rackctl --rack " + rack.dir() + " check",
                     &out) == 0);
  REQUIRE_THAT(out, Catch::Contains("on 1 memory elements compared"));
}

absl::Status CallIgnoringReply(ipc::Client& client, ipc::SmallMessage& message,
                               proto::Message::Builder root) {
  return client.Call(message.builder(), root,
                     [](proto::Message::Reader) { return absl::OkStatus(); });
}

TEST_CASE("Remote-memory requests out of protocol are refused, and the daemons serve on") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M --cache-budget 1M") == 0);
  SECTION("the Rack MMU: Translate before Join, and of impossible pages") {
    auto client = ipc::Client::Connect(rack.Socket("mmu"));
    REQUIRE(client.ok());
    ipc::SmallMessage early;
    auto root = early.Init();
    root.initTranslate().setVpage(1ull << 28);
    REQUIRE(absl::IsFailedPrecondition(CallIgnoringReply(*client, early, root)));
    ipc::SmallMessage join;
    auto j = join.Init();
    j.initJoin().setName("hostile");
    REQUIRE(CallIgnoringReply(*client, join, j).ok());
    for (uint64_t vpage : {uint64_t{0}, ~uint64_t{0}, (uint64_t{1} << 52) + (uint64_t{1} << 28)}) {
      ipc::SmallMessage m;
      auto t = m.Init();
      t.initTranslate().setVpage(vpage);
      REQUIRE(absl::IsOutOfRange(CallIgnoringReply(*client, m, t)));
    }
    RequireServing(rack.Socket("mmu"));
  }
  SECTION("a compute element: reports before attaching, a second attach") {
    auto client = ipc::Client::Connect(rack.Socket("cpu0"));
    REQUIRE(client.ok());
    ipc::SmallMessage report;
    auto r = report.Init();
    r.initCacheUsage().setCachedBytes(1ull << 50);
    REQUIRE(absl::IsFailedPrecondition(CallIgnoringReply(*client, report, r)));
    ipc::SmallMessage attach;
    auto a = attach.Init();
    a.initAttach().setProcessId(77);
    uint64_t quota = 0;
    REQUIRE(client
                ->Call(attach.builder(), a,
                       [&](proto::Message::Reader reply) {
                         quota = reply.getCacheQuota().getBytes();
                         return absl::OkStatus();
                       })
                .ok());
    REQUIRE(quota == 1 << 20);  // alone on the element: the whole budget
    ipc::SmallMessage again;
    auto b = again.Init();
    b.initAttach().setProcessId(78);
    REQUIRE(absl::IsFailedPrecondition(CallIgnoringReply(*client, again, b)));
    RequireServing(rack.Socket("cpu0"));
  }
  SECTION("a compute element's budget is not split into useless shares") {
    std::vector<ipc::Client> clients;
    absl::Status last;
    for (int i = 0; i < 20 && last.ok(); ++i) {
      auto client = ipc::Client::Connect(rack.Socket("cpu0"));
      REQUIRE(client.ok());
      ipc::SmallMessage attach;
      auto a = attach.Init();
      a.initAttach().setProcessId(100 + i);
      last = CallIgnoringReply(*client, attach, a);
      clients.push_back(std::move(*client));
    }
    // 1 MiB in shares of at least 64 KiB: the 17th is refused.
    REQUIRE(absl::IsResourceExhausted(last));
    REQUIRE(clients.size() == 17);
    RequireServing(rack.Socket("cpu0"));
  }
  RequireNoneFailed(rack, 4);
}

// Sends a LifeWord naming file `fd` of this process, expecting no reply.
void SendLifeWord(ipc::Client& client, int fd) {
  ipc::SmallMessage told;
  auto root = told.Init();
  root.initLifeWord().setFd(fd);
  REQUIRE(client.Send(told.builder(), root).ok());
}

// A client registered as compute element `name` with the Rack MMU.
ipc::Client RegisteredElement(TestRack& rack, const std::string& name) {
  auto client = ipc::Client::Connect(rack.Socket("mmu"));
  REQUIRE(client.ok());
  ipc::SmallMessage reg;
  auto root = reg.Init();
  auto r = root.initRegister();
  r.setName(name);
  r.setKind(proto::ElementKind::COMPUTE);
  r.setCapacityBytes(1 << 20);
  REQUIRE(CallIgnoringReply(*client, reg, root).ok());
  return std::move(*client);
}

TEST_CASE("Life words out of protocol are refused with a reason, and the daemons serve on") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M --cache-budget 1M") == 0);
  absl::StatusOr<std::unique_ptr<ipc::LifeWordHolder>> holder = ipc::LifeWordHolder::Start(1);
  REQUIRE(holder.ok());
  const int held = (*holder)->fd(0);
  SECTION("from a client that is neither an element nor a process's event link") {
    for (const char* daemon : {"mmu", "mon"}) {
      INFO(daemon);
      auto client = ipc::Client::Connect(rack.Socket(daemon));
      REQUIRE(client.ok());
      SendLifeWord(*client, held);
      REQUIRE(CutOff(client->connection()));
      const std::string log = ReadFile(rack.dir() + "/" + daemon + ".log");
      REQUIRE_THAT(log, Catch::Contains("cutting off") && Catch::Contains("a life word from n"));
      RequireServing(rack.Socket(daemon));
    }
  }
  SECTION("a file that is no life word, and a word that is not held") {
    ipc::Client fake = RegisteredElement(rack, "cpu-fake");
    SendLifeWord(fake, 0);  // this process's stdin
    REQUIRE(CutOff(fake.connection()));
    REQUIRE_THAT(ReadFile(rack.dir() + "/mmu.log"),
                 Catch::Contains("the life word is not a memfd of 4 KiB sealed"));
    absl::StatusOr<ipc::LifeWord> unheld = ipc::LifeWord::Create();
    REQUIRE(unheld.ok());
    ipc::Client again = RegisteredElement(rack, "cpu-fake");  // a failed name may be retaken
    SendLifeWord(again, unheld->fd());
    REQUIRE(CutOff(again.connection()));
    REQUIRE_THAT(ReadFile(rack.dir() + "/mmu.log"),
                 Catch::Contains("the life word of cpu-fake is not held"));
    RequireServing(rack.Socket("mmu"));
  }
  SECTION("a word whose holder wakes its watcher without end loses its watch, not its link") {
    ipc::Client fake = RegisteredElement(rack, "cpu-waker");
    SendLifeWord(fake, held);
    RequireServingOn(fake);  // the word was taken (a refusal would have cut the link)
    void* page = ::mmap(nullptr, ipc::kLifeWordBytes, PROT_READ | PROT_WRITE, MAP_SHARED, held, 0);
    REQUIRE(page != MAP_FAILED);
    auto* word = static_cast<uint32_t*>(page);  // the mutex's futex word comes first
    // Wakes count only while the Rack MMU waits: on a loaded machine it takes a while to see
    // a thousand in one second.
    bool dropped = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!dropped && std::chrono::steady_clock::now() < deadline) {
      for (int i = 0; i < 1000; ++i) ::syscall(SYS_futex, word, FUTEX_WAKE, 1 << 30, nullptr);
      dropped = ReadFile(rack.dir() + "/mmu.log").find("cpu-waker wakes its life word") !=
                std::string::npos;
    }
    ::munmap(page, ipc::kLifeWordBytes);
    REQUIRE(dropped);
    RequireServingOn(fake);  // still registered and served
    // ...and it may not start again with another word.
    SendLifeWord(fake, held);
    REQUIRE(CutOff(fake.connection()));
    REQUIRE_THAT(ReadFile(rack.dir() + "/mmu.log"), Catch::Contains("sent a second life word"));
  }
  RequireNoneFailed(rack, 4);
}

TEST_CASE("Launch requests out of protocol are refused with a reason, and procmon serves on") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M --cache-budget 1M") == 0);
  auto client = ipc::Client::Connect(rack.Socket("cpu0"));
  REQUIRE(client.ok());
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<proto::Message>();
  auto launch = root.initLaunch();
  launch.initArgv(1).set(0, "/bin/true");
  launch.setCwd("/");
  auto stdio = launch.initStdio(3);
  for (int i = 0; i < 3; ++i) stdio.set(i, i);
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string reason;
  SECTION("no program") {
    launch.initArgv(0);
    code = absl::StatusCode::kInvalidArgument;
    reason = "names no program";
  }
  SECTION("two fds instead of three") {
    launch.initStdio(2);
    code = absl::StatusCode::kInvalidArgument;
    reason = "not 3";
  }
  SECTION("an fd the caller does not have") {
    launch.getStdio().set(1, 999);
    code = absl::StatusCode::kInvalidArgument;
    reason = "cannot take the caller's fd 999";
  }
  SECTION("a relative working directory") {
    launch.setCwd("tmp");
    code = absl::StatusCode::kInvalidArgument;
    reason = "absolute";
  }
  SECTION("a program that does not exist") {
    launch.getArgv().set(0, "/nonexistent/prog");
    code = absl::StatusCode::kNotFound;
    reason = "cannot run /nonexistent/prog";
  }
  SECTION("a signal with no program to receive it") {
    root.initSignalProgram().setSignal(SIGTERM);
    code = absl::StatusCode::kFailedPrecondition;
    reason = "runs no program";
  }
  const absl::Status status =
      client->Call(builder, root, [](proto::Message::Reader) { return absl::OkStatus(); });
  INFO(status);
  REQUIRE(status.code() == code);
  REQUIRE_THAT(std::string(status.message()), Catch::Contains(reason));
  RequireServing(rack.Socket("cpu0"));
  REQUIRE(rack.WaitForState("cpu0", "healthy"));
}

TEST_CASE("A process that ignores or lies about shrinking keeps its quota, and no one gets more") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M --cache-budget 1M") == 0);
  auto greedy = ipc::Client::Connect(rack.Socket("cpu0"));
  REQUIRE(greedy.ok());
  ipc::SmallMessage attach;
  auto a = attach.Init();
  a.initAttach().setProcessId(500);
  uint64_t quota = 0;
  REQUIRE(greedy
              ->Call(attach.builder(), a,
                     [&](proto::Message::Reader reply) {
                       quota = reply.getCacheQuota().getBytes();
                       return absl::OkStatus();
                     })
              .ok());
  REQUIRE(quota == 1 << 20);  // alone: the whole budget
  // A real process arrives: the greedy one is asked to shrink to half and does not answer, so
  // the newcomer gets nothing and its Join gives up, saying why.
  {
    Peer refused(rack.dir(), "cpu0");
    REQUIRE_FALSE(refused.ok());
    REQUIRE_THAT(refused.error(), Catch::Contains("did not shrink in time"));
  }
  // The request it ignored: a quota of half the budget, under a seq to answer.
  uint64_t shrink_seq = 0;
  std::vector<uint64_t> words;
  auto& channel = greedy->connection().channel;
  while (shrink_seq == 0) {
    REQUIRE(channel.WaitReadable(absl::Now() + absl::Seconds(5), absl::ZeroDuration(), -1).ok());
    absl::StatusOr<bool> got = channel.Receive(words);
    REQUIRE(got.ok());
    if (!*got) continue;
    REQUIRE(ipc::DecodeMessage(words, [&](proto::Message::Reader m) {
              if (m.isCacheQuota() && m.getSeq() != 0) {
                REQUIRE(m.getCacheQuota().getBytes() == 512 << 10);
                shrink_seq = m.getSeq();
              }
              return absl::OkStatus();
            }).ok());
  }
  auto report = [&](uint64_t cached) {
    ipc::SmallMessage usage;
    usage.Init(shrink_seq).initCacheUsage().setCachedBytes(cached);
    REQUIRE(channel.Send(usage.builder()).ok());
  };
  report(1 << 20);  // a lie: "shrunk", yet over the new quota: it stays counted at the old one
  std::unique_ptr<Peer> waiting;
  std::thread joiner([&] { waiting = std::make_unique<Peer>(rack.dir(), "cpu0"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  report(0);  // honest at last: the newcomer gets the other half
  joiner.join();
  INFO(waiting->error());
  REQUIRE(waiting->ok());
  const std::vector<ProcessRow> processes = rack.Processes();
  uint64_t leased = 0;
  for (const ProcessRow& p : processes) leased += p.cache_quota_bytes;
  REQUIRE(leased <= 1 << 20);
  const std::string log = ReadFile(rack.dir() + "/cpu0.log");
  REQUIRE_THAT(log, Catch::Contains("over its quota"));
}

}  // namespace
}  // namespace disagg::testing
