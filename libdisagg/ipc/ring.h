// A single-producer single-consumer byte ring of variable-size frames, living in memory that
// the peer can also write (shared memory is hostile). Each side keeps its own index privately
// and only publishes it; every index and length read from the shared control block is read
// once and validated before use, so a peer that scribbles over the ring gets a DATA_LOSS
// status, never an out-of-bounds access.
//
// Frame: 8-byte header {uint32 length, uint32 length ^ kFrameTag}, then `length` bytes of
// payload (a multiple of 8). Frames are 8-byte aligned, so a header never straddles the end
// of the data area; payloads may wrap and are copied in two pieces.
//
// The header is also the frame's "ready" flag: before publishing a frame the writer zeroes
// the header slot that follows it (the terminator), then writes the payload, then stores the
// header (release), then the head index. A reader therefore finds the next frame by looking
// at one word where its tail points, which shares a cache line with the payload: a message
// costs the reader one or two cache misses, not three. The head index is still published and
// checked whenever the reader finds no frame (empty ring, sleep protocol), which is where a
// hostile head index is caught.
//
// Thread-safety: a RingWriter is used by one thread of the producer, a RingReader by one
// thread of the consumer. The control block and data area are owned by whoever mapped them
// and must outlive both.
#ifndef DISAGG_IPC_RING_H_
#define DISAGG_IPC_RING_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace disagg::ipc {

inline constexpr size_t kCacheLine = 64;
inline constexpr size_t kFrameHeaderBytes = 8;
inline constexpr uint32_t kFrameTag = 0xD15A6600u;

// Shared control block of one ring. Each field sits on its own cache line so the producer
// and consumer do not false-share.
struct RingControl {
  // Bytes ever published by the producer. Written only by the producer.
  alignas(kCacheLine) std::atomic<uint64_t> head;
  // Bytes ever consumed by the consumer. Written only by the consumer.
  alignas(kCacheLine) std::atomic<uint64_t> tail;
  // Nonzero while the consumer is asleep (or about to be): the producer must ring the doorbell.
  alignas(kCacheLine) std::atomic<uint32_t> consumer_sleeping;
};
static_assert(sizeof(RingControl) == 3 * kCacheLine);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

// Largest payload a ring of `capacity` bytes accepts: a quarter of it, so that a reader that
// lags by a few messages does not stall the writer. A frame occupies 8 + payload bytes, and
// the writer needs 8 more free for the terminator.
constexpr size_t MaxPayloadFor(size_t capacity) { return capacity / 4 - kFrameHeaderBytes; }

// Producer side of a ring.
class RingWriter {
 public:
  // `data` holds `capacity` bytes, a power of two and a multiple of 8.
  RingWriter(RingControl* control, uint8_t* data, size_t capacity);

  // Appends one frame whose payload is the concatenation of `parts` (total a multiple of 8).
  // Errors: INVALID_ARGUMENT if the payload is empty, unaligned or larger than MaxPayload();
  // RESOURCE_EXHAUSTED if it does not fit now (nothing written); DATA_LOSS if the consumer's
  // published tail is impossible (the peer broke the protocol).
  absl::Status Write(absl::Span<const absl::Span<const uint8_t>> parts);

  // After a successful Write: true if the consumer asked to be woken (seq_cst ordered with the
  // publication of the frame, so a wake-up is never lost).
  bool ConsumerSleeping() const;

  size_t MaxPayload() const { return MaxPayloadFor(capacity_); }

 private:
  uint64_t* Slot(uint64_t pos) const;

  RingControl* control_;
  uint8_t* data_;
  size_t capacity_;
  uint64_t head_;        // private copy; the shared one is only ever stored to
  uint64_t tail_cache_;  // last tail read from the consumer; reloaded only when space looks short
};

// Consumer side of a ring.
class RingReader {
 public:
  RingReader(RingControl* control, uint8_t* data, size_t capacity);

  // Copies the next frame's payload into `out` (resized to the payload's words) and consumes
  // it. Returns false if the ring is empty. DATA_LOSS if the producer's head or the frame
  // header is corrupt; the ring must then be abandoned.
  absl::StatusOr<bool> Read(std::vector<uint64_t>& out);

  // True if a frame is waiting. Cheap (one word); spin on this.
  bool HasData() const;

  // Sleep protocol: call PrepareToSleep() before blocking on the doorbell; if it returns true
  // data arrived meanwhile (or the head index is corrupt: Read will say so) and the caller
  // must not block. Call Awake() after waking.
  bool PrepareToSleep();
  void Awake();

 private:
  enum class HeadState { kCaughtUp, kAhead, kLagging, kImpossible };
  uint64_t HeaderAtTail() const;
  // Where the published head stands relative to this reader's tail.
  HeadState Classify(uint64_t head) const;

  RingControl* control_;
  uint8_t* data_;
  size_t capacity_;
  uint64_t tail_;  // private copy
};

}  // namespace disagg::ipc

#endif  // DISAGG_IPC_RING_H_
