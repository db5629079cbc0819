// A mapper's crash-consistent state in remote memory, published as the root "mapper-state":
// a RedoLog, then a header (which blocks of the corpus are the mapper's, how many are done),
// each partition's number of output chunks, and a table of the chunks (address and bytes
// used). Output records are appended to the chunks in place and flushed before a transaction
// commits the header and the table that cover them, one transaction per block; whoever
// steals the state and recovers its log finds every record of the first `next_block` blocks
// and nothing after them. A record is a length byte and the word's bytes; none spans chunks.
#ifndef DISAGG_EXAMPLES_MAPREDUCE_MAPPER_STATE_H_
#define DISAGG_EXAMPLES_MAPREDUCE_MAPPER_STATE_H_

#include <cstddef>
#include <cstdint>

#include "disagg/redo_log.h"

namespace mapreduce {

constexpr uint64_t kStateMagic = 0x6d61707374617465;  // "mapstate"
constexpr uint32_t kMaxPartitions = 64;
constexpr size_t kMaxChunks = 1024;  // per partition
constexpr size_t kPage = 4096;

struct StateHeader {
  uint64_t magic;
  uint64_t mapper;
  uint64_t first_block;
  uint64_t end_block;
  uint64_t next_block;  // blocks [first_block, next_block) are done
  uint64_t words;       // words they held
  uint64_t bytes_out;   // record bytes they produced
  uint64_t partitions;
  uint64_t chunk_bytes;
};

struct ChunkEntry {
  uint64_t addr;
  uint64_t used;
};

// A view of the state region at `base` for `partitions` partitions.
class StateView {
 public:
  static size_t LogBytes(uint32_t partitions) {
    // A transaction: the header, the chunk counts, and per partition a run of at most three
    // table entries (the last chunk's new fill and at most two new chunks).
    return disagg::RedoLog::AreaBytesFor(
        2 + partitions, sizeof(StateHeader) + partitions * (8 + 3 * sizeof(ChunkEntry)));
  }
  static size_t Bytes(uint32_t partitions) {
    const size_t table = partitions * kMaxChunks * sizeof(ChunkEntry);
    return LogBytes(partitions) + kPage + (table + kPage - 1) / kPage * kPage;
  }

  StateView(void* base, uint32_t partitions)
      : base_(static_cast<char*>(base)), partitions_(partitions) {}
  void* log() const { return base_; }
  StateHeader* header() const {
    return reinterpret_cast<StateHeader*>(base_ + LogBytes(partitions_));
  }
  uint64_t* chunk_counts() const { return reinterpret_cast<uint64_t*>(header() + 1); }
  ChunkEntry* table(uint32_t partition) const {
    return reinterpret_cast<ChunkEntry*>(base_ + LogBytes(partitions_) + kPage) +
           partition * kMaxChunks;
  }

 private:
  char* base_;
  uint32_t partitions_;
};
static_assert(sizeof(StateHeader) + kMaxPartitions * 8 <= kPage);

}  // namespace mapreduce

#endif  // DISAGG_EXAMPLES_MAPREDUCE_MAPPER_STATE_H_
