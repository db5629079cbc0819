// A mapreduce worker: a rack process driven by the orchestrator over its stdin and stdout, one
// command per line, one answer line (the count's words come before its answer):
//   map MAPPER FIRST END PARTITIONS CHUNK SLOW_US CORPUS   -> mapped WORDS BYTES
//   resume STATE PARTITIONS SLOW_US CORPUS                 -> mapped WORDS BYTES resumed BLOCK
//   send PORT...        (copy shuffle, mapper)             -> sent BYTES
//   grant ID...         (grant shuffle, mapper)            -> chunks R ADDR:USED...  (one per
//                                                             partition), then granted BYTES
//   listen              (reducer)                          -> port P
//   collect MAPPERS     (copy shuffle, reducer)            -> stored BYTES
//   take ADDR:USED...   (grant shuffle, reducer)           -> taken BYTES
//   count               (reducer)                          -> w WORD N ..., counted WORDS DISTINCT
// CORPUS is "gen SEED BYTES VOCABULARY" or "file PATH". Errors: "error WHAT".
#include "worker.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "corpus.h"
#include "disagg/redo_log.h"
#include "mapper_state.h"

namespace mapreduce {
namespace {

constexpr size_t kCopyBuffer = 1 << 20;

void Say(const std::string& line) {
  std::fputs((line + "\n").c_str(), stdout);
  std::fflush(stdout);
}

// A straggler whose output was stolen learns it at its next touch: it ends, saying why.
void OnFault(const disagg::MemoryFault& fault) {
  char line[160];
  const int n =
      std::snprintf(line, sizeof(line), "mapreduce worker %d: memory at %p: %s; ending\n",
                    static_cast<int>(getpid()), fault.address, disagg::FaultCauseName(fault.cause));
  (void)!write(2, line, n > 0 ? static_cast<size_t>(n) : 0);
  _exit(fault.cause == disagg::FaultCause::kRevoked ? 3 : 4);
}

absl::StatusOr<Corpus> ReadCorpus(std::istream& in) {
  std::string kind;
  in >> kind;
  if (kind == "file") {
    std::string path;
    in >> path;
    return Corpus::File(path);
  }
  uint64_t seed = 0, bytes = 0;
  uint32_t vocabulary = 0;
  if (kind != "gen" || !(in >> seed >> bytes >> vocabulary) || vocabulary == 0) {
    return absl::InvalidArgumentError(
        "bad corpus: want `gen SEED BYTES VOCABULARY` or `file PATH`");
  }
  return Corpus::Generated(seed, bytes, vocabulary);
}

struct Partition {
  std::vector<ChunkEntry> chunks;  // the last one is being filled
  size_t committed = 0;            // chunks the state's table holds
  uint64_t flushed = 0;            // bytes of chunks[committed - 1] (or [0]) made durable
};

class Worker {
 public:
  explicit Worker(disagg::Rack& rack) : rack_(rack) {}
  int Serve();

 private:
  std::string Map(std::istream& in);
  std::string Resume(std::istream& in);
  std::string RunBlocks(const Corpus& corpus, uint64_t slow_us);
  absl::Status Append(absl::string_view word);
  absl::Status CommitBlock(uint64_t next_block);
  std::string Send(std::istream& in);
  std::string Grant(std::istream& in);
  std::string Listen();
  std::string Collect(std::istream& in);
  std::string Take(std::istream& in);
  std::string Count();

  disagg::Rack& rack_;
  // Mapper.
  void* state_ = nullptr;
  uint32_t partitions_ = 0;
  uint64_t chunk_bytes_ = 0;
  std::optional<disagg::RedoLog> log_;
  std::vector<Partition> out_;
  StateHeader progress_{};
  // Reducer.
  int listener_ = -1;
  std::vector<disagg::Region> held_;  // regions holding records ([data, data + size) all used)
};

int Worker::Serve() {
  rack_.OnMemoryFault(OnFault);
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    std::string answer;
    if (cmd == "map") {
      answer = Map(in);
    } else if (cmd == "resume") {
      answer = Resume(in);
    } else if (cmd == "send") {
      answer = Send(in);
    } else if (cmd == "grant") {
      answer = Grant(in);
    } else if (cmd == "listen") {
      answer = Listen();
    } else if (cmd == "collect") {
      answer = Collect(in);
    } else if (cmd == "take") {
      answer = Take(in);
    } else if (cmd == "count") {
      answer = Count();
    } else if (cmd == "quit") {
      return 0;
    } else {
      answer = "error unknown command " + cmd;
    }
    Say(answer);
  }
  return 0;
}

std::string Err(const std::string& what, const absl::Status& s) {
  return absl::StrCat("error ", what, ": ", s.message());
}

std::string Worker::Map(std::istream& in) {
  uint64_t mapper = 0, first = 0, end = 0, slow_us = 0;
  if (!(in >> mapper >> first >> end >> partitions_ >> chunk_bytes_ >> slow_us) ||
      partitions_ == 0 || partitions_ > kMaxPartitions || chunk_bytes_ < (2 << 20) ||
      chunk_bytes_ % kPage != 0 || end < first) {
    return "error map: bad arguments";
  }
  absl::StatusOr<Corpus> corpus = ReadCorpus(in);
  if (!corpus.ok()) return Err("map", corpus.status());
  absl::StatusOr<disagg::Region> region = rack_.Map(StateView::Bytes(partitions_));
  if (!region.ok()) return Err("map the state", region.status());
  state_ = region->data();
  const StateView view(state_, partitions_);
  absl::StatusOr<disagg::RedoLog> log =
      disagg::RedoLog::Format(rack_, view.log(), StateView::LogBytes(partitions_));
  if (!log.ok()) return Err("format the log", log.status());
  log_.emplace(std::move(*log));
  progress_ = {kStateMagic, mapper, first, end, first, 0, 0, partitions_, chunk_bytes_};
  if (absl::Status s = log_->Set(view.header(), progress_); !s.ok()) return Err("log", s);
  if (absl::Status s = log_->Commit(); !s.ok()) return Err("commit", s);
  if (absl::Status s = rack_.Publish("mapper-state", state_); !s.ok()) return Err("publish", s);
  out_.assign(partitions_, Partition{});
  return RunBlocks(*corpus, slow_us);
}

std::string Worker::Resume(std::istream& in) {
  uintptr_t addr = 0;
  uint64_t slow_us = 0;
  if (!(in >> std::hex >> addr >> std::dec >> partitions_ >> slow_us) || partitions_ == 0 ||
      partitions_ > kMaxPartitions) {
    return "error resume: bad arguments";
  }
  absl::StatusOr<Corpus> corpus = ReadCorpus(in);
  if (!corpus.ok()) return Err("resume", corpus.status());
  state_ = reinterpret_cast<void*>(addr);
  const StateView view(state_, partitions_);
  // The orchestrator recovered the log before reading the table; recovering again is
  // harmless, and this process must not trust what it did not check.
  absl::StatusOr<disagg::RedoLog> log =
      disagg::RedoLog::Recover(rack_, view.log(), StateView::LogBytes(partitions_));
  if (!log.ok()) return Err("recover the log", log.status());
  log_.emplace(std::move(*log));
  progress_ = *view.header();
  if (progress_.magic != kStateMagic || progress_.partitions != partitions_) {
    return "error resume: no mapper state there";
  }
  chunk_bytes_ = progress_.chunk_bytes;
  out_.assign(partitions_, Partition{});
  for (uint32_t r = 0; r < partitions_; ++r) {
    const uint64_t n = view.chunk_counts()[r];
    if (n > kMaxChunks) return "error resume: a damaged chunk table";
    out_[r].chunks.assign(view.table(r), view.table(r) + n);
    out_[r].committed = n;
    out_[r].flushed = n == 0 ? 0 : out_[r].chunks.back().used;
  }
  if (absl::Status s = rack_.Publish("mapper-state", state_); !s.ok()) return Err("publish", s);
  const uint64_t resumed = progress_.next_block;
  const std::string answer = RunBlocks(*corpus, slow_us);
  if (answer.rfind("mapped ", 0) != 0) return answer;
  return absl::StrCat(answer, " resumed ", resumed);
}

std::string Worker::RunBlocks(const Corpus& corpus, uint64_t slow_us) {
  if (progress_.end_block > corpus.blocks()) return "error map: blocks beyond the corpus";
  for (uint64_t b = progress_.next_block; b < progress_.end_block; ++b) {
    absl::Status status;
    uint64_t words = 0;
    corpus.ForEachWord(b, [&](absl::string_view w) {
      if (status.ok()) status = Append(w);
      ++words;
    });
    if (!status.ok()) return Err("map", status);
    progress_.words += words;
    if (absl::Status s = CommitBlock(b + 1); !s.ok()) return Err("commit", s);
    if (slow_us != 0) usleep(static_cast<useconds_t>(slow_us));
  }
  return absl::StrCat("mapped ", progress_.words, " ", progress_.bytes_out);
}

absl::Status Worker::Append(absl::string_view word) {
  Partition& p = out_[PartitionOf(word, partitions_)];
  const uint64_t need = 1 + word.size();
  if (p.chunks.empty() || p.chunks.back().used + need > chunk_bytes_) {
    if (p.chunks.size() == kMaxChunks) {
      return absl::ResourceExhaustedError("a partition outgrew its chunk table");
    }
    absl::StatusOr<disagg::Region> chunk = rack_.Map(chunk_bytes_);
    if (!chunk.ok()) return chunk.status();
    p.chunks.push_back({reinterpret_cast<uintptr_t>(chunk->data()), 0});
  }
  char* at = reinterpret_cast<char*>(p.chunks.back().addr) + p.chunks.back().used;
  at[0] = static_cast<char>(word.size());
  std::memcpy(at + 1, word.data(), word.size());
  p.chunks.back().used += need;
  progress_.bytes_out += need;
  return absl::OkStatus();
}

// Makes the block's records durable, then commits the header and the table that cover them.
absl::Status Worker::CommitBlock(uint64_t next_block) {
  const StateView view(state_, partitions_);
  for (uint32_t r = 0; r < partitions_; ++r) {
    Partition& p = out_[r];
    const size_t from = p.committed == 0 ? 0 : p.committed - 1;
    for (size_t i = from; i < p.chunks.size(); ++i) {
      const uint64_t start = i == from && p.committed != 0 ? p.flushed : 0;
      if (p.chunks[i].used == start) continue;
      if (absl::Status s = rack_.Flush(reinterpret_cast<char*>(p.chunks[i].addr) + start,
                                       p.chunks[i].used - start);
          !s.ok()) {
        return s;
      }
    }
    if (p.chunks.size() > from) {
      if (absl::Status s = log_->Write(view.table(r) + from, &p.chunks[from],
                                       (p.chunks.size() - from) * sizeof(ChunkEntry));
          !s.ok()) {
        return s;
      }
    }
  }
  std::vector<uint64_t> counts(partitions_);
  for (uint32_t r = 0; r < partitions_; ++r) counts[r] = out_[r].chunks.size();
  progress_.next_block = next_block;
  if (absl::Status s = log_->Write(view.chunk_counts(), counts.data(), partitions_ * 8); !s.ok()) {
    return s;
  }
  if (absl::Status s = log_->Set(view.header(), progress_); !s.ok()) return s;
  if (absl::Status s = log_->Commit(); !s.ok()) return s;
  for (Partition& p : out_) {
    p.committed = p.chunks.size();
    p.flushed = p.chunks.empty() ? 0 : p.chunks.back().used;
  }
  return absl::OkStatus();
}

int Connect(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const char* data, size_t len) {
  while (len > 0) {
    const ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    if (n <= 0) return false;
    data += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

bool RecvAll(int fd, char* data, size_t len) {
  while (len > 0) {
    const ssize_t n = recv(fd, data, len, 0);
    if (n <= 0) return false;
    data += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

// The copy shuffle's mapper side: each partition read from remote memory and sent over TCP.
std::string Worker::Send(std::istream& in) {
  std::vector<uint16_t> ports;
  for (uint32_t port; in >> port;) ports.push_back(static_cast<uint16_t>(port));
  if (ports.size() != partitions_) return "error send: want one port per partition";
  std::atomic<uint64_t> sent{0};
  std::string failure;
  std::mutex mu;
  std::vector<std::thread> threads;
  for (uint32_t r = 0; r < partitions_; ++r) {
    threads.emplace_back([&, r] {
      const int fd = Connect(ports[r]);
      uint64_t header[2] = {progress_.mapper, 0};
      for (const ChunkEntry& c : out_[r].chunks) header[1] += c.used;
      std::vector<char> buffer(kCopyBuffer);
      bool ok = fd >= 0 && SendAll(fd, reinterpret_cast<char*>(header), sizeof(header));
      for (const ChunkEntry& c : out_[r].chunks) {
        for (uint64_t off = 0; ok && off < c.used; off += kCopyBuffer) {
          const size_t n = std::min<uint64_t>(kCopyBuffer, c.used - off);
          std::memcpy(buffer.data(), reinterpret_cast<char*>(c.addr) + off, n);
          ok = SendAll(fd, buffer.data(), n);
        }
      }
      const int err = errno;
      if (fd >= 0) close(fd);
      if (!ok) {
        char why[128];
        std::lock_guard<std::mutex> lock(mu);
        failure = absl::StrCat("error send: to port ", ports[r], ": ",
                               fd < 0 ? strerror_r(err, why, sizeof(why)) : "the reducer hung up");
        return;
      }
      sent += header[1];
    });
  }
  for (std::thread& t : threads) t.join();
  if (!failure.empty()) return failure;
  return absl::StrCat("sent ", sent.load());
}

// The grant shuffle's mapper side: each partition's chunks granted to its reducer.
std::string Worker::Grant(std::istream& in) {
  std::vector<uint32_t> to;
  for (uint32_t id; in >> id;) to.push_back(id);
  if (to.size() != partitions_) return "error grant: want one process per partition";
  uint64_t granted = 0;
  std::string lines;
  for (uint32_t r = 0; r < partitions_; ++r) {
    std::string line = absl::StrCat("chunks ", r);
    for (const ChunkEntry& c : out_[r].chunks) {
      const uint64_t len = (c.used + kPage - 1) / kPage * kPage;
      if (len == 0) continue;
      if (absl::Status s = rack_.Grant(reinterpret_cast<void*>(c.addr), len, to[r]); !s.ok()) {
        return Err("grant", s);
      }
      absl::StrAppendFormat(&line, " %#x:%d", c.addr, c.used);
      granted += c.used;
    }
    lines += line + "\n";
  }
  std::fwrite(lines.data(), 1, lines.size(), stdout);
  out_.clear();
  return absl::StrCat("granted ", granted);
}

std::string Worker::Listen() {
  if (listener_ >= 0) close(listener_);
  listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (listener_ < 0 || bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listener_, 128) != 0 ||
      getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return absl::StrCat("error listen: ", strerror(errno));
  }
  return absl::StrCat("port ", ntohs(addr.sin_port));
}

// The copy shuffle's reducer side: each mapper's partition received over TCP and stored
// into this process's remote memory, flushed.
std::string Worker::Collect(std::istream& in) {
  uint32_t mappers = 0;
  if (!(in >> mappers) || listener_ < 0) return "error collect: bad arguments or no listen";
  std::mutex mu;
  std::string failure;
  uint64_t stored = 0;
  std::vector<std::thread> threads;
  for (uint32_t m = 0; m < mappers; ++m) {
    const int fd = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      std::lock_guard<std::mutex> lock(mu);
      failure = absl::StrCat("error collect: accept: ", strerror(errno));
      break;
    }
    threads.emplace_back([&, fd] {
      uint64_t header[2];
      std::string error;
      disagg::Region region;
      if (!RecvAll(fd, reinterpret_cast<char*>(header), sizeof(header))) {
        error = "a mapper hung up";
      } else if (header[1] > 0) {
        absl::StatusOr<disagg::Region> r = rack_.Map(header[1]);
        std::vector<char> buffer(kCopyBuffer);
        if (!r.ok()) error = std::string(r.status().message());
        for (uint64_t off = 0; error.empty() && off < header[1]; off += kCopyBuffer) {
          const size_t n = std::min<uint64_t>(kCopyBuffer, header[1] - off);
          if (!RecvAll(fd, buffer.data(), n)) {
            error = "a mapper hung up";
            break;
          }
          std::memcpy(r->as<char>() + off, buffer.data(), n);
        }
        if (error.empty()) {
          if (absl::Status s = rack_.Flush(r->data(), header[1]); !s.ok())
            error = std::string(s.message());
        }
        if (r.ok()) region = disagg::Region(r->data(), header[1]);
      }
      close(fd);
      std::lock_guard<std::mutex> lock(mu);
      if (!error.empty()) failure = "error collect: " + error;
      if (region.data() != nullptr) held_.push_back(region);
      stored += region.size();
    });
  }
  for (std::thread& t : threads) t.join();
  if (!failure.empty()) return failure;
  return absl::StrCat("stored ", stored);
}

// The grant shuffle's reducer side: the chunks granted to this process, now its own.
std::string Worker::Take(std::istream& in) {
  uint64_t taken = 0;
  std::string item;
  while (in >> item) {
    uintptr_t addr = 0;
    uint64_t used = 0;
    if (std::sscanf(item.c_str(), "%" SCNxPTR ":%" SCNu64, &addr, &used) != 2) {
      return "error take: bad chunk " + item;
    }
    // Nothing there is dirty: Flush only checks that this process owns the chunk now.
    if (absl::Status s = rack_.Flush(reinterpret_cast<void*>(addr), used); !s.ok()) {
      return Err("take " + item, s);
    }
    held_.emplace_back(reinterpret_cast<void*>(addr), used);
    taken += used;
  }
  return absl::StrCat("taken ", taken);
}

std::string Worker::Count() {
  Counts counts;
  uint64_t words = 0;
  for (const disagg::Region& r : held_) {
    const char* p = r.as<const char>();
    for (uint64_t off = 0; off < r.size();) {
      const auto len = static_cast<uint8_t>(p[off]);
      if (len == 0 || off + 1 + len > r.size()) {
        held_.clear();
        return "error count: a damaged record";
      }
      ++counts[absl::string_view(p + off + 1, len)];
      off += 1 + len;
      ++words;
    }
  }
  std::string out;
  for (const auto& [word, n] : counts) absl::StrAppend(&out, "w ", word, " ", n, "\n");
  std::fwrite(out.data(), 1, out.size(), stdout);  // words may hold NUL bytes
  for (const disagg::Region& r : held_) {
    if (absl::Status s = rack_.Unmap(r.data()); !s.ok()) {
      std::fprintf(stderr, "mapreduce worker: unmap %p: %s\n", r.data(),
                   std::string(s.message()).c_str());
    }
  }
  held_.clear();
  return absl::StrCat("counted ", words, " ", counts.size());
}

}  // namespace

int RunWorker(disagg::Rack& rack) {
  if (absl::Status s = rack.JoinGroup("mapreduce"); !s.ok()) {
    Say(Err("join the group", s));
    return 1;
  }
  Say(absl::StrCat("ready ", rack.self()));
  return Worker(rack).Serve();
}

}  // namespace mapreduce
