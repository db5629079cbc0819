#include "ipc/ring.h"

#include <sys/mman.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

namespace disagg::ipc {
namespace {

// A ring in ordinary memory; the test plays the hostile peer by writing the control block.
struct TestRing {
  explicit TestRing(size_t capacity)
      : control(new RingControl{}),
        data(new uint8_t[capacity]()),
        capacity(capacity),
        writer(control.get(), data.get(), capacity),
        reader(control.get(), data.get(), capacity) {}
  std::unique_ptr<RingControl> control;
  std::unique_ptr<uint8_t[]> data;
  size_t capacity;
  RingWriter writer;
  RingReader reader;
};

std::vector<uint64_t> Words(size_t n, uint64_t seed) {
  std::vector<uint64_t> w(n);
  for (size_t i = 0; i < n; ++i) w[i] = seed * 1000003 + i;
  return w;
}

absl::Status WriteWords(RingWriter& writer, const std::vector<uint64_t>& w) {
  absl::Span<const uint8_t> part(reinterpret_cast<const uint8_t*>(w.data()), w.size() * 8);
  return writer.Write(absl::MakeConstSpan(&part, 1));
}

TEST_CASE("A ring carries frames across its wrap-around point intact") {
  TestRing ring(256);  // max payload 56 bytes: frames wrap every few messages
  std::vector<uint64_t> out;
  for (uint64_t i = 0; i < 1000; ++i) {
    const auto msg = Words(1 + i % 7, i);
    REQUIRE(WriteWords(ring.writer, msg).ok());
    auto got = ring.reader.Read(out);
    REQUIRE(got.ok());
    REQUIRE(*got);
    REQUIRE(out == msg);
  }
  auto empty = ring.reader.Read(out);
  REQUIRE(empty.ok());
  REQUIRE_FALSE(*empty);
}

TEST_CASE("A full ring refuses a frame without losing the ones it holds") {
  TestRing ring(256);
  int written = 0;
  absl::Status status;
  while ((status = WriteWords(ring.writer, Words(3, written))).ok()) ++written;
  REQUIRE(absl::IsResourceExhausted(status));
  // 8-byte header + 24-byte payload per frame, and 8 bytes kept for the terminator.
  REQUIRE(written == (256 - 8) / 32);
  std::vector<uint64_t> out;
  for (int i = 0; i < written; ++i) {
    auto got = ring.reader.Read(out);
    REQUIRE(got.ok());
    REQUIRE(*got);
    REQUIRE(out == Words(3, i));
  }
  // Space is back once the reader consumed.
  REQUIRE(WriteWords(ring.writer, Words(3, 99)).ok());
}

TEST_CASE("A ring refuses messages it cannot carry") {
  TestRing ring(4096);
  SECTION("oversized") {
    auto status = WriteWords(ring.writer, Words(ring.writer.MaxPayload() / 8 + 1, 1));
    REQUIRE(absl::IsInvalidArgument(status));
    REQUIRE_FALSE(ring.reader.HasData());
  }
  SECTION("largest allowed") {
    REQUIRE(WriteWords(ring.writer, Words(ring.writer.MaxPayload() / 8, 1)).ok());
  }
  SECTION("unaligned or empty") {
    uint8_t bytes[12] = {};
    absl::Span<const uint8_t> part(bytes, sizeof(bytes));
    REQUIRE(absl::IsInvalidArgument(ring.writer.Write(absl::MakeConstSpan(&part, 1))));
    REQUIRE(absl::IsInvalidArgument(ring.writer.Write({})));
  }
}

TEST_CASE("A reader detects a corrupt frame") {
  TestRing ring(4096);
  REQUIRE(WriteWords(ring.writer, Words(4, 1)).ok());
  std::vector<uint64_t> out;
  SECTION("garbage header") {
    std::memset(ring.data.get(), 0xAB, 8);
    REQUIRE(absl::IsDataLoss(ring.reader.Read(out).status()));
  }
  SECTION("length beyond what was published: the reader stays in bounds and can sleep") {
    const uint32_t header[2] = {64, 64 ^ kFrameTag};  // claims 64 bytes, 32 published
    std::memcpy(ring.data.get(), header, sizeof(header));
    auto first = ring.reader.Read(out);  // a frame of stale bytes: the decoder's problem
    REQUIRE(first.ok());
    REQUIRE(out.size() == 8);
    // Past the published head by less than a ring looks like a head not yet stored: the
    // reader must neither spin on it nor read anything.
    REQUIRE_FALSE(ring.reader.PrepareToSleep());
    auto next = ring.reader.Read(out);
    REQUIRE(next.ok());
    REQUIRE_FALSE(*next);
  }
  SECTION("head published but no frame header") {
    ring.control->head.store(ring.control->head.load() + 16);
    REQUIRE(ring.reader.Read(out).ok());
    REQUIRE(absl::IsDataLoss(ring.reader.Read(out).status()));
  }
  SECTION("length over the limit, with a valid tag") {
    const uint32_t len = 0x7ffffff8;
    const uint32_t header[2] = {len, len ^ kFrameTag};
    std::memcpy(ring.data.get(), header, sizeof(header));
    ring.control->head.store(4000);  // and a head that would seem to cover part of it
    REQUIRE(absl::IsDataLoss(ring.reader.Read(out).status()));
  }
}

TEST_CASE("Hostile ring indices are detected, never followed") {
  TestRing ring(4096);
  std::vector<uint64_t> out;
  SECTION("head far beyond the capacity") {
    ring.control->head.store(1ull << 40);
    REQUIRE(absl::IsDataLoss(ring.reader.Read(out).status()));
  }
  SECTION("head behind the tail by more than a ring") {
    for (int i = 0; i < 200; ++i) {
      REQUIRE(WriteWords(ring.writer, Words(4, i)).ok());
      REQUIRE(ring.reader.Read(out).ok());
    }
    ring.control->head.store(8);
    REQUIRE(ring.reader.PrepareToSleep());  // never sleeps through a corrupt ring
    REQUIRE(absl::IsDataLoss(ring.reader.Read(out).status()));
  }
  SECTION("head not on a frame boundary") {
    ring.control->head.store(13);
    REQUIRE(absl::IsDataLoss(ring.reader.Read(out).status()));
  }
  SECTION("tail ahead of the head, seen by the writer once it needs the space") {
    ring.control->tail.store(1 << 20);
    absl::Status status;
    for (int i = 0; i < 1000 && status.ok(); ++i) status = WriteWords(ring.writer, Words(8, i));
    REQUIRE(absl::IsDataLoss(status));
  }
}

TEST_CASE("The sleep protocol never misses a frame published before sleeping") {
  TestRing ring(4096);
  REQUIRE_FALSE(ring.reader.PrepareToSleep());
  REQUIRE(WriteWords(ring.writer, Words(1, 1)).ok());
  REQUIRE(ring.writer.ConsumerSleeping());  // the writer must ring the doorbell
  ring.reader.Awake();
  REQUIRE(ring.reader.PrepareToSleep());  // data waiting: do not sleep
  REQUIRE_FALSE(ring.writer.ConsumerSleeping());
}

// A ring whose data area sits between PROT_NONE guard pages, so that any access outside it
// faults: a test that survives shows the ring stayed in bounds whatever the peer wrote.
class FencedRing {
 public:
  static constexpr size_t kPage = 4096;
  explicit FencedRing(size_t capacity) : capacity_(capacity), bytes_(capacity + 2 * kPage) {
    void* p = ::mmap(nullptr, bytes_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
    base_ = static_cast<uint8_t*>(p);
    REQUIRE(::mprotect(base_ + kPage, capacity, PROT_READ | PROT_WRITE) == 0);
    Reset();
  }
  ~FencedRing() { ::munmap(base_, bytes_); }

  // A fresh pair of ends over zeroed memory, as after the peer was cut off and replaced.
  void Reset() {
    std::memset(data(), 0, capacity_);
    control_.head.store(0);
    control_.tail.store(0);
    control_.consumer_sleeping.store(0);
    writer_ = std::make_unique<RingWriter>(&control_, data(), capacity_);
    reader_ = std::make_unique<RingReader>(&control_, data(), capacity_);
  }
  uint8_t* data() { return base_ + kPage; }
  RingControl& control() { return control_; }
  RingWriter& writer() { return *writer_; }
  RingReader& reader() { return *reader_; }

 private:
  size_t capacity_;
  size_t bytes_;
  uint8_t* base_;
  RingControl control_{};
  std::unique_ptr<RingWriter> writer_;
  std::unique_ptr<RingReader> reader_;
};

TEST_CASE("A reader fed random frames, bytes and indices stays inside its ring") {
  constexpr size_t kCapacity = 4096;
  FencedRing ring(kCapacity);
  std::mt19937_64 rng(7);
  std::vector<uint64_t> out;
  size_t frames = 0, refusals = 0;
  for (int round = 0; round < 200000; ++round) {
    switch (rng() % 6) {
      case 0:  // the peer scribbles a word anywhere in the data area
        reinterpret_cast<uint64_t*>(ring.data())[rng() % (kCapacity / 8)] = rng();
        break;
      case 1: {  // ... or a well-tagged frame header of any length where the reader looks next
        const uint32_t len =
            static_cast<uint32_t>(rng() % 3 == 0 ? rng() : rng() % (2 * kCapacity));
        const uint64_t header = uint64_t{len ^ kFrameTag} << 32 | len;
        const uint64_t at = ring.control().tail.load() & (kCapacity - 1);
        std::memcpy(ring.data() + at, &header, sizeof(header));
        break;
      }
      case 2:  // ... or publishes any head
        ring.control().head.store(rng() % 3 == 0 ? rng() : rng() % (4 * kCapacity));
        break;
      default:  // an honest frame now and then
        (void)WriteWords(ring.writer(), Words(1 + rng() % 100, round));
        break;
    }
    if (rng() % 8 == 0 && !ring.reader().PrepareToSleep()) ring.reader().Awake();
    absl::StatusOr<bool> got = ring.reader().Read(out);
    if (!got.ok()) {
      REQUIRE(absl::IsDataLoss(got.status()));
      ++refusals;
      ring.Reset();
      continue;
    }
    if (*got) {
      ++frames;
      REQUIRE(out.size() * 8 <= MaxPayloadFor(kCapacity));
    }
  }
  INFO(frames << " frames read, " << refusals << " corruptions refused");
  REQUIRE(frames > 1000);
  REQUIRE(refusals > 1000);
}

TEST_CASE("A writer facing a random consumer tail stays inside its ring") {
  constexpr size_t kCapacity = 4096;
  FencedRing ring(kCapacity);
  std::mt19937_64 rng(11);
  size_t written = 0, refusals = 0;
  for (int round = 0; round < 100000; ++round) {
    if (rng() % 4 == 0) {
      ring.control().tail.store(rng() % 3 == 0 ? rng() : rng() % (4 * kCapacity));
    }
    const absl::Status status = WriteWords(ring.writer(), Words(1 + rng() % 120, round));
    if (status.ok()) {
      ++written;
    } else if (absl::IsDataLoss(status)) {
      ++refusals;
      ring.Reset();
    } else {
      REQUIRE(absl::IsResourceExhausted(status));
      std::vector<uint64_t> out;
      (void)ring.reader().Read(out);  // make room, as an honest reader would
    }
  }
  INFO(written << " frames written, " << refusals << " impossible tails refused");
  REQUIRE(written > 1000);
  REQUIRE(refusals > 1000);
}

}  // namespace
}  // namespace disagg::ipc
