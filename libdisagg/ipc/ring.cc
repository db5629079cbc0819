#include "ipc/ring.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "internal/logging.h"

namespace disagg::ipc {
namespace {

// Copies `n` bytes into the ring at logical position `pos`, wrapping at the end.
void CopyIn(uint8_t* data, size_t capacity, uint64_t pos, const uint8_t* src, size_t n) {
  size_t off = pos & (capacity - 1);
  size_t first = std::min(n, capacity - off);
  std::memcpy(data + off, src, first);
  if (first < n) std::memcpy(data, src + first, n - first);
}

void CopyOut(const uint8_t* data, size_t capacity, uint64_t pos, uint8_t* dst, size_t n) {
  size_t off = pos & (capacity - 1);
  size_t first = std::min(n, capacity - off);
  std::memcpy(dst, data + off, first);
  if (first < n) std::memcpy(dst + first, data, n - first);
}

uint64_t PackHeader(uint32_t len) { return uint64_t(len ^ kFrameTag) << 32 | len; }

}  // namespace

RingWriter::RingWriter(RingControl* control, uint8_t* data, size_t capacity)
    : control_(control), data_(data), capacity_(capacity) {
  CHECK(capacity >= 64 && (capacity & (capacity - 1)) == 0) << capacity;
  head_ = control_->head.load(std::memory_order_relaxed);
  tail_cache_ = head_;
}

uint64_t* RingWriter::Slot(uint64_t pos) const {
  return reinterpret_cast<uint64_t*>(data_ + (pos & (capacity_ - 1)));
}

absl::Status RingWriter::Write(absl::Span<const absl::Span<const uint8_t>> parts) {
  size_t len = 0;
  for (const auto& p : parts) len += p.size();
  if (len == 0 || len % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ring frame of ", len, " bytes: must be a nonzero multiple of 8"));
  }
  if (len > MaxPayload()) {
    return absl::InvalidArgumentError(
        absl::StrCat("message of ", len, " bytes exceeds the channel's limit of ", MaxPayload()));
  }
  const size_t need = kFrameHeaderBytes + len + kFrameHeaderBytes;  // frame + terminator
  // The consumer's tail only grows, so a stale copy understates the free space: reading the
  // shared one (a cache miss) is needed only when the stale copy says the frame does not fit.
  if (capacity_ - (head_ - tail_cache_) < need) {
    const uint64_t tail = control_->tail.load(std::memory_order_acquire);
    const uint64_t used = head_ - tail;
    if (used > capacity_ || (used & 7) != 0) {
      return absl::DataLossError(absl::StrCat("peer published an impossible ring tail ", tail,
                                              " (head ", head_, ", capacity ", capacity_, ")"));
    }
    tail_cache_ = tail;
    if (capacity_ - used < need) {
      return absl::ResourceExhaustedError("ring full: the peer is not consuming");
    }
  }
  const uint64_t next = head_ + kFrameHeaderBytes + len;
  __atomic_store_n(Slot(next), uint64_t{0}, __ATOMIC_RELAXED);  // terminator
  uint64_t pos = head_ + kFrameHeaderBytes;
  for (const auto& p : parts) {
    CopyIn(data_, capacity_, pos, p.data(), p.size());
    pos += p.size();
  }
  // Release: the terminator and payload are visible before the header that announces them.
  __atomic_store_n(Slot(head_), PackHeader(static_cast<uint32_t>(len)), __ATOMIC_RELEASE);
  head_ = next;
  // seq_cst: pairs with the consumer's store of consumer_sleeping followed by its load of head.
  control_->head.store(head_, std::memory_order_seq_cst);
  return absl::OkStatus();
}

bool RingWriter::ConsumerSleeping() const {
  return control_->consumer_sleeping.load(std::memory_order_seq_cst) != 0;
}

RingReader::RingReader(RingControl* control, uint8_t* data, size_t capacity)
    : control_(control), data_(data), capacity_(capacity) {
  CHECK(capacity >= 64 && (capacity & (capacity - 1)) == 0) << capacity;
  tail_ = control_->tail.load(std::memory_order_relaxed);
}

uint64_t RingReader::HeaderAtTail() const {
  return __atomic_load_n(reinterpret_cast<const uint64_t*>(data_ + (tail_ & (capacity_ - 1))),
                         __ATOMIC_ACQUIRE);
}

absl::StatusOr<bool> RingReader::Read(std::vector<uint64_t>& out) {
  uint64_t header = HeaderAtTail();
  if (header == 0) {
    __builtin_prefetch(data_ + ((tail_ + kCacheLine) & (capacity_ - 1)));
    // No frame where one would start. The head index says whether that is right.
    const uint64_t head = control_->head.load(std::memory_order_acquire);
    switch (Classify(head)) {
      case HeadState::kCaughtUp:
      case HeadState::kLagging:
        return false;
      case HeadState::kImpossible:
        return absl::DataLossError(absl::StrCat("peer published an impossible ring head ", head,
                                                " (tail ", tail_, ", capacity ", capacity_, ")"));
      case HeadState::kAhead:
        break;
    }
    const uint64_t avail = head - tail_;
    header = HeaderAtTail();  // the head store follows the header store: look again
    if (header == 0) {
      return absl::DataLossError(
          absl::StrCat("peer published ", avail, " bytes but no frame header at ", tail_));
    }
  }
  const uint32_t len = static_cast<uint32_t>(header);
  if (header != PackHeader(len)) {
    return absl::DataLossError(absl::StrCat("corrupt frame header at ring offset ", tail_));
  }
  if (len == 0 || len % 8 != 0 || len > MaxPayloadFor(capacity_)) {
    return absl::DataLossError(absl::StrCat("frame length ", len, " is not allowed (limit ",
                                            MaxPayloadFor(capacity_), ")"));
  }
  out.resize(len / 8);
  CopyOut(data_, capacity_, tail_ + kFrameHeaderBytes, reinterpret_cast<uint8_t*>(out.data()), len);
  tail_ += kFrameHeaderBytes + len;
  control_->tail.store(tail_, std::memory_order_release);
  return true;
}

bool RingReader::HasData() const {
  const uint64_t header = HeaderAtTail();
  if (header == 0) __builtin_prefetch(data_ + ((tail_ + kCacheLine) & (capacity_ - 1)));
  return header != 0;
}

RingReader::HeadState RingReader::Classify(uint64_t head) const {
  if (head == tail_) return HeadState::kCaughtUp;
  if ((head & 7) != (tail_ & 7)) return HeadState::kImpossible;
  if (head - tail_ <= capacity_) return HeadState::kAhead;
  // The writer stores a frame's header before the head index, so a reader that has taken a
  // frame can be ahead of the published head, by less than a ring.
  if (tail_ - head <= capacity_) return HeadState::kLagging;
  return HeadState::kImpossible;
}

bool RingReader::PrepareToSleep() {
  control_->consumer_sleeping.store(1, std::memory_order_seq_cst);
  const HeadState state = Classify(control_->head.load(std::memory_order_seq_cst));
  if (state == HeadState::kAhead || state == HeadState::kImpossible || HasData()) {
    control_->consumer_sleeping.store(0, std::memory_order_relaxed);
    return true;
  }
  return false;
}

void RingReader::Awake() { control_->consumer_sleeping.store(0, std::memory_order_relaxed); }

}  // namespace disagg::ipc
