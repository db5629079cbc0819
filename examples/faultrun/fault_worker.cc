// fault_worker: the built-in workload of scripts/fault-run, one process of it. It writes,
// flushes, grants, steals and reads back rack memory while the rack is broken around it, and
// logs what it did and what it saw to <run>/w<slot>.<gen>.log, one line per write(2), for
// the orchestrator to check:
//
//   joined ID MS                 its rack id, once it is in the trust group "fault-run"
//   writing V / flushed V MS     each version of its region, before it is written / once
//                                Flush returned
//   event KIND ... MS            each rack event (peer-failed ID, memory-failed ELEMENT
//                                OWNER, fenced, granted FROM ADDR BYTES)
//   grant TO ok|error WHY        a 64 KiB piece it wrote and granted to the next worker
//   received FROM ok|fault WHY   such a piece, read back
//   steal FROM ok N|error WHY    a failed peer's region, taken and read back (N words set)
//   fault CAUSE ADDR WHERE       a touch the rack refused
//   violation WHAT               a read that returned data nobody wrote
//   stopped                      it saw <run>/stop and left the rack
//
// Every word it writes says who wrote it, which version, and where: a read of anything else
// (but zero, for never-written memory) is a violation. The words of a stolen region must be
// its owner's, of a version the owner had started writing.
//
//   fault_worker --run DIR --slot K --gen G [--bytes 1048576] [--sabotage none|reads]
//
// --sabotage reads makes it write one word of a version it never announces, so that the
// checks can be seen to fail.
#include <fcntl.h>
#include <setjmp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "disagg/disagg.h"

namespace {

constexpr uint64_t kStride = 64;      // words: one word in 512 bytes is written and read
constexpr size_t kPiece = 64 * 1024;  // what each grant hands on
constexpr int kGrantEvery = 3;        // versions between grants
constexpr uint64_t kMagic = 0xFA;

uint64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// writer (12 bits), version (24 bits), and a hash of the address (20 bits), under a magic byte.
uint64_t AddrHash(uintptr_t addr) { return ((addr >> 3) * 0x9E3779B97F4A7C15ull) >> 44; }
uint64_t Tag(uint32_t writer, uintptr_t addr, uint64_t version) {
  return kMagic << 56 | (uint64_t{writer} & 0xFFF) << 44 | (version & 0xFFFFFF) << 20 |
         AddrHash(addr);
}
struct Decoded {
  bool valid = false;
  uint32_t writer = 0;
  uint64_t version = 0;
};
Decoded Decode(uint64_t word, uintptr_t addr) {
  Decoded d;
  if (word >> 56 != kMagic || (word & 0xFFFFF) != AddrHash(addr)) return d;
  d.valid = true;
  d.writer = static_cast<uint32_t>(word >> 44 & 0xFFF);
  d.version = word >> 20 & 0xFFFFFF;
  return d;
}

int g_log = -1;
void Log(const std::string& line) {
  const std::string out = line + "\n";
  (void)!::write(g_log, out.data(), out.size());
}

std::string Hex(uintptr_t v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%" PRIxPTR, v);
  return buf;
}

// A touch the rack refuses leaves the guarded section by siglongjmp (the fault handler runs
// on the faulting thread, and only the main thread touches rack memory).
sigjmp_buf g_jmp;
volatile bool g_armed = false;
volatile disagg::FaultCause g_cause;
volatile uintptr_t g_fault_addr;
void OnFault(const disagg::MemoryFault& fault) {
  if (!g_armed) return;  // not ours to handle: the default message and SIGBUS
  g_armed = false;
  g_cause = fault.cause;
  g_fault_addr = reinterpret_cast<uintptr_t>(fault.address);
  siglongjmp(g_jmp, 1);
}

// Runs `f` (which must hold nothing that needs destroying); false if a touch faulted, after
// logging it.
template <typename F>
bool Guarded(const char* where, F&& f) {
  if (sigsetjmp(g_jmp, 1) != 0) {
    Log(std::string("fault ") + disagg::FaultCauseName(g_cause) + " " + Hex(g_fault_addr) + " " +
        where);
    return false;
  }
  g_armed = true;
  f();
  g_armed = false;
  return true;
}

struct Options {
  std::string run;
  int slot = -1;
  int gen = 0;
  size_t bytes = 1 << 20;
  bool sabotage_reads = false;
};

bool ParseArgs(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return false;
    const std::string v = argv[++i];
    if (a == "--run") {
      o.run = v;
    } else if (a == "--slot") {
      o.slot = std::atoi(v.c_str());
    } else if (a == "--gen") {
      o.gen = std::atoi(v.c_str());
    } else if (a == "--bytes") {
      o.bytes = std::strtoull(v.c_str(), nullptr, 10);
    } else if (a == "--sabotage") {
      if (v != "none" && v != "reads") return false;
      o.sabotage_reads = v == "reads";
    } else {
      return false;
    }
  }
  return !o.run.empty() && o.slot >= 0 && o.bytes >= kPiece && o.bytes % 4096 == 0;
}

// The newest rack id the orchestrator's roster (<run>/roster: "slot id pid" lines) gives
// each slot.
std::map<int, uint32_t> Roster(const std::string& run) {
  std::map<int, uint32_t> ids;
  std::ifstream in(run + "/roster");
  int slot;
  uint32_t id;
  long pid;
  while (in >> slot >> id >> pid) ids[slot] = id;
  return ids;
}

// The highest version worker `id` announced, from its log (0 if none): the log, of any slot
// and generation, whose "joined" line names it.
uint64_t MaxWritten(const std::string& run, uint32_t id) {
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(run, error)) {
    const std::string name = entry.path().filename().string();
    if (name.size() < 5 || name[0] != 'w' || name.substr(name.size() - 4) != ".log") continue;
    std::ifstream in(entry.path());
    uint64_t max = 0;
    bool mine = false;
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream l(line);
      std::string word;
      uint64_t value = 0;
      l >> word >> value;
      if (word == "joined") mine = value == id;
      if (mine && word == "writing" && value > max) max = value;
    }
    if (mine) return max;
  }
  return 0;
}

struct Pending {
  disagg::EventKind kind;
  uint32_t process;
  uintptr_t address;
  size_t size;
};

class Worker {
 public:
  Worker(Options o, std::unique_ptr<disagg::Rack> rack)
      : o_(std::move(o)), rack_(std::move(rack)) {}

  int Run() {
    rack_->OnMemoryFault(OnFault);
    rack_->OnEvent([this](const disagg::Event& e) { OnEvent(e); });
    if (absl::Status s = rack_->JoinGroup("fault-run"); !s.ok()) return GiveUp("join group", s);
    if (!MapMain()) return GiveUp("map", absl::OkStatus());
    Log("joined " + std::to_string(rack_->self()) + " " + std::to_string(NowMs()));
    const std::string stop = o_.run + "/stop";
    for (uint64_t version = 1; !fenced_.load(); ++version) {
      struct stat st;
      if (::stat(stop.c_str(), &st) == 0) break;
      HandleEvents();
      if (main_ == nullptr && !MapMain()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      if (!WriteVersion(version)) continue;
      if (version % kGrantEvery == 0) GrantPiece(version);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (fenced_.load()) {
      Log("fenced-exit");
      // Declared failed: the rack refuses it for good. Leave as a crashed process would.
      std::_Exit(0);
    }
    Log("stopped");
    rack_.reset();
    return 0;
  }

 private:
  int GiveUp(const char* what, const absl::Status& s) {
    Log(std::string("gave-up ") + what + ": " + std::string(s.message()));
    return 1;
  }

  bool MapMain() {
    absl::StatusOr<disagg::Region> r = rack_->Map(o_.bytes);
    if (!r.ok()) {
      Log("map error " + std::string(r.status().message()));
      return false;
    }
    if (absl::Status s = rack_->Publish("main", r->data()); !s.ok()) {
      Log("publish error " + std::string(s.message()));
      (void)rack_->Unmap(r->data());
      return false;
    }
    main_ = r->as<volatile uint64_t>();
    return true;
  }

  // Declared failed (refused as fenced, or its memory stolen): nothing more to do here. The
  // first time is logged, for the check that the rack did declare it failed.
  void MarkFenced(const char* how) {
    if (!fenced_.exchange(true)) Log("fenced-at " + std::to_string(NowMs()) + " " + how);
  }

  // A fault in the main region: what the rack refused, and what the worker does about it.
  void MainFaulted() {
    switch (g_cause) {
      case disagg::FaultCause::kFenced:
      case disagg::FaultCause::kRevoked:
        MarkFenced(g_cause == disagg::FaultCause::kFenced ? "fault" : "revoked");
        break;
      default:
        // Its memory element failed or cannot be reached: a fresh region, elsewhere.
        (void)rack_->Unmap(const_cast<uint64_t*>(main_));
        main_ = nullptr;
    }
  }

  bool WriteVersion(uint64_t version) {
    Log("writing " + std::to_string(version));
    volatile uint64_t* words = main_;
    const uint64_t n = o_.bytes / 8;
    const uint32_t self = rack_->self();
    const bool sabotage = o_.sabotage_reads;
    if (!Guarded("write", [&] {
          for (uint64_t i = 0; i < n; i += kStride) {
            words[i] = Tag(self, reinterpret_cast<uintptr_t>(&words[i]), version);
          }
          // The last word the pass wrote: left at the memory element until the next pass reaches
          // it.
          if (sabotage)
            words[n - kStride] =
                Tag(self, reinterpret_cast<uintptr_t>(&words[n - kStride]), version + 7);
        })) {
      MainFaulted();
      return false;
    }
    if (absl::Status s = rack_->Flush(const_cast<uint64_t*>(words), o_.bytes); !s.ok()) {
      Log("flush error " + std::string(s.message()));
      if (absl::IsFailedPrecondition(s)) MarkFenced("flush");
      return false;
    }
    Log("flushed " + std::to_string(version) + " " + std::to_string(NowMs()));
    // Read back through the cache, which is smaller than the region: most of it comes from
    // the memory elements.
    volatile uint64_t bad = 0, first_bad = 0, first_word = 0;
    if (!Guarded("read", [&] {
          for (uint64_t i = 0; i < n; i += kStride) {
            const uint64_t w = words[i];
            if (w != Tag(self, reinterpret_cast<uintptr_t>(&words[i]), version)) {
              if (bad == 0) {
                first_bad = reinterpret_cast<uintptr_t>(&words[i]);
                first_word = w;
              }
              bad = bad + 1;
            }
          }
        })) {
      MainFaulted();
      return false;
    }
    if (bad != 0) {
      Log("violation read-back of version " + std::to_string(version) + ": " + std::to_string(bad) +
          " words wrong, first at " + Hex(first_bad) + " = " + Hex(first_word));
    }
    return true;
  }

  void GrantPiece(uint64_t version) {
    std::map<int, uint32_t> roster = Roster(o_.run);
    uint32_t to = 0;
    for (int step = 1; step < 64 && to == 0; ++step) {
      auto it = roster.find((o_.slot + step) % 64);
      if (it != roster.end() && it->second != rack_->self() && !failed_peers_.count(it->second)) {
        to = it->second;
      }
    }
    if (to == 0) return;
    absl::StatusOr<disagg::Region> piece = rack_->Map(kPiece);
    if (!piece.ok()) return;
    auto* words = piece->as<volatile uint64_t>();
    const uint32_t self = rack_->self();
    if (!Guarded("piece", [&] {
          for (uint64_t i = 0; i < kPiece / 8; i += kStride) {
            words[i] = Tag(self, reinterpret_cast<uintptr_t>(&words[i]), version);
          }
        })) {
      (void)rack_->Unmap(piece->data());
      return;
    }
    if (absl::Status s = rack_->Grant(piece->data(), kPiece, to); !s.ok()) {
      Log("grant " + std::to_string(to) + " error " + std::string(s.message()));
      (void)rack_->Unmap(piece->data());
      return;
    }
    Log("grant " + std::to_string(to) + " ok " + Hex(reinterpret_cast<uintptr_t>(piece->data())) +
        " v" + std::to_string(version));
  }

  void OnEvent(const disagg::Event& e) {
    const std::string ms = std::to_string(NowMs());
    switch (e.kind) {
      case disagg::EventKind::kPeerFailed:
        Log("event peer-failed " + std::to_string(e.process) + " " + ms);
        break;
      case disagg::EventKind::kMemoryFailed:
        Log("event memory-failed " + e.element + " " + std::to_string(e.process) + " " + ms);
        break;
      case disagg::EventKind::kFenced:
        Log("event fenced " + ms);
        MarkFenced("event");
        return;
      case disagg::EventKind::kGranted:
        Log("event granted " + std::to_string(e.process) + " " +
            Hex(reinterpret_cast<uintptr_t>(e.address)) + " " + std::to_string(e.size));
        break;
      case disagg::EventKind::kRevoked:
        Log("event revoked " + std::to_string(e.process) + " " +
            Hex(reinterpret_cast<uintptr_t>(e.address)) + " " + std::to_string(e.size));
        break;
    }
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back({e.kind, e.process, reinterpret_cast<uintptr_t>(e.address), e.size});
  }

  void HandleEvents() {
    std::deque<Pending> events;
    {
      std::lock_guard<std::mutex> lock(mu_);
      events.swap(pending_);
    }
    for (const Pending& e : events) {
      if (e.kind == disagg::EventKind::kGranted) {
        VerifyReceived(e);
      } else if (e.kind == disagg::EventKind::kPeerFailed) {
        failed_peers_.insert(e.process);
        Adopt(e.process);
      }
    }
  }

  // A piece granted to this worker holds one version of its giver's, whole.
  void VerifyReceived(const Pending& e) {
    auto* words = reinterpret_cast<volatile uint64_t*>(e.address);
    volatile uint64_t bad = 0, version = 0;
    const uint32_t from = e.process;
    const size_t n = e.size / 8;
    const bool ok = Guarded("received", [&] {
      for (uint64_t i = 0; i < n; i += kStride) {
        const Decoded d = Decode(words[i], reinterpret_cast<uintptr_t>(&words[i]));
        if (i == 0) version = d.version;
        if (!d.valid || d.writer != (from & 0xFFF) || d.version != version) bad = bad + 1;
      }
    });
    if (ok && bad != 0) {
      Log("violation received from " + std::to_string(from) + " at " + Hex(e.address) + ": " +
          std::to_string(bad) + " words are not one version of its");
    }
    Log("received " + std::to_string(from) + (ok ? " ok" : " fault"));
    (void)rack_->Unmap(reinterpret_cast<void*>(e.address));
  }

  // A failed peer's region, taken: every word its own, of a version it had begun to write,
  // or zero.
  void Adopt(uint32_t from) {
    absl::StatusOr<void*> root = rack_->Lookup(from, "main");
    if (!root.ok()) {
      Log("steal " + std::to_string(from) + " error " + std::string(root.status().message()));
      return;
    }
    absl::StatusOr<disagg::Region> r = rack_->Steal(from, *root, o_.bytes);
    if (!r.ok()) {
      Log("steal " + std::to_string(from) + " error " + std::string(r.status().message()));
      return;
    }
    const uint64_t max = MaxWritten(o_.run, from);
    auto* words = r->as<volatile uint64_t>();
    const size_t n = o_.bytes / 8;
    volatile uint64_t bad = 0, set = 0, first_bad = 0, first_word = 0;
    const bool ok = Guarded("stolen", [&] {
      for (uint64_t i = 0; i < n; i += kStride) {
        const uint64_t w = words[i];
        if (w == 0) continue;
        const Decoded d = Decode(w, reinterpret_cast<uintptr_t>(&words[i]));
        if (!d.valid || d.writer != (from & 0xFFF) || d.version > max || d.version == 0) {
          if (bad == 0) {
            first_bad = reinterpret_cast<uintptr_t>(&words[i]);
            first_word = w;
          }
          bad = bad + 1;
        } else {
          set = set + 1;
        }
      }
    });
    if (ok && bad != 0) {
      Log("violation stolen from " + std::to_string(from) + ": " + std::to_string(bad) +
          " words nobody wrote (it announced up to version " + std::to_string(max) +
          "), first at " + Hex(first_bad) + " = " + Hex(first_word));
    }
    Log("steal " + std::to_string(from) + (ok ? " ok " + std::to_string(set) : " fault"));
    (void)rack_->Unmap(r->data());
  }

  Options o_;
  std::unique_ptr<disagg::Rack> rack_;
  volatile uint64_t* main_ = nullptr;
  std::atomic<bool> fenced_{false};
  std::mutex mu_;
  std::deque<Pending> pending_;
  std::set<uint32_t> failed_peers_;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseArgs(argc, argv, o)) {
    std::fprintf(stderr,
                 "usage: fault_worker --run DIR --slot K --gen G [--bytes N (a multiple of 4096, "
                 "at least 65536)] [--sabotage none|reads]\n");
    return 2;
  }
  const std::string log =
      o.run + "/w" + std::to_string(o.slot) + "." + std::to_string(o.gen) + ".log";
  g_log = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (g_log < 0) {
    std::fprintf(stderr, "fault_worker: cannot open %s: %s\n", log.c_str(), std::strerror(errno));
    return 2;
  }
  disagg::JoinOptions join;
  join.name = "w" + std::to_string(o.slot);
  // Short enough that a partition longer than this shows as an unreachable element.
  join.timeout = absl::Seconds(1);
  absl::StatusOr<std::unique_ptr<disagg::Rack>> rack = disagg::Rack::Join(join);
  if (!rack.ok()) {
    Log("gave-up join: " + std::string(rack.status().message()));
    return 1;
  }
  return Worker(std::move(o), std::move(*rack)).Run();
}
