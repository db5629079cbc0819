// Benchmark: round trip of a small Cap'n Proto request and reply between two processes over a
// disagg channel (the echo server is a real Hub on a real EventLoop, as in every daemon), in
// spin mode and in sleep mode, against baselines measured in the same run:
//   - raw shared-memory cache-line ping-pong (the physical floor),
//   - a Unix-socket round trip of the same payload, busy-polling (non-blocking reads in a
//     loop on both sides: what spin mode is to be compared with) and blocking (what sleep
//     mode is to be compared with),
//   - Cap'n Proto's own two-party RPC over a Unix socket (what a user would pick instead).
// Each sample is the mean round trip of a batch of kBatch round trips timed together (one
// round trip is not much longer than two clock reads). Prints p50/p99 of the batches of each
// and the ratios; the last line is one JSON object with every figure.
#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench_echo.capnp.h"
#include "internal/logging.h"
#include "ipc/client.h"
#include "ipc/event_loop.h"
#include "ipc/hub.h"
#include "ipc/wire.h"
#include "proto/rack.capnp.h"

namespace disagg::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kPayloadBytes = 32;
constexpr int kBatch = 32;  // round trips per timed sample

struct Result {
  std::string name;
  double p50_ns = 0;
  double p99_ns = 0;
};

Result Summarize(std::string name, std::vector<double>& ns) {
  std::sort(ns.begin(), ns.end());
  return {std::move(name), ns[ns.size() / 2], ns[ns.size() * 99 / 100]};
}

// The run with the median p50 (its p99 alongside).
Result MedianOf(std::vector<Result> runs) {
  std::sort(runs.begin(), runs.end(),
            [](const Result& a, const Result& b) { return a.p50_ns < b.p50_ns; });
  Result median = runs[runs.size() / 2];
  median.name += " (median of " + std::to_string(runs.size()) + " runs)";
  return median;
}

// Times about `iterations` calls of `round_trip`, after `warmup` untimed ones, in batches of
// kBatch: each sample is a batch's time over kBatch.
Result Measure(std::string name, int warmup, int iterations,
               const std::function<void()>& round_trip) {
  for (int i = 0; i < warmup; ++i) round_trip();
  std::vector<double> ns(std::max(1, iterations / kBatch));
  for (double& sample : ns) {
    const auto t0 = Clock::now();
    for (int i = 0; i < kBatch; ++i) round_trip();
    sample = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / kBatch;
  }
  return Summarize(std::move(name), ns);
}

void PinTo(int cpu) {
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof(set), &set);
}

// Runs `child` in a forked process pinned to CPU 1; returns its pid.
pid_t Fork(const std::function<void()>& child) {
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a benchmark that died
    PinTo(1);
    child();
    _exit(0);
  }
  return pid;
}

void Reap(pid_t pid) {
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
}

Result RawPingPong(int iterations) {
  auto* line = static_cast<std::atomic<uint64_t>*>(
      mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  line->store(0);
  const int total = iterations / kBatch * kBatch + iterations / 10;
  const pid_t pid = Fork([&] {
    for (uint64_t i = 1; i <= 2ull * total; i += 2) {
      while (line->load(std::memory_order_acquire) != i) __builtin_ia32_pause();
      line->store(i + 1, std::memory_order_release);
    }
  });
  uint64_t seq = 0;
  Result r = Measure("raw shared-memory ping-pong", iterations / 10, iterations, [&] {
    line->store(++seq, std::memory_order_release);
    ++seq;
    while (line->load(std::memory_order_acquire) != seq) __builtin_ia32_pause();
  });
  waitpid(pid, nullptr, 0);
  munmap(line, 4096);
  return r;
}

// Reads one message from `fd`: blocking, or (polling) with non-blocking reads in a loop.
ssize_t ReadMessage(int fd, char* buf, size_t size, bool polling) {
  if (!polling) return read(fd, buf, size);
  for (;;) {
    const ssize_t n = recv(fd, buf, size, MSG_DONTWAIT);
    if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return n;
    __builtin_ia32_pause();
  }
}

Result UnixSocket(int iterations, bool polling) {
  int sv[2];
  socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv);
  const pid_t pid = Fork([&] {
    close(sv[0]);
    char buf[kPayloadBytes];
    while (ReadMessage(sv[1], buf, sizeof(buf), polling) == sizeof(buf)) {
      if (write(sv[1], buf, sizeof(buf)) != sizeof(buf)) break;
    }
  });
  close(sv[1]);
  char buf[kPayloadBytes] = {1};
  Result r = Measure(polling ? "Unix socket, busy-polling reads" : "Unix socket, blocking reads",
                     iterations / 10, iterations, [&] {
                       if (write(sv[0], buf, sizeof(buf)) != sizeof(buf) ||
                           ReadMessage(sv[0], buf, sizeof(buf), polling) <= 0) {
                         std::abort();
                       }
                     });
  close(sv[0]);
  waitpid(pid, nullptr, 0);
  return r;
}

class EchoRpcImpl final : public proto::EchoRpc::Server {
 protected:
  kj::Promise<void> echo(EchoContext context) override {
    context.getResults().setPayload(context.getParams().getPayload());
    return kj::READY_NOW;
  }
};

Result CapnpRpc(int iterations) {
  int sv[2];
  socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
  const pid_t pid = Fork([&] {
    close(sv[0]);
    auto io = kj::setupAsyncIo();
    auto stream = io.lowLevelProvider->wrapSocketFd(sv[1]);
    capnp::TwoPartyVatNetwork network(*stream, capnp::rpc::twoparty::Side::SERVER);
    auto rpc = capnp::makeRpcServer(network, kj::heap<EchoRpcImpl>());
    network.onDisconnect().wait(io.waitScope);
  });
  close(sv[1]);
  Result r;
  {
    auto io = kj::setupAsyncIo();
    auto stream = io.lowLevelProvider->wrapSocketFd(sv[0]);
    capnp::TwoPartyClient client(*stream);
    auto echo = client.bootstrap().castAs<proto::EchoRpc>();
    const uint8_t payload[kPayloadBytes] = {1};
    r = Measure("Cap'n Proto RPC over a Unix socket", iterations / 10, iterations, [&] {
      auto request = echo.echoRequest();
      request.setPayload(kj::arrayPtr(payload, sizeof(payload)));
      auto response = request.send().wait(io.waitScope);
      if (response.getPayload().size() != kPayloadBytes) std::abort();
    });
  }
  close(sv[0]);
  waitpid(pid, nullptr, 0);
  return r;
}

// The echo server: a Hub on an EventLoop, answering Echo like every daemon does.
class EchoHandler : public ipc::Hub::Handler {
 public:
  absl::Status OnMessage(ipc::Link& link, proto::Message::Reader message) override {
    ipc::SmallMessage reply;
    reply.Init(message.getSeq()).setEcho(message.getEcho());
    return link.Send(reply.builder());
  }
};

Result Channel(const std::string& name, absl::Duration spin, int iterations) {
  char dir[] = "/tmp/disagg-bench-XXXXXX";
  mkdtemp(dir);
  const std::string path = absl::StrCat(dir, "/echo.sock");
  int ready[2];
  if (pipe(ready) != 0) std::abort();
  const pid_t pid = Fork([&] {
    ipc::EventLoopOptions options;
    options.spin = spin;
    auto loop = ipc::EventLoop::Create(options);
    EchoHandler handler;
    ipc::Hub hub(**loop, handler, "echo");
    if (!hub.Listen(path).ok()) std::abort();
    if (write(ready[1], "x", 1) != 1) std::abort();
    (void)(*loop)->Run();
  });
  char x;
  if (read(ready[0], &x, 1) != 1) std::abort();
  auto client = ipc::Client::Connect(path);
  if (!client.ok()) std::abort();
  client->set_spin(spin);
  capnp::MallocMessageBuilder builder;
  auto request = builder.initRoot<proto::Message>();
  auto payload = request.initEcho(kPayloadBytes);
  payload[0] = 1;
  Result r = Measure(name, iterations / 10, iterations, [&] {
    absl::Status s = client->Call(builder, request, [](proto::Message::Reader reply) {
      return reply.getEcho().size() == kPayloadBytes ? absl::OkStatus()
                                                     : absl::DataLossError("bad echo");
    });
    if (!s.ok()) {
      std::fprintf(stderr, "bench: call failed: %s\n", s.ToString().c_str());
      std::abort();
    }
  });
  Reap(pid);
  close(ready[0]);
  close(ready[1]);
  unlink(path.c_str());
  rmdir(dir);
  return r;
}

void Print(const Result& r) {
  std::printf("  %-42s p50 %9.0f ns   p99 %9.0f ns\n", r.name.c_str(), r.p50_ns, r.p99_ns);
}

int Main(int argc, char** argv) {
  FLAGS_minloglevel = 1;  // the echo servers' lifecycle lines would clutter the report
  google::InitGoogleLogging(argv[0]);
  PinTo(0);
  if (argc == 2 && std::string(argv[1]) == "spin-only") {  // for profiling
    Print(Channel("disagg channel, spin mode", absl::Seconds(10), 2000000));
    return 0;
  }
  std::printf("disagg ring benchmark: %zu-byte echo request and reply between two processes\n",
              kPayloadBytes);
  // The floor and the spin mode are measured three times each, interleaved, and each reported
  // as the median of its runs: the machine's noise moves single runs by tens of percent.
  std::vector<Result> raws, spins;
  for (int run = 0; run < 3; ++run) {
    raws.push_back(RawPingPong(100000));
    spins.push_back(Channel("disagg channel, spin mode", absl::Seconds(10), 100000));
  }
  const Result raw = MedianOf(raws);
  const Result spin = MedianOf(spins);
  const Result sleep = Channel("disagg channel, sleep mode", absl::ZeroDuration(), 20000);
  const Result polling_unix = UnixSocket(100000, /*polling=*/true);
  const Result unix_socket = UnixSocket(50000, /*polling=*/false);
  const Result rpc = CapnpRpc(20000);
  std::printf("each sample: the mean of a batch of %d round trips\n", kBatch);
  for (const Result* r : {&raw, &spin, &sleep, &polling_unix, &unix_socket, &rpc}) Print(*r);
  const double spin_vs_raw = spin.p50_ns / raw.p50_ns;
  const double polling_unix_vs_spin = polling_unix.p50_ns / spin.p50_ns;
  const double unix_vs_spin = unix_socket.p50_ns / spin.p50_ns;
  const double rpc_vs_spin = rpc.p50_ns / spin.p50_ns;
  const double unix_vs_sleep = unix_socket.p50_ns / sleep.p50_ns;
  std::printf("ratios (p50):\n");
  std::printf("  spin mode / raw ping-pong                 %6.2fx  (target <= 3x)\n", spin_vs_raw);
  std::printf("  busy-polling Unix socket / spin mode      %6.2fx\n", polling_unix_vs_spin);
  std::printf("  blocking Unix socket / sleep mode         %6.2fx\n", unix_vs_sleep);
  std::printf("  blocking Unix socket / spin mode          %6.2fx\n", unix_vs_spin);
  std::printf("  Cap'n Proto RPC / spin mode               %6.2fx\n", rpc_vs_spin);
  std::string json = "{\"bench\":\"ring\",\"payload_bytes\":" + std::to_string(kPayloadBytes) +
                     ",\"batch\":" + std::to_string(kBatch);
  for (const Result* r : {&raw, &spin, &sleep, &polling_unix, &unix_socket, &rpc}) {
    std::string key = r == &raw            ? "raw_pingpong"
                      : r == &spin         ? "channel_spin"
                      : r == &sleep        ? "channel_sleep"
                      : r == &polling_unix ? "polling_unix_socket"
                      : r == &unix_socket  ? "unix_socket"
                                           : "capnp_rpc";
    json +=
        absl::StrFormat(",\"%s_p50_ns\":%.0f,\"%s_p99_ns\":%.0f", key, r->p50_ns, key, r->p99_ns);
  }
  json += absl::StrFormat(
      ",\"spin_over_raw\":%.3f,\"spin_over_polling_unix\":%.3f,\"unix_over_spin\":%.3f,"
      "\"rpc_over_spin\":%.3f,\"unix_over_sleep\":%.3f}",
      spin_vs_raw, polling_unix_vs_spin, unix_vs_spin, rpc_vs_spin, unix_vs_sleep);
  std::printf("%s\n", json.c_str());
  return 0;
}

}  // namespace
}  // namespace disagg::bench

int main(int argc, char** argv) { return disagg::bench::Main(argc, argv); }
