// bench_grant: grant and steal latency, 4 KiB to 1 GiB, against moving the same bytes by
// memcpy and over a loopback TCP socket, measured in one run. Run inside a rack
// (scripts/bench grant starts one and runs this with `rackctl run`).
//
// The benchmark starts a partner process (itself, with --partner) on the same compute
// element, in the same trust group, which maps one region of each size (placed with kFill:
// one extent each) and never touches them: the regions are clean, so no write-back is
// timed. Then, per size, the benchmark steals the partner's region (timed) and grants it
// back (timed), many times. The last line is one JSON object with every figure.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "disagg/disagg.h"

namespace {

using Clock = std::chrono::steady_clock;

double Nanos(Clock::duration d) { return std::chrono::duration<double, std::nano>(d).count(); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double P99(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, v.size() * 99 / 100)];
}

constexpr size_t kSizes[] = {4 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20, 1 << 30};
constexpr char kGroup[] = "bench-grant";

std::string SizeName(size_t bytes) {
  if (bytes >= (1 << 30)) return absl::StrFormat("%zuG", bytes >> 30);
  if (bytes >= (1 << 20)) return absl::StrFormat("%zuM", bytes >> 20);
  return absl::StrFormat("%zuK", bytes >> 10);
}

// The partner: maps a region of each size, tells the benchmark their addresses, then waits
// for its input to close.
int Partner() {
  disagg::JoinOptions options;
  options.name = "bench-partner";
  auto rack = disagg::Rack::Join(options);
  if (!rack.ok() || !(*rack)->JoinGroup(kGroup).ok()) {
    std::printf("error %s\n", std::string(rack.status().message()).c_str());
    return 1;
  }
  std::string line = absl::StrFormat("%u", (*rack)->self());
  for (size_t bytes : kSizes) {
    auto region = (*rack)->Map(bytes, {.placement = disagg::Placement::kFill});
    if (!region.ok()) {
      std::printf("error %s\n", std::string(region.status().message()).c_str());
      return 1;
    }
    absl::StrAppendFormat(&line, " %p", region->data());
  }
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {
  }
  return 0;
}

double MemcpyNanos(size_t bytes, int reps) {
  std::vector<char> src(bytes, 1), dst(bytes, 2);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    std::memcpy(dst.data(), src.data(), bytes);
    t.push_back(Nanos(Clock::now() - t0));
    if (dst[bytes / 2] != 1) std::abort();  // keep the copy
    src[i % bytes] ^= 1;
  }
  return Median(t);
}

// Sends `bytes` over a loopback TCP connection to a reader thread that acknowledges the last
// byte: the time to move the bytes between two address spaces by the network stack.
double TcpNanos(size_t bytes, int reps) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listener, 1) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::perror("bench_grant: loopback socket");
    std::exit(1);
  }
  int client = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) std::exit(1);
  int server = accept(listener, nullptr, nullptr);
  const int one = 1;
  setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  std::vector<char> src(bytes, 3), dst(std::min<size_t>(bytes, 4 << 20));
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    std::thread reader([&] {
      size_t got = 0;
      while (got < bytes) {
        const ssize_t n = read(server, dst.data(), std::min(dst.size(), bytes - got));
        if (n <= 0) std::exit(1);
        got += n;
      }
      (void)!write(server, "k", 1);
    });
    const auto t0 = Clock::now();
    for (size_t sent = 0; sent < bytes;) {
      const ssize_t n = write(client, src.data() + sent, bytes - sent);
      if (n <= 0) std::exit(1);
      sent += n;
    }
    char ack;
    if (read(client, &ack, 1) != 1) std::exit(1);
    t.push_back(Nanos(Clock::now() - t0));
    reader.join();
  }
  close(client);
  close(server);
  close(listener);
  return Median(t);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--partner") == 0) return Partner();
  disagg::JoinOptions options;
  options.name = "bench-grant";
  auto joined = disagg::Rack::Join(options);
  if (!joined.ok()) {
    std::fprintf(stderr, "bench_grant: %s\n", std::string(joined.status().message()).c_str());
    return 1;
  }
  disagg::Rack& rack = **joined;
  if (absl::Status s = rack.JoinGroup(kGroup); !s.ok()) return 1;

  int to_partner[2], from_partner[2];
  if (pipe(to_partner) != 0 || pipe(from_partner) != 0) return 1;
  const pid_t partner = fork();
  if (partner == 0) {
    dup2(to_partner[0], 0);
    dup2(from_partner[1], 1);
    close(to_partner[1]);
    close(from_partner[0]);
    execl("/proc/self/exe", argv[0], "--partner", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(to_partner[0]);
  close(from_partner[1]);
  FILE* in = fdopen(from_partner[0], "r");
  char line[1024] = {};
  if (fgets(line, sizeof(line), in) == nullptr || std::strncmp(line, "error", 5) == 0) {
    std::fprintf(stderr, "bench_grant: the partner did not start: %s\n", line);
    return 1;
  }
  uint32_t peer = 0;
  std::vector<void*> regions;
  {
    char* cursor = line;
    peer = static_cast<uint32_t>(std::strtoul(cursor, &cursor, 10));
    for (size_t i = 0; i < std::size(kSizes); ++i) {
      regions.push_back(reinterpret_cast<void*>(std::strtoull(cursor, &cursor, 16)));
    }
  }

  std::printf("bench_grant: steal a clean region of one extent from a peer, then grant it back\n");
  std::printf("%-6s %12s %12s %12s %12s %14s %14s %12s %12s\n", "size", "grant p50", "grant p99",
              "steal p50", "steal p99", "memcpy", "loopback TCP", "memcpy/grant", "memcpy/steal");
  std::string json = "{";
  double grant_4k = 0, grant_1g = 0, steal_1g = 0, memcpy_1g = 0, tcp_1g = 0;
  for (size_t i = 0; i < std::size(kSizes); ++i) {
    const size_t bytes = kSizes[i];
    std::vector<double> grants, steals;
    const int rounds = 200;
    for (int r = 0; r < rounds; ++r) {
      const auto t0 = Clock::now();
      auto stolen = rack.Steal(peer, regions[i], bytes);
      const auto t1 = Clock::now();
      absl::Status granted = stolen.ok() ? rack.Grant(regions[i], bytes, peer) : stolen.status();
      const auto t2 = Clock::now();
      if (!granted.ok()) {
        std::fprintf(stderr, "bench_grant: %s\n", std::string(granted.message()).c_str());
        return 1;
      }
      steals.push_back(Nanos(t1 - t0));
      grants.push_back(Nanos(t2 - t1));
    }
    const int reps = bytes >= (256 << 20) ? 3 : 15;
    const double copy = MemcpyNanos(bytes, reps);
    const double tcp = TcpNanos(bytes, reps);
    const double g50 = Median(grants), s50 = Median(steals);
    std::printf("%-6s %9.1f us %9.1f us %9.1f us %9.1f us %11.1f us %11.1f us %11.1fx %11.1fx\n",
                SizeName(bytes).c_str(), g50 / 1e3, P99(grants) / 1e3, s50 / 1e3, P99(steals) / 1e3,
                copy / 1e3, tcp / 1e3, copy / g50, copy / s50);
    std::fflush(stdout);
    absl::StrAppendFormat(&json,
                          "\"grant_p50_ns_%s\":%.0f,\"steal_p50_ns_%s\":%.0f,"
                          "\"memcpy_ns_%s\":%.0f,\"tcp_ns_%s\":%.0f,",
                          SizeName(bytes), g50, SizeName(bytes), s50, SizeName(bytes), copy,
                          SizeName(bytes), tcp);
    if (i == 0) grant_4k = g50;
    if (bytes == (1 << 30)) grant_1g = g50, steal_1g = s50, memcpy_1g = copy, tcp_1g = tcp;
  }
  close(to_partner[1]);
  waitpid(partner, nullptr, 0);
  std::printf(
      "at 1 GiB: grant is %.0fx faster than memcpy and %.0fx faster than loopback TCP; "
      "steal %.0fx faster than memcpy; grant at 1 GiB takes %.2fx its time at 4 KiB\n",
      memcpy_1g / grant_1g, tcp_1g / grant_1g, memcpy_1g / steal_1g, grant_1g / grant_4k);
  absl::StrAppendFormat(&json,
                        "\"grant_1g_vs_memcpy\":%.1f,\"grant_1g_vs_tcp\":%.1f,"
                        "\"grant_1g_over_4k\":%.3f,\"steal_1g_vs_memcpy\":%.1f}",
                        memcpy_1g / grant_1g, tcp_1g / grant_1g, grant_1g / grant_4k,
                        memcpy_1g / steal_1g);
  std::printf("%s\n", json.c_str());
  return 0;
}
