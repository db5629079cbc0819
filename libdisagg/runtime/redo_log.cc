// RedoLog: see <disagg/redo_log.h> for the contract. The area holds a header page and,
// after it, the record of the last transaction: for each write its target address, its length
// and its bytes padded to 8. The header names the last committed and the last applied
// transaction, with checksums of the record and of itself. It is written into one of two
// slots in turn, each write numbered: a write torn by an eviction in mid-copy damages only the
// slot being written, and Recover takes the other, the header written just before.
#include "disagg/redo_log.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace disagg {
namespace {

constexpr uint64_t kMagic = 0x676f6c6f64657200;  // "\0redolog"
constexpr uint64_t kVersion = 2;
constexpr uint64_t kEntryWords = 2;  // address, length

struct Header {
  uint64_t magic;
  uint64_t version;
  uint64_t epoch;  // header writes so far: the slot with the larger one is current
  uint64_t area_bytes;
  uint64_t committed;     // the last committed transaction (0: none)
  uint64_t applied;       // the last one known to be in place and durable
  uint64_t record_bytes;  // the committed transaction's record
  uint64_t record_sum;
  uint64_t header_sum;  // of the fields above
};
constexpr size_t kSlotBytes = 128;
static_assert(sizeof(Header) <= kSlotBytes && 2 * kSlotBytes <= RedoLog::kHeaderBytes);

// A 64-bit checksum of words (not cryptographic: it tells a record from a stale or torn one).
uint64_t Sum(const uint64_t* words, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
  for (size_t i = 0; i < n; ++i) {
    h ^= words[i] * 0x87C37B91114253D5ull;
    h = (h << 31 | h >> 33) * 0x4CF5AD432745937Full;
  }
  h ^= h >> 33;
  h *= 0xFF51AFD7ED558CCDull;
  h ^= h >> 33;
  return h;
}

uint64_t HeaderSum(const Header& h) {
  return Sum(&h.magic, offsetof(Header, header_sum) / sizeof(uint64_t));
}

size_t PaddedWords(size_t len) { return (len + 7) / 8; }

struct Range {
  uintptr_t begin;
  uintptr_t end;
};

// The record's targets, sorted, with overlapping and adjacent ones merged.
std::vector<Range> Targets(const uint64_t* record, size_t words) {
  std::vector<Range> ranges;
  for (size_t i = 0; i < words; i += kEntryWords + PaddedWords(record[i + 1])) {
    ranges.push_back({record[i], record[i] + record[i + 1]});
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  std::vector<Range> merged;
  for (const Range& r : ranges) {
    if (!merged.empty() && r.begin <= merged.back().end) {
      merged.back().end = std::max(merged.back().end, r.end);
    } else {
      merged.push_back(r);
    }
  }
  return merged;
}

// Empty if the record of `words` words parses into writes inside [.., area) or [end, ..);
// else what is wrong.
std::string CheckRecord(const uint64_t* record, size_t words, uintptr_t area, uintptr_t end) {
  size_t i = 0;
  while (i < words) {
    if (words - i < kEntryWords) return "a write is cut short";
    const uint64_t dst = record[i], len = record[i + 1];
    if (len == 0 || len > (words - i - kEntryWords) * 8 || dst + len < dst) {
      return absl::StrFormat("the write at word %d has a bad length %d", i, len);
    }
    if (dst < end && dst + len > area) {
      return absl::StrFormat("the write at word %d lands in the log itself", i);
    }
    i += kEntryWords + PaddedWords(len);
  }
  return "";
}

}  // namespace

size_t RedoLog::AreaBytesFor(size_t writes, size_t bytes) {
  const size_t record = writes * (kEntryWords * 8 + 7) + bytes;
  return kHeaderBytes + std::max<size_t>((record + 4095) / 4096 * 4096, 4096);
}

absl::StatusOr<RedoLog> RedoLog::Format(Rack& rack, void* area, size_t bytes) {
  if (reinterpret_cast<uintptr_t>(area) % 4096 != 0 || bytes < kMinAreaBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a redo log needs a page-aligned area of at least %d bytes, not %d bytes at %p",
        kMinAreaBytes, bytes, area));
  }
  // The area must be this process's before it is touched: Flush refuses others.
  if (absl::Status s = rack.Flush(area, bytes); !s.ok()) return s;
  RedoLog log(&rack, static_cast<char*>(area), bytes / 8 * 8);
  std::memset(area, 0, kHeaderBytes);  // no slot of an earlier log may outlive this one
  if (absl::Status s = log.WriteHeader(0, 0, 0, Sum(nullptr, 0)); !s.ok()) return s;
  return log;
}

absl::StatusOr<RedoLog> RedoLog::Recover(Rack& rack, void* area, size_t bytes,
                                         RecoveryReport* report) {
  const auto base = reinterpret_cast<uintptr_t>(area);
  bytes = bytes / 8 * 8;
  if (base % 4096 != 0 || bytes < kMinAreaBytes || base + bytes < base) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "no redo log at %p: a log's area is page-aligned and at least %d bytes, not %d", area,
        kMinAreaBytes, bytes));
  }
  // All of the area must be this process's (adopted with the structure) before it is read.
  if (absl::Status s = rack.Flush(area, bytes); !s.ok()) {
    return absl::Status(
        s.code(), absl::StrCat("the redo log at ", absl::StrFormat("%p", area), ": ", s.message()));
  }
  Header slots[2];
  std::string why;
  int current = -1;
  for (int i = 0; i < 2; ++i) {
    Header& h = slots[i];
    std::memcpy(&h, static_cast<char*>(area) + i * kSlotBytes, sizeof(h));
    if (h.magic != kMagic) continue;
    if (h.header_sum != HeaderSum(h) || h.version != kVersion) {
      why = "its header does not check out";
    } else if (h.area_bytes != bytes) {
      why =
          absl::StrFormat("it was formatted for an area of %d bytes, not %d", h.area_bytes, bytes);
    } else if (h.applied > h.committed || h.record_bytes % 8 != 0 ||
               h.record_bytes > bytes - kHeaderBytes ||
               (h.applied != h.committed && h.record_bytes == 0)) {
      why = "its header holds impossible values";
    } else if (current < 0 || h.epoch > slots[current].epoch) {
      current = i;
    }
  }
  if (current < 0 && why.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat("no redo log was formatted at %p", area));
  }
  if (current < 0) {
    return absl::DataLossError(absl::StrFormat("the redo log at %p: %s", area, why));
  }
  const Header h = slots[current];
  RedoLog log(&rack, static_cast<char*>(area), bytes);
  log.committed_ = h.committed;
  log.epoch_ = h.epoch;
  RecoveryReport found;
  found.committed = h.committed;
  if (h.applied != h.committed) {
    const auto* record = reinterpret_cast<const uint64_t*>(log.area_ + kHeaderBytes);
    const size_t words = h.record_bytes / 8;
    if (Sum(record, words) != h.record_sum) {
      return absl::DataLossError(absl::StrFormat(
          "the redo log at %p: transaction %d committed but its record does not check out", area,
          h.committed));
    }
    if (std::string bad = CheckRecord(record, words, base, base + bytes); !bad.empty()) {
      return absl::DataLossError(
          absl::StrFormat("the redo log at %p: transaction %d: %s", area, h.committed, bad));
    }
    // The targets must be this process's (adopted with the log) before they are touched.
    if (absl::Status s = log.FlushTargets(record, words); !s.ok()) {
      return absl::Status(s.code(),
                          absl::StrFormat("the redo log at %p: transaction %d writes memory this "
                                          "process does not own (steal it before Recover): %s",
                                          area, h.committed, s.message()));
    }
    if (absl::Status s = log.Finish(h.record_bytes, h.record_sum); !s.ok()) return s;
    found.redone = true;
    for (size_t i = 0; i < words; i += kEntryWords + PaddedWords(record[i + 1])) {
      found.redone_bytes += record[i + 1];
    }
  }
  if (report != nullptr) *report = found;
  return log;
}

absl::Status RedoLog::Write(void* dst, const void* src, size_t len) {
  const auto begin = reinterpret_cast<uintptr_t>(dst);
  const auto area = reinterpret_cast<uintptr_t>(area_);
  if (len == 0) return absl::InvalidArgumentError(absl::StrFormat("an empty write at %p", dst));
  if (begin + len < begin) {
    return absl::InvalidArgumentError(
        absl::StrFormat("a write of %d bytes at %p runs past the end of memory", len, dst));
  }
  if (begin < area + bytes_ && begin + len > area) {
    return absl::InvalidArgumentError(
        absl::StrFormat("a write at %p lands in the redo log's own area", dst));
  }
  const size_t words = kEntryWords + PaddedWords(len);
  if ((record_.size() + words) * 8 > capacity_bytes()) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("the transaction would need %d bytes of log; the area holds %d",
                        (record_.size() + words) * 8, capacity_bytes()));
  }
  const size_t at = record_.size();
  record_.resize(at + words, 0);
  record_[at] = begin;
  record_[at + 1] = len;
  std::memcpy(&record_[at + kEntryWords], src, len);
  return absl::OkStatus();
}

void RedoLog::Abort() { record_.clear(); }

absl::Status RedoLog::Commit() {
  auto* in_log = reinterpret_cast<uint64_t*>(area_ + kHeaderBytes);
  if (unapplied_) {  // finish the committed transaction a failed Commit left
    Header h;
    std::memcpy(&h, area_ + (epoch_ % 2) * kSlotBytes, sizeof(h));
    if (absl::Status s = Finish(h.record_bytes, h.record_sum); !s.ok()) return s;
    unapplied_ = false;
  }
  if (record_.empty()) return absl::OkStatus();
  // Every target must be this process's before anything commits.
  if (absl::Status s = FlushTargets(record_.data(), record_.size()); !s.ok()) return s;
  // The record, durable before the mark that commits it.
  const size_t record_bytes = record_.size() * 8;
  std::memcpy(in_log, record_.data(), record_bytes);
  if (absl::Status s = rack_->Flush(in_log, record_bytes); !s.ok()) return s;
  // The mark. From here on the transaction is the log's: should the mark's Flush fail, the
  // mark may still reach memory (by eviction), so the next Commit finishes the transaction.
  const uint64_t sum = Sum(record_.data(), record_.size());
  const uint64_t prior = committed_++;
  record_.clear();
  absl::Status s = WriteHeader(committed_, prior, record_bytes, sum);
  if (s.ok()) s = Finish(record_bytes, sum);
  if (!s.ok()) unapplied_ = true;
  return s;
}

absl::Status RedoLog::Finish(uint64_t record_bytes, uint64_t record_sum) {
  const auto* record = reinterpret_cast<const uint64_t*>(area_ + kHeaderBytes);
  if (absl::Status s = Apply(record, record_bytes / 8); !s.ok()) return s;
  return WriteHeader(committed_, committed_, record_bytes, record_sum);
}

absl::Status RedoLog::WriteHeader(uint64_t committed, uint64_t applied, uint64_t record_bytes,
                                  uint64_t record_sum) {
  ++epoch_;
  Header h{kMagic, kVersion, epoch_, bytes_, committed, applied, record_bytes, record_sum, 0};
  h.header_sum = HeaderSum(h);
  char* slot = area_ + (epoch_ % 2) * kSlotBytes;
  std::memcpy(slot, &h, sizeof(h));
  return rack_->Flush(slot, sizeof(h));
}

absl::Status RedoLog::Apply(const uint64_t* record, size_t words) {
  for (size_t i = 0; i < words; i += kEntryWords + PaddedWords(record[i + 1])) {
    std::memcpy(reinterpret_cast<void*>(record[i]), &record[i + kEntryWords], record[i + 1]);
  }
  return FlushTargets(record, words);
}

absl::Status RedoLog::FlushTargets(const uint64_t* record, size_t words) {
  for (const Range& r : Targets(record, words)) {
    if (absl::Status s = rack_->Flush(reinterpret_cast<void*>(r.begin), r.end - r.begin); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace disagg
