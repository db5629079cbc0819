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

}  // namespace

RingWriter::RingWriter(RingControl* control, uint8_t* data, size_t capacity)
    : control_(control), data_(data), capacity_(capacity) {
  CHECK(capacity >= 64 && (capacity & (capacity - 1)) == 0) << capacity;
  head_ = control_->head.load(std::memory_order_relaxed);
}

absl::Status RingWriter::Write(absl::Span<const absl::Span<const uint8_t>> parts) {
  size_t len = 0;
  for (const auto& p : parts) len += p.size();
  if (len == 0 || len % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("ring frame of ", len,
                                                   " bytes: must be a nonzero multiple of 8"));
  }
  if (len > MaxPayload()) {
    return absl::InvalidArgumentError(
        absl::StrCat("message of ", len, " bytes exceeds the channel's limit of ", MaxPayload()));
  }
  const uint64_t tail = control_->tail.load(std::memory_order_acquire);
  const uint64_t used = head_ - tail;
  if (used > capacity_ || (used & 7) != 0) {
    return absl::DataLossError(absl::StrCat("peer published an impossible ring tail ", tail,
                                            " (head ", head_, ", capacity ", capacity_, ")"));
  }
  if (capacity_ - used < len + kFrameHeaderBytes) {
    return absl::ResourceExhaustedError("ring full: the peer is not consuming");
  }
  const uint32_t header[2] = {static_cast<uint32_t>(len), static_cast<uint32_t>(len) ^ kFrameTag};
  CopyIn(data_, capacity_, head_, reinterpret_cast<const uint8_t*>(header), sizeof(header));
  uint64_t pos = head_ + kFrameHeaderBytes;
  for (const auto& p : parts) {
    CopyIn(data_, capacity_, pos, p.data(), p.size());
    pos += p.size();
  }
  head_ = pos;
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

absl::StatusOr<bool> RingReader::Read(std::vector<uint64_t>& out) {
  const uint64_t head = control_->head.load(std::memory_order_acquire);
  const uint64_t avail = head - tail_;
  if (avail == 0) return false;
  if (avail > capacity_ || (avail & 7) != 0) {
    return absl::DataLossError(absl::StrCat("peer published an impossible ring head ", head,
                                            " (tail ", tail_, ", capacity ", capacity_, ")"));
  }
  if (avail < kFrameHeaderBytes) {
    return absl::DataLossError("peer published a partial frame header");
  }
  uint32_t header[2];
  CopyOut(data_, capacity_, tail_, reinterpret_cast<uint8_t*>(header), sizeof(header));
  const uint32_t len = header[0];
  if ((header[1] ^ kFrameTag) != len) {
    return absl::DataLossError(absl::StrCat("corrupt frame header at ring offset ", tail_));
  }
  if (len == 0 || len % 8 != 0 || len > MaxPayloadFor(capacity_)) {
    return absl::DataLossError(absl::StrCat("frame length ", len, " is not allowed (limit ",
                                            MaxPayloadFor(capacity_), ")"));
  }
  if (len + kFrameHeaderBytes > avail) {
    return absl::DataLossError(absl::StrCat("frame of ", len, " bytes overruns the ", avail,
                                            " bytes the peer published"));
  }
  out.resize(len / 8);
  CopyOut(data_, capacity_, tail_ + kFrameHeaderBytes, reinterpret_cast<uint8_t*>(out.data()),
          len);
  tail_ += kFrameHeaderBytes + len;
  control_->tail.store(tail_, std::memory_order_release);
  return true;
}

bool RingReader::HasData() const {
  return control_->head.load(std::memory_order_acquire) != tail_;
}

bool RingReader::PrepareToSleep() {
  control_->consumer_sleeping.store(1, std::memory_order_seq_cst);
  if (control_->head.load(std::memory_order_seq_cst) != tail_) {
    control_->consumer_sleeping.store(0, std::memory_order_relaxed);
    return true;
  }
  return false;
}

void RingReader::Awake() { control_->consumer_sleeping.store(0, std::memory_order_relaxed); }

}  // namespace disagg::ipc
