// bench_notify: how fast a failure reaches the processes that care. On a private rack
// (scripts/bench notify starts one: cpu0, cpu1, mem0, mem1), this process joins on cpu1 and
// times, from `kill -9` to the event in its OnEvent handler:
//   memory   a memory element (mem1) holding part of a region of this process: kMemoryFailed
//   compute  a compute element (cpu0) running a process of this one's trust group: kPeerFailed
//   process  an application process (on cpu0) of this one's trust group: kPeerFailed
//   process_1g  the same with 1 GiB of local memory: its death is seen from its life word,
//            before the kernel tears that memory down (the time to its reap is printed too)
// After each kill the daemon is started again (its pid written where the rack keeps it, so
// that `scripts/rack down` stops it). Baseline in the same run, on the same kills: a
// conventional end-to-end detector, heartbeats over TCP with etcd's defaults (100 ms period,
// 1000 ms timeout), from a sidecar process killed at the same instant as the victim; and the
// floor of any death notice on this machine: a child holding a robust mutex is killed and a
// thread of this process waiting on the mutex wakes (one kernel wake-up, no rack). The last
// line is one JSON object: notify_p99_ns is the worst p99 of memory, compute and process,
// e2e_over_notify the detector's p50 over the slowest of their p50s.
//
// Usage: bench_notify RACK_DIR BIN_DIR [KILLS]   (KILLS per kind, default 50)
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "disagg/disagg.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr char kGroup[] = "bench-notify";

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Percentile(std::vector<double> v, int p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, v.size() * p / 100)];
}

[[noreturn]] void Die(const std::string& why) {
  std::fprintf(stderr, "bench_notify: %s\n", why.c_str());
  std::exit(1);
}

// ---- The end-to-end detector: TCP heartbeats every 100 ms, failure after 1000 ms of silence.

constexpr auto kHeartbeat = std::chrono::milliseconds(100);
constexpr auto kTimeout = std::chrono::milliseconds(1000);

// A sidecar: connects to `port` and sends a byte every 100 ms until killed.
pid_t StartSidecar(int port) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) ::_exit(1);
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  while (true) {
    const char beat = 'b';
    if (::write(fd, &beat, 1) != 1) ::_exit(0);
    std::this_thread::sleep_for(kHeartbeat);
  }
}

class EndToEndDetector {
 public:
  EndToEndDetector() {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        ::listen(listener_, 4) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      Die("cannot listen on loopback TCP");
    }
    port_ = ntohs(addr.sin_port);
  }
  int port() const { return port_; }

  // Accepts the sidecar's connection and takes its heartbeats for a while: 300 ms plus a
  // random part of a period, so that the kill that follows falls anywhere between two beats.
  void Watch() {
    conn_ = ::accept(listener_, nullptr, nullptr);
    if (conn_ < 0) Die("the sidecar did not connect");
    char beat;
    if (::read(conn_, &beat, 1) != 1) Die("the sidecar sent no heartbeat");
    last_ = Clock::now();
    const auto until =
        last_ + std::chrono::milliseconds(300) + std::chrono::microseconds(std::rand() % 100000);
    while (Clock::now() < until) {
      pollfd p{conn_, POLLIN, 0};
      const int wait = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count() + 1);
      if (::poll(&p, 1, wait) > 0 && ::read(conn_, &beat, 1) == 1) last_ = Clock::now();
    }
  }

  // Started right after the kill: returns when the detector declares the sidecar failed (its
  // last heartbeat is 1000 ms old; a closed connection is not taken as a failure, since a
  // machine that fails sends no FIN), as a time.
  Clock::time_point Detect() {
    while (true) {
      const auto deadline = last_ + kTimeout;
      const auto now = Clock::now();
      if (now >= deadline) break;
      pollfd p{conn_, POLLIN, 0};
      const int wait = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1);
      if (::poll(&p, 1, wait) > 0) {
        char buf[64];
        const ssize_t n = ::read(conn_, buf, sizeof(buf));
        if (n > 0) {
          last_ = Clock::now();  // a beat sent before the kill, arriving after it
        } else {
          std::this_thread::sleep_until(deadline);  // closed: only the timeout declares it
        }
      }
    }
    const auto at = Clock::now();
    ::close(conn_);
    conn_ = -1;
    return at;
  }

 private:
  int listener_ = -1;
  int conn_ = -1;
  int port_ = 0;
  Clock::time_point last_;
};

// ---- Events.

class EventWaiter {
 public:
  void On(const disagg::Event& e) {
    std::lock_guard<std::mutex> lock(mu_);
    seen_.push_back({e.kind, e.process, Clock::now()});
    cv_.notify_all();
  }
  // The time of the first event of `kind` (about `process`, if nonzero) since Clear().
  bool Wait(disagg::EventKind kind, uint32_t process, Clock::time_point* at) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] {
      for (const Seen& s : seen_) {
        if (s.kind == kind && (process == 0 || s.process == process)) {
          *at = s.at;
          return true;
        }
      }
      return false;
    });
  }
  void Clear() {
    std::lock_guard<std::mutex> lock(mu_);
    seen_.clear();
  }

 private:
  struct Seen {
    disagg::EventKind kind;
    uint32_t process;
    Clock::time_point at;
  };
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Seen> seen_;
};

// ---- The rack's daemons and the victim process.

std::string g_rack, g_bin;

pid_t ReadPid(const std::string& element) {
  std::ifstream in(g_rack + "/pids/" + element + ".pid");
  pid_t pid = 0;
  in >> pid;
  return pid;
}

// Starts `binary` as element `element` again, as scripts/rack does, and records its pid.
void Restart(const std::string& element, const std::string& binary,
             const std::vector<std::string>& flags) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setsid();
    const std::string out = g_rack + "/" + element + ".out";
    const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    const int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, 0);
    std::vector<std::string> args{g_bin + "/" + binary, "--run_dir=" + g_rack};
    args.insert(args.end(), flags.begin(), flags.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  std::ofstream(g_rack + "/pids/" + element + ".pid") << pid << "\n";
}

// Polls `rackctl status --json` until `element` is healthy.
void WaitHealthy(const std::string& element) {
  for (int i = 0; i < 1000; ++i) {
    const std::string cmd = g_bin + "/rackctl --rack " + g_rack + " status --json";
    FILE* p = ::popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    ::pclose(p);
    const std::string row = "\"name\":\"" + element + "\"";
    const size_t at = out.find(row);
    if (at != std::string::npos) {
      const size_t state = out.find("\"state\":\"", at);
      if (state != std::string::npos && out.compare(state + 9, 7, "healthy") == 0) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Die(element + " did not come back");
}

// The victim: joins on cpu0 in the group, says its id on `fd`, then waits to be killed.
int RunVictim(int fd, const char* rack_dir, uint64_t balloon) {
  disagg::JoinOptions options;
  options.rack_dir = rack_dir;
  options.name = "bench-victim";
  options.element = "cpu0";
  auto rack = disagg::Rack::Join(options);
  if (!rack.ok() || !(*rack)->JoinGroup(kGroup).ok()) return 1;
  auto region = (*rack)->Map(64 << 10);  // something to hold for adoption
  if (!region.ok()) return 1;
  // Local memory, touched: its teardown is what a death signal must not wait for.
  char* big = static_cast<char*>(std::malloc(balloon + 1));
  for (uint64_t i = 0; i < balloon; i += 4096) big[i] = 1;
  const uint32_t id = (*rack)->self();
  if (::write(fd, &id, sizeof(id)) != sizeof(id)) return 1;
  while (true) ::pause();
}

struct Victim {
  pid_t pid;
  uint32_t id;
};

Victim StartVictim(const char* self, uint64_t balloon = 0) {
  int fds[2];
  if (::pipe(fds) != 0) Die("pipe");
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    const std::string fd = std::to_string(fds[1]);
    const std::string bytes = std::to_string(balloon);
    ::execl(self, self, "--victim", fd.c_str(), g_rack.c_str(), bytes.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  uint32_t id = 0;
  if (::read(fds[0], &id, sizeof(id)) != sizeof(id)) Die("the victim did not join");
  ::close(fds[0]);
  return {pid, id};
}

void Reap(pid_t pid) {
  int status;
  (void)::waitpid(pid, &status, 0);  // ECHILD for a process this one did not start
}

// One kind of kill, and what was measured of it.
struct Kind {
  const char* name;
  std::vector<double> notify_ms, e2e_ms;
};

// Kills `victim` and a fresh sidecar at the same instant; records in `k` the time until
// `notice` returns (when the kill was noticed) and the end-to-end detector's time.
// `after_notice` (if any) runs between the two, given the time of the kill.
void Trial(Kind& k, EndToEndDetector& e2e, pid_t victim,
           const std::function<Clock::time_point()>& notice,
           const std::function<void(Clock::time_point)>& after_notice = {}) {
  const pid_t sidecar = StartSidecar(e2e.port());
  e2e.Watch();
  const auto t0 = Clock::now();
  ::kill(victim, SIGKILL);
  ::kill(sidecar, SIGKILL);
  k.notify_ms.push_back(Ms(notice() - t0));
  if (after_notice) after_notice(t0);
  k.e2e_ms.push_back(Ms(e2e.Detect() - t0));
  Reap(sidecar);
}

// A trial whose notice is the event `event` about `process` in this process's handler.
void EventTrial(Kind& k, EventWaiter& events, EndToEndDetector& e2e, pid_t victim,
                disagg::EventKind event, uint32_t process,
                const std::function<void(Clock::time_point)>& after_event = {}) {
  events.Clear();
  Trial(
      k, e2e, victim,
      [&] {
        Clock::time_point at;
        if (!events.Wait(event, process, &at)) {
          Die(std::string("no event for the ") + k.name + " kill");
        }
        return at;
      },
      after_event);
}

// The floor: a child holds a robust, process-shared mutex; a thread here waits for it and
// wakes with EOWNERDEAD when the child is killed.
void RawTrial(Kind& k, EndToEndDetector& e2e) {
  auto* mutex = static_cast<pthread_mutex_t*>(::mmap(
      nullptr, sizeof(pthread_mutex_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (mutex == MAP_FAILED) Die("mmap");
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(mutex, &attr);
  int ready[2];
  if (::pipe(ready) != 0) Die("pipe");
  const pid_t child = ::fork();
  if (child == 0) {
    pthread_mutex_lock(mutex);
    (void)!::write(ready[1], "r", 1);
    while (true) ::pause();
  }
  char r;
  if (::read(ready[0], &r, 1) != 1) Die("the raw victim did not start");
  ::close(ready[0]);
  ::close(ready[1]);
  Clock::time_point woke;
  std::atomic<bool> waiting{false};
  std::thread waiter([&] {
    waiting = true;
    if (pthread_mutex_lock(mutex) != EOWNERDEAD) Die("the raw victim's mutex was not orphaned");
    woke = Clock::now();
  });
  while (!waiting) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(2));  // asleep in the futex by now
  Trial(k, e2e, child, [&] {
    waiter.join();
    return woke;
  });
  Reap(child);
  ::munmap(mutex, sizeof(pthread_mutex_t));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::strcmp(argv[1], "--victim") == 0) {
    return RunVictim(std::atoi(argv[2]), argv[3], std::strtoull(argv[4], nullptr, 10));
  }
  if (argc < 3) Die("usage: bench_notify RACK_DIR BIN_DIR [KILLS]");
  g_rack = argv[1];
  g_bin = argv[2];
  const int kills = argc > 3 ? std::atoi(argv[3]) : 50;
  std::srand(static_cast<unsigned>(::getpid()));
  ::signal(SIGPIPE, SIG_IGN);

  disagg::JoinOptions options;
  options.rack_dir = g_rack;
  options.element = "cpu1";
  options.name = "bench-observer";
  auto joined = disagg::Rack::Join(options);
  if (!joined.ok()) Die(std::string(joined.status().message()));
  disagg::Rack& rack = **joined;
  if (!rack.JoinGroup(kGroup).ok()) Die("cannot join the group");
  EventWaiter events;
  rack.OnEvent([&](const disagg::Event& e) { events.On(e); });
  EndToEndDetector e2e;
  std::vector<double> hangups;  // kill to reap of the 1 GiB process: when its teardown ended

  Kind kinds[4] = {
      {"memory", {}, {}}, {"compute", {}, {}}, {"process", {}, {}}, {"process_1g", {}, {}}};
  Kind raw{"raw", {}, {}};

  for (int round = 0; round < kills; ++round) {
    // A memory element: this process's region has pages on mem1 (spread over both).
    {
      auto region = rack.Map(8 << 20);
      if (!region.ok()) Die("map: " + std::string(region.status().message()));
      const pid_t mem1 = ReadPid("mem1");
      EventTrial(kinds[0], events, e2e, mem1, disagg::EventKind::kMemoryFailed, rack.self());
      Reap(mem1);  // if it is this process's child (the first one is scripts/rack's)
      (void)rack.Unmap(region->data());
      Restart("mem1", "memmon", {"--name=mem1", "--pool_size=64M"});
      WaitHealthy("mem1");
    }
    // A compute element running a process of the group.
    {
      const Victim victim = StartVictim(argv[0]);
      const pid_t cpu0 = ReadPid("cpu0");
      EventTrial(kinds[1], events, e2e, cpu0, disagg::EventKind::kPeerFailed, victim.id);
      Reap(victim.pid);  // it ends with its compute element
      Reap(cpu0);
      Restart("cpu0", "procmon", {"--name=cpu0", "--cache_budget=64M"});
      WaitHealthy("cpu0");
    }
    // An application process of the group.
    {
      const Victim victim = StartVictim(argv[0]);
      EventTrial(kinds[2], events, e2e, victim.pid, disagg::EventKind::kPeerFailed, victim.id);
      Reap(victim.pid);
    }
    // An application process with 1 GiB of local memory, whose teardown takes a while: its
    // death is seen from its life word, before that.
    {
      const Victim victim = StartVictim(argv[0], 1ull << 30);
      EventTrial(kinds[3], events, e2e, victim.pid, disagg::EventKind::kPeerFailed, victim.id,
                 [&](Clock::time_point t0) {
                   Reap(victim.pid);
                   hangups.push_back(Ms(Clock::now() - t0));  // the reap: after its teardown
                 });
    }
    RawTrial(raw, e2e);
    if ((round + 1) % 10 == 0) std::fprintf(stderr, "bench_notify: %d rounds\n", round + 1);
  }

  double worst_p99 = 0, slowest_p50 = 0;
  std::vector<double> all_e2e;
  std::string json = "{\"bench\":\"notify\"";
  std::printf("%-8s %12s %12s %14s %14s %10s\n", "kill", "notify p50", "notify p99", "e2e p50",
              "e2e p99", "e2e/notify");
  for (Kind& k : kinds) {
    const double p50 = Percentile(k.notify_ms, 50), p99 = Percentile(k.notify_ms, 99);
    const double e50 = Percentile(k.e2e_ms, 50), e99 = Percentile(k.e2e_ms, 99);
    // The three kinds of kill the figures are defined on: a memory element, a compute element,
    // an application process (process_1g is shown beside them, on its own).
    if (&k != &kinds[3]) {
      worst_p99 = std::max(worst_p99, p99);
      slowest_p50 = std::max(slowest_p50, p50);
    }
    all_e2e.insert(all_e2e.end(), k.e2e_ms.begin(), k.e2e_ms.end());
    std::printf("%-8s %9.3f ms %9.3f ms %11.1f ms %11.1f ms %9.0fx\n", k.name, p50, p99, e50, e99,
                e50 / p50);
    json += absl::StrFormat(
        ",\"%s_notify_p50_ns\":%.0f,\"%s_notify_p99_ns\":%.0f,\"%s_e2e_p50_ns\":%.0f", k.name,
        p50 * 1e6, k.name, p99 * 1e6, k.name, e50 * 1e6);
  }
  const double e2e_p50 = Percentile(all_e2e, 50);
  const double raw_p50 = Percentile(raw.notify_ms, 50), raw_p99 = Percentile(raw.notify_ms, 99);
  std::printf("%-8s %9.3f ms %9.3f ms   (the floor: a robust mutex's waiter wakes, no rack)\n",
              raw.name, raw_p50, raw_p99);
  std::printf(
      "process_1g: its exit (teardown of 1 GiB) ended at p50 %.3f ms after the kill; "
      "the event came %.3f ms before that\n",
      Percentile(hangups, 50), Percentile(hangups, 50) - Percentile(kinds[3].notify_ms, 50));
  std::printf(
      "%d kills of each kind; end-to-end detector: TCP heartbeats every %lld ms, "
      "timeout %lld ms\n",
      kills, static_cast<long long>(kHeartbeat.count()), static_cast<long long>(kTimeout.count()));
  json += absl::StrFormat(
      ",\"raw_p50_ns\":%.0f,\"raw_p99_ns\":%.0f,\"notify_over_raw\":%.2f,"
      "\"kills_per_kind\":%d,\"notify_p99_ns\":%.0f,\"e2e_p50_ns\":%.0f,"
      "\"e2e_over_notify\":%.1f}",
      raw_p50 * 1e6, raw_p99 * 1e6, slowest_p50 / raw_p50, kills, worst_p99 * 1e6, e2e_p50 * 1e6,
      e2e_p50 / slowest_p50);
  std::printf("%s\n", json.c_str());
  return 0;
}
