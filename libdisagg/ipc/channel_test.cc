#include "ipc/channel.h"

#include <capnp/message.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "ipc/wire.h"
#include "proto/rack.capnp.h"

namespace disagg::ipc {
namespace {

// One page slot past the limit.
constexpr uint32_t kOverSlots = static_cast<uint32_t>(kMaxSlotPages) + 1;

absl::Status SendEcho(Channel& channel, uint64_t seq, size_t bytes) {
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<proto::Message>();
  root.setSeq(seq);
  auto data = root.initEcho(bytes);
  for (size_t i = 0; i < bytes; ++i) data[i] = static_cast<uint8_t>(seq + i);
  return channel.Send(builder);
}

TEST_CASE("A channel carries Cap'n Proto messages both ways") {
  auto creator = Channel::Create(kMinRingBytes);
  REQUIRE(creator.ok());
  auto fds = creator->DupForPeer();
  REQUIRE(fds.ok());
  auto attacher = Channel::Attach(*std::move(fds));
  REQUIRE(attacher.ok());

  std::vector<uint64_t> words;
  for (uint64_t seq = 1; seq <= 500; ++seq) {
    Channel& from = seq % 2 ? *creator : *attacher;
    Channel& to = seq % 2 ? *attacher : *creator;
    REQUIRE(SendEcho(from, seq, seq % 300).ok());
    REQUIRE(to.WaitReadable(absl::Now() + absl::Seconds(5), absl::ZeroDuration(), -1).ok());
    auto got = to.Receive(words);
    REQUIRE(got.ok());
    REQUIRE(*got);
    REQUIRE(DecodeMessage(words, [&](proto::Message::Reader m) {
              REQUIRE(m.getSeq() == seq);
              REQUIRE(m.isEcho());
              auto data = m.getEcho();
              REQUIRE(data.size() == seq % 300);
              for (size_t i = 0; i < data.size(); ++i) REQUIRE(data[i] == uint8_t(seq + i));
              return absl::OkStatus();
            }).ok());
  }
}

TEST_CASE("A channel refuses a message larger than its limit") {
  auto channel = Channel::Create(kMinRingBytes);
  REQUIRE(channel.ok());
  REQUIRE(absl::IsInvalidArgument(SendEcho(*channel, 1, channel->max_message_bytes() + 1)));
}

TEST_CASE("Attaching refuses a memfd the peer could resize or that lies about its size") {
  auto make_fds = [](int memfd) {
    ChannelFds fds;
    fds.memfd = Fd(memfd);
    fds.doorbell_to_creator = Fd(::eventfd(0, EFD_NONBLOCK));
    fds.doorbell_to_attacher = Fd(::eventfd(0, EFD_NONBLOCK));
    return fds;
  };
  SECTION("unsealed") {
    int fd = ::memfd_create("test", MFD_ALLOW_SEALING);
    REQUIRE(::ftruncate(fd, 1 << 20) == 0);
    auto attached = Channel::Attach(make_fds(fd));
    REQUIRE(absl::IsInvalidArgument(attached.status()));
    REQUIRE_THAT(std::string(attached.status().message()), Catch::Contains("sealed"));
  }
  SECTION("sealed but garbage header") {
    int fd = ::memfd_create("test", MFD_ALLOW_SEALING);
    REQUIRE(::ftruncate(fd, 1 << 20) == 0);
    std::vector<uint8_t> junk(4096, 0x5A);
    REQUIRE(::pwrite(fd, junk.data(), junk.size(), 0) == 4096);
    REQUIRE(::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0);
    REQUIRE(absl::IsInvalidArgument(Channel::Attach(make_fds(fd)).status()));
  }
  SECTION("a header whose page slots do not match the memfd, or are too many") {
    // A memfd laid out for `laid_out` slots whose header claims `claimed`: more than it holds,
    // fewer (slots the attacher would not see), none (a slotted memfd read as plain rings),
    // and one past the limit in a memfd that holds them all.
    auto [laid_out, claimed] =
        GENERATE(table<uint32_t, uint32_t>({{4, 5}, {4, 3}, {4, 0}, {kOverSlots, kOverSlots}}));
    INFO("laid out for " << laid_out << " slots, claims " << claimed);
    auto real = Channel::Create(kMinRingBytes, 4);
    REQUIRE(real.ok());
    const int fd = ::memfd_create("test", MFD_ALLOW_SEALING);
    const size_t size = real->shared_memory().size() + (laid_out - 4) * size_t{kSlotBytes};
    REQUIRE(::ftruncate(fd, size) == 0);
    std::vector<uint8_t> copy(real->shared_memory().data(), real->shared_memory().data() + 64);
    std::memcpy(&copy[16], &claimed, sizeof(claimed));  // the header's slot_pages
    REQUIRE(::pwrite(fd, copy.data(), copy.size(), 0) == 64);
    REQUIRE(::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0);
    auto attached = Channel::Attach(make_fds(fd));
    REQUIRE(absl::IsInvalidArgument(attached.status()));
    REQUIRE_THAT(std::string(attached.status().message()), Catch::Contains("page slots"));
  }
}

TEST_CASE("A channel's page slots are shared by both ends, page-aligned, and bounded") {
  auto creator = Channel::Create(kMinRingBytes, 8);
  REQUIRE(creator.ok());
  auto fds = creator->DupForPeer();
  REQUIRE(fds.ok());
  auto attacher = Channel::Attach(*std::move(fds));
  REQUIRE(attacher.ok());
  REQUIRE(attacher->slot_pages() == 8);
  for (size_t i = 0; i < 8; ++i) {
    REQUIRE(reinterpret_cast<uintptr_t>(creator->slot(i)) % kSlotBytes == 0);
    std::memset(creator->slot(i), static_cast<int>(i + 1), kSlotBytes);
  }
  for (size_t i = 0; i < 8; ++i) {
    REQUIRE(attacher->slot(i)[0] == i + 1);
    REQUIRE(attacher->slot(i)[kSlotBytes - 1] == i + 1);
  }
  REQUIRE(attacher->slot(8) == nullptr);
  // The slots lie past the rings: messages still travel.
  REQUIRE(SendEcho(*attacher, 1, 100).ok());
  std::vector<uint64_t> words;
  REQUIRE(*creator->Receive(words));
  REQUIRE(absl::IsInvalidArgument(Channel::Create(kMinRingBytes, kMaxSlotPages + 1).status()));
  auto plain = Channel::Create(kMinRingBytes);
  REQUIRE(plain.ok());
  REQUIRE(plain->slot_pages() == 0);
  REQUIRE(plain->slot(0) == nullptr);
}

TEST_CASE("Malformed Cap'n Proto bytes are refused by the decoder, not crashed on") {
  std::vector<uint64_t> words(16);
  SECTION("segment table claiming more than the frame") {
    words[0] = 0x0000100000000000ull;  // one segment of 4096 words
  }
  SECTION("pointer out of bounds") {
    words[0] = 0x0000000200000000ull;  // one segment of 2 words
    words[1] = 0x7fff000000000000ull | 0x0000000400000000ull | (0x1000ull << 2);
  }
  SECTION("random bytes") {
    for (size_t i = 0; i < words.size(); ++i) words[i] = 0x9E3779B97F4A7C15ull * (i + 1);
  }
  bool used = false;
  absl::Status status = DecodeMessage(words, [&](proto::Message::Reader m) {
    used = true;
    (void)m.getEcho();
    return absl::OkStatus();
  });
  REQUIRE(absl::IsInvalidArgument(status));
  REQUIRE_THAT(std::string(status.message()), Catch::Contains("malformed"));
}

TEST_CASE("Waiting on a channel times out and sees the peer hang up") {
  auto channel = Channel::Create(kMinRingBytes);
  REQUIRE(channel.ok());
  SECTION("deadline") {
    auto status =
        channel->WaitReadable(absl::Now() + absl::Milliseconds(20), absl::Microseconds(10), -1);
    REQUIRE(absl::IsDeadlineExceeded(status));
  }
  SECTION("hang-up") {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
    Fd mine(sv[0]);
    ::close(sv[1]);
    auto status =
        channel->WaitReadable(absl::Now() + absl::Seconds(10), absl::ZeroDuration(), mine.get());
    REQUIRE(absl::IsUnavailable(status));
  }
}

}  // namespace
}  // namespace disagg::ipc
