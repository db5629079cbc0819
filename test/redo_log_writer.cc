// redo_log_writer: updates a structure in remote memory through a RedoLog until it is
// killed, for the test that kills writers mid-update (redo_log_test.cc). The structure spans
// many pages and every transaction rewrites all of it, so a writer killed mid-update leaves
// its memory half old, half new unless the log repairs it.
//
//   redo_log_writer                     maps and formats a fresh state
//   redo_log_writer --adopt FROM ADDR   steals the state at ADDR from process FROM (dead or
//                                       alive), checks it as the memory elements hold it,
//                                       recovers the log and checks it again
//   ... --check-only                    ends after the checks, without leaving the rack (its
//                                       memory is held for the next adopter)
//   ... --damage-record                 flips a byte of the log's record first (Recover must
//                                       refuse the log if it needs the record)
//
// Output, one line each: "ready ID" once joined; with --adopt, "adopted SEQ raw=whole|mixed
// redone=0|1 ok" or "adopted ... bad WHAT"; then "state ADDR"; then "committed SEQ" after
// every Commit that returned OK (written unbuffered, before the next transaction starts).
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "disagg/disagg.h"
#include "disagg/redo_log.h"

namespace {

constexpr size_t kPage = 4096;
constexpr size_t kWords = 32 * kPage / 8;  // 32 pages of values

struct Data {
  uint64_t seq;  // transactions applied; words[i] == Value(seq, i)
  uint64_t pad[kPage / 8 - 1];
  uint64_t words[kWords];
};

const size_t kLogBytes = disagg::RedoLog::AreaBytesFor(2, sizeof(Data::words) + 8);
const size_t kStateBytes = kLogBytes + sizeof(Data);

uint64_t Value(uint64_t seq, uint64_t i) {
  if (seq == 0) return 0;  // the fresh, zero-filled state
  uint64_t x = seq * kWords + i;
  x ^= x >> 31;
  x *= 0x9E3779B97F4A7C15ull;
  return x ^ (x >> 29);
}

// The number of words that disagree with data.seq.
size_t Wrong(const Data& data) {
  size_t wrong = 0;
  for (size_t i = 0; i < kWords; ++i) wrong += data.words[i] != Value(data.seq, i);
  return wrong;
}

void Line(const std::string& line) {
  const std::string out = line + "\n";
  (void)!write(1, out.data(), out.size());
}

// Ends without leaving the rack (the memory stays held for adoption), saying why.
int Fail(const std::string& what, const absl::Status& s) {
  Line("error " + what + ": " + std::string(s.message()));
  _exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  uint32_t from = 0;
  uintptr_t addr = 0;
  bool check_only = false;
  bool damage_record = false;  // flip a byte of the log's record before recovering
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--adopt") == 0 && i + 2 < argc) {
      from = static_cast<uint32_t>(std::strtoul(argv[i + 1], nullptr, 10));
      addr = std::strtoull(argv[i + 2], nullptr, 0);
      i += 2;
    } else if (std::strcmp(argv[i], "--check-only") == 0) {
      check_only = true;
    } else if (std::strcmp(argv[i], "--damage-record") == 0) {
      damage_record = true;
    } else {
      Line(std::string("error unknown argument ") + argv[i]);
      return 2;
    }
  }
  auto joined = disagg::Rack::Join();
  if (!joined.ok()) return Fail("join", joined.status());
  disagg::Rack& rack = **joined;
  if (absl::Status s = rack.JoinGroup("redo-log-test"); !s.ok()) return Fail("group", s);
  Line("ready " + std::to_string(rack.self()));

  char* state = nullptr;
  absl::StatusOr<disagg::RedoLog> log = absl::UnknownError("unset");
  if (from == 0) {
    auto region = rack.Map(kStateBytes);
    if (!region.ok()) return Fail("map", region.status());
    state = region->as<char>();
    log = disagg::RedoLog::Format(rack, state, kLogBytes);
    if (!log.ok()) return Fail("format", log.status());
  } else {
    auto stolen = rack.Steal(from, reinterpret_cast<void*>(addr), kStateBytes);
    if (!stolen.ok()) return Fail("steal", stolen.status());
    state = stolen->as<char>();
    const Data& raw = *reinterpret_cast<const Data*>(state + kLogBytes);
    const bool mixed = Wrong(raw) != 0;
    if (damage_record) state[disagg::RedoLog::kHeaderBytes + 16] ^= 1;  // the first write's data
    disagg::RecoveryReport report;
    log = disagg::RedoLog::Recover(rack, state, kLogBytes, &report);
    if (!log.ok()) return Fail("recover", log.status());
    const Data& data = raw;
    std::string verdict = "ok";
    if (const size_t wrong = Wrong(data); wrong != 0) {
      verdict =
          "bad " + std::to_string(wrong) + " words disagree with seq " + std::to_string(data.seq);
    } else if (log->committed() != data.seq) {
      verdict = "bad the log committed " + std::to_string(log->committed()) +
                " transactions, the state holds " + std::to_string(data.seq);
    }
    Line("adopted " + std::to_string(data.seq) + (mixed ? " raw=mixed" : " raw=whole") +
         " redone=" + (report.redone ? "1 " : "0 ") + verdict);
    // Ends without leaving the rack, as in a crash: the memory stays held for the next adopter.
    if (check_only || verdict != "ok") _exit(verdict == "ok" ? 0 : 1);
  }
  char hex[32];
  std::snprintf(hex, sizeof(hex), "0x%" PRIxPTR, reinterpret_cast<uintptr_t>(state));
  Line(std::string("state ") + hex);

  Data* data = reinterpret_cast<Data*>(state + kLogBytes);
  std::vector<uint64_t> next(kWords);
  while (true) {
    const uint64_t seq = data->seq + 1;
    for (size_t i = 0; i < kWords; ++i) next[i] = Value(seq, i);
    if (absl::Status s = log->Write(data->words, next.data(), sizeof(data->words)); !s.ok()) {
      return Fail("write", s);
    }
    if (absl::Status s = log->Set(&data->seq, seq); !s.ok()) return Fail("set", s);
    if (absl::Status s = log->Commit(); !s.ok()) return Fail("commit", s);
    Line("committed " + std::to_string(seq));
  }
}
