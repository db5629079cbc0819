// libdisagg end to end: an application process (this test) joins a private rack of real
// daemons, maps remote memory and uses it with plain loads and stores through a small cache.
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "disagg/disagg.h"
#include "disagg/redo_log.h"
#include "internal/pagemap_scan.h"
#include "rack_harness.h"
#include "rack_peer_driver.h"

namespace disagg::testing {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kBudget = 256 << 10;  // the compute elements' cache budget: 64 pages

// A rack whose compute elements hold 256 KiB of cache, and this process joined to cpu0.
struct JoinedRack {
  TestRack rack;
  std::unique_ptr<Rack> app;

  explicit JoinedRack(int fault_threads = 1, const std::string& up = "--memory 2",
                      int readahead_pages = JoinOptions().readahead_pages) {
    REQUIRE(rack.Up("--compute 1 --pool-size 16M --cache-budget 256K " + up) == 0);
    JoinOptions options;
    options.rack_dir = rack.dir();
    options.element = "cpu0";
    options.fault_threads = fault_threads;
    options.readahead_pages = readahead_pages;
    absl::StatusOr<std::unique_ptr<Rack>> joined = Rack::Join(options);
    INFO(joined.status());
    REQUIRE(joined.ok());
    app = std::move(*joined);
  }
  ~JoinedRack() { app.reset(); }  // leave before the rack goes down
};

uint64_t Pattern(uint64_t word, uint64_t salt) { return (word + 1) * 0x9E3779B97F4A7C15ull ^ salt; }

// Bytes of [addr, addr + bytes) mapped as huge pages, or -1 if the kernel cannot tell (no
// PAGEMAP_SCAN) or allocates no transparent huge pages (disabled).
int64_t HugeBytes(const void* addr, uint64_t bytes) {
  std::FILE* thp = std::fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
  if (thp == nullptr) return -1;
  char setting[128] = {};
  const bool read = std::fgets(setting, sizeof(setting), thp) != nullptr;
  std::fclose(thp);
  if (!read || std::strstr(setting, "[never]") != nullptr) return -1;
  const int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (pagemap < 0) return -1;
  const int64_t huge = HugeMappedBytes(pagemap, reinterpret_cast<uintptr_t>(addr), bytes);
  close(pagemap);
  return huge;
}

TEST_CASE("Data written and flushed is read back correctly after it was evicted") {
  // No read-ahead, the default, and runs longer than the cache can spare (half of it is).
  const int readahead = GENERATE(1, JoinOptions().readahead_pages, 128);
  INFO("readahead_pages " << readahead);
  JoinedRack r(1, "--memory 2", readahead);
  const uint64_t bytes = 4 * kBudget;
  absl::StatusOr<Region> region = r.app->Map(bytes);
  REQUIRE(region.ok());
  uint64_t* words = region->as<uint64_t>();
  const uint64_t n = bytes / sizeof(uint64_t);
  for (uint64_t i = 0; i < n; ++i) words[i] = Pattern(i, 1);
  REQUIRE(r.app->Flush(words, bytes).ok());
  const CacheStats after_write = r.app->cache_stats();
  REQUIRE(after_write.evictions > 0);  // the first pages left the cache while writing
  uint64_t wrong = 0;
  for (uint64_t i = 0; i < n; ++i) wrong += words[i] != Pattern(i, 1);
  REQUIRE(wrong == 0);
  const CacheStats stats = r.app->cache_stats();
  REQUIRE(stats.faults >= 2 * bytes / kPage - kBudget / kPage);  // read back from the elements
  REQUIRE(stats.peak_cached_bytes <= kBudget);
}

TEST_CASE(
    "A region larger than the cache works end to end and the cache never exceeds its budget") {
  JoinedRack r;
  const uint64_t bytes = 16 * kBudget;
  absl::StatusOr<Region> region = r.app->Map(bytes);
  REQUIRE(region.ok());
  uint8_t* base = region->as<uint8_t>();
  // Untouched remote memory reads as zero.
  REQUIRE(base[bytes - 1] == 0);
  // Scattered writes, several passes, then every byte is checked.
  uint64_t state = 12345;
  std::vector<uint8_t> shadow(bytes, 0);
  for (int i = 0; i < 20000; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const uint64_t at = (state >> 20) % bytes;
    base[at] = shadow[at] = static_cast<uint8_t>(state >> 56);
    if (i % 5000 == 0) REQUIRE(r.app->cache_stats().cached_bytes <= kBudget);
  }
  REQUIRE(std::memcmp(base, shadow.data(), bytes) == 0);
  const CacheStats stats = r.app->cache_stats();
  REQUIRE(stats.quota_bytes <= kBudget);
  REQUIRE(stats.peak_cached_bytes <= stats.quota_bytes);
  REQUIRE(stats.writebacks > 0);
  // The compute element reports this process with its cache inside the quota.
  const std::vector<ProcessRow> processes = r.rack.Processes();
  REQUIRE(processes.size() == 1);
  REQUIRE(processes[0].id == r.app->self());
  REQUIRE(processes[0].cache_quota_bytes == kBudget);
  REQUIRE(processes[0].mapped_bytes == bytes);
}

TEST_CASE("A sequential stream in a cache with room reads runs ahead, and every byte is right") {
  // A 2 MiB cache (512 pages): room for a stream's run and the one after it, of the default
  // 32 pages and of 64 (the two then take all of a channel's slots). Read-ahead off (one page
  // a fault) reads nothing ahead; on, the runs after the faulting ones come too.
  const int readahead = GENERATE(1, JoinOptions().readahead_pages, 64);
  INFO("readahead_pages " << readahead);
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 2 --pool-size 32M --cache-budget 2M") == 0);
  JoinOptions options;
  options.rack_dir = rack.dir();
  options.element = "cpu0";
  options.readahead_pages = readahead;
  absl::StatusOr<std::unique_ptr<Rack>> app = Rack::Join(options);
  INFO(app.status());
  REQUIRE(app.ok());
  const uint64_t bytes = 8 << 20;  // 4x the cache
  absl::StatusOr<Region> region = (*app)->Map(bytes);
  REQUIRE(region.ok());
  uint64_t* words = region->as<uint64_t>();
  const uint64_t n = bytes / sizeof(uint64_t);
  for (uint64_t i = 0; i < n; ++i) words[i] = Pattern(i, 3);  // a write stream
  REQUIRE((*app)->Flush(words, bytes).ok());
  const uint64_t ahead_written = (*app)->cache_stats().read_ahead;
  uint64_t wrong = 0;
  for (int pass = 0; pass < 2; ++pass) {  // read streams, the cache turned over each time
    for (uint64_t i = 0; i < n; ++i) wrong += words[i] != Pattern(i, 3);
  }
  REQUIRE(wrong == 0);
  const CacheStats stats = (*app)->cache_stats();
  REQUIRE(stats.faults >= 3 * bytes / kPage - (2 << 20) / kPage);
  REQUIRE(stats.peak_cached_bytes <= stats.quota_bytes);
  if (readahead == 1) {
    REQUIRE(stats.read_ahead == 0);
  } else {
    REQUIRE(ahead_written > 0);
    REQUIRE(stats.read_ahead > ahead_written);
  }
  app->reset();  // leave before the rack goes down
}

TEST_CASE(
    "A stream in a large cache goes in 2 MiB units: every byte is right, and writes to placed "
    "pages are written back") {
  // A 32 MiB cache: room for a stream's units in flight. A read stream's units are
  // write-protected once in place, so that writes to their pages mark them; a write stream's
  // units count as written.
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 160M --cache-budget 32M") == 0);
  JoinOptions options;
  options.rack_dir = rack.dir();
  options.element = "cpu0";
  const bool units = GENERATE(true, false);
  INFO("unit_installs " << units);
  options.unit_installs = units;
  absl::StatusOr<std::unique_ptr<Rack>> app = Rack::Join(options);
  INFO(app.status());
  REQUIRE(app.ok());
  const uint64_t bytes = 96 << 20;  // 3x the cache
  absl::StatusOr<Region> region = (*app)->Map(bytes);
  REQUIRE(region.ok());
  uint64_t* words = region->as<uint64_t>();
  const uint64_t n = bytes / sizeof(uint64_t);
  for (uint64_t i = 0; i < n; ++i) words[i] = Pattern(i, 5);  // a write stream
  REQUIRE((*app)->Flush(words, bytes).ok());
  auto count_wrong = [&](uint64_t from, uint64_t to) {
    uint64_t wrong = 0;
    for (uint64_t i = from; i < to; ++i) wrong += words[i] != Pattern(i, 5);
    return wrong;
  };
  REQUIRE(count_wrong(0, n) == 0);  // a read stream: the cache turns over three times
  const uint64_t placed = (*app)->cache_stats().placed;
  if (!units) {
    REQUIRE(placed == 0);
    app->reset();
    return;
  }
  REQUIRE(placed > n * sizeof(uint64_t) / kPage);  // most of both streams
  // Units in place are huge pages, also after the Flush split those of the write stream (a
  // split unit is not reused): at least a third of the cache. Not checked where the kernel
  // cannot tell or makes no huge pages (then units are moved page by page, and only slower).
  if (const int64_t huge = HugeBytes(words, bytes); huge >= 0) {
    INFO("huge-mapped bytes of the region after the read stream: " << huge);
    REQUIRE(huge >= (32 << 20) / 3);
  } else {
    WARN("transparent huge pages are off or the kernel has no PAGEMAP_SCAN: not checked");
  }
  // The first 8 MiB read again (placed), then one word of each of their pages written. Evicted
  // by a stream over the rest (or flushed first), they come back with the writes.
  const uint64_t head = (8 << 20) / sizeof(uint64_t);
  REQUIRE(count_wrong(0, head) == 0);
  const uint64_t faults = (*app)->cache_stats().faults;
  for (uint64_t i = 0; i < head; i += kPage / sizeof(uint64_t)) words[i + 7] = ~Pattern(i + 7, 5);
  const bool flush = GENERATE(false, true);
  INFO("flushed before eviction " << flush);
  if (flush) REQUIRE((*app)->Flush(words, head * sizeof(uint64_t)).ok());
  REQUIRE(count_wrong(head, n) == 0);
  uint64_t lost = 0;
  for (uint64_t i = 0; i < head; ++i) {
    const bool written = i % (kPage / sizeof(uint64_t)) == 7;
    lost += words[i] != (written ? ~Pattern(i, 5) : Pattern(i, 5));
  }
  REQUIRE(lost == 0);
  REQUIRE((*app)->cache_stats().faults > faults + head * sizeof(uint64_t) / kPage);
  app->reset();  // leave before the rack goes down
}

TEST_CASE("Four threads fault the same and different pages at once and every byte is right") {
  const int fault_threads = GENERATE(1, 3);  // served in batches by one thread, or by several
  INFO("fault threads: " << fault_threads);
  JoinedRack r(fault_threads);
  const uint64_t pages = 2 * kBudget / kPage;  // twice the cache: faults and evictions race
  absl::StatusOr<Region> shared = r.app->Map(pages * kPage);
  absl::StatusOr<Region> own = r.app->Map(pages * kPage);
  REQUIRE(shared.ok());
  REQUIRE(own.ok());
  uint64_t* s = shared->as<uint64_t>();
  const uint64_t words = pages * kPage / sizeof(uint64_t);
  for (uint64_t i = 0; i < words; ++i) s[i] = Pattern(i, 7);
  REQUIRE(r.app->Flush(s, pages * kPage).ok());
  std::atomic<uint64_t> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      uint64_t* o = own->as<uint64_t>();
      for (int round = 0; round < 3; ++round) {
        // Every thread reads all shared pages, from a different starting point.
        for (uint64_t k = 0; k < pages; ++k) {
          const uint64_t p = (k + t * pages / 4) % pages;
          for (uint64_t w = 0; w < kPage / 8; w += 61) {
            const uint64_t i = p * kPage / 8 + w;
            if (s[i] != Pattern(i, 7)) ++wrong;
          }
        }
        // Each thread writes its own quarter of the other region, word by word.
        for (uint64_t p = t; p < pages; p += 4) {
          for (uint64_t w = 0; w < kPage / 8; ++w) {
            const uint64_t i = p * kPage / 8 + w;
            o[i] = Pattern(i, 100 + round);
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  REQUIRE(wrong == 0);
  uint64_t* o = own->as<uint64_t>();
  for (uint64_t i = 0; i < words; ++i) wrong += o[i] != Pattern(i, 102);
  REQUIRE(wrong == 0);
  REQUIRE(r.app->cache_stats().peak_cached_bytes <= kBudget);
}

TEST_CASE("Writes, flushes and evictions racing in four threads lose no byte") {
  JoinedRack r;
  const uint64_t pages = 8 * kBudget / kPage;  // the cache holds an eighth of it
  absl::StatusOr<Region> region = r.app->Map(pages * kPage);
  REQUIRE(region.ok());
  uint64_t* words = region->as<uint64_t>();
  constexpr int kThreads = 4;
  std::atomic<uint64_t> flush_errors{0};
  std::vector<std::vector<uint64_t>> shadows(kThreads, std::vector<uint64_t>(pages * kPage / 8, 0));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Thread t owns the words at index % kThreads == t: the same pages, different words.
      uint64_t state = 0x1234 + t;
      std::vector<uint64_t>& shadow = shadows[t];
      for (int i = 0; i < 20000; ++i) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        const uint64_t word = ((state >> 17) % (pages * kPage / 8 / kThreads)) * kThreads + t;
        words[word] = shadow[word] = state;
        if (i % 2500 == 2499) {
          const uint64_t page = word * 8 / kPage;
          if (!r.app
                   ->Flush(words + page * kPage / 8, 16 * kPage > (pages - page) * kPage
                                                         ? (pages - page) * kPage
                                                         : 16 * kPage)
                   .ok()) {
            ++flush_errors;
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  REQUIRE(flush_errors == 0);
  uint64_t wrong = 0;
  for (uint64_t i = 0; i < pages * kPage / 8; ++i) wrong += words[i] != shadows[i % kThreads][i];
  REQUIRE(wrong == 0);
  const CacheStats stats = r.app->cache_stats();
  REQUIRE(stats.peak_cached_bytes <= kBudget);
  REQUIRE(stats.writebacks > 0);
}

sigjmp_buf g_jump;
MemoryFault g_fault;
void CatchFault(const MemoryFault& fault) {
  g_fault = fault;
  siglongjmp(g_jump, 1);
}

// Reads `addr`; returns true if the access faulted (g_fault says how).
bool Faults(const volatile uint8_t* addr) {
  if (sigsetjmp(g_jump, 1) == 0) {
    (void)*addr;
    return false;
  }
  return true;
}

TEST_CASE("Touching memory that is not mapped, or not yours, reaches the fault handler") {
  // Another process of the rack maps a region and keeps it until told to leave.
  int to_parent[2], to_child[2];
  REQUIRE(pipe2(to_parent, O_CLOEXEC) == 0);
  REQUIRE(pipe2(to_child, O_CLOEXEC) == 0);
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M --cache-budget 256K") == 0);
  JoinOptions options;
  options.rack_dir = rack.dir();
  options.element = "cpu0";
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    close(to_child[1]);
    uintptr_t addr = 0;
    auto other = Rack::Join(options);
    if (other.ok()) {
      auto region = (*other)->Map(kPage);
      if (region.ok()) {
        region->as<uint8_t>()[0] = 42;
        addr = reinterpret_cast<uintptr_t>(region->data());
      }
    }
    (void)!write(to_parent[1], &addr, sizeof(addr));
    char c;
    (void)!read(to_child[0], &c, 1);
    _exit(0);
  }
  close(to_child[0]);
  close(to_parent[1]);
  uintptr_t theirs = 0;
  REQUIRE(read(to_parent[0], &theirs, sizeof(theirs)) == sizeof(theirs));
  REQUIRE(theirs != 0);

  auto app = Rack::Join(options);
  REQUIRE(app.ok());
  (*app)->OnMemoryFault(CatchFault);
  SECTION("an address in this process's window where nothing is mapped") {
    auto* addr = reinterpret_cast<volatile uint8_t*>((*app)->window_base() + (1 << 20) + 123);
    REQUIRE(Faults(addr));
    REQUIRE(g_fault.address == addr);
    REQUIRE(g_fault.cause == FaultCause::kNotMapped);
    // Mapping the address later makes it usable.
    auto region = (*app)->Map(8 << 20);
    REQUIRE(region.ok());
    REQUIRE(reinterpret_cast<uintptr_t>(region->data()) <= reinterpret_cast<uintptr_t>(addr));
    REQUIRE_FALSE(Faults(addr));
  }
  SECTION("another process's page") {
    auto* addr = reinterpret_cast<volatile uint8_t*>(theirs + 7);
    REQUIRE(Faults(addr));
    REQUIRE(g_fault.address == addr);
    REQUIRE(g_fault.cause == FaultCause::kNotYours);
  }
  SECTION("a region after Unmap") {
    auto region = (*app)->Map(kPage);
    REQUIRE(region.ok());
    auto* addr = region->as<volatile uint8_t>();
    addr[5] = 9;
    REQUIRE((*app)->Unmap(region->data()).ok());
    REQUIRE(Faults(addr + 5));
    REQUIRE(g_fault.cause == FaultCause::kNotMapped);
    REQUIRE((*app)->Unmap(region->data()).code() == absl::StatusCode::kNotFound);
  }
  SECTION("Flush of memory this process did not map") {
    REQUIRE((*app)->Flush(reinterpret_cast<void*>(theirs), kPage).code() ==
            absl::StatusCode::kInvalidArgument);
  }
  app->reset();
  close(to_child[1]);
  close(to_parent[0]);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
}

TEST_CASE("Without a fault handler a refused access ends the process with a clear message") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M --cache-budget 256K") == 0);
  int err[2];
  REQUIRE(pipe2(err, O_CLOEXEC) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    dup2(err[1], STDERR_FILENO);
    JoinOptions options;
    options.rack_dir = rack.dir();
    options.element = "cpu0";
    auto app = Rack::Join(options);
    if (!app.ok()) _exit(3);
    volatile uint8_t* addr = reinterpret_cast<uint8_t*>((*app)->window_base() + 4096);
    (void)*addr;
    _exit(0);
  }
  close(err[1]);
  std::string message;
  char buf[512];
  ssize_t n;
  while ((n = read(err[0], buf, sizeof(buf))) > 0) message.append(buf, n);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  INFO(message);
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(WTERMSIG(status) == SIGBUS);
  REQUIRE(message.find("memory fault at 0x") != std::string::npos);
  REQUIRE(message.find("not mapped") != std::string::npos);
}

TEST_CASE("Mapping more than the rack holds fails cleanly and leaves nothing allocated") {
  JoinedRack r;
  auto too_big = r.app->Map(33 << 20);  // two elements of 16 MiB
  REQUIRE(too_big.status().code() == absl::StatusCode::kResourceExhausted);
  for (const auto& [name, row] : r.rack.Status()) {
    if (row.kind == "memory") REQUIRE(row.used_bytes == 0);
  }
  auto fits = r.app->Map(32 << 20);
  REQUIRE(fits.ok());
  fits->as<uint8_t>()[(32 << 20) - 1] = 1;
  REQUIRE(r.app->Flush(fits->as<uint8_t>() + (32 << 20) - 1, 1).ok());
}

TEST_CASE(
    "A failed memory element: its pages, cached or not, fault with kElementFailed naming "
    "it, and Flush names it") {
  JoinedRack r(1, "--memory 1");
  auto region = r.app->Map(2 * kBudget);
  REQUIRE(region.ok());
  uint8_t* base = region->as<uint8_t>();
  base[0] = 7;  // cached and dirty
  r.app->OnMemoryFault(CatchFault);
  const pid_t mem0 = r.rack.Pid("mem0");
  REQUIRE(mem0 > 0);
  REQUIRE(kill(mem0, SIGKILL) == 0);
  REQUIRE(r.rack.WaitForState("mem0", "failed"));
  // A page never fetched cannot be read from anywhere: the access faults, with the cause.
  REQUIRE(Faults(base + kBudget + 5));
  REQUIRE(g_fault.address == base + kBudget + 5);
  REQUIRE(g_fault.cause == FaultCause::kElementFailed);
  REQUIRE(std::string(g_fault.element) == "mem0");
  // The cached page goes too, once the rack told this process (its data is not in the rack:
  // reading the stale copy on would hide the loss).
  bool faulted = false;
  for (int i = 0; i < 1000 && !faulted; ++i) {
    faulted = Faults(base);
    if (!faulted) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(faulted);
  REQUIRE(g_fault.address == base);
  REQUIRE(g_fault.cause == FaultCause::kElementFailed);
  REQUIRE(std::string(g_fault.element) == "mem0");
  absl::Status flushed = r.app->Flush(base, kPage);
  REQUIRE(absl::IsUnavailable(flushed));
  REQUIRE(std::string(flushed.message()).find("mem0") != std::string::npos);
}

// Starts `rack` (one compute element with a 256 KiB cache, one memory element that the monitor
// would fail only after 20 s of silence) and joins it, waiting at most 300 ms for an element:
// when the element stops answering, only the application's timeouts tell.
absl::StatusOr<std::unique_ptr<Rack>> JoinImpatient(TestRack& rack) {
  if (rack.Up("--compute 1 --memory 1 --pool-size 16M --cache-budget 256K "
              "--silence-ms 20000") != 0) {
    return absl::InternalError("the rack did not start");
  }
  JoinOptions options;
  options.rack_dir = rack.dir();
  options.element = "cpu0";
  options.timeout = absl::Milliseconds(300);
  return Rack::Join(options);
}

TEST_CASE("A run read ahead that the memory element did not answer is forgotten, not poisoned") {
  // A 2 MiB cache, so that a stream reads a run ahead; a memory element the monitor would fail
  // only after 20 s of silence, and requests that wait at most 300 ms.
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 32M --cache-budget 2M "
                  "--silence-ms 20000") == 0);
  JoinOptions options;
  options.rack_dir = rack.dir();
  options.element = "cpu0";
  options.timeout = absl::Milliseconds(300);
  auto app = Rack::Join(options);
  REQUIRE(app.ok());
  const uint64_t bytes = 8 << 20;
  auto region = (*app)->Map(bytes);
  REQUIRE(region.ok());
  uint64_t* words = region->as<uint64_t>();
  for (uint64_t i = 0; i < bytes / 8; ++i) words[i] = Pattern(i, 9);
  REQUIRE((*app)->Flush(words, bytes).ok());
  // Read from the start until a page is not cached: by then the stream reads runs ahead.
  const uint8_t* base = region->as<uint8_t>();
  (*app)->OnMemoryFault(CatchFault);
  uint64_t page = 0;
  while (page < 64 || (*app)->cache_stats().read_ahead == 0) {
    REQUIRE_FALSE(Faults(base + page * kPage));
    ++page;
  }
  REQUIRE(kill(rack.Pid("mem0"), SIGSTOP) == 0);
  // The stream goes on into pages not cached: the faulting run and the run after it are
  // asked for and not answered. The faulting page faults (the element did not answer).
  uint64_t first = page;
  while (!Faults(base + first * kPage)) ++first;
  REQUIRE(g_fault.cause == FaultCause::kElementFailed);
  REQUIRE(kill(rack.Pid("mem0"), SIGCONT) == 0);
  // The run after it was only read ahead: forgotten, its first page (and so the others) is
  // read again, with its data.
  const uint64_t later = first + JoinOptions().readahead_pages;
  REQUIRE(later * kPage < bytes);
  REQUIRE_FALSE(Faults(base + later * kPage));
  REQUIRE(words[later * kPage / 8] == Pattern(later * kPage / 8, 9));
  app->reset();
}

TEST_CASE("A dirty page whose write-back fails faults with kLost, never as zeros or old data") {
  TestRack rack;
  auto app = JoinImpatient(rack);
  REQUIRE(app.ok());
  constexpr uint64_t kCache = 256 << 10;
  auto region = (*app)->Map(2 * kCache);
  REQUIRE(region.ok());
  uint8_t* base = region->as<uint8_t>();
  for (uint64_t p = 0; p < kCache / kPage; ++p) base[p * kPage] = 1;  // the cache, all dirty
  (*app)->OnMemoryFault(CatchFault);
  const pid_t mem0 = rack.Pid("mem0");
  REQUIRE(kill(mem0, SIGSTOP) == 0);
  // A Flush that fails leaves its pages dirty: page 0 is still to be written back (had the
  // Flush marked it clean, its eviction below would drop it and a touch fault as
  // kElementFailed, not kLost).
  const absl::Status flushed = (*app)->Flush(base, kPage);
  INFO(flushed);
  REQUIRE((absl::IsUnavailable(flushed) || absl::IsDeadlineExceeded(flushed)));
  // A new page needs room: the oldest pages are evicted, their write-backs fail.
  REQUIRE(Faults(base + kCache));
  REQUIRE(g_fault.cause == FaultCause::kElementFailed);
  REQUIRE(Faults(base));
  REQUIRE(g_fault.address == base);
  REQUIRE(g_fault.cause == FaultCause::kLost);
  REQUIRE(std::string(g_fault.element) == "mem0");
  REQUIRE(absl::IsDataLoss((*app)->Flush(base, kPage)));
  REQUIRE(kill(mem0, SIGCONT) == 0);
  app->reset();
}

TEST_CASE("JoinOptions::timeout bounds the wait for a memory element that stopped answering") {
  TestRack rack;
  auto app = JoinImpatient(rack);
  REQUIRE(app.ok());
  auto region = (*app)->Map(16 * kPage);
  REQUIRE(region.ok());
  (*app)->OnMemoryFault(CatchFault);
  const pid_t mem0 = rack.Pid("mem0");
  REQUIRE(kill(mem0, SIGSTOP) == 0);
  const auto start = std::chrono::steady_clock::now();
  const bool faulted = Faults(region->as<uint8_t>() + 5 * kPage);
  const auto waited = std::chrono::steady_clock::now() - start;
  REQUIRE(kill(mem0, SIGCONT) == 0);
  REQUIRE(faulted);
  REQUIRE(g_fault.cause == FaultCause::kElementFailed);
  // 300 ms asked; the default would be 5 s. Generous, for a loaded machine.
  REQUIRE(waited < std::chrono::seconds(3));
  app->reset();
}

TEST_CASE("When the Rack MMU dies, Map fails clearly and mapped memory stays usable") {
  JoinedRack r;
  auto region = r.app->Map(2 * kBudget);
  REQUIRE(region.ok());
  uint64_t* words = region->as<uint64_t>();
  for (uint64_t i = 0; i < 2 * kBudget / 8; i += 512) words[i] = i + 1;
  const pid_t mmu = r.rack.Pid("mmu");
  REQUIRE(mmu > 0);
  REQUIRE(kill(mmu, SIGKILL) == 0);
  while (ProcessAlive(mmu)) usleep(1000);
  auto more = r.app->Map(kPage);
  REQUIRE(absl::IsUnavailable(more.status()));
  // The memory elements still serve what they were programmed with: evictions and faults
  // go on without the Rack MMU.
  uint64_t wrong = 0;
  for (int pass = 0; pass < 2; ++pass) {
    for (uint64_t i = 0; i < 2 * kBudget / 8; i += 512) wrong += words[i] != i + 1;
  }
  REQUIRE(wrong == 0);
  REQUIRE(r.app->Flush(words, 2 * kBudget).ok());
}

TEST_CASE("Join explains what is missing") {
  ::unsetenv("DISAGG_RACK");
  ::unsetenv("DISAGG_ELEMENT");
  JoinOptions options;
  auto nothing = Rack::Join(options);
  REQUIRE(absl::IsInvalidArgument(nothing.status()));
  REQUIRE(std::string(nothing.status().message()).find("no rack to join") != std::string::npos);
  options.rack_dir = "/nonexistent/rack";
  REQUIRE(absl::IsInvalidArgument(Rack::Join(options).status()));  // no element named
  for (int threads : {0, -1, 65}) {
    options.element = "cpu0";
    options.fault_threads = threads;
    INFO("fault_threads " << threads);
    REQUIRE(absl::IsInvalidArgument(Rack::Join(options).status()));
  }
  options.fault_threads = 1;
  for (int pages : {0, -1, 129}) {
    options.readahead_pages = pages;
    INFO("readahead_pages " << pages);
    absl::Status refused = Rack::Join(options).status();
    REQUIRE(absl::IsInvalidArgument(refused));
    REQUIRE(std::string(refused.message()).find("readahead_pages") != std::string::npos);
  }
  options.readahead_pages = JoinOptions().readahead_pages;
  options.rack_dir = "/nonexistent/rack";
  options.element = "cpu0";
  auto no_rack = Rack::Join(options);
  REQUIRE(no_rack.status().code() == absl::StatusCode::kUnavailable);
  REQUIRE(std::string(no_rack.status().message()).find("Rack MMU") != std::string::npos);
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M") == 0);
  options.rack_dir = rack.dir();
  options.element = "cpu9";
  auto no_element = Rack::Join(options);
  REQUIRE(no_element.status().code() == absl::StatusCode::kUnavailable);
  REQUIRE(std::string(no_element.status().message()).find("cpu9") != std::string::npos);
  options.element = "cpu0";
  auto joined = Rack::Join(options);
  REQUIRE(joined.ok());
  auto twice = Rack::Join(options);
  REQUIRE(twice.status().code() == absl::StatusCode::kFailedPrecondition);
  // Sizes through the library: rounded up to pages; nothing, or more than a window, refused.
  auto one = (*joined)->Map(1);
  REQUIRE(one.ok());
  REQUIRE(one->size() == 4096);
  auto odd = (*joined)->Map(4097);
  REQUIRE(odd.ok());
  REQUIRE(odd->size() == 8192);
  REQUIRE(absl::IsInvalidArgument((*joined)->Map(0).status()));
  REQUIRE(absl::IsInvalidArgument((*joined)->Map((*joined)->window_bytes() + 1).status()));
}

TEST_CASE("A fork()ed child does not inherit the rack range") {
  JoinedRack r;
  absl::StatusOr<Region> region = r.app->Map(64 * kPage);
  REQUIRE(region.ok());
  region->as<uint64_t>()[0] = 42;
  const pid_t child = fork();
  if (child == 0) {
    // Not mapped in the child at all (not even as zero-filled memory): mincore says so.
    unsigned char resident = 0;
    const bool unmapped = ::mincore(region->data(), kPage, &resident) != 0 && errno == ENOMEM;
    _exit(unmapped ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  REQUIRE(region->as<uint64_t>()[0] == 42);  // the parent's memory is untouched
}

TEST_CASE("Unmap drops cached pages without writing them back") {
  JoinedRack r;
  absl::StatusOr<Region> region = r.app->Map(16 * kPage);
  REQUIRE(region.ok());
  uint64_t* words = region->as<uint64_t>();
  for (uint64_t i = 0; i < 16 * kPage / 8; ++i) words[i] = i;  // dirty in the cache
  const uint64_t before = r.app->cache_stats().writebacks;
  REQUIRE(r.app->Unmap(region->data()).ok());
  REQUIRE(r.app->cache_stats().writebacks == before);
  REQUIRE(r.app->cache_stats().cached_bytes == 0);
}

TEST_CASE(
    "A redo log commits atomically and refuses bad areas and writes and damaged logs clearly") {
  JoinedRack r;
  absl::StatusOr<Region> region = r.app->Map(64 * kPage);
  REQUIRE(region.ok());
  char* base = region->as<char>();
  char* area = base;
  const size_t area_bytes = 4 * kPage;
  uint64_t* data = reinterpret_cast<uint64_t*>(base + area_bytes);

  // Bad areas.
  REQUIRE(RedoLog::Format(*r.app, base + 8, area_bytes).status().code() ==
          absl::StatusCode::kInvalidArgument);
  REQUIRE(RedoLog::Format(*r.app, base, kPage).status().code() ==
          absl::StatusCode::kInvalidArgument);
  void* unmapped = reinterpret_cast<void*>(r.app->window_base() + r.app->window_bytes() / 2);
  REQUIRE(RedoLog::Format(*r.app, unmapped, area_bytes).status().code() ==
          absl::StatusCode::kInvalidArgument);
  absl::StatusOr<RedoLog> none = RedoLog::Recover(*r.app, area, area_bytes);  // zero-filled: no log
  REQUIRE(none.status().code() == absl::StatusCode::kInvalidArgument);
  REQUIRE(std::string(none.status().message()).find("no redo log") != std::string::npos);

  absl::StatusOr<RedoLog> log = RedoLog::Format(*r.app, area, area_bytes);
  INFO(log.status());
  REQUIRE(log.ok());
  REQUIRE(log->capacity_bytes() == area_bytes - RedoLog::kHeaderBytes);

  // Writes are staged: nothing changes until Commit.
  REQUIRE(log->Set(&data[0], uint64_t{7}).ok());
  REQUIRE(log->Set(&data[600], uint64_t{8}).ok());  // another page
  REQUIRE(data[0] == 0);
  REQUIRE(log->Commit().ok());
  REQUIRE(data[0] == 7);
  REQUIRE(data[600] == 8);
  REQUIRE(log->committed() == 1);

  // Bad writes are refused and stage nothing.
  const uint64_t one = 1;
  REQUIRE(log->Write(&data[1], &one, 0).code() == absl::StatusCode::kInvalidArgument);
  REQUIRE(log->Write(area + kPage, &one, sizeof(one)).code() == absl::StatusCode::kInvalidArgument);
  std::vector<char> big(area_bytes);
  REQUIRE(log->Write(&data[1], big.data(), big.size()).code() ==
          absl::StatusCode::kResourceExhausted);
  REQUIRE(log->staged_bytes() == 0);

  // A target this process does not own: refused before anything commits.
  REQUIRE(log->Set(&data[0], uint64_t{9}).ok());
  REQUIRE(log->Set(static_cast<uint64_t*>(unmapped), uint64_t{9}).ok());
  REQUIRE(log->Commit().code() == absl::StatusCode::kInvalidArgument);
  REQUIRE(log->committed() == 1);
  REQUIRE(data[0] == 7);
  REQUIRE(log->staged_bytes() > 0);  // the writes stay staged
  log->Abort();
  REQUIRE(log->staged_bytes() == 0);
  REQUIRE(log->Commit().ok());  // nothing staged: nothing to do
  REQUIRE(log->committed() == 1);

  // Recovering a log that needs nothing changes nothing.
  RecoveryReport report;
  absl::StatusOr<RedoLog> again = RedoLog::Recover(*r.app, area, area_bytes, &report);
  REQUIRE(again.ok());
  REQUIRE(report.committed == 1);
  REQUIRE_FALSE(report.redone);
  REQUIRE(data[0] == 7);

  // Another size than the one formatted: refused, so no write can land past the area.
  absl::StatusOr<RedoLog> resized = RedoLog::Recover(*r.app, area, area_bytes + kPage);
  REQUIRE(resized.status().code() == absl::StatusCode::kDataLoss);
  REQUIRE(std::string(resized.status().message()).find("formatted for an area of") !=
          std::string::npos);

  // A header slot damaged (as by a write torn mid-copy): the other slot, written just before
  // it, still recovers the log; the page is put back as it was after each.
  uint64_t* slot0 = reinterpret_cast<uint64_t*>(area);
  uint64_t* slot1 = reinterpret_cast<uint64_t*>(area + 128);
  std::vector<char> header(area, area + kPage);
  for (uint64_t* slot : {slot0, slot1}) {
    std::memcpy(area, header.data(), kPage);
    slot[4] += 0x1000;  // the committed count
    absl::StatusOr<RedoLog> fallback = RedoLog::Recover(*r.app, area, area_bytes);
    INFO(fallback.status());
    REQUIRE(fallback.ok());
    REQUIRE(fallback->committed() == 1);
    REQUIRE(data[0] == 7);
    REQUIRE(data[600] == 8);
  }
  // Both damaged: refused, not trusted.
  std::memcpy(area, header.data(), kPage);
  slot0[4] += 0x1000;
  slot1[4] += 0x1000;
  absl::StatusOr<RedoLog> damaged = RedoLog::Recover(*r.app, area, area_bytes);
  REQUIRE(damaged.status().code() == absl::StatusCode::kDataLoss);
  REQUIRE(std::string(damaged.status().message()).find("does not check out") != std::string::npos);
}

TEST_CASE("A compute element with no cache left to lease refuses a new process clearly") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M --cache-budget 64K") == 0);
  JoinOptions options;
  options.rack_dir = rack.dir();
  options.element = "cpu0";
  auto app = Rack::Join(options);  // takes the whole 64 KiB: nothing is left to share
  REQUIRE(app.ok());
  // Each time the refusal reaches Join, not a hang-up that ends the process.
  for (int i = 0; i < 10; ++i) {
    Peer peer(rack.dir(), "cpu0");
    INFO(peer.error());
    REQUIRE_FALSE(peer.ok());
    REQUIRE(peer.error().find("error RESOURCE_EXHAUSTED compute element cpu0 refused this "
                              "process: cpu0: its cache budget of 65536 bytes is shared by 1 "
                              "processes already") != std::string::npos);
  }
}

}  // namespace
}  // namespace disagg::testing
