#include "ipc/wire.h"

#include <capnp/serialize.h>
#include <kj/exception.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "internal/logging.h"
#include "ipc/validate.h"

namespace disagg::ipc {

namespace {

// Room for a walk over every pointer plus the handler reading every field a few times.
uint64_t TraversalLimit(size_t words) { return 8 * words + 64; }

// The general path, for messages of several segments: Cap'n Proto's checked reader, with a
// first pass over every pointer so that malformed structure is refused before `use` runs.
absl::Status DecodeSegments(absl::Span<const uint64_t> words,
                            absl::FunctionRef<absl::Status(proto::Message::Reader)> use) {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = TraversalLimit(words.size());
  options.nestingLimit = kNestingLimit;
  capnp::FlatArrayMessageReader reader(
      kj::ArrayPtr<const capnp::word>(reinterpret_cast<const capnp::word*>(words.data()),
                                      words.size()),
      options);
  auto root = reader.getRoot<proto::Message>();
  root.totalSize();  // walks every pointer once: malformed structure throws here
  return use(root);
}

}  // namespace

absl::Status DecodeMessage(absl::Span<const uint64_t> words,
                           absl::FunctionRef<absl::Status(proto::Message::Reader)> use) {
  // A plain try/catch (zero-cost when nothing throws) rather than kj::runCatchingExceptions,
  // which goes through an out-of-line runnable on every message.
  try {
    // Stream framing: word 0 holds (segment count - 1) and the first segment's size.
    if (words.empty() || static_cast<uint32_t>(words[0]) != 0) return DecodeSegments(words, use);
    // One segment, the common case: validated by our own walk, then read unchecked, which
    // saves building a Cap'n Proto reader (its arena and mutex) for every message.
    const uint64_t segment_words = words[0] >> 32;
    if (segment_words != words.size() - 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("malformed message: its segment table announces ", segment_words,
                       " words but the frame carries ", words.size() - 1));
    }
    const absl::Span<const uint64_t> segment = words.subspan(1);
    if (absl::Status valid = ValidateSegment(segment, kNestingLimit, TraversalLimit(words.size()));
        !valid.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("malformed message: ", valid.message()));
    }
    return use(capnp::readMessageUnchecked<proto::Message>(
        reinterpret_cast<const capnp::word*>(segment.data())));
  } catch (const kj::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed message: ", e.getDescription().cStr()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed message: ", e.what()));
  }
}

namespace {

// Each thread's pre-zeroed first segments for SmallMessage. Constant-initialized, so reaching
// it costs no initialization guard.
struct ScratchPool {
  alignas(64) capnp::word blocks[SmallMessage::kPoolBlocks][SmallMessage::kScratchWords] = {};
  uint32_t free_blocks = (1u << SmallMessage::kPoolBlocks) - 1;
};
thread_local ScratchPool scratch_pool;

}  // namespace

kj::ArrayPtr<capnp::word> SmallMessage::allocateSegment(unsigned int minimum_words) {
  const bool first = std::exchange(first_segment_, false);
  if (first && minimum_words <= kScratchWords && scratch_pool.free_blocks != 0) {
    scratch_block_ = __builtin_ctz(scratch_pool.free_blocks);
    scratch_pool.free_blocks &= ~(1u << scratch_block_);
    pool_ = &scratch_pool;
    scratch_ = scratch_pool.blocks[scratch_block_];
    return kj::arrayPtr(scratch_, kScratchWords);
  }
  kj::Array<capnp::word> segment =
      kj::heapArray<capnp::word>(std::max<size_t>(minimum_words, kSpillWords));
  std::memset(segment.begin(), 0, segment.size() * sizeof(capnp::word));
  kj::ArrayPtr<capnp::word> out = segment.asPtr();
  spilled_.push_back(kj::mv(segment));
  return out;
}

SmallMessage::~SmallMessage() {
  if (scratch_ == nullptr) return;
  CHECK(pool_ == &scratch_pool) << "a SmallMessage must be dropped on the thread that built it";
  // Cap'n Proto writes only inside the words it allocated, and keeps the rest of a segment
  // zero: zeroing the used words restores the block.
  const size_t used = getSegmentsForOutput()[0].size();
  std::memset(scratch_, 0, used * sizeof(capnp::word));
  scratch_pool.free_blocks |= 1u << scratch_block_;
}

void SetError(proto::Error::Builder error, const absl::Status& status) {
  error.setCode(static_cast<uint32_t>(status.code()));
  error.setMessage(std::string(status.message()));
}

absl::Status ErrorToStatus(proto::Error::Reader error) {
  uint32_t code = error.getCode();
  if (code == 0 || code > static_cast<uint32_t>(absl::StatusCode::kUnauthenticated)) {
    code = static_cast<uint32_t>(absl::StatusCode::kUnknown);
  }
  return absl::Status(static_cast<absl::StatusCode>(code), error.getMessage().cStr());
}

const char* HealthName(proto::Health health) {
  switch (health) {
    case proto::Health::HEALTHY:
      return "healthy";
    case proto::Health::SUSPECT:
      return "suspect";
    case proto::Health::FAILED:
      return "failed";
  }
  return "unknown";
}

const char* KindName(proto::ElementKind kind) {
  switch (kind) {
    case proto::ElementKind::RACKMMU:
      return "rackmmu";
    case proto::ElementKind::RACKMON:
      return "rackmon";
    case proto::ElementKind::COMPUTE:
      return "compute";
    case proto::ElementKind::MEMORY:
      return "memory";
    case proto::ElementKind::CLIENT:
      return "client";
  }
  return "unknown";
}

}  // namespace disagg::ipc
