// <disagg/redo_log.h>: crash-consistent updates of a structure in remote memory.
//
// Steal hands a failed or straggling process's memory to another process as the memory
// elements hold it: what was written back, by Flush or by eviction at any moment, and
// nothing else. A structure updated in place can therefore be adopted half updated: some
// pages new, some old. A RedoLog makes a group of writes atomic for whoever adopts the
// memory: it sees the state before the transaction or after it, never a mix.
//
//   auto log = disagg::RedoLog::Format(rack, area, area_bytes);   // once, in owned memory
//   log->Set(&state->step, step + 1);                             // staged, not yet visible
//   log->Write(state->items + i, &item, sizeof(item));
//   absl::Status s = log->Commit();    // atomic and durable at the memory elements when OK
//
//   // The adopter, after stealing the area and the structure (same addresses):
//   auto log = disagg::RedoLog::Recover(rack, area, area_bytes);  // redoes a committed one
//
// The contract:
// - The log lives in `area` (at least kMinAreaBytes, page-aligned), and the structure it
//   updates in other memory of the same process; both must be mapped by this process (Map,
//   Grant or Steal) and neither may overlap the other. Writes are addresses, which are the
//   same in every process, so an adopter redoes them in place.
// - Write and Set only stage: the target memory is untouched, and reads see the old state,
//   until Commit. Commit writes the transaction into the log and makes it durable (Flush),
//   marks it committed in its header (written into one of two slots in turn, so that a header
//   write torn by an eviction mid-copy leaves the one before it to recover from), then
//   applies it in place, flushes the targets and marks it applied. When Commit returns OK
//   the new state is what any adopter finds. When the process dies (or its memory is
//   stolen) before Commit returns, an adopter finds the old state or the new one: the new
//   one exactly when the commit mark reached the memory element.
// - Memory the structure holds that no transaction writes (data appended beyond what a
//   committed record points to, say) is the application's to Flush before committing the
//   record that points to it.
// - Recover must run, in the process that owns the area, before the structure is read
//   after an adoption; running it again, or on a log that needs nothing, is harmless.
// - A RedoLog is not thread-safe; one transaction is staged at a time. Commit costs the data
//   written twice (into the log, then in place) and Flush calls: three for the log (the
//   record, the commit mark, the applied mark), and per run of adjacent targets one to check
//   them beforehand and one to make them durable.
#ifndef DISAGG_REDO_LOG_H_
#define DISAGG_REDO_LOG_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "disagg/disagg.h"

namespace disagg {

// What Recover found.
struct RecoveryReport {
  uint64_t committed = 0;     // transactions committed in this log's life
  bool redone = false;        // the last one had not been applied for sure, and was redone
  uint64_t redone_bytes = 0;  // the bytes it wrote
};

class RedoLog {
 public:
  // The header takes one page; the rest of the area holds one transaction's record: each
  // write costs 16 bytes plus its length rounded up to 8.
  static constexpr size_t kHeaderBytes = 4096;
  static constexpr size_t kMinAreaBytes = 2 * kHeaderBytes;
  // The area a transaction of up to `writes` writes of `bytes` in all needs.
  static size_t AreaBytesFor(size_t writes, size_t bytes);

  // Makes [area, area + bytes) an empty log and flushes it. INVALID_ARGUMENT for an
  // unaligned area or one under kMinAreaBytes; the errors of Flush (the area must lie in
  // memory this process owns).
  static absl::StatusOr<RedoLog> Format(Rack& rack, void* area, size_t bytes);

  // Opens the log Format made at [area, area + bytes) (this process's, or adopted with its
  // memory; `bytes` as given to Format) and
  // finishes what its last transaction left: a committed one is redone in place and flushed.
  // INVALID_ARGUMENT if no log was formatted there; DATA_LOSS if the header or the committed
  // record does not check out, or the log was formatted for another size (the memory was not
  // written by a RedoLog, or was damaged);
  // the errors of Flush (INVALID_ARGUMENT when this process does not own the area or the
  // targets of the transaction to redo: adopt them all before recovering).
  static absl::StatusOr<RedoLog> Recover(Rack& rack, void* area, size_t bytes,
                                         RecoveryReport* report = nullptr);

  RedoLog(RedoLog&&) = default;
  RedoLog& operator=(RedoLog&&) = default;
  RedoLog(const RedoLog&) = delete;  // two copies would commit into one area
  RedoLog& operator=(const RedoLog&) = delete;

  // Stages a write of `len` bytes from `src` to `dst` (copied now; applied at Commit).
  // INVALID_ARGUMENT for an empty write or one into the log's area; RESOURCE_EXHAUSTED if
  // the transaction would no longer fit the area (nothing of this write is staged then).
  absl::Status Write(void* dst, const void* src, size_t len);
  template <typename T>
  absl::Status Set(T* dst, const T& value) {
    return Write(dst, &value, sizeof(T));
  }

  // Makes the staged writes one atomic, durable transaction (see the contract above). With
  // nothing staged, does nothing (but finish what a failed Commit left, see below). Errors:
  // INVALID_ARGUMENT if a target is not in memory this process owns (checked before anything is
  // committed; the writes stay staged); the errors of Flush. An error after the commit mark leaves
  // the transaction committed (an adopter redoes it) but maybe not applied here: the next Commit or
  // Recover first finishes it.
  absl::Status Commit();
  // Drops the staged writes.
  void Abort();

  // Transactions committed in this log's life.
  uint64_t committed() const { return committed_; }
  size_t staged_bytes() const { return record_.size() * sizeof(uint64_t); }
  size_t capacity_bytes() const { return bytes_ - kHeaderBytes; }

 private:
  RedoLog(Rack* rack, char* area, size_t bytes) : rack_(rack), area_(area), bytes_(bytes) {}
  absl::Status WriteHeader(uint64_t committed, uint64_t applied, uint64_t record_bytes,
                           uint64_t record_sum);
  // Copies the record's writes in place and flushes them.
  absl::Status Apply(const uint64_t* record, size_t words);
  // Applies the committed transaction (its record in the log) and marks it applied.
  absl::Status Finish(uint64_t record_bytes, uint64_t record_sum);
  // Flushes the record's targets: refused unless this process owns them all.
  absl::Status FlushTargets(const uint64_t* record, size_t words);

  Rack* rack_;
  char* area_;
  size_t bytes_;
  uint64_t committed_ = 0;
  uint64_t epoch_ = 0;            // header writes so far
  bool unapplied_ = false;        // a Commit failed after its commit mark
  std::vector<uint64_t> record_;  // the staged writes, as they go into the log
};

}  // namespace disagg

#endif  // DISAGG_REDO_LOG_H_
