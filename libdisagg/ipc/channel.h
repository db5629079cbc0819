// Channel: one bidirectional message channel between two processes: a sealed memfd holding two
// SPSC rings (one per direction) plus an eventfd doorbell per direction. Messages are Cap'n
// Proto messages framed in the rings. The creator side (a daemon) makes the memfd and hands
// it, with the doorbells, to the attacher over a Unix socket (see socket.h).
//
// Shared-memory layout (all offsets fixed by the creator and validated by the attacher):
//   [0, 64)                 ChannelHeader, written once by the creator, read once by the attacher
//   [64, 64+192)            RingControl for creator->attacher
//   [256, 256+192)          RingControl for attacher->creator
//   [512, 512+R)            data of creator->attacher
//   [512+R, 512+2R)         data of attacher->creator
//   [P, P+S*4096)           S page slots (P: 512+2R rounded up to a page), if S > 0
// The memfd is sealed against shrinking and growing, so the peer can never make us SIGBUS.
// Page slots carry bulk page data beside the messages: a message names the slots, and what is
// in them belongs to whichever side the protocol says (see ReadPages in rack.capnp). Either
// side may scribble on them at any time: they hold data, never anything either side trusts.
//
// Thread-safety: one thread sends and one thread receives at a time. Move-only resource.
#ifndef DISAGG_IPC_CHANNEL_H_
#define DISAGG_IPC_CHANNEL_H_

#include <capnp/message.h>

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ipc/fd.h"
#include "ipc/ring.h"

namespace disagg::ipc {

inline constexpr size_t kDefaultRingBytes = 256 << 10;
// Layout offsets (see above), public for tools and tests that play a hostile peer.
inline constexpr size_t kChannelHeaderBytes = 64;
inline constexpr size_t kChannelDataOffset = kChannelHeaderBytes + 2 * sizeof(RingControl);
inline constexpr size_t kMinRingBytes = 4 << 10;
inline constexpr size_t kMaxRingBytes = 64 << 20;
inline constexpr size_t kSlotBytes = 4096;
inline constexpr size_t kMaxSlotPages = 4096;

// A mapping of a shared-memory file. Move-only; unmaps on destruction.
class ShmRegion {
 public:
  ShmRegion() = default;
  static absl::StatusOr<ShmRegion> Map(int fd, size_t size);
  ShmRegion(ShmRegion&& other) noexcept;
  ShmRegion& operator=(ShmRegion&& other) noexcept;
  ~ShmRegion();

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// The file descriptors that make up a channel, as they travel in SCM_RIGHTS.
struct ChannelFds {
  Fd memfd;
  Fd doorbell_to_creator;   // the attacher rings this after writing
  Fd doorbell_to_attacher;  // the creator rings this after writing
};

class Channel {
 public:
  // Creates a fresh channel with rings of `ring_bytes` each (power of two, 4 KiB..64 MiB)
  // and `slot_pages` page slots (at most kMaxSlotPages).
  static absl::StatusOr<Channel> Create(size_t ring_bytes = kDefaultRingBytes,
                                        size_t slot_pages = 0);
  // Attaches to a channel the peer created. Validates the memfd's seals and size and the
  // header. INVALID_ARGUMENT with the reason if anything is off.
  static absl::StatusOr<Channel> Attach(ChannelFds fds);

  Channel(Channel&&) noexcept = default;
  Channel& operator=(Channel&&) noexcept = default;

  // Duplicates of the descriptors to hand to the attacher (creator side only).
  absl::StatusOr<ChannelFds> DupForPeer() const;

  // Frames `message` into the outgoing ring and rings the doorbell if the peer sleeps.
  // INVALID_ARGUMENT: too large for the channel; RESOURCE_EXHAUSTED: ring full now;
  // DATA_LOSS: the peer corrupted the ring's indices.
  absl::Status Send(capnp::MessageBuilder& message);

  // Copies the next incoming frame into `words`. false if none is waiting; DATA_LOSS if the
  // peer corrupted the ring. The words are not yet parsed: see DecodeMessage (wire.h).
  absl::StatusOr<bool> Receive(std::vector<uint64_t>& words) { return in_.Read(words); }
  bool HasData() const { return in_.HasData(); }
  size_t max_message_bytes() const { return out_.MaxPayload(); }

  // Waiting. The doorbell fd becomes readable when the peer rang; DrainDoorbell() resets it.
  int doorbell_fd() const { return doorbell_in_.get(); }
  void DrainDoorbell();
  // Wakes the peer (Send does this itself when the peer sleeps).
  void RingDoorbell();
  // See RingReader: true means "data arrived, do not sleep".
  bool PrepareToSleep() { return in_.PrepareToSleep(); }
  void Awake() { in_.Awake(); }

  // The shared memory itself, for tests and tools that play a hostile peer.
  const ShmRegion& shared_memory() const { return shm_; }
  // Index (0 or 1) of the ring this side writes: RingControl k sits at
  // kChannelHeaderBytes + k * sizeof(RingControl), its data at kChannelDataOffset + k * R.
  int outgoing_ring_index() const { return creator_ ? 0 : 1; }
  size_t ring_bytes() const { return ring_bytes_; }
  // Page slot `index` (kSlotBytes, page-aligned), or null past slot_pages().
  uint8_t* slot(size_t index) const;
  size_t slot_pages() const { return slot_pages_; }

  // Blocks until a message is waiting: spins for `spin`, then sleeps on the doorbell.
  // DEADLINE_EXCEEDED at `deadline`; UNAVAILABLE if `hangup_fd` (the socket) reports hang-up.
  absl::Status WaitReadable(absl::Time deadline, absl::Duration spin, int hangup_fd);

 private:
  Channel(ShmRegion shm, bool creator, size_t ring_bytes, size_t slot_pages, Fd memfd,
          Fd doorbell_in, Fd doorbell_out);

  ShmRegion shm_;
  bool creator_;
  size_t ring_bytes_;
  size_t slot_pages_;
  Fd memfd_;
  Fd doorbell_in_;
  Fd doorbell_out_;
  RingWriter out_;
  RingReader in_;
  std::unique_ptr<capnp::word[]> scratch_;  // segment table staging, kMaxSegments+1 words
};

}  // namespace disagg::ipc

#endif  // DISAGG_IPC_CHANNEL_H_
