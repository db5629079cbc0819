// fault_run: a workload under a seeded random schedule of faults, in a running rack, and the
// invariants that must hold through it (scripts/fault-run starts the rack and calls this).
//
// The schedule is a pure function of the seed, the run's length, the rack's shape and the
// silence limit: `fail`, `kill`, `pause`, `partition` and `delay` at set times, named by
// element and by worker slot (never by pid or rack id, which differ from run to run). Its
// digest is printed, so two runs of one seed can be seen to have injected the same faults.
//
// The built-in workload is fault_worker, one per slot, in the trust group "fault-run"; a
// worker that ends is started again in its slot on a healthy compute element. With a
// PROGRAM, that program runs in each slot instead (once: it is not restarted).
//
// The invariants:
//   notified      every process declared failed was told to every worker that was in the
//                 group before it failed and lived to the end (peer-failed), and every
//                 failed memory element to every such worker (memory-failed)
//   reads         no read returned data that was never written (the workers check every
//                 word they read: their own, granted, stolen), and no worker was refused
//                 memory it owned while the rack held it alive
//   fenced        no write-back of a fenced process landed: a memory element's count of a
//                 process's accepted write-backs never grows once it fences it
//   check         `rackctl check`: the Rack MMU and the memory elements agree, at the end
//
// The last line is JSON: seed, seconds, scheduled, faults (injected), violations,
// schedule_digest, and the workload's figures.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "fate_spec.h"
#include "gflags/gflags.h"
#include "status_decode.h"
#include "status_json.capnp.h"

DEFINE_string(rack, "", "the rack's run directory");
DEFINE_string(bin, "", "where rackctl and fault_worker are (default: beside this program)");
DEFINE_string(run_dir, "", "where the workers' logs go (default: <rack>/fault-run)");
DEFINE_uint64(seed, 1, "the schedule's seed");
DEFINE_int32(seconds, 5, "how long faults are injected");
DEFINE_int32(workers, 4, "how many workload processes run at once");
DEFINE_uint64(bytes, 1 << 20, "each worker's region");
DEFINE_int32(silence_ms, 200, "the rack's silence limit (scripts/rack --silence-ms)");
DEFINE_string(sabotage, "none", "none, or reads: workers write data they never announce");
DEFINE_bool(schedule_only, false, "print the schedule and its digest, run nothing");
DEFINE_string(faults, "",
              "a fixed schedule instead of a seeded one: 'MS FAULT; MS FAULT; ...', each FAULT "
              "as rackctl takes it, workers named wK (e.g. '1500 kill w0; 2000 fail mem1')");
DEFINE_bool(respawn, true, "start a worker that ended again in its slot");
DEFINE_string(app, "", "the application the workers belong to (rackctl run --app)");
DEFINE_string(fate, "", "--app's fate-sharing spec (a file), registered before the run");
DEFINE_string(replay, "", "the command that replays this run, for the report (default: this one)");

namespace disagg::faultrun {
namespace {

using Clock = std::chrono::steady_clock;

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// --- The schedule -------------------------------------------------------------------------

// splitmix64: the same numbers for the same seed on every machine and compiler.
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int64_t Between(int64_t lo, int64_t hi) {  // inclusive
    return lo + static_cast<int64_t>(Next() % static_cast<uint64_t>(hi - lo + 1));
  }
  template <typename T>
  const T& Pick(const std::vector<T>& from) {
    return from[Next() % from.size()];
  }

 private:
  uint64_t state_;
};

struct Fault {
  int64_t at_ms = 0;
  std::string kind;  // fail, kill, pause, partition, delay
  std::string a, b;  // the element(s), or the worker slot "wK"
  int64_t micros = 0;
  int64_t for_ms = 0;

  std::string Text() const {
    std::string t = absl::StrCat(kind, " ", a);
    if (!b.empty()) absl::StrAppend(&t, " ", b);
    if (kind == "delay") absl::StrAppend(&t, " ", micros);
    if (for_ms > 0) absl::StrAppend(&t, " --for ", for_ms);
    return t;
  }
};

struct Shape {
  std::vector<std::string> compute, memory;
  int workers = 0;
};

// Faults from 0.4 s to 0.8 s before the end, 150-600 ms apart. Never the last compute or
// memory element is failed (or paused past the silence limit), so the workload always has
// somewhere to run and to keep its memory.
std::vector<Fault> MakeSchedule(uint64_t seed, int seconds, int silence_ms, const Shape& shape) {
  Random rng(seed);
  std::vector<Fault> out;
  std::vector<std::string> compute = shape.compute, memory = shape.memory;
  const int64_t end_ms = std::max<int64_t>(700, seconds * 1000LL - 800);
  auto remove = [](std::vector<std::string>& v, const std::string& name) {
    v.erase(std::find(v.begin(), v.end(), name));
  };
  // Elements that may still be failed: all alive ones of a kind with two or more alive.
  auto failable = [&] {
    std::vector<std::string> v;
    if (compute.size() > 1) v.insert(v.end(), compute.begin(), compute.end());
    if (memory.size() > 1) v.insert(v.end(), memory.begin(), memory.end());
    return v;
  };
  for (int64_t t = 400 + rng.Between(0, 200); t < end_ms; t += rng.Between(150, 600)) {
    Fault f;
    f.at_ms = t;
    const int64_t room = end_ms - t;  // how long a timed fault may last
    std::vector<std::string> all = compute;
    all.insert(all.end(), memory.begin(), memory.end());
    switch (rng.Next() % 12) {
      case 0:
      case 1:
      case 2:
        f.kind = "kill";
        f.a = absl::StrCat("w", rng.Next() % shape.workers);
        break;
      case 3:
      case 4:
      case 5: {
        f.kind = "pause";
        const std::vector<std::string> victims = failable();
        if (rng.Next() % 3 == 0 && !victims.empty() && room > 2 * silence_ms) {
          // Past the silence limit: declared failed.
          f.a = rng.Pick(victims);
          f.for_ms = std::min<int64_t>(room, 2 * silence_ms + rng.Between(0, silence_ms));
          remove(std::find(compute.begin(), compute.end(), f.a) != compute.end() ? compute : memory,
                 f.a);
        } else {
          f.a = rng.Pick(all);  // a stall well inside the limit
          f.for_ms = rng.Between(20, std::max(21, silence_ms / 3));
        }
        break;
      }
      case 6:
      case 7:
        f.kind = "partition";
        f.a = rng.Pick(compute);
        f.b = rng.Next() % 4 == 0 ? "mmu" : rng.Pick(memory);
        f.for_ms = std::min<int64_t>(room, rng.Between(100, 1500));
        break;
      case 8:
      case 9: {
        static const int64_t kMicros[] = {2, 10, 45, 200};
        f.kind = "delay";
        f.a = rng.Pick(all);
        f.micros = kMicros[rng.Next() % 4];
        f.for_ms = std::min<int64_t>(room, rng.Between(200, 800));
        break;
      }
      default: {
        const std::vector<std::string> victims = failable();
        if (victims.empty()) {
          f.kind = "kill";
          f.a = absl::StrCat("w", rng.Next() % shape.workers);
          break;
        }
        f.kind = "fail";
        f.a = rng.Pick(victims);
        remove(std::find(compute.begin(), compute.end(), f.a) != compute.end() ? compute : memory,
               f.a);
      }
    }
    if (f.for_ms > 0 && f.for_ms < 1) f.for_ms = 1;
    out.push_back(f);
  }
  return out;
}

// A fixed schedule: "MS KIND ARGS [--for MS]" entries separated by ';'. False (and why in
// `error`) for an entry that is no fault.
bool ParseFaults(const std::string& text, int seconds, const Shape& shape, std::vector<Fault>& out,
                 std::string& error) {
  const int workers = shape.workers;
  auto element = [&](const std::string& name) {
    return name == "mmu" ||
           std::find(shape.compute.begin(), shape.compute.end(), name) != shape.compute.end() ||
           std::find(shape.memory.begin(), shape.memory.end(), name) != shape.memory.end();
  };
  std::istringstream entries(text);
  std::string entry;
  while (std::getline(entries, entry, ';')) {
    std::istringstream in(entry);
    std::vector<std::string> w;
    for (std::string t; in >> t;) w.push_back(t);
    if (w.empty()) continue;
    Fault f;
    auto number = [&](const std::string& s, int64_t& v) {
      if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos || s.size() > 9) {
        return false;
      }
      v = std::stoll(s);
      return true;
    };
    if (w.size() >= 2 && w[w.size() - 2] == "--for") {
      if (!number(w.back(), f.for_ms) || f.for_ms == 0) {
        error = "'" + entry + "': --for takes milliseconds";
        return false;
      }
      w.resize(w.size() - 2);
    }
    if (w.size() < 3 || !number(w[0], f.at_ms)) {
      error = "'" + entry + "' is not 'MS FAULT ARGS'";
      return false;
    }
    f.kind = w[1];
    f.a = w[2];
    const size_t want = f.kind == "partition" || f.kind == "delay" ? 4 : 3;
    if ((f.kind != "kill" && f.kind != "fail" && f.kind != "pause" && f.kind != "partition" &&
         f.kind != "delay") ||
        w.size() != want) {
      error = "'" + entry +
              "': a fault is kill wK, fail ELEMENT, pause ELEMENT, partition A B or " +
              "delay ELEMENT MICROSECONDS";
      return false;
    }
    if (f.kind == "partition") f.b = w[3];
    if (f.kind == "delay" && !number(w[3], f.micros)) {
      error = "'" + entry + "': delay takes microseconds";
      return false;
    }
    if (f.kind == "kill") {
      int64_t slot = -1;
      if (f.a.size() < 2 || f.a[0] != 'w' || !number(f.a.substr(1), slot) || slot >= workers) {
        error = "'" + entry + "': kill takes a worker slot, w0 to w" + std::to_string(workers - 1);
        return false;
      }
    } else if (!element(f.a) || (f.kind == "partition" && !element(f.b)) ||
               (f.kind != "partition" && f.a == "mmu")) {
      error = "'" + entry + "': no such element in this rack (" +
              absl::StrJoin(shape.compute, ", ") + ", " + absl::StrJoin(shape.memory, ", ") + ")";
      return false;
    }
    if ((f.kind == "kill" || f.kind == "fail") && f.for_ms > 0) {
      error = "'" + entry + "': " + f.kind + " is for good: no --for";
      return false;
    }
    if (f.kind == "pause" && f.for_ms == 0) {
      error = "'" + entry + "': pause needs --for (the run must end with the element resumed)";
      return false;
    }
    if (f.kind == "delay" && (f.micros < 1 || f.micros > 1000000)) {
      error = "'" + entry + "': delay takes 1 to 1000000 microseconds";
      return false;
    }
    if (f.at_ms >= seconds * 1000LL) {
      error = "'" + entry + "' comes after the run's " + std::to_string(seconds) + " s";
      return false;
    }
    if (!out.empty() && f.at_ms < out.back().at_ms) {
      error = "'" + entry + "' comes before the fault ahead of it";
      return false;
    }
    out.push_back(f);
  }
  return true;
}

// The schedule and what shapes its effect (not the seed: two seeds that draw the same faults
// have the same digest).
std::string ScheduleText(int seconds, int silence_ms, const Shape& shape,
                         const std::vector<Fault>& faults) {
  std::string text = absl::StrFormat("seconds %d silence %d compute %s memory %s workers %d\n",
                                     seconds, silence_ms, absl::StrJoin(shape.compute, ","),
                                     absl::StrJoin(shape.memory, ","), shape.workers);
  for (const Fault& f : faults) absl::StrAppendFormat(&text, "%6d ms  %s\n", f.at_ms, f.Text());
  return text;
}

uint64_t Digest(const std::string& text) {  // FNV-1a
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : text) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// --- Processes ----------------------------------------------------------------------------

// Runs argv with stdout and stderr to `out_file` (or captured into `out`); returns its pid.
pid_t Spawn(const std::vector<std::string>& args, const std::string& out_file) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out_file.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

// Runs a command to its end; its exit status (-1 if it could not run) and its output.
int RunCommand(const std::vector<std::string>& args, std::string* out) {
  std::string cmd;
  for (const std::string& a : args) {
    absl::StrAppend(&cmd, "'", absl::StrReplaceAll(a, {{"'", "'\\''"}}), "' ");
  }
  absl::StrAppend(&cmd, "2>&1");
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out->append(buf, n);
  const int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string FirstLine(const std::string& s) {
  const size_t nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

// --- What the rack says -------------------------------------------------------------------

struct ProcessSeen {
  std::string name;
  std::string app;
  int64_t last_alive_ms = -1;  // the last status that listed it alive
  int64_t first_dead_ms = -1;  // the first that listed it dead
  // By memory element: accepted write-backs when the element was first seen fencing it.
  std::map<std::string, uint64_t> fenced_writebacks;
  uint64_t refused = 0;  // the most its elements refused of it, summed
};

struct ElementSeen {
  std::string kind;
  std::string state;
  uint64_t used = 0;
  int64_t last_healthy_ms = -1;
  int64_t failed_ms = -1;
};

class Observer {
 public:
  Observer(std::string rackctl, std::string rack)
      : rackctl_(std::move(rackctl)), rack_(std::move(rack)) {}

  // Reads `rackctl status --json` once; false if it could not.
  bool Poll() {
    // The state read is at least as new as `asked`: what is seen alive was alive then; and
    // what is seen dead or failed was so by the time it is taken.
    const int64_t asked = WallMs();
    std::string out;
    if (RunCommand(
            {rackctl_, "--rack", rack_, "--timeout_ms", "500", "status", "--json", "--memory_rows"},
            &out) != 0) {
      return false;
    }
    return rackctl::DecodeStatusJson(
        out, [&](rackctl::StatusJson::Reader status) { Take(status, asked, WallMs()); });
  }

  void Take(rackctl::StatusJson::Reader status, int64_t asked, int64_t now) {
    for (auto e : status.getElements()) {
      ElementSeen& seen = elements_[e.getName()];
      seen.kind = e.getKind();
      seen.state = e.getState();
      seen.used = e.getUsedBytes();
      if (seen.state == "healthy") seen.last_healthy_ms = asked;
      if (seen.state == "failed" && seen.failed_ms < 0) seen.failed_ms = now;
    }
    for (auto p : status.getProcesses()) {
      ProcessSeen& seen = processes_[p.getId()];
      seen.name = p.getName();
      seen.app = p.getApp();
      if (p.getDead()) {
        if (seen.first_dead_ms < 0) seen.first_dead_ms = now;
      } else if (seen.first_dead_ms < 0) {
        seen.last_alive_ms = asked;
      }
      uint64_t refused = 0;
      for (auto m : p.getMemory()) {
        refused += m.getRefused();
        if (!m.getFenced()) continue;
        auto [it, first] = seen.fenced_writebacks.emplace(m.getElement(), m.getWritebacks());
        if (!first && m.getWritebacks() != it->second) {
          violations_.push_back(absl::StrFormat(
              "fenced: %s accepted write-backs of process %d after fencing it (%d, then %d)",
              std::string(m.getElement()), p.getId(), it->second, m.getWritebacks()));
          it->second = m.getWritebacks();
        }
      }
      seen.refused = std::max(seen.refused, refused);
    }
  }

  // What the memory elements hold, all told.
  uint64_t MemoryUsed() const {
    uint64_t used = 0;
    for (const auto& [name, e] : elements_) {
      if (e.kind == "memory" && e.state == "healthy") used += e.used;
    }
    return used;
  }

  bool Healthy(const std::string& element) const {
    auto it = elements_.find(element);
    return it != elements_.end() && it->second.state == "healthy";
  }
  const std::map<uint32_t, ProcessSeen>& processes() const { return processes_; }
  const std::map<std::string, ElementSeen>& elements() const { return elements_; }
  const std::vector<std::string>& violations() const { return violations_; }

 private:
  std::string rackctl_, rack_;
  std::map<uint32_t, ProcessSeen> processes_;
  std::map<std::string, ElementSeen> elements_;
  std::vector<std::string> violations_;  // fenced writes that landed
};

// --- What the workers said ----------------------------------------------------------------

struct WorkerLog {
  int slot = 0, gen = 0;
  uint32_t id = 0;
  int64_t joined_ms = -1;
  int64_t fenced_ms = -1;  // when it was first refused as fenced (or found its memory stolen)
  bool stopped = false, fenced = false, gave_up = false;
  std::set<uint32_t> told_failed;            // peer-failed
  std::set<std::string> told_memory_failed;  // memory-failed
  std::vector<std::string> violations, odd_faults;
  uint64_t flushed = 0, grants = 0, received = 0, steals = 0;
  uint64_t memory_failed = 0, lost_regions = 0;  // events, and its own regions given up
  std::vector<int64_t> flushed_ms;               // when each version was flushed
};

WorkerLog ReadLog(const std::string& path, int slot, int gen) {
  WorkerLog w;
  w.slot = slot;
  w.gen = gen;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::string word, what;
    l >> word;
    if (word == "joined") {
      l >> w.id >> w.joined_ms;
    } else if (word == "flushed") {
      ++w.flushed;
      int64_t version, ms;
      if (l >> version >> ms) w.flushed_ms.push_back(ms);
    } else if (word == "stopped") {
      w.stopped = true;
    } else if (word == "fenced-exit") {
      w.fenced = true;
    } else if (word == "fenced-at") {
      l >> w.fenced_ms;
    } else if (word == "gave-up") {
      w.gave_up = true;
    } else if (word == "violation") {
      w.violations.push_back(line.substr(10));
    } else if (word == "grant") {
      l >> what >> what;
      if (what == "ok") ++w.grants;
    } else if (word == "received") {
      ++w.received;
    } else if (word == "steal") {
      l >> what >> what;
      if (what == "ok") ++w.steals;
    } else if (word == "fault") {
      l >> what;
      if (what == "not") w.odd_faults.push_back(line);  // not mapped, not yours: never right
      if (what == "memory" && line.find(" write") != std::string::npos) ++w.lost_regions;
      if (what == "memory" && line.find(" read") != std::string::npos) ++w.lost_regions;
      if (what == "fenced" || what == "revoked") w.fenced = true;
    } else if (word == "event") {
      l >> what;
      if (what == "peer-failed") {
        uint32_t id;
        if (l >> id) w.told_failed.insert(id);
      } else if (what == "memory-failed") {
        ++w.memory_failed;
        std::string element;
        if (l >> element) w.told_memory_failed.insert(element);
      } else if (what == "fenced") {
        w.fenced = true;
      }
    }
  }
  return w;
}

// --- The run ------------------------------------------------------------------------------

struct Slot {
  pid_t pid = -1;  // its rackctl run
  int gen = -1;
  bool joined = false;
  uint32_t id = 0;
  std::string element;  // the compute element it runs on
  Clock::time_point respawn_at = Clock::time_point::max();
};

class Run {
 public:
  Run(std::string bin, std::string rack, std::string run_dir, Shape shape,
      std::vector<std::string> program, std::string replay)
      : bin_(std::move(bin)),
        rack_(std::move(rack)),
        dir_(std::move(run_dir)),
        shape_(std::move(shape)),
        program_(std::move(program)),
        replay_(std::move(replay)),
        observer_(bin_ + "/rackctl", rack_),
        slots_(shape_.workers) {}

  // False when the workers' fate spec tells no trust group of failures: then no notices are
  // due.
  void set_notify_checked(bool checked) { notify_checked_ = checked; }

  int Go(const std::vector<Fault>& schedule, uint64_t digest) {
    if (::mkdir(dir_.c_str(), 0755) != 0 && errno != EEXIST) {
      std::fprintf(stderr, "fault_run: cannot make %s: %s\n", dir_.c_str(), std::strerror(errno));
      return 2;
    }
    ::unlink((dir_ + "/stop").c_str());
    if (!observer_.Poll()) {
      std::fprintf(stderr, "fault_run: cannot read the rack's status\n");
      return 2;
    }
    for (int k = 0; k < shape_.workers; ++k) Start(k);
    // The workers join before the first fault: up to 10 s.
    for (auto until = Clock::now() + std::chrono::seconds(10); Clock::now() < until;) {
      Tend();
      if (std::all_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.joined; })) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const Clock::time_point start = Clock::now();
    auto next_poll = start;
    size_t next = 0;
    std::vector<std::string> applied;
    while (true) {
      const int64_t at =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
      if (next < schedule.size() && at >= schedule[next].at_ms) {
        if (next == 0) {
          first_fault_ms_ = WallMs();
          memory_before_ = observer_.MemoryUsed();
        }
        applied.push_back(Apply(schedule[next], at));
        ++next;
        continue;
      }
      if (at >= FLAGS_seconds * 1000LL) break;
      if (Clock::now() >= next_poll) {
        (void)observer_.Poll();
        next_poll = Clock::now() + std::chrono::milliseconds(100);
      }
      Tend();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    faulting_end_ms_ = WallMs();
    memory_after_ = observer_.MemoryUsed();
    alive_after_ = std::count_if(slots_.begin(), slots_.end(),
                                 [](const Slot& s) { return s.pid > 0 && s.joined; });
    run_start_ms_ =
        WallMs() -
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
    // Settle: every timed fault is over; give the rack time to declare and tell.
    std::string out;
    (void)RunCommand({bin_ + "/rackctl", "--rack", rack_, "heal"}, &out);
    for (auto until = Clock::now() + std::chrono::milliseconds(3 * FLAGS_silence_ms + 1000);
         Clock::now() < until;) {
      (void)observer_.Poll();
      Tend();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    Stop();
    (void)observer_.Poll();
    out.clear();
    const int check = RunCommand({bin_ + "/rackctl", "--rack", rack_, "check"}, &out);
    return Report(schedule, digest, applied, check, out);
  }

 private:
  std::string LogPath(int slot, int gen) const {
    return absl::StrCat(dir_, "/w", slot, ".", gen, ".log");
  }

  // The compute element slot `k` runs on: its own, or the next healthy one.
  std::string ElementFor(int k) const {
    const size_t n = shape_.compute.size();
    for (size_t i = 0; i < n; ++i) {
      const std::string& e = shape_.compute[(k + i) % n];
      if (observer_.Healthy(e)) return e;
    }
    return "";
  }

  void Start(int k) {
    Slot& s = slots_[k];
    const std::string element = ElementFor(k);
    s.respawn_at = Clock::time_point::max();
    if (element.empty()) return;  // no compute element left
    ++s.gen;
    s.joined = false;
    s.id = 0;
    s.element = element;
    std::vector<std::string> args = {bin_ + "/rackctl", "--rack", rack_, "run", "--on",
                                     element,           "--"};
    if (!FLAGS_app.empty()) args.insert(args.end() - 1, {"--app", FLAGS_app});
    if (program_.empty()) {
      args.insert(args.end(), {bin_ + "/fault_worker", "--run", dir_, "--slot", std::to_string(k),
                               "--gen", std::to_string(s.gen), "--bytes",
                               std::to_string(FLAGS_bytes), "--sabotage", FLAGS_sabotage});
    } else {
      // Its application names the slot: how its process is known in the rack's status.
      args.insert(args.end() - 1, {"--app", absl::StrCat("fault-run-w", k)});
      args.insert(args.end(), program_.begin(), program_.end());
      s.joined = true;  // nothing to wait for
    }
    s.pid = Spawn(args, absl::StrCat(dir_, "/w", k, ".", s.gen, ".out"));
    if (s.pid < 0) {
      not_started_.push_back(
          absl::StrFormat("slot w%d could not be started: %s", k, std::strerror(errno)));
    }
    ++started_;
  }

  // Reaps ended workers (and starts them again), and notes the ones that joined.
  void Tend() {
    int status;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      for (Slot& s : slots_) {
        if (s.pid != pid) continue;
        s.pid = -1;
        if (!program_.empty() && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
          program_endings_.push_back({static_cast<int>(&s - &slots_[0]), status, s.element});
        }
        if (!stopping_ && program_.empty() && FLAGS_respawn) {
          s.respawn_at = Clock::now() + std::chrono::milliseconds(100);
        }
      }
    }
    for (int k = 0; k < static_cast<int>(slots_.size()); ++k) {
      Slot& s = slots_[k];
      if (s.pid < 0 && !stopping_ && Clock::now() >= s.respawn_at) Start(k);
      if (s.pid < 0 || s.joined) continue;
      WorkerLog w = ReadLog(LogPath(k, s.gen), k, s.gen);
      if (w.joined_ms < 0) continue;
      s.joined = true;
      s.id = w.id;
      std::ofstream(dir_ + "/roster", std::ios::app) << k << " " << w.id << " " << s.pid << "\n";
    }
  }

  // Applies one fault; what became of it, for the report.
  std::string Apply(const Fault& f, int64_t at) {
    std::vector<std::string> args = {bin_ + "/rackctl", "--rack", rack_, f.kind};
    std::string target = f.a;
    if (f.kind == "kill" && !program_.empty()) {
      // A given program's processes are known only to the rack: the K-th one alive.
      std::vector<uint32_t> alive;
      for (const auto& [id, p] : observer_.processes()) {
        if (p.first_dead_ms < 0 && p.last_alive_ms >= 0) alive.push_back(id);
      }
      if (alive.empty()) {
        return absl::StrFormat("%6d ms  %-30s skipped: no process is running", at, f.Text());
      }
      const uint32_t victim = alive[std::stoi(f.a.substr(1)) % alive.size()];
      target = std::to_string(victim);
      killed_apps_.insert(observer_.processes().at(victim).app);
    } else if (f.kind == "kill") {
      const Slot& s = slots_[std::stoi(f.a.substr(1))];
      if (s.pid < 0 || s.id == 0) {
        return absl::StrFormat("%6d ms  %-30s skipped: %s is not running", at, f.Text(), f.a);
      }
      target = std::to_string(s.id);
    }
    args.push_back(target);
    if (!f.b.empty()) args.push_back(f.b);
    if (f.kind == "delay") args.push_back(std::to_string(f.micros));
    if (f.for_ms > 0) args.insert(args.end(), {"--for", std::to_string(f.for_ms)});
    std::string out;
    const int rc = RunCommand(args, &out);
    if (rc == 0) ++injected_;
    return absl::StrFormat("%6d ms  %-30s %s%s", at, f.Text(),
                           f.kind == "kill" ? absl::StrCat("(process ", target, ") ") : "",
                           rc == 0 ? "done" : absl::StrCat("refused: ", FirstLine(out)));
  }

  void Stop() {
    stopping_ = true;
    std::ofstream(dir_ + "/stop") << "stop\n";
    auto running = [&] {
      return std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.pid > 0; });
    };
    for (auto until = Clock::now() + std::chrono::seconds(15); running() && Clock::now() < until;) {
      Tend();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    // What did not stop: its rackctl passes SIGTERM on, then it is killed.
    for (int sig : {SIGTERM, SIGKILL}) {
      for (Slot& s : slots_) {
        if (s.pid > 0) ::kill(s.pid, sig);
      }
      for (auto until = Clock::now() + std::chrono::seconds(3);
           running() && Clock::now() < until;) {
        Tend();
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }

  int Report(const std::vector<Fault>& schedule, uint64_t digest,
             const std::vector<std::string>& applied, int check, const std::string& check_out) {
    std::vector<WorkerLog> logs;
    for (int k = 0; k < static_cast<int>(slots_.size()); ++k) {
      for (int gen = 0; gen <= slots_[k].gen; ++gen)
        logs.push_back(ReadLog(LogPath(k, gen), k, gen));
    }
    // Declared failed: listed dead by the Rack MMU, or told to any worker.
    std::set<uint32_t> declared;
    for (const auto& [id, p] : observer_.processes()) {
      if (p.first_dead_ms >= 0) declared.insert(id);
    }
    for (const WorkerLog& w : logs) declared.insert(w.told_failed.begin(), w.told_failed.end());

    std::vector<std::string> notified, reads, fenced = observer_.violations();
    // notified: each failed worker, to each that was in the group before and lived on.
    uint64_t notices = 0;
    for (const WorkerLog& p : logs) {
      if (p.id == 0 || p.stopped || p.gave_up) continue;  // it left; no failure
      int64_t alive = p.joined_ms;
      if (auto it = observer_.processes().find(p.id); it != observer_.processes().end()) {
        alive = std::max(alive, it->second.last_alive_ms);
      }
      for (const WorkerLog& q : logs) {
        if (!q.stopped || q.id == p.id || q.joined_ms >= alive) continue;
        ++notices;
        if (!q.told_failed.count(p.id)) {
          notified.push_back(absl::StrFormat(
              "process %d (w%d) failed, but w%d (process %d), in the group since before, was not "
              "told",
              p.id, p.slot, q.slot, q.id));
        }
      }
    }
    for (const auto& [name, e] : observer_.elements()) {
      if (e.kind != "memory" || e.failed_ms < 0) continue;
      for (const WorkerLog& q : logs) {
        if (!q.stopped || q.joined_ms < 0 || q.joined_ms >= e.last_healthy_ms) continue;
        ++notices;
        if (!q.told_memory_failed.count(name)) {
          notified.push_back(absl::StrFormat(
              "memory element %s failed, but w%d (process %d), with memory there, was not told",
              name, q.slot, q.id));
        }
      }
    }
    // reads: what the workers saw, and refusals of a worker the rack never declared failed.
    for (const WorkerLog& w : logs) {
      for (const std::string& v : w.violations) reads.push_back(absl::StrCat("w", w.slot, ": ", v));
      for (const std::string& v : w.odd_faults) reads.push_back(absl::StrCat("w", w.slot, ": ", v));
      // Fenced, or its memory taken, only once the rack declared it failed: the Rack MMU
      // lists it dead right after it fences it, so a listing alive a second later is wrong.
      auto seen = observer_.processes().find(w.id);
      if (w.fenced_ms >= 0 && seen != observer_.processes().end() &&
          seen->second.last_alive_ms > w.fenced_ms + 1000) {
        reads.push_back(absl::StrFormat(
            "w%d (process %d) was refused as fenced at %d ms, but the rack listed it alive "
            "%d ms later",
            w.slot, w.id, w.fenced_ms - run_start_ms_, seen->second.last_alive_ms - w.fenced_ms));
      }
    }
    std::vector<std::string> checked;
    if (check != 0) checked.push_back("rackctl check: " + FirstLine(check_out));
    // A given program's copy may end badly only when the rack failed it.
    std::vector<std::string> program;
    for (const auto& [slot, status, element] : program_endings_) {
      // Failed by the rack: seen dead, killed by this run, or on a compute element that failed.
      const std::string app = absl::StrCat("fault-run-w", slot);
      bool failed = killed_apps_.count(app) > 0;
      for (const auto& [id, p] : observer_.processes()) {
        failed |= p.app == app && p.first_dead_ms >= 0;
      }
      auto e = observer_.elements().find(element);
      failed |= e != observer_.elements().end() && e->second.failed_ms >= 0;
      if (!failed) {
        program.push_back(absl::StrFormat(
            "the copy in slot %d ended with %s %d, and the rack never declared it failed", slot,
            WIFEXITED(status) ? "status" : "signal",
            WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status)));
      }
    }

    uint64_t flushed = 0, grants = 0, received = 0, steals = 0, refused = 0;
    uint64_t memory_failed = 0, lost_regions = 0;
    for (const WorkerLog& w : logs) {
      memory_failed += w.memory_failed;
      lost_regions += w.lost_regions;
      flushed += w.flushed;
      grants += w.grants;
      received += w.received;
      steals += w.steals;
    }
    for (const auto& [id, p] : observer_.processes()) refused += p.refused;
    // Throughput: versions flushed per second by all workers, before the first fault and
    // from it to the end of the faulting window.
    uint64_t before = 0, after = 0;
    const int64_t split = first_fault_ms_ > 0 ? first_fault_ms_ : faulting_end_ms_;
    for (const WorkerLog& w : logs) {
      for (int64_t ms : w.flushed_ms) {
        if (ms < run_start_ms_ || ms > faulting_end_ms_) continue;
        (ms < split ? before : after) += 1;
      }
    }
    auto rate = [](uint64_t n, int64_t ms) { return ms > 0 ? n * 1000.0 / ms : 0.0; };
    const double before_rate = rate(before, split - run_start_ms_);
    const double after_rate = rate(after, faulting_end_ms_ - split);
    // The run itself: a run that checked nothing holds nothing.
    std::vector<std::string> ran = not_started_;
    if (program_.empty() && flushed == 0) {
      ran.push_back("the workload flushed nothing: no worker joined and wrote");
    }
    if (!notify_checked_) notified.clear();
    const size_t violations = notified.size() + reads.size() + fenced.size() + checked.size() +
                              program.size() + ran.size();

    std::printf("faults (as applied):\n");
    for (const std::string& a : applied) std::printf("  %s\n", a.c_str());
    std::printf("workload: %" PRIu64 " processes started, %zu declared failed, %" PRIu64
                " versions flushed, %" PRIu64 " pieces granted (%" PRIu64 " read back), %" PRIu64
                " regions stolen and read back\n",
                started_, declared.size(), flushed, grants, received, steals);
    auto section = [](const char* name, const char* what, const std::vector<std::string>& v) {
      std::printf("%-9s %s: %s\n", name, v.empty() ? "held" : "VIOLATED", what);
      for (size_t i = 0; i < v.size() && i < 20; ++i) std::printf("    %s\n", v[i].c_str());
      if (v.size() > 20) std::printf("    ... and %zu more\n", v.size() - 20);
    };
    const bool builtin = program_.empty();
    section("ran",
            builtin
                ? absl::StrCat(started_, " workers started, ", flushed, " versions flushed").c_str()
                : absl::StrCat(started_, " copies started").c_str(),
            ran);
    section("notified",
            !builtin          ? "not checked (a given program keeps no log)"
            : notify_checked_ ? absl::StrCat(notices, " notices due").c_str()
                              : "not checked (the fate spec tells no trust group)",
            notified);
    section("reads", builtin ? "every word read was written, by its owner" : "not checked", reads);
    section("fenced",
            absl::StrCat("no write-back landed after a fence (", refused,
                         " requests of fenced or unmapped processes refused)")
                .c_str(),
            fenced);
    section("check", "the Rack MMU and the memory elements agree", checked);
    if (!builtin) section("program", "every copy not failed by the rack exited 0", program);
    std::printf("replay: %s\n", replay_.c_str());
    std::printf(
        "{\"seed\":%" PRIu64 ",\"seconds\":%d,\"scheduled\":%zu,\"faults\":%" PRIu64
        ",\"violations\":%zu,\"schedule_digest\":\"%016" PRIx64 "\",\"processes_started\":%" PRIu64
        ",\"declared_failed\":%zu,\"versions_flushed\":%" PRIu64 ",\"grants\":%" PRIu64
        ",\"steals\":%" PRIu64 ",\"notices_checked\":%" PRIu64 ",\"flushed_before\":%" PRIu64
        ",\"flushed_after\":%" PRIu64
        ",\"throughput_before\":%.1f,\"throughput_after\":%.1f,\"workers_alive_after\":%d"
        ",\"memory_before_bytes\":%" PRIu64 ",\"memory_after_bytes\":%" PRIu64
        ",\"memory_failed_events\":%" PRIu64 ",\"regions_lost\":%" PRIu64 "}\n",
        FLAGS_seed, FLAGS_seconds, schedule.size(), injected_, violations, digest, started_,
        declared.size(), flushed, grants, steals, notices, before, after, before_rate, after_rate,
        alive_after_, memory_before_, memory_after_, memory_failed, lost_regions);
    return violations == 0 ? 0 : 1;
  }

  std::string bin_, rack_, dir_;
  Shape shape_;
  std::vector<std::string> program_;
  std::string replay_;  // the command that replays this run
  Observer observer_;
  std::vector<Slot> slots_;
  bool stopping_ = false;
  uint64_t started_ = 0, injected_ = 0;
  int64_t run_start_ms_ = 0, first_fault_ms_ = 0, faulting_end_ms_ = 0;
  uint64_t memory_before_ = 0, memory_after_ = 0;
  int alive_after_ = 0;
  struct Ending {
    int slot;
    int status;  // as waitpid gives it
    std::string element;
  };
  std::vector<Ending> program_endings_;   // a given program's copies that ended badly
  std::set<std::string> killed_apps_;     // a given program's copies this run killed
  std::vector<std::string> not_started_;  // workers that could not be started, and why
  bool notify_checked_ = true;
};

std::string SelfDir(const char* argv0) {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  std::string path = n > 0 ? std::string(buf, n) : std::string(argv0);
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

}  // namespace
}  // namespace disagg::faultrun

int main(int argc, char** argv) {
  using namespace disagg::faultrun;
  gflags::SetUsageMessage(
      "fault_run --rack DIR [--seed N] [--seconds S] [--workers W] [-- PROGRAM ARGS...]\n"
      "  a workload under a seeded schedule of faults, and the invariants it must keep");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  std::vector<std::string> program(argv + 1, argv + argc);
  if (!program.empty() && program[0] == "--") program.erase(program.begin());
  auto usage = [](const std::string& why) {
    std::fprintf(stderr, "fault_run: %s\n", why.c_str());
    return 2;
  };
  if (FLAGS_rack.empty()) return usage("--rack is required");
  if (FLAGS_seconds < 1 || FLAGS_seconds > 3600) return usage("--seconds must be 1 to 3600");
  if (FLAGS_workers < 1 || FLAGS_workers > 64) return usage("--workers must be 1 to 64");
  if (FLAGS_silence_ms < 10 || FLAGS_silence_ms > 60000) {
    return usage("--silence_ms must be 10 to 60000");
  }
  if (FLAGS_bytes < 65536 || FLAGS_bytes % 4096 != 0) {
    return usage("--bytes must be a multiple of 4096, at least 65536");
  }
  if (FLAGS_sabotage != "none" && FLAGS_sabotage != "reads") {
    return usage("--sabotage must be none or reads");
  }
  const std::string bin = FLAGS_bin.empty() ? SelfDir(argv[0]) : FLAGS_bin;

  // The rack's shape, from the rack itself.
  Shape shape;
  shape.workers = FLAGS_workers;
  Observer probe(bin + "/rackctl", FLAGS_rack);
  if (!probe.Poll()) return usage("cannot read the status of the rack at " + FLAGS_rack);
  for (const auto& [name, e] : probe.elements()) {
    if (e.state != "healthy") return usage("element " + name + " is not healthy");
    if (e.kind == "compute") shape.compute.push_back(name);
    if (e.kind == "memory") shape.memory.push_back(name);
  }
  if (shape.compute.empty() || shape.memory.empty()) {
    return usage("the rack needs a compute and a memory element");
  }
  std::vector<Fault> schedule;
  if (FLAGS_faults.empty()) {
    schedule = MakeSchedule(FLAGS_seed, FLAGS_seconds, FLAGS_silence_ms, shape);
  } else if (std::string error; !ParseFaults(FLAGS_faults, FLAGS_seconds, shape, schedule, error)) {
    return usage("--faults: " + error);
  }
  if (!FLAGS_fate.empty() && FLAGS_app.empty()) return usage("--fate needs --app");
  if (!program.empty() && !FLAGS_app.empty()) {
    return usage("--app is for the built-in workload (a given program's copies are named by slot)");
  }
  const std::string text = ScheduleText(FLAGS_seconds, FLAGS_silence_ms, shape, schedule);
  const uint64_t digest = Digest(text);
  std::printf("fault run: seed %" PRIu64 " %s", FLAGS_seed, text.c_str());
  std::printf("schedule digest %016" PRIx64 "\n", digest);
  std::fflush(stdout);
  if (FLAGS_schedule_only) return 0;
  bool notify_checked = true;
  if (!FLAGS_fate.empty()) {
    std::ifstream in(FLAGS_fate);
    if (!in) return usage("cannot read " + FLAGS_fate);
    std::stringstream text;
    text << in.rdbuf();
    absl::StatusOr<disagg::rackmon::FateSpec> spec =
        disagg::rackmon::ParseFateSpec(FLAGS_fate, text.str());
    if (!spec.ok()) return usage(std::string(spec.status().message()));
    notify_checked = spec->notify_groups || spec->notify_app;
    std::string out;
    if (RunCommand({bin + "/rackctl", "--rack", FLAGS_rack, "app", FLAGS_app, "--fate", FLAGS_fate},
                   &out) != 0) {
      std::fprintf(stderr, "fault_run: %s", out.c_str());
      return 2;
    }
  }
  const std::string run_dir = FLAGS_run_dir.empty() ? FLAGS_rack + "/fault-run" : FLAGS_run_dir;
  std::string replay = FLAGS_replay;
  if (replay.empty()) {
    replay =
        absl::StrFormat("fault_run --rack %s --seed %d --seconds %d --workers %d --silence_ms %d",
                        FLAGS_rack, FLAGS_seed, FLAGS_seconds, FLAGS_workers, FLAGS_silence_ms);
    if (FLAGS_sabotage != "none") absl::StrAppend(&replay, " --sabotage ", FLAGS_sabotage);
    if (!FLAGS_faults.empty()) absl::StrAppend(&replay, " --faults '", FLAGS_faults, "'");
    if (FLAGS_bytes != (1 << 20)) absl::StrAppend(&replay, " --bytes ", FLAGS_bytes);
    if (!FLAGS_respawn) absl::StrAppend(&replay, " --respawn=false");
    if (!FLAGS_app.empty()) absl::StrAppend(&replay, " --app ", FLAGS_app);
    if (!FLAGS_fate.empty()) absl::StrAppend(&replay, " --fate ", FLAGS_fate);
    if (!program.empty()) absl::StrAppend(&replay, " -- ", absl::StrJoin(program, " "));
  }
  Run run(bin, FLAGS_rack, run_dir, shape, program, replay);
  run.set_notify_checked(notify_checked);
  return run.Go(schedule, digest);
}
