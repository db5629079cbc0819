#include "ipc/channel.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "internal/status_macros.h"

namespace disagg::ipc {
namespace {

constexpr uint64_t kChannelMagic = 0x6469736167674348ull;  // "disaggCH"
constexpr uint32_t kChannelVersion = 2;                    // 2: page slots
constexpr size_t kHeaderBytes = kChannelHeaderBytes;
constexpr size_t kDataOffset = kChannelDataOffset;
constexpr unsigned kRequiredSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
constexpr size_t kMaxSegments = 32;

struct ChannelHeader {
  uint64_t magic;
  uint32_t version;
  uint32_t ring_bytes;
  uint32_t slot_pages;
};
static_assert(sizeof(ChannelHeader) <= kHeaderBytes);
static_assert(kDataOffset % kCacheLine == 0);

// The page slots start on a page boundary after the rings.
size_t SlotsOffset(size_t ring_bytes) {
  return (kDataOffset + 2 * ring_bytes + kSlotBytes - 1) / kSlotBytes * kSlotBytes;
}

size_t LayoutBytes(size_t ring_bytes, size_t slot_pages) {
  return slot_pages == 0 ? kDataOffset + 2 * ring_bytes
                         : SlotsOffset(ring_bytes) + slot_pages * kSlotBytes;
}

RingControl* ControlAt(const ShmRegion& shm, int index) {
  return reinterpret_cast<RingControl*>(shm.data() + kHeaderBytes + index * sizeof(RingControl));
}

uint8_t* DataAt(const ShmRegion& shm, size_t ring_bytes, int index) {
  return shm.data() + kDataOffset + index * ring_bytes;
}

bool ValidRingBytes(uint64_t n) {
  return n >= kMinRingBytes && n <= kMaxRingBytes && (n & (n - 1)) == 0;
}

absl::StatusOr<Fd> MakeEventFd() {
  Fd fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("eventfd");
  return fd;
}

absl::StatusOr<Fd> Dup(const Fd& fd) {
  Fd copy(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
  if (!copy.valid()) return ErrnoStatus("dup");
  return copy;
}

}  // namespace

absl::StatusOr<ShmRegion> ShmRegion::Map(int fd, size_t size) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return ErrnoStatus("mmap channel");
  ShmRegion r;
  r.data_ = static_cast<uint8_t*>(p);
  r.size_ = size;
  return r;
}

ShmRegion::ShmRegion(ShmRegion&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

ShmRegion& ShmRegion::operator=(ShmRegion&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) ::munmap(data_, size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

ShmRegion::~ShmRegion() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

Channel::Channel(ShmRegion shm, bool creator, size_t ring_bytes, size_t slot_pages, Fd memfd,
                 Fd doorbell_in, Fd doorbell_out)
    : shm_(std::move(shm)),
      creator_(creator),
      ring_bytes_(ring_bytes),
      slot_pages_(slot_pages),
      memfd_(std::move(memfd)),
      doorbell_in_(std::move(doorbell_in)),
      doorbell_out_(std::move(doorbell_out)),
      out_(ControlAt(shm_, creator ? 0 : 1), DataAt(shm_, ring_bytes, creator ? 0 : 1), ring_bytes),
      in_(ControlAt(shm_, creator ? 1 : 0), DataAt(shm_, ring_bytes, creator ? 1 : 0), ring_bytes),
      scratch_(new capnp::word[kMaxSegments / 2 + 1]) {}

absl::StatusOr<Channel> Channel::Create(size_t ring_bytes, size_t slot_pages) {
  if (!ValidRingBytes(ring_bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ring size ", ring_bytes, " must be a power of two in [4 KiB, 64 MiB]"));
  }
  if (slot_pages > kMaxSlotPages) {
    return absl::InvalidArgumentError(
        absl::StrCat(slot_pages, " page slots: at most ", kMaxSlotPages));
  }
  Fd memfd(::memfd_create("disagg-channel", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!memfd.valid()) return ErrnoStatus("memfd_create");
  const size_t size = LayoutBytes(ring_bytes, slot_pages);
  if (::ftruncate(memfd.get(), size) != 0) return ErrnoStatus("ftruncate channel");
  if (::fcntl(memfd.get(), F_ADD_SEALS, kRequiredSeals) != 0) return ErrnoStatus("seal channel");
  ASSIGN_OR_RETURN(ShmRegion shm, ShmRegion::Map(memfd.get(), size));
  auto* header = reinterpret_cast<ChannelHeader*>(shm.data());
  header->magic = kChannelMagic;
  header->version = kChannelVersion;
  header->ring_bytes = static_cast<uint32_t>(ring_bytes);
  header->slot_pages = static_cast<uint32_t>(slot_pages);
  ASSIGN_OR_RETURN(Fd in, MakeEventFd());
  ASSIGN_OR_RETURN(Fd out, MakeEventFd());
  return Channel(std::move(shm), /*creator=*/true, ring_bytes, slot_pages, std::move(memfd),
                 std::move(in), std::move(out));
}

absl::StatusOr<Channel> Channel::Attach(ChannelFds fds) {
  const int seals = ::fcntl(fds.memfd.get(), F_GET_SEALS);
  if (seals < 0) return ErrnoStatus("channel memfd: F_GET_SEALS");
  if ((seals & kRequiredSeals) != kRequiredSeals) {
    return absl::InvalidArgumentError(absl::StrCat(
        "channel memfd is not sealed against resizing (seals 0x", absl::Hex(seals), ")"));
  }
  struct stat st;
  if (::fstat(fds.memfd.get(), &st) != 0) return ErrnoStatus("fstat channel memfd");
  if (static_cast<size_t>(st.st_size) < kDataOffset) {
    return absl::InvalidArgumentError("channel memfd is too small for its header");
  }
  ASSIGN_OR_RETURN(ShmRegion shm, ShmRegion::Map(fds.memfd.get(), st.st_size));
  ChannelHeader header;
  std::memcpy(&header, shm.data(), sizeof(header));  // read once
  if (header.magic != kChannelMagic || header.version != kChannelVersion) {
    return absl::InvalidArgumentError("channel memfd has a wrong magic or version");
  }
  if (!ValidRingBytes(header.ring_bytes) || header.slot_pages > kMaxSlotPages ||
      LayoutBytes(header.ring_bytes, header.slot_pages) != static_cast<size_t>(st.st_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("channel ring size ", header.ring_bytes, " and ", header.slot_pages,
                     " page slots do not match a memfd of ", st.st_size));
  }
  return Channel(std::move(shm), /*creator=*/false, header.ring_bytes, header.slot_pages,
                 std::move(fds.memfd), std::move(fds.doorbell_to_attacher),
                 std::move(fds.doorbell_to_creator));
}

uint8_t* Channel::slot(size_t index) const {
  return index < slot_pages_ ? shm_.data() + SlotsOffset(ring_bytes_) + index * kSlotBytes
                             : nullptr;
}

absl::StatusOr<ChannelFds> Channel::DupForPeer() const {
  ChannelFds fds;
  ASSIGN_OR_RETURN(fds.memfd, Dup(memfd_));
  // Our incoming doorbell is the one the attacher rings.
  ASSIGN_OR_RETURN(fds.doorbell_to_creator, Dup(doorbell_in_));
  ASSIGN_OR_RETURN(fds.doorbell_to_attacher, Dup(doorbell_out_));
  return fds;
}

absl::Status Channel::Send(capnp::MessageBuilder& message) {
  auto segments = message.getSegmentsForOutput();
  const size_t n = segments.size();
  if (n == 0 || n > kMaxSegments) {
    return absl::InvalidArgumentError(absl::StrCat("message has ", n, " segments"));
  }
  // Standard Cap'n Proto stream framing: segment count - 1, each segment's size in words,
  // padded to a whole word.
  auto* table = reinterpret_cast<uint32_t*>(scratch_.get());
  table[0] = static_cast<uint32_t>(n - 1);
  for (size_t i = 0; i < n; ++i) table[i + 1] = static_cast<uint32_t>(segments[i].size());
  const size_t table_words = (n + 2) / 2;
  if (n % 2 == 0) table[n + 1] = 0;
  const absl::Span<const uint8_t> table_bytes(reinterpret_cast<const uint8_t*>(table),
                                              table_words * sizeof(capnp::word));
  auto segment_bytes = [&](size_t i) {
    return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(segments[i].begin()),
                                     segments[i].size() * sizeof(capnp::word));
  };
  if (n == 1) {  // the common case, without building a parts list
    const absl::Span<const uint8_t> parts[2] = {table_bytes, segment_bytes(0)};
    RETURN_IF_ERROR(out_.Write(parts));
  } else {
    std::vector<absl::Span<const uint8_t>> parts = {table_bytes};
    for (size_t i = 0; i < n; ++i) parts.push_back(segment_bytes(i));
    RETURN_IF_ERROR(out_.Write(parts));
  }
  if (out_.ConsumerSleeping()) RingDoorbell();
  return absl::OkStatus();
}

void Channel::RingDoorbell() {
  const uint64_t one = 1;
  // EAGAIN means the counter is saturated: the peer will wake anyway.
  (void)!::write(doorbell_out_.get(), &one, sizeof(one));
}

void Channel::DrainDoorbell() {
  uint64_t value;
  (void)!::read(doorbell_in_.get(), &value, sizeof(value));
}

absl::Status Channel::WaitReadable(absl::Time deadline, absl::Duration spin, int hangup_fd) {
  std::optional<absl::Time> spin_until;  // read from the clock at the first look at it
  // Without a spin, the first look that finds nothing goes to sleep.
  for (uint32_t round = spin > absl::ZeroDuration() ? 1 : 0;; ++round) {
    if (in_.HasData()) return absl::OkStatus();
    // Reading the clock costs more than a look at the ring: do it every 64th round.
    if (round % 64 != 0) {
      __builtin_ia32_pause();
      continue;
    }
    const absl::Time now = absl::Now();
    if (!spin_until) spin_until = now + spin;
    if (now >= deadline) return absl::DeadlineExceededError("no reply from the peer in time");
    if (now < *spin_until) continue;
    if (in_.PrepareToSleep()) return absl::OkStatus();
    struct pollfd fds[2] = {{doorbell_in_.get(), POLLIN, 0}, {hangup_fd, POLLRDHUP, 0}};
    const int64_t ms = absl::ToInt64Milliseconds(deadline - now) + 1;
    const int rc =
        ::poll(fds, hangup_fd >= 0 ? 2 : 1, static_cast<int>(std::min<int64_t>(ms, 1000)));
    in_.Awake();
    if (rc < 0 && errno != EINTR) return ErrnoStatus("poll channel");
    if (fds[0].revents & POLLIN) DrainDoorbell();
    if (in_.HasData()) return absl::OkStatus();
    if (hangup_fd >= 0 && (fds[1].revents & (POLLRDHUP | POLLHUP | POLLERR))) {
      return absl::UnavailableError("the peer hung up");
    }
  }
}

}  // namespace disagg::ipc
