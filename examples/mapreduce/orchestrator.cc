#include "orchestrator.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "corpus.h"
#include "disagg/redo_log.h"
#include "mapper_state.h"

namespace mapreduce {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A worker process: `rackctl run --on ELEMENT -- mapreduce --role=worker`, its stdin and
// stdout the command channel.
class WorkerProc {
 public:
  static std::unique_ptr<WorkerProc> Start(const Options& o, const std::string& element,
                                           std::string* error) {
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0) {
      *error = "pipe failed";
      return nullptr;
    }
    if (pipe2(out, O_CLOEXEC) != 0) {
      close(in[0]);
      close(in[1]);
      *error = "pipe failed";
      return nullptr;
    }
    const char* rack_dir = std::getenv("DISAGG_RACK");
    const std::string rack = rack_dir != nullptr ? rack_dir : "";
    std::vector<std::string> args{o.rackctl, "--rack", rack,   "run",          "--on",
                                  element,   "--",     o.self, "--role=worker"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t pid = fork();
    if (pid < 0) {
      for (int fd : {in[0], in[1], out[0], out[1]}) close(fd);
      *error = "fork failed";
      return nullptr;
    }
    if (pid == 0) {
      dup2(in[0], 0);
      dup2(out[1], 1);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    auto w = std::unique_ptr<WorkerProc>(new WorkerProc(pid, in[1], out[0], element));
    const std::string ready = w->Read();
    if (ready.rfind("ready ", 0) != 0) {
      *error = absl::StrCat("a worker on ", element,
                            " did not start: ", ready.empty() ? "it ended" : ready);
      return nullptr;
    }
    w->id_ = static_cast<uint32_t>(std::strtoul(ready.c_str() + 6, nullptr, 10));
    return w;
  }

  ~WorkerProc() {
    Send("quit");
    close(to_);
    std::fclose(from_);
    Reap(5000);
  }

  void Send(const std::string& line) {
    const std::string l = line + "\n";
    (void)!write(to_, l.data(), l.size());
  }
  // The next line ("" once the worker ended).
  std::string Read() {
    char* line = nullptr;
    size_t cap = 0;
    const ssize_t n = getline(&line, &cap, from_);
    std::string out = n > 0 ? std::string(line, n - (line[n - 1] == '\n')) : "";
    std::free(line);
    return out;
  }
  // True if an answer (or the end) is waiting, or comes within `ms`.
  bool Answered(int ms = 0) {
    struct pollfd p = {fileno(from_), POLLIN, 0};
    return poll(&p, 1, ms) == 1;
  }
  // Waits up to `ms` for the worker's rackctl to end; then ends it. True if it ended alone.
  bool Reap(int ms) {
    if (pid_ <= 0) return true;
    for (int i = 0; i < ms / 10; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill(pid_, SIGTERM);  // rackctl passes it on to the worker
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
    return false;
  }

  uint32_t id() const { return id_; }
  const std::string& element() const { return element_; }

 private:
  WorkerProc(pid_t pid, int to, int from, std::string element)
      : pid_(pid), to_(to), from_(fdopen(from, "r")), element_(std::move(element)) {}
  pid_t pid_;
  int to_;
  FILE* from_;
  std::string element_;
  uint32_t id_ = 0;
};

struct Run {
  Run(const Options& options, disagg::Rack& r, const Corpus& c) : o(options), rack(r), corpus(c) {}
  const Options& o;
  disagg::Rack& rack;
  const Corpus& corpus;
  std::string corpus_spec;  // as the workers read it
  std::vector<std::unique_ptr<WorkerProc>> mappers, reducers;
  std::vector<std::pair<uint64_t, uint64_t>> splits;  // each mapper's blocks [first, end)
  std::string failure;
  // The straggler's adoption.
  uint64_t straggler_done = 0, straggler_blocks = 0, adopted_bytes = 0;
  bool straggled = false;
  uint32_t straggler_id = 0;

  bool Fail(const std::string& what) {
    if (failure.empty()) failure = what;
    return false;
  }
  // Reads a worker's answer, which must start with `want`.
  bool Expect(WorkerProc& w, const std::string& want, std::string* answer) {
    *answer = w.Read();
    if (answer->rfind(want + " ", 0) == 0) return true;
    return Fail(absl::StrCat("worker process ", w.id(), " on ", w.element(), ": ",
                             answer->empty() ? "it ended" : *answer));
  }
  static uint64_t Number(const std::string& answer, int index) {
    std::istringstream in(answer);
    std::string word;
    for (int i = 0; i <= index; ++i) in >> word;
    return std::strtoull(word.c_str(), nullptr, 10);
  }

  bool MapPhase(uint64_t* intermediate);
  bool AdoptStraggler(std::string* answer);
  bool CopyShuffle(double* seconds, Counts* counts);
  bool GrantShuffle(double* seconds, Counts* counts);
  bool Reduce(Counts* counts);
};

bool Run::MapPhase(uint64_t* intermediate) {
  for (uint32_t i = 0; i < o.mappers; ++i) {
    const uint64_t slow = o.straggler && i == 0 ? o.slow_us : 0;
    mappers[i]->Send(absl::StrCat("map ", i, " ", splits[i].first, " ", splits[i].second, " ",
                                  o.reducers, " ", o.chunk, " ", slow, " ", corpus_spec));
  }
  *intermediate = 0;
  std::string answer;
  for (uint32_t i = o.straggler ? 1 : 0; i < o.mappers; ++i) {
    if (!Expect(*mappers[i], "mapped", &answer)) return false;
    *intermediate += Number(answer, 2);
  }
  if (o.straggler) {
    if (mappers[0]->Answered()) {
      std::printf("mapreduce: no straggler: mapper 0 finished with the others\n");
      if (!Expect(*mappers[0], "mapped", &answer)) return false;
    } else if (!AdoptStraggler(&answer)) {
      return false;
    }
    *intermediate += Number(answer, 2);
  }
  return true;
}

// Mapper 0 is still mapping when the others are done: steal its state and its committed
// output, and have a fresh mapper resume where its log says it was.
bool Run::AdoptStraggler(std::string* answer) {
  WorkerProc& slow = *mappers[0];
  const Clock::time_point start = Clock::now();
  absl::StatusOr<void*> root = rack.Lookup(slow.id(), "mapper-state");
  if (!root.ok())
    return Fail(absl::StrCat("look up the straggler's state: ", root.status().message()));
  const size_t state_bytes = StateView::Bytes(o.reducers);
  absl::StatusOr<disagg::Region> state = rack.Steal(slow.id(), *root, state_bytes);
  if (!state.ok())
    return Fail(absl::StrCat("steal the straggler's state: ", state.status().message()));
  const StateView view(state->data(), o.reducers);
  disagg::RecoveryReport report;
  absl::StatusOr<disagg::RedoLog> log =
      disagg::RedoLog::Recover(rack, view.log(), StateView::LogBytes(o.reducers), &report);
  if (!log.ok()) return Fail(absl::StrCat("recover the straggler's log: ", log.status().message()));
  const StateHeader h = *view.header();
  if (h.magic != kStateMagic || h.partitions != o.reducers)
    return Fail("the straggler's state is not a mapper's");
  std::vector<void*> chunks;
  for (uint32_t r = 0; r < o.reducers; ++r) {
    for (uint64_t i = 0; i < view.chunk_counts()[r] && i < kMaxChunks; ++i) {
      void* addr = reinterpret_cast<void*>(view.table(r)[i].addr);
      absl::StatusOr<disagg::Region> chunk = rack.Steal(slow.id(), addr, h.chunk_bytes);
      if (!chunk.ok()) return Fail(absl::StrCat("steal a chunk: ", chunk.status().message()));
      chunks.push_back(addr);
    }
  }
  const double steal_s = Since(start);
  straggled = true;
  straggler_id = slow.id();
  straggler_done = h.next_block - h.first_block;
  straggler_blocks = h.end_block - h.first_block;
  adopted_bytes = h.bytes_out;
  std::printf("mapreduce: straggler: mapper 0 (process %u on %s) had done %" PRIu64 " of %" PRIu64
              " blocks when the others finished; stole its state and %zu chunks (%.1f MiB of "
              "output) in %.1f ms%s\n",
              slow.id(), slow.element().c_str(), straggler_done, straggler_blocks, chunks.size(),
              adopted_bytes / 1048576.0, steal_s * 1e3,
              report.redone ? ", redoing the transaction it was committing" : "");
  std::fflush(stdout);
  // The straggler finds its memory gone at its next touch and ends.
  // (or, in a Flush or a Map at that moment, fails and says so).
  if (const std::string said = slow.Answered(10000) ? slow.Read() : ""; !said.empty()) {
    std::printf("mapreduce: straggler: process %u said: %s\n", slow.id(), said.c_str());
    slow.Send("quit");
  }
  const bool alone = slow.Reap(5000);
  std::printf("mapreduce: straggler: process %u ended%s\n", slow.id(),
              alone ? "" : " (ended by the orchestrator)");

  const std::string element =
      o.elements[(1 + std::find(o.elements.begin(), o.elements.end(), slow.element()) -
                  o.elements.begin()) %
                 o.elements.size()];
  std::string error;
  std::unique_ptr<WorkerProc> fresh = WorkerProc::Start(o, element, &error);
  if (fresh == nullptr) return Fail(error);
  if (absl::Status s = rack.Grant(state->data(), state_bytes, fresh->id()); !s.ok()) {
    return Fail(absl::StrCat("grant the state: ", s.message()));
  }
  for (void* c : chunks) {
    if (absl::Status s = rack.Grant(c, h.chunk_bytes, fresh->id()); !s.ok()) {
      return Fail(absl::StrCat("grant a chunk: ", s.message()));
    }
  }
  fresh->Send(absl::StrFormat("resume %#x %d 0 %s", reinterpret_cast<uintptr_t>(state->data()),
                              o.reducers, corpus_spec));
  mappers[0] = std::move(fresh);
  if (!Expect(*mappers[0], "mapped", answer)) return false;
  std::printf("mapreduce: straggler: a fresh mapper (process %u on %s) resumed at block %" PRIu64
              " of %" PRIu64 ": %.0f%% of the split's work saved\n",
              mappers[0]->id(), element.c_str(), straggler_done, straggler_blocks,
              100.0 * straggler_done / std::max<uint64_t>(1, straggler_blocks));
  return true;
}

bool Run::Reduce(Counts* counts) {
  for (auto& r : reducers) r->Send("count");
  for (auto& r : reducers) {
    for (std::string line = r->Read();; line = r->Read()) {
      if (line.rfind("w ", 0) == 0) {
        const size_t space = line.rfind(' ');
        const std::string word = line.substr(2, space - 2);
        if (!counts->emplace(word, std::strtoull(line.c_str() + space + 1, nullptr, 10)).second) {
          return Fail("two reducers counted the word " + word);
        }
        continue;
      }
      if (line.rfind("counted ", 0) != 0)
        return Fail(absl::StrCat("reducer process ", r->id(), " on ", r->element(), ": ",
                                 line.empty() ? "it ended" : line));
      break;
    }
  }
  return true;
}

// Figure 3's baseline: each partition read from the mapper's remote memory, sent over TCP,
// stored into the reducer's remote memory.
bool Run::CopyShuffle(double* seconds, Counts* counts) {
  std::string ports, answer;
  for (auto& r : reducers) {
    r->Send("listen");
    if (!Expect(*r, "port", &answer)) return false;
    absl::StrAppend(&ports, " ", absl::string_view(answer).substr(5));
  }
  const Clock::time_point start = Clock::now();
  for (auto& r : reducers) r->Send(absl::StrCat("collect ", o.mappers));
  for (auto& m : mappers) m->Send(absl::StrCat("send", ports));
  for (auto& m : mappers) {
    if (!Expect(*m, "sent", &answer)) return false;
  }
  for (auto& r : reducers) {
    if (!Expect(*r, "stored", &answer)) return false;
  }
  *seconds = Since(start);
  return Reduce(counts);
}

// Each partition granted to its reducer: no byte moves.
bool Run::GrantShuffle(double* seconds, Counts* counts) {
  std::string ids, answer;
  for (auto& r : reducers) ids += absl::StrCat(" ", r->id());
  const Clock::time_point start = Clock::now();
  for (auto& m : mappers) m->Send(absl::StrCat("grant", ids));
  std::vector<std::string> take(o.reducers, "take");
  for (auto& m : mappers) {
    for (uint32_t r = 0; r < o.reducers; ++r) {
      if (!Expect(*m, "chunks", &answer)) return false;
      const size_t list = answer.find(' ', 7);
      const uint64_t partition = Number(answer, 1);
      if (partition >= o.reducers) return Fail("a mapper named partition " + answer);
      if (list != std::string::npos) take[partition] += answer.substr(list);
    }
    if (!Expect(*m, "granted", &answer)) return false;
  }
  for (uint32_t r = 0; r < o.reducers; ++r) reducers[r]->Send(take[r]);
  for (auto& r : reducers) {
    if (!Expect(*r, "taken", &answer)) return false;
  }
  *seconds = Since(start);
  return Reduce(counts);
}

}  // namespace

int RunOrchestrator(disagg::Rack& rack, const Options& o) {
  signal(SIGPIPE, SIG_IGN);  // a worker that ended is an answer, not a reason to die
  absl::StatusOr<Corpus> corpus = o.input.empty()
                                      ? Corpus::Generated(o.seed, o.intermediate, o.vocabulary)
                                      : Corpus::File(o.input);
  if (!corpus.ok()) {
    std::fprintf(stderr, "mapreduce: %s\n", std::string(corpus.status().message()).c_str());
    return 1;
  }
  if (absl::Status s = rack.JoinGroup("mapreduce"); !s.ok()) {
    std::fprintf(stderr, "mapreduce: join the group: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  Run run(o, rack, *corpus);
  run.corpus_spec = o.input.empty()
                        ? absl::StrCat("gen ", o.seed, " ", o.intermediate, " ", o.vocabulary)
                        : "file " + o.input;
  const uint64_t blocks = corpus->blocks();
  for (uint32_t i = 0; i < o.mappers; ++i) {
    run.splits.emplace_back(blocks * i / o.mappers, blocks * (i + 1) / o.mappers);
  }
  std::printf("mapreduce: word count of %s: %u mappers, %u reducers on %s\n",
              corpus->Describe().c_str(), o.mappers, o.reducers,
              absl::StrJoin(o.elements, ", ").c_str());
  std::fflush(stdout);
  std::string error;
  for (uint32_t i = 0; i < o.mappers + o.reducers && error.empty(); ++i) {
    auto w = WorkerProc::Start(o, o.elements[i % o.elements.size()], &error);
    if (w == nullptr) break;
    (i < o.mappers ? run.mappers : run.reducers).push_back(std::move(w));
  }
  if (!error.empty()) {
    std::fprintf(stderr, "mapreduce: %s\n", error.c_str());
    return 1;
  }
  uint64_t intermediate = 0;
  double copy_s = 0, grant_s = 0;
  Counts copy_counts, grant_counts;
  const Clock::time_point map_start = Clock::now();
  bool ok = run.MapPhase(&intermediate);
  const double map_s = Since(map_start);
  if (ok) {
    std::printf("mapreduce: map: %.2f s, %.1f MiB of intermediate data\n", map_s,
                intermediate / 1048576.0);
    std::fflush(stdout);
  }
  ok = ok && run.CopyShuffle(&copy_s, &copy_counts);
  if (ok)
    std::printf("mapreduce: copy shuffle (remote memory -> TCP -> remote memory): %.3f s\n",
                copy_s);
  std::fflush(stdout);
  ok = ok && run.GrantShuffle(&grant_s, &grant_counts);
  if (ok)
    std::printf("mapreduce: grant shuffle (ownership moves, no byte does): %.3f s\n", grant_s);
  if (!ok) {
    std::fprintf(stderr, "mapreduce: %s\n", run.failure.c_str());
    return 1;
  }
  const Clock::time_point plain_start = Clock::now();
  const Counts plain = corpus->CountAll();
  const double plain_s = Since(plain_start);
  uint64_t words = 0;
  for (const auto& [w, n] : plain) words += n;
  const bool match = copy_counts == plain && grant_counts == plain;
  std::printf("mapreduce: %" PRIu64
              " words, %zu distinct; plain count in one process: %.2f s; "
              "both shuffles' counts %s it\n",
              words, plain.size(), plain_s, match ? "match" : "DO NOT match");
  std::printf("mapreduce: the grant shuffle is %.1fx faster than the copy shuffle\n",
              copy_s / grant_s);
  std::printf("{\"counts_match\":%s,\"intermediate_bytes\":%" PRIu64
              ",\"grant_shuffle_s\":%.4f,\"copy_shuffle_s\":%.4f,\"shuffle_speedup\":%.1f,"
              "\"map_s\":%.3f,\"plain_count_s\":%.3f,\"words\":%" PRIu64
              ",\"distinct_words\":%zu,"
              "\"mappers\":%u,\"reducers\":%u,\"straggler_adopted\":%s,\"straggler_process\":%u,"
              "\"straggler_blocks_done\":%" PRIu64 ",\"straggler_blocks\":%" PRIu64
              ",\"straggler_saved_fraction\":%.3f,"
              "\"straggler_adopted_bytes\":%" PRIu64 "}\n",
              match ? "true" : "false", intermediate, grant_s, copy_s, copy_s / grant_s, map_s,
              plain_s, words, plain.size(), o.mappers, o.reducers, run.straggled ? "true" : "false",
              run.straggler_id, run.straggler_done, run.straggler_blocks,
              run.straggler_blocks == 0 ? 0.0 : double(run.straggler_done) / run.straggler_blocks,
              run.adopted_bytes);
  return match ? 0 : 1;
}

}  // namespace mapreduce
