// Decoding and building rack messages (schema proto/rack.capnp). DecodeMessage is the one
// place where Cap'n Proto exceptions are caught: a malformed message from a peer becomes an
// INVALID_ARGUMENT status, never a crash. Thread-safe (no shared state).
#ifndef DISAGG_IPC_WIRE_H_
#define DISAGG_IPC_WIRE_H_

#include <capnp/message.h>

#include <cstdint>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "proto/rack.capnp.h"

namespace disagg::ipc {

// Nesting limit applied to every incoming message.
inline constexpr int kNestingLimit = 16;

// Parses `words` (a frame copied out of shared memory) as a proto::Message, checks every
// pointer in it against the frame's bounds with traversal and nesting limits, and calls
// `use` with the root; a message that fails the check never reaches `use`. Single-segment
// messages (all but the large ones) are checked by ValidateSegment (validate.h) and then read
// without Cap'n Proto's per-message reader; others go through its checked reader. Any Cap'n
// Proto exception, from parsing or from inside `use`, is returned as INVALID_ARGUMENT naming
// the problem. `use`'s own Status is passed through.
absl::Status DecodeMessage(absl::Span<const uint64_t> words,
                           absl::FunctionRef<absl::Status(proto::Message::Reader)> use);

// A message under construction whose first segment is a pre-zeroed block from a small
// per-thread pool, so that small messages (requests, replies, heartbeats) cost no heap
// allocation and no zeroing of a whole block: when the message is dropped, only the words it
// used are zeroed again. Larger messages spill to the heap, a zeroed segment at a time; so do
// messages built while the thread already holds kPoolBlocks others. Cheaper than
// capnp::MallocMessageBuilder with scratch space: no growth heuristics, nothing to free.
// Not copyable or movable: build, send, drop, on one thread (the one that built it; checked).
class SmallMessage : public capnp::MessageBuilder {
 public:
  static constexpr size_t kScratchWords = 48;
  static constexpr int kPoolBlocks = 8;

  SmallMessage() = default;
  ~SmallMessage() override;
  SmallMessage(const SmallMessage&) = delete;
  SmallMessage& operator=(const SmallMessage&) = delete;

  capnp::MessageBuilder& builder() { return *this; }
  // Starts a message; `seq` 0 for messages that expect no reply.
  proto::Message::Builder Init(uint64_t seq = 0) {
    auto root = initRoot<proto::Message>();
    root.setSeq(seq);
    return root;
  }

  kj::ArrayPtr<capnp::word> allocateSegment(unsigned int minimum_words) override;

 private:
  static constexpr size_t kSpillWords = 1024;
  capnp::word* scratch_ = nullptr;  // the pool block lent to this message, if any
  int scratch_block_ = -1;
  void* pool_ = nullptr;  // the lending thread's pool
  bool first_segment_ = true;
  std::vector<kj::Array<capnp::word>> spilled_;
};

// Fills `error` from a non-OK status.
void SetError(proto::Error::Builder error, const absl::Status& status);
// The status an Error message carries (an unknown code becomes UNKNOWN).
absl::Status ErrorToStatus(proto::Error::Reader error);

const char* HealthName(proto::Health health);
const char* KindName(proto::ElementKind kind);

}  // namespace disagg::ipc

#endif  // DISAGG_IPC_WIRE_H_
