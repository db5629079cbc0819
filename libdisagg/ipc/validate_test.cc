#include "ipc/validate.h"

#include <capnp/message.h>
#include <capnp/pretty-print.h>
#include <capnp/serialize.h>
#include <sys/mman.h>

#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

#include "ipc/wire.h"
#include "proto/rack.capnp.h"

namespace disagg::ipc {
namespace {

constexpr uint64_t kBudget = 1 << 20;

// The segment of a one-segment message (without the stream's segment table).
std::vector<uint64_t> SegmentOf(capnp::MallocMessageBuilder& builder) {
  auto segments = builder.getSegmentsForOutput();
  REQUIRE(segments.size() == 1);
  const auto* begin = reinterpret_cast<const uint64_t*>(segments[0].begin());
  return std::vector<uint64_t>(begin, begin + segments[0].size());
}

// Messages of every shape the rack sends: structs, texts, data, lists of structs.
std::vector<std::vector<uint64_t>> SampleSegments() {
  std::vector<std::vector<uint64_t>> out;
  {
    capnp::MallocMessageBuilder b(1024);
    auto m = b.initRoot<proto::Message>();
    m.setSeq(7);
    auto status = m.initStatus();
    status.setRackName("rack");
    auto elements = status.initElements(3);
    for (unsigned i = 0; i < 3; ++i) {
      elements[i].setName(("mem" + std::to_string(i)).c_str());
      elements[i].setPid(100 + i);
    }
    auto processes = status.initProcesses(2);
    processes[0].setName("hello");
    processes[1].setElement("cpu1");
    out.push_back(SegmentOf(b));
  }
  {
    capnp::MallocMessageBuilder b(1024);
    auto m = b.initRoot<proto::Message>();
    m.initError().setMessage("memmon mem1: page 0x10 not mapped");
    out.push_back(SegmentOf(b));
  }
  {
    capnp::MallocMessageBuilder b(1024);
    auto m = b.initRoot<proto::Message>();
    auto mapped = m.initMapped();
    auto extents = mapped.initExtents(4);
    for (unsigned i = 0; i < 4; ++i) extents[i].setElement("mem0");
    out.push_back(SegmentOf(b));
  }
  {
    capnp::MallocMessageBuilder b(1024);
    b.initRoot<proto::Message>().initEcho(32)[3] = 9;
    out.push_back(SegmentOf(b));
  }
  return out;
}

// Cap'n Proto's own checked reader, reading every field the schema has.
std::string CheckedText(const std::vector<uint64_t>& segment) {
  kj::ArrayPtr<const capnp::word> words(reinterpret_cast<const capnp::word*>(segment.data()),
                                        segment.size());
  kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments(&words, 1);
  capnp::ReaderOptions options;
  options.nestingLimit = kNestingLimit;
  options.traversalLimitInWords = kBudget;
  capnp::SegmentArrayMessageReader reader(segments, options);
  auto root = reader.getRoot<proto::Message>();
  root.totalSize();
  return capnp::prettyPrint(root).flatten().cStr();
}

std::string UncheckedText(const std::vector<uint64_t>& segment) {
  return capnp::prettyPrint(capnp::readMessageUnchecked<proto::Message>(
                                reinterpret_cast<const capnp::word*>(segment.data())))
      .flatten()
      .cStr();
}

TEST_CASE("Every shape of rack message passes validation") {
  for (const auto& segment : SampleSegments()) {
    REQUIRE(ValidateSegment(segment, kNestingLimit, kBudget).ok());
    REQUIRE(UncheckedText(segment) == CheckedText(segment));
  }
}

TEST_CASE("Validation refuses each kind of malformed pointer") {
  std::vector<uint64_t> s(8, 0);
  std::string expect;
  SECTION("struct beyond the end") {
    s[0] = (uint64_t{2} << 32) | (6u << 2);  // 2 data words at word 7
    expect = "outside";
  }
  SECTION("negative offset") {
    s[0] = (uint64_t{1} << 32) | (static_cast<uint32_t>(-3) << 2);
    expect = "outside";
  }
  SECTION("far pointer") {
    s[0] = 2;
    expect = "far";
  }
  SECTION("capability pointer") {
    s[0] = 3;
    expect = "capability";
  }
  SECTION("list of bytes longer than the segment") {
    s[0] = (uint64_t{(100u << 3) | 2} << 32) | 1;  // 100 bytes from word 1
    expect = "outside";
  }
  SECTION("list of voids claiming more than the budget") {
    s[0] = (uint64_t{((1u << 29) - 1) << 3} << 32) | 1;
    expect = "traversal limit";
  }
  SECTION("composite list whose elements overrun it") {
    s[0] = (uint64_t{(2u << 3) | 7} << 32) | 1;  // 2 words at word 1
    s[1] = (uint64_t{1} << 32) | (3u << 2);      // tag: 3 elements of 1 word
    expect = "overrun";
  }
  SECTION("composite list with a list tag") {
    s[0] = (uint64_t{(2u << 3) | 7} << 32) | 1;
    s[1] = 1;
    expect = "tag";
  }
  SECTION("a struct pointing at itself") {
    s[0] = (uint64_t{1} << 48) | (static_cast<uint32_t>(-1) << 2);
    expect = "nested";
  }
  const absl::Status status = ValidateSegment(s, kNestingLimit, kBudget);
  REQUIRE(absl::IsInvalidArgument(status));
  REQUIRE_THAT(std::string(status.message()), Catch::Contains(expect));
}

TEST_CASE("Validation counts nesting the way Cap'n Proto does") {
  // The root pointer and six more, each the one pointer of a struct placed right after it.
  std::vector<uint64_t> chain(8, 0);
  for (size_t i = 0; i + 1 < chain.size(); ++i) chain[i] = uint64_t{1} << 48;
  REQUIRE(ValidateSegment(chain, 7, kBudget).ok());
  const absl::Status status = ValidateSegment(chain, 6, kBudget);
  REQUIRE(absl::IsInvalidArgument(status));
  REQUIRE_THAT(std::string(status.message()), Catch::Contains("nested"));
}

// The property the fast decoder rests on: whatever ValidateSegment accepts, Cap'n Proto's
// checked reader accepts too, and reading it unchecked gives exactly what the checked reader
// gives. Checked on random corruptions of real messages.
TEST_CASE("Whatever validation accepts, Cap'n Proto's checked reader reads the same way") {
  std::mt19937_64 rng(20261123);
  const auto samples = SampleSegments();
  size_t accepted = 0, refused = 0;
  for (int round = 0; round < 20000; ++round) {
    std::vector<uint64_t> s = samples[round % samples.size()];
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      uint64_t& word = s[rng() % s.size()];
      switch (rng() % 4) {
        case 0:
          word ^= uint64_t{1} << (rng() % 64);
          break;  // one bit
        case 1:
          word ^= uint64_t{0xff} << (8 * (rng() % 8));
          break;  // one byte
        case 2:
          word = rng();
          break;  // anything
        default:
          word += (rng() % 2 ? 4 : -4);
          break;  // offset by a word
      }
    }
    if (!ValidateSegment(s, kNestingLimit, kBudget).ok()) {
      ++refused;
      continue;
    }
    ++accepted;
    std::string checked;
    try {
      checked = CheckedText(s);
    } catch (const kj::Exception& e) {
      // Kind and element-size mismatches are the readers' to catch; bounds are ours.
      const std::string why = e.getDescription().cStr();
      INFO(why);
      REQUIRE(why.find("out-of-bounds") == std::string::npos);
      REQUIRE(why.find("too deeply-nested") == std::string::npos);
      REQUIRE(why.find("read limit") == std::string::npos);
      continue;
    }
    REQUIRE(UncheckedText(s) == checked);
  }
  INFO("accepted " << accepted << ", refused " << refused);
  REQUIRE(accepted > 1000);
  REQUIRE(refused > 1000);
}

TEST_CASE("Validation of random words never reads outside the segment") {
  // guard page | data page | guard page: segments placed flush against either guard.
  constexpr size_t kPage = 4096;
  void* p = ::mmap(nullptr, 3 * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(p != MAP_FAILED);
  auto* page = static_cast<uint8_t*>(p) + kPage;
  REQUIRE(::mprotect(page, kPage, PROT_READ | PROT_WRITE) == 0);
  std::mt19937_64 rng(99);
  size_t accepted = 0;
  for (int round = 0; round < 100000; ++round) {
    const size_t words = 1 + rng() % 16;
    uint64_t* begin = round % 2 == 0 ? reinterpret_cast<uint64_t*>(page)
                                     : reinterpret_cast<uint64_t*>(page + kPage) - words;
    for (size_t i = 0; i < words; ++i) {
      // Mostly small struct and list pointers, so that many point somewhere plausible.
      const uint64_t kind = rng() % 2;
      const int32_t offset = static_cast<int32_t>(rng() % 33) - 16;
      const uint64_t upper = rng() % 4 == 0 ? rng() >> 32 : rng() % 64 | (rng() % 4) << 16;
      begin[i] = rng() % 8 == 0 ? rng() : upper << 32 | static_cast<uint32_t>(offset) << 2 | kind;
    }
    if (ValidateSegment(absl::MakeConstSpan(begin, words), kNestingLimit, kBudget).ok()) {
      ++accepted;
    }
  }
  ::munmap(p, 3 * kPage);
  INFO(accepted << " of 100000 accepted");
  REQUIRE(accepted > 1000);
}

TEST_CASE("Decoding refuses a frame whose segment table disagrees with its length") {
  capnp::MallocMessageBuilder b(1024);
  b.initRoot<proto::Message>().setSeq(3);
  auto flat = capnp::messageToFlatArray(b);
  std::vector<uint64_t> words(reinterpret_cast<const uint64_t*>(flat.begin()),
                              reinterpret_cast<const uint64_t*>(flat.end()));
  uint64_t seq = 0;
  REQUIRE(DecodeMessage(words, [&](proto::Message::Reader m) {
            seq = m.getSeq();
            return absl::OkStatus();
          }).ok());
  REQUIRE(seq == 3);
  words.push_back(0);
  const absl::Status status =
      DecodeMessage(words, [](proto::Message::Reader) { return absl::OkStatus(); });
  REQUIRE(absl::IsInvalidArgument(status));
  REQUIRE_THAT(std::string(status.message()), Catch::Contains("segment table"));
}

}  // namespace
}  // namespace disagg::ipc
