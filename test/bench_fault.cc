// bench_fault: the remote-memory fault path against local baselines, measured in one run.
// Run inside a rack (scripts/bench fault starts one and runs this with `rackctl run`).
//   cold fault   first touch of a remote 4 KiB page that holds data (written, flushed and
//                evicted before), per page: p50/p99, against the floor, a raw userfaultfd
//                fault resolved by copying a local page (same machine, same touch loop);
//                beside it the first touch of never-written pages, which the memory element
//                answers without reading its pool. kRuns runs of each, interleaved with the
//                floor's; each figure is the median of its runs' p50 (p99). Then the same
//                under load: a busy thread per core, started and ended here.
//   cache hit    reads of cached remote pages against the same reads of a local array
//   scan         sequential read of a region 4x the cache budget, GB/s, against the same
//                scan of a local array of the same size; beside it two raw streams with no
//                transport (4 KiB runs copied in; 2 MiB units written by a second process and
//                moved in); and the first-touch write before it, against first-touch writes of
//                fresh local memory
// The last line is one JSON object with every figure.
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "disagg/disagg.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kPage = 4096;

double Nanos(Clock::duration d) { return std::chrono::duration<double, std::nano>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

// Touches each page of [base, base + pages * kPage) once, in a shuffled order (so that no
// read-ahead helps: every touch is a fault served on its own), timing each touch.
std::vector<double> TouchEach(volatile uint8_t* base, size_t pages) {
  std::vector<size_t> order(pages);
  for (size_t i = 0; i < pages; ++i) order[i] = i;
  uint64_t state = 88172645463325252ull;
  for (size_t i = pages - 1; i > 0; --i) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    std::swap(order[i], order[state % (i + 1)]);
  }
  std::vector<double> out;
  out.reserve(pages);
  for (size_t i : order) {
    const auto t0 = Clock::now();
    (void)base[i * kPage];
    out.push_back(Nanos(Clock::now() - t0));
  }
  return out;
}

// A raw userfaultfd (non-blocking) with a fresh anonymous region of `bytes` registered in
// `mode`; exits on failure.
int RawUffdRegion(size_t bytes, uint64_t mode, uint8_t*& region) {
  region = static_cast<uint8_t*>(mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  const int uffd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (region == MAP_FAILED || uffd < 0) {
    std::perror("bench_fault: raw userfaultfd");
    std::exit(1);
  }
  uffdio_api api{UFFD_API, 0, 0};
  uffdio_register reg{};
  reg.range = {reinterpret_cast<uintptr_t>(region), bytes};
  reg.mode = mode;
  if (ioctl(uffd, UFFDIO_API, &api) != 0 || ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) {
    std::perror("bench_fault: raw userfaultfd register");
    std::exit(1);
  }
  return uffd;
}

// The floor: a raw userfaultfd whose handler thread answers each fault by copying a local
// page. With `spin` the handler polls the userfaultfd without sleeping (the fastest a raw
// handler gets: the floor the ratio is taken against); without, it sleeps in poll.
std::vector<double> RawUffdFaults(size_t pages, bool spin) {
  const size_t bytes = pages * kPage;
  uint8_t* region = nullptr;
  const int uffd = RawUffdRegion(bytes, UFFDIO_REGISTER_MODE_MISSING, region);
  std::atomic<bool> stop{false};
  std::thread handler([&] {
    alignas(64) static uint8_t source[kPage];
    std::memset(source, 0x5a, sizeof(source));
    while (!stop.load()) {
      pollfd fd{uffd, POLLIN, 0};
      if (!spin && poll(&fd, 1, 100) <= 0) continue;
      uffd_msg msg;
      if (read(uffd, &msg, sizeof(msg)) != sizeof(msg)) {
        __builtin_ia32_pause();  // as the rack's fault threads spin
        continue;
      }
      uffdio_copy copy{};
      copy.dst = msg.arg.pagefault.address & ~(kPage - 1);
      copy.src = reinterpret_cast<uintptr_t>(source);
      copy.len = kPage;
      ioctl(uffd, UFFDIO_COPY, &copy);
    }
  });
  std::vector<double> out = TouchEach(region, pages);
  stop = true;
  handler.join();
  close(uffd);
  munmap(region, bytes);
  return out;
}

// Reads one word per cache line over `bytes`, `passes` times; returns ns per read.
double ReadLines(const uint8_t* base, size_t bytes, int passes) {
  uint64_t sum = 0;
  const auto t0 = Clock::now();
  for (int p = 0; p < passes; ++p) {
    for (size_t i = 0; i < bytes; i += 64)
      sum += *reinterpret_cast<const volatile uint64_t*>(base + i);
  }
  const double ns = Nanos(Clock::now() - t0);
  if (sum == 42) std::puts("");  // keep the loads
  return ns / (passes * (bytes / 64.0));
}

// Sequential write of every word of [base, base + bytes); returns GB/s.
double Fill(uint8_t* base, size_t bytes) {
  auto* words = reinterpret_cast<volatile uint64_t*>(base);
  const auto t0 = Clock::now();
  for (size_t i = 0; i < bytes / 8; ++i) words[i] = i * 0x9E3779B97F4A7C15ull;
  return bytes / Nanos(Clock::now() - t0);
}

// Sequential read of every word of [base, base + bytes); returns GB/s.
double Scan(const uint8_t* base, size_t bytes) {
  const auto* words = reinterpret_cast<const volatile uint64_t*>(base);
  uint64_t sum = 0;
  const auto t0 = Clock::now();
  for (size_t i = 0; i < bytes / 8; ++i) sum += words[i];
  const double ns = Nanos(Clock::now() - t0);
  if (sum == 42) std::puts("");
  return bytes / ns;
}

// The raw stream: what the kernel's side of a sequential scan costs with no transport at all.
// A scan of `bytes` of a raw userfaultfd region (registered for missing and write-protect
// faults, as the rack's is), whose handler thread answers a fault by copying the run of
// kStreamRun pages it starts from a local buffer, write-protected as the rack installs read
// faults, and the run after it; it drops the oldest runs to stay within `budget`, as the
// rack's cache does. Returns GB/s.
constexpr size_t kStreamRun = 32;
double RawUffdStreamScan(size_t bytes, size_t budget) {
  const size_t pages = bytes / kPage, budget_pages = budget / kPage;
  uint8_t* region = nullptr;
  const int uffd =
      RawUffdRegion(bytes, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP, region);
  std::atomic<bool> stop{false};
  std::thread handler([&] {
    std::vector<uint8_t> source(kStreamRun * kPage, 0x5a);
    size_t installed = 0, dropped = 0;  // pages [dropped, installed) are present
    while (!stop.load()) {
      pollfd fd{uffd, POLLIN, 0};
      if (poll(&fd, 1, 100) <= 0) continue;
      uffd_msg msg;
      if (read(uffd, &msg, sizeof(msg)) != sizeof(msg) || msg.event != UFFD_EVENT_PAGEFAULT) {
        continue;
      }
      const size_t page = (msg.arg.pagefault.address - reinterpret_cast<uintptr_t>(region)) / kPage;
      if (page < installed) continue;  // installed meanwhile: the copy woke it
      installed = page;
      for (int run = 0; run < 2 && installed < pages; ++run) {
        const size_t n = std::min(kStreamRun, pages - installed);
        while (installed + n - dropped > budget_pages) {
          madvise(region + dropped * kPage, kStreamRun * kPage, MADV_DONTNEED);
          dropped += kStreamRun;
        }
        uffdio_copy copy{};
        copy.dst = reinterpret_cast<uintptr_t>(region + installed * kPage);
        copy.src = reinterpret_cast<uintptr_t>(source.data());
        copy.len = n * kPage;
        copy.mode = UFFDIO_COPY_MODE_WP;
        while (ioctl(uffd, UFFDIO_COPY, &copy) != 0) {
          if (errno != EAGAIN || copy.copy > 0) {
            std::perror("bench_fault: raw userfaultfd stream copy");
            std::exit(1);
          }
          copy.copy = 0;  // EAGAIN with nothing copied: the range is busy; again
        }
        installed += n;
      }
    }
  });
  const double gbps = Scan(region, bytes);
  stop = true;
  handler.join();
  close(uffd);
  munmap(region, bytes);
  return gbps;
}

// The raw 2 MiB stream: what the same scan costs with 2 MiB units that a memory element writes
// straight into this process, with no transport and no cache bookkeeping. A second process
// (forked for the run: it makes system calls only) writes each unit from its pool into a
// staging huge page of this process with process_vm_writev; the handler thread moves the unit
// into place with UFFDIO_MOVE (a page-table move: no copy, no page allocated), write-protects
// it, as the rack installs read faults, and wakes the scan; the unit after it is asked for at
// once. The oldest units are moved back into staging to stay within `budget`, and the element
// writes the next units over them, so after the first budget's worth no install allocates a
// page. Returns GB/s, or 0 (the reason on stderr) where the kernel or this process's
// permissions refuse a part of it.
constexpr size_t kUnit = 2 << 20;
constexpr uint64_t kFeatureMove = 1ull << 16;  // UFFD_FEATURE_MOVE, Linux 6.8
constexpr uint64_t kMoveDontWake = 1;          // UFFDIO_MOVE_MODE_DONTWAKE
struct UffdMove {                              // struct uffdio_move
  uint64_t dst, src, len, mode;
  int64_t move;
};
constexpr unsigned long kUffdioMove = _IOWR(UFFDIO, 0x05, UffdMove);

// Shared between the handler and the element process (MAP_SHARED).
struct UnitRequests {
  static constexpr uint32_t kRing = 8;
  std::atomic<uint32_t> asked{0}, written{0}, stop{0};
  std::atomic<int32_t> error{0};  // the element's first errno
  uint64_t dst[kRing], unit[kRing];
};
static_assert(std::atomic<uint32_t>::is_always_lock_free);

// Waits until `word` differs from `seen`: a brief spin, then the futex, for at most `limit`.
// False if it did not change.
bool AwaitChange(std::atomic<uint32_t>& word, uint32_t seen,
                 std::chrono::milliseconds limit = std::chrono::milliseconds(100)) {
  const auto spin_until = Clock::now() + std::chrono::microseconds(50);
  const auto deadline = Clock::now() + limit;
  while (word.load(std::memory_order_acquire) == seen) {
    const auto now = Clock::now();
    if (now >= deadline) return false;
    if (now < spin_until) {
      __builtin_ia32_pause();
      continue;
    }
    const timespec slice{0, 10'000'000};
    syscall(SYS_futex, &word, FUTEX_WAIT, seen, &slice, nullptr, 0);
  }
  return true;
}
void WakeAll(std::atomic<uint32_t>& word) {
  syscall(SYS_futex, &word, FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

// The element process: writes the units asked for, in order, until told to stop.
[[noreturn]] void UnitElement(UnitRequests* r, pid_t app, const uint8_t* pool, size_t units) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != app) _exit(1);
  for (uint32_t next = 0;;) {
    if (r->stop.load()) _exit(0);
    if (r->asked.load(std::memory_order_acquire) == next) {
      AwaitChange(r->asked, next);
      continue;
    }
    const uint32_t i = next % UnitRequests::kRing;
    iovec from{const_cast<uint8_t*>(pool + (r->unit[i] % units) * kUnit), kUnit};
    iovec to{reinterpret_cast<void*>(r->dst[i]), kUnit};
    if (process_vm_writev(app, &from, 1, &to, 1, 0) != static_cast<ssize_t>(kUnit)) {
      int32_t none = 0;
      r->error.compare_exchange_strong(none, errno);
    }
    r->written.store(++next, std::memory_order_release);
    WakeAll(r->written);
  }
}

// A 2 MiB-aligned anonymous range of `bytes` that may use huge pages.
uint8_t* HugeAlignedAnon(size_t bytes) {
  void* p = mmap(nullptr, bytes + kUnit, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("bench_fault: mmap");
    std::exit(1);
  }
  auto* aligned = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(p) + kUnit - 1) &
                                             ~(uintptr_t{kUnit} - 1));
  madvise(aligned, bytes, MADV_HUGEPAGE);
  return aligned;
}

bool UffdIoctl(int uffd, unsigned long op, void* arg, const char* what) {
  while (ioctl(uffd, op, arg) != 0) {
    if (errno == EAGAIN) continue;
    std::fprintf(stderr, "bench_fault: raw 2 MiB stream: %s: %s\n", what, std::strerror(errno));
    return false;
  }
  return true;
}

double RawUnitStreamScan(size_t bytes, size_t budget) {
  const size_t units = bytes / kUnit, budget_units = std::max<size_t>(budget / kUnit, 2);
  const int uffd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  uffdio_api api{UFFD_API, kFeatureMove | UFFD_FEATURE_PAGEFAULT_FLAG_WP, 0};
  if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) != 0) {
    std::fprintf(stderr, "bench_fault: raw 2 MiB stream: no UFFDIO_MOVE here (Linux 6.8+): %s\n",
                 std::strerror(errno));
    if (uffd >= 0) close(uffd);
    return 0;
  }
  // Staging: a unit per cached unit and a few in flight. Registered for write-protection only
  // (UFFDIO_MOVE moves into registered ranges), so the kernel fills its holes itself.
  const size_t slots = budget_units + 4;
  uint8_t* region = HugeAlignedAnon(bytes);
  uint8_t* staging = HugeAlignedAnon(slots * kUnit);
  uffdio_register reg{};
  reg.range = {reinterpret_cast<uintptr_t>(region), bytes};
  reg.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP;
  uffdio_register staging_reg{};
  staging_reg.range = {reinterpret_cast<uintptr_t>(staging), slots * kUnit};
  staging_reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0 || ioctl(uffd, UFFDIO_REGISTER, &staging_reg) != 0) {
    std::perror("bench_fault: raw 2 MiB stream: register");
    std::exit(1);
  }
  constexpr size_t kPoolUnits = 16;
  uint8_t* pool = HugeAlignedAnon(kPoolUnits * kUnit);
  std::memset(pool, 0x5a, kPoolUnits * kUnit);
  auto* requests = new (mmap(nullptr, sizeof(UnitRequests), PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0)) UnitRequests;
  const pid_t app = getpid();
  const pid_t element = fork();
  if (element < 0) {
    std::perror("bench_fault: fork");
    std::exit(1);
  }
  if (element == 0) UnitElement(requests, app, pool, kPoolUnits);

  std::atomic<bool> stop{false}, failed{false};
  std::thread handler([&] {
    std::vector<uint8_t*> free_slots;  // staging units the element may write: holes or stale
    for (size_t i = 0; i < slots; ++i) free_slots.push_back(staging + i * kUnit);
    std::vector<uint8_t*> in_flight(units, nullptr);
    size_t asked = 0, installed = 0, dropped = 0;  // units [dropped, installed) are in place
    auto ask = [&](size_t upto) {
      for (; asked < std::min(upto, units) && !free_slots.empty(); ++asked) {
        const uint32_t n = requests->asked.load();
        requests->dst[n % UnitRequests::kRing] = reinterpret_cast<uintptr_t>(free_slots.back());
        requests->unit[n % UnitRequests::kRing] = asked;
        in_flight[asked] = free_slots.back();
        free_slots.pop_back();
        requests->asked.store(n + 1, std::memory_order_release);
        WakeAll(requests->asked);
      }
    };
    while (!stop.load() && !failed.load()) {
      pollfd fd{uffd, POLLIN, 0};
      if (poll(&fd, 1, 100) <= 0) continue;
      uffd_msg msg;
      if (read(uffd, &msg, sizeof(msg)) != sizeof(msg) || msg.event != UFFD_EVENT_PAGEFAULT) {
        continue;
      }
      const size_t unit = (msg.arg.pagefault.address - reinterpret_cast<uintptr_t>(region)) / kUnit;
      if (unit < installed) continue;  // installed meanwhile: the wake-up reached it
      for (int k = 0; (k < 2 || installed <= unit) && installed < units && !failed.load(); ++k) {
        ask(installed + 2);
        if (requests->written.load(std::memory_order_acquire) <= installed &&
            !AwaitChange(requests->written, static_cast<uint32_t>(installed),
                         std::chrono::milliseconds(5000))) {
          std::fprintf(stderr, "bench_fault: raw 2 MiB stream: the element wrote nothing in 5 s\n");
          failed = true;
          break;
        }
        uint8_t* slot = in_flight[installed];
        uint8_t* place = region + installed * kUnit;
        UffdMove in{reinterpret_cast<uintptr_t>(place), reinterpret_cast<uintptr_t>(slot), kUnit,
                    kMoveDontWake, 0};
        uffdio_writeprotect wp{{reinterpret_cast<uintptr_t>(place), kUnit},
                               UFFDIO_WRITEPROTECT_MODE_WP};
        uffdio_range wake{reinterpret_cast<uintptr_t>(place), kUnit};
        if (requests->error.load() != 0) {
          std::fprintf(stderr, "bench_fault: raw 2 MiB stream: the element's write: %s\n",
                       std::strerror(requests->error.load()));
          failed = true;
        } else if (!UffdIoctl(uffd, kUffdioMove, &in, "move in") ||
                   !UffdIoctl(uffd, UFFDIO_WRITEPROTECT, &wp, "write-protect") ||
                   !UffdIoctl(uffd, UFFDIO_WAKE, &wake, "wake")) {
          failed = true;
        }
        ++installed;
        if (installed - dropped > budget_units) {  // the oldest unit goes back to staging
          UffdMove out{reinterpret_cast<uintptr_t>(slot),
                       reinterpret_cast<uintptr_t>(region + dropped * kUnit), kUnit, kMoveDontWake,
                       0};
          if (!failed.load() && !UffdIoctl(uffd, kUffdioMove, &out, "move back")) failed = true;
          ++dropped;
        }
        free_slots.push_back(slot);
      }
    }
    // A scan stopped by a failure goes on without the userfaultfd (unregistering wakes it).
    uffdio_range all{reinterpret_cast<uintptr_t>(region), bytes};
    if (failed.load()) (void)ioctl(uffd, UFFDIO_UNREGISTER, &all);
  });
  const double gbps = Scan(region, bytes);
  // The last unit stays in place: it holds what the element wrote.
  uint64_t last_word = 0;
  std::memcpy(&last_word, region + bytes - sizeof(last_word), sizeof(last_word));
  if (!failed.load() && last_word != 0x5a5a5a5a5a5a5a5aull) {
    std::fprintf(stderr, "bench_fault: raw 2 MiB stream: a unit arrived without its data\n");
    failed = true;
  }
  stop = true;
  handler.join();
  requests->stop = 1;
  WakeAll(requests->asked);
  kill(element, SIGKILL);
  waitpid(element, nullptr, 0);
  munmap(requests, sizeof(UnitRequests));
  close(uffd);
  munmap(region, bytes);
  munmap(staging, slots * kUnit);
  munmap(pool, kPoolUnits * kUnit);
  return failed.load() ? 0 : gbps;
}

double MemcpyGBps(size_t bytes) {
  std::vector<uint8_t> a(bytes, 1), b(bytes, 2);
  std::vector<double> rates;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = Clock::now();
    std::memcpy(b.data(), a.data(), bytes);
    rates.push_back(bytes / Nanos(Clock::now() - t0));
  }
  return Percentile(rates, 0.5);
}

void Die(const char* what, const absl::Status& s) {
  std::fprintf(stderr, "bench_fault: %s: %s\n", what, std::string(s.message()).c_str());
  std::exit(1);
}

// First touches of `pages` never-written remote pages.
std::vector<double> ZeroPagesCold(disagg::Rack& rack, size_t pages) {
  auto region = rack.Map(pages * kPage);
  if (!region.ok()) Die("map", region.status());
  std::vector<double> out = TouchEach(region->as<uint8_t>(), pages);
  if (absl::Status s = rack.Unmap(region->data()); !s.ok()) Die("unmap", s);
  return out;
}

// First touches of `pages` remote pages holding data: written, flushed, then evicted by a
// region of more than `budget` bytes touched after them (and unmapped again, so that the timed
// touches evict nothing).
std::vector<double> DataPagesCold(disagg::Rack& rack, size_t pages, size_t budget) {
  auto region = rack.Map(pages * kPage);
  if (!region.ok()) Die("map", region.status());
  Fill(region->as<uint8_t>(), pages * kPage);
  if (absl::Status s = rack.Flush(region->data(), pages * kPage); !s.ok()) Die("flush", s);
  const size_t churn_bytes = budget + (1 << 20);
  auto churn = rack.Map(churn_bytes);
  if (!churn.ok()) Die("map", churn.status());
  for (size_t i = 0; i < churn_bytes; i += kPage) (void)churn->as<volatile uint8_t>()[i];
  if (absl::Status s = rack.Unmap(churn->data()); !s.ok()) Die("unmap", s);
  const uint64_t before = rack.cache_stats().faults;
  std::vector<double> out = TouchEach(region->as<uint8_t>(), pages);
  if (rack.cache_stats().faults - before < pages * 99 / 100) {
    std::fprintf(stderr,
                 "bench_fault: the data pages were not evicted before their touches (%llu faults "
                 "for %zu pages)\n",
                 static_cast<unsigned long long>(rack.cache_stats().faults - before), pages);
    std::exit(1);
  }
  const auto* words = region->as<const uint64_t>();
  if (words[1] != 1 * 0x9E3779B97F4A7C15ull) {
    std::fprintf(stderr, "bench_fault: a data page came back without its data\n");
    std::exit(1);
  }
  if (absl::Status s = rack.Unmap(region->data()); !s.ok()) Die("unmap", s);
  return out;
}

// p50 and p99 of several runs: the median of the runs' p50s and of their p99s.
struct Figure {
  std::vector<double> p50s, p99s;
  void Add(const std::vector<double>& samples) {
    p50s.push_back(Percentile(samples, 0.5));
    p99s.push_back(Percentile(samples, 0.99));
  }
  double p50() const { return Percentile(p50s, 0.5); }
  double p99() const { return Percentile(p99s, 0.5); }
};

struct ColdFigures {
  Figure spinning, sleeping, zero, data;
  // The floor: the faster raw handler (by its median p50) of the two.
  const Figure& floor() const { return spinning.p50() <= sleeping.p50() ? spinning : sleeping; }
};

// kRuns rounds of the two raw handlers, never-written and data pages, interleaved.
constexpr int kRuns = 3;
// Sequential scans of the remote region.
constexpr int kScans = 5;
ColdFigures MeasureCold(disagg::Rack& rack, size_t pages, size_t budget) {
  ColdFigures f;
  for (int run = 0; run < kRuns; ++run) {
    f.spinning.Add(RawUffdFaults(pages, /*spin=*/true));
    f.sleeping.Add(RawUffdFaults(pages, /*spin=*/false));
    f.zero.Add(ZeroPagesCold(rack, pages));
    f.data.Add(DataPagesCold(rack, pages, budget));
  }
  return f;
}

void PrintCold(const char* title, const ColdFigures& f) {
  std::printf("%s (median of %d interleaved runs)\n", title, kRuns);
  std::printf(
      "  raw userfaultfd:     p50 %7.2f us  p99 %7.2f us with a spinning handler, p50 %.2f us  "
      "p99 %.2f us with one sleeping in poll: the floor is the %s one\n",
      f.spinning.p50() / 1e3, f.spinning.p99() / 1e3, f.sleeping.p50() / 1e3,
      f.sleeping.p99() / 1e3, &f.floor() == &f.spinning ? "spinning" : "sleeping");
  std::printf("  pages holding data:  p50 %7.2f us  p99 %7.2f us | ratio p50 %.2fx  p99 %.2fx\n",
              f.data.p50() / 1e3, f.data.p99() / 1e3, f.data.p50() / f.floor().p50(),
              f.data.p99() / f.floor().p99());
  std::printf("  never-written pages: p50 %7.2f us  p99 %7.2f us | ratio p50 %.2fx\n",
              f.zero.p50() / 1e3, f.zero.p99() / 1e3, f.zero.p50() / f.floor().p50());
}

// The quiet cold-fault figures as JSON members (no braces), the same in every mode's line.
std::string QuietColdJson(size_t pages, const ColdFigures& f) {
  return absl::StrFormat(
      "\"pages\":%zu,\"runs\":%d,\"cold_p50_ns\":%.0f,\"cold_p99_ns\":%.0f,"
      "\"floor_p50_ns\":%.0f,\"floor_p99_ns\":%.0f,\"cold_vs_floor_p50\":%.3f,"
      "\"zero_cold_p50_ns\":%.0f,\"zero_cold_p99_ns\":%.0f,\"zero_cold_vs_floor_p50\":%.3f",
      pages, kRuns, f.data.p50(), f.data.p99(), f.floor().p50(), f.floor().p99(),
      f.data.p50() / f.floor().p50(), f.zero.p50(), f.zero.p99(), f.zero.p50() / f.floor().p50());
}

// A busy thread per core (plain loops at the benchmark's own priority) while it lives.
class BusyThreads {
 public:
  BusyThreads() {
    const long cores = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
    for (long i = 0; i < cores; ++i) {
      threads_.emplace_back([this] {
        uint64_t x = 0;
        while (!stop_.load(std::memory_order_relaxed)) x = x * 6364136223846793005ull + 1;
        sink_.fetch_add(x, std::memory_order_relaxed);
      });
    }
  }
  ~BusyThreads() {
    stop_ = true;
    for (auto& t : threads_) t.join();
  }
  size_t count() const { return threads_.size(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> sink_{0};
  std::vector<std::thread> threads_;
};

// Sequential first-touch write of fresh local anonymous memory, GB/s.
double LocalFirstTouchWrite(size_t bytes) {
  auto* p = static_cast<uint8_t*>(
      mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (p == MAP_FAILED) {
    std::perror("bench_fault: mmap");
    std::exit(1);
  }
  const double gbps = Fill(p, bytes);
  munmap(p, bytes);
  return gbps;
}

// Reads of a cached remote region of `hit_bytes` against a local array of the same size.
void MeasureHits(disagg::Rack& rack, size_t hit_bytes, double& hit50, double& local50) {
  auto cached = rack.Map(hit_bytes);
  if (!cached.ok()) Die("map", cached.status());
  (void)ReadLines(cached->as<uint8_t>(), hit_bytes, 1);
  std::vector<uint8_t> local(hit_bytes, 1);
  std::vector<double> hit, base;
  for (int i = 0; i < 7; ++i) {
    hit.push_back(ReadLines(cached->as<uint8_t>(), hit_bytes, 4));
    base.push_back(ReadLines(local.data(), hit_bytes, 4));
  }
  hit50 = Percentile(hit, 0.5);
  local50 = Percentile(base, 0.5);
  std::printf("cache hit:          %.2f ns/read | local array %.2f ns/read | ratio %.2fx\n", hit50,
              local50, hit50 / local50);
  if (absl::Status s = rack.Unmap(cached->data()); !s.ok()) Die("unmap", s);
  local.clear();
  local.shrink_to_fit();
}

}  // namespace

int main(int argc, char** argv) {
  // bench_fault [scan|cold] [--readahead N]: `scan` measures only the scan and the first-touch
  // write, `cold` only the quiet cold faults and their floor; --readahead sets
  // JoinOptions::readahead_pages (the rack refuses what is out of range).
  bool scan_only = false, cold_only = false;
  disagg::JoinOptions options;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "scan") == 0) {
      scan_only = true;
    } else if (std::strcmp(argv[i], "cold") == 0) {
      cold_only = true;
    } else if (std::strcmp(argv[i], "--readahead") == 0 && i + 1 < argc) {
      char* end = nullptr;
      const long pages = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || pages < 0 || pages > 1 << 20) {
        std::fprintf(stderr, "bench_fault: --readahead takes a number of pages, not '%s'\n",
                     argv[i]);
        return 2;
      }
      options.readahead_pages = static_cast<int>(pages);
    } else {
      std::fprintf(stderr, "usage: bench_fault [scan|cold] [--readahead PAGES]\n");
      return 2;
    }
  }
  if (scan_only && cold_only) {
    std::fprintf(stderr, "bench_fault: scan and cold are two modes: give one\n");
    return 2;
  }
  auto rack = disagg::Rack::Join(options);
  if (!rack.ok()) Die("join", rack.status());
  const size_t budget = (*rack)->cache_stats().quota_bytes;
  if (budget < (8 << 20)) {
    std::fprintf(stderr, "bench_fault: needs a cache budget of 8 MiB or more (have %zu)\n", budget);
    return 1;
  }
  // Cold faults: a region half the budget, so no eviction interferes.
  const size_t cold_pages = std::min<size_t>(budget / 2 / kPage, 8192);
  std::printf(
      "cold 4 KiB faults, %zu pages a run; floor: a raw userfaultfd fault whose handler "
      "thread copies a local page\n",
      cold_pages);
  ColdFigures quiet, loaded;
  size_t busy_threads = 0;
  double hit50 = 0, local50 = 0;
  if (!scan_only) {
    quiet = MeasureCold(**rack, cold_pages, budget);
    PrintCold("quiet machine", quiet);
    if (cold_only) {
      std::printf("{\"bench\":\"fault\",\"mode\":\"cold\",%s,\"readahead_pages\":%d}\n",
                  QuietColdJson(cold_pages, quiet).c_str(), options.readahead_pages);
      return 0;
    }
    {
      BusyThreads busy;
      busy_threads = busy.count();
      loaded = MeasureCold(**rack, cold_pages, budget);
    }
    char title[96];
    std::snprintf(title, sizeof(title), "contended: a busy thread on each of the %zu cores",
                  busy_threads);
    PrintCold(title, loaded);
    MeasureHits(**rack, cold_pages * kPage, hit50, local50);
  }
  const double sleeping50 = quiet.sleeping.p50s.empty() ? 0 : quiet.sleeping.p50();

  // Sequential scan of 4x the budget: written first (so the memory elements serve real
  // data, not never-written zero pages), flushed, then read kScans times (the cache turns
  // over 4 times in each: every page faults): the median of the scans.
  const size_t scan_bytes = 4 * budget;
  const double local_write = LocalFirstTouchWrite(scan_bytes);
  auto big = (*rack)->Map(scan_bytes);
  if (!big.ok()) Die("map", big.status());
  const double fill = Fill(big->as<uint8_t>(), scan_bytes);
  if (absl::Status s = (*rack)->Flush(big->data(), scan_bytes); !s.ok()) Die("flush", s);
  // Rounds of the three scans, interleaved: the rack's, the raw stream's and the local one.
  std::vector<uint8_t> same_size(scan_bytes, 1);
  std::vector<double> scans, raw_scans, unit_scans, local_scans;
  for (int i = 0; i < kScans; ++i) {
    scans.push_back(Scan(big->as<uint8_t>(), scan_bytes));
    raw_scans.push_back(RawUffdStreamScan(scan_bytes, budget));
    unit_scans.push_back(RawUnitStreamScan(scan_bytes, budget));
    local_scans.push_back(Scan(same_size.data(), scan_bytes));
  }
  const double scan = Percentile(scans, 0.5);
  const double raw_scan = Percentile(raw_scans, 0.5);
  const double unit_scan = Percentile(unit_scans, 0.5);
  const double local_scan = Percentile(local_scans, 0.5);
  if (absl::Status s = (*rack)->Unmap(big->data()); !s.ok()) Die("unmap", s);
  same_size.clear();
  same_size.shrink_to_fit();
  const double copy = MemcpyGBps(std::min<size_t>(budget, 64 << 20));
  const disagg::CacheStats stats = (*rack)->cache_stats();
  std::printf(
      "sequential scan:    %.3f GB/s over %zu MiB (cache %zu MiB) | local scan of %zu MiB %.2f "
      "GB/s | ratio %.4f  (local memcpy: %.2f GB/s)\n"
      "  raw userfaultfd stream (runs of %zu pages copied from a local buffer, one run ahead, "
      "evicted at the same budget): %.3f GB/s, %.4f of the local scan | the rack's scan is "
      "%.4f of it\n",
      scan, scan_bytes >> 20, budget >> 20, scan_bytes >> 20, local_scan, scan / local_scan, copy,
      kStreamRun, raw_scan, raw_scan / local_scan, scan / raw_scan);
  std::printf(
      "  raw 2 MiB stream (units written by a second process straight into recycled huge pages, "
      "moved into place with UFFDIO_MOVE, evicted back to staging): %.3f GB/s, %.4f of the "
      "local scan (0: not available here, see above)\n",
      unit_scan, unit_scan / local_scan);
  std::printf(
      "sequential write:   %.3f GB/s (first touch of every page, dirty pages written back on "
      "eviction) | first touch of fresh local memory %.2f GB/s | ratio %.4f\n",
      fill, local_write, fill / local_write);
  if (scan_only) {
    std::printf(
        "{\"bench\":\"fault\",\"mode\":\"scan\",\"scans\":%d,\"scan_gbps\":%.4f,"
        "\"local_scan_gbps\":%.3f,\"scan_vs_local_scan\":%.5f,\"raw_stream_gbps\":%.4f,"
        "\"scan_vs_raw_stream\":%.5f,\"memcpy_gbps\":%.3f,\"write_gbps\":%.4f,"
        "\"local_write_gbps\":%.3f,\"write_vs_local_write\":%.5f,\"cache_budget_bytes\":%zu,"
        "\"readahead_pages\":%d,\"raw_stream_run_pages\":%zu,\"raw_unit_stream_gbps\":%.4f,"
        "\"raw_unit_stream_vs_local_scan\":%.5f}\n",
        kScans, scan, local_scan, scan / local_scan, raw_scan, scan / raw_scan, copy, fill,
        local_write, fill / local_write, budget, options.readahead_pages, kStreamRun, unit_scan,
        unit_scan / local_scan);
    return 0;
  }
  std::printf(
      "{\"bench\":\"fault\",%s,"
      "\"sleeping_floor_p50_ns\":%.0f,\"busy_threads\":%zu,"
      "\"contended_cold_p50_ns\":%.0f,\"contended_cold_p99_ns\":%.0f,"
      "\"contended_floor_p50_ns\":%.0f,\"contended_floor_p99_ns\":%.0f,"
      "\"contended_cold_vs_floor_p50\":%.3f,\"contended_zero_cold_p50_ns\":%.0f,"
      "\"contended_zero_cold_vs_floor_p50\":%.3f,"
      "\"hit_ns_per_read\":%.3f,\"local_ns_per_read\":%.3f,\"hit_vs_local\":%.3f,"
      "\"scans\":%d,\"scan_gbps\":%.4f,\"local_scan_gbps\":%.3f,\"scan_vs_local_scan\":%.5f,"
      "\"raw_stream_gbps\":%.4f,\"scan_vs_raw_stream\":%.5f,"
      "\"raw_unit_stream_gbps\":%.4f,\"raw_unit_stream_vs_local_scan\":%.5f,"
      "\"memcpy_gbps\":%.3f,\"scan_vs_memcpy\":%.5f,\"write_gbps\":%.4f,"
      "\"local_write_gbps\":%.3f,\"write_vs_local_write\":%.5f,"
      "\"cache_budget_bytes\":%zu,\"peak_cached_bytes\":%llu}\n",
      QuietColdJson(cold_pages, quiet).c_str(), sleeping50, busy_threads, loaded.data.p50(),
      loaded.data.p99(), loaded.floor().p50(), loaded.floor().p99(),
      loaded.data.p50() / loaded.floor().p50(), loaded.zero.p50(),
      loaded.zero.p50() / loaded.floor().p50(), hit50, local50, hit50 / local50, kScans, scan,
      local_scan, scan / local_scan, raw_scan, scan / raw_scan, unit_scan, unit_scan / local_scan,
      copy, scan / copy, fill, local_write, fill / local_write, budget,
      static_cast<unsigned long long>(stats.peak_cached_bytes));
  return 0;
}
