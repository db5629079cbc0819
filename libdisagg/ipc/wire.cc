#include "ipc/wire.h"

#include <capnp/serialize.h>
#include <kj/exception.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace disagg::ipc {

absl::Status DecodeMessage(absl::Span<const uint64_t> words,
                           absl::FunctionRef<absl::Status(proto::Message::Reader)> use) {
  capnp::ReaderOptions options;
  // Room for the validation pass below plus the handler reading every field a few times.
  options.traversalLimitInWords = 8 * words.size() + 64;
  options.nestingLimit = kNestingLimit;
  // A plain try/catch (zero-cost when nothing throws) rather than kj::runCatchingExceptions,
  // which goes through an out-of-line runnable on every message.
  absl::Status result;
  try {
    capnp::FlatArrayMessageReader reader(
        kj::ArrayPtr<const capnp::word>(reinterpret_cast<const capnp::word*>(words.data()),
                                        words.size()),
        options);
    auto root = reader.getRoot<proto::Message>();
    root.totalSize();  // walks every pointer once: malformed structure throws here
    result = use(root);
  } catch (const kj::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed message: ", e.getDescription().cStr()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed message: ", e.what()));
  }
  return result;
}

kj::ArrayPtr<capnp::word> SmallMessage::allocateSegment(unsigned int minimum_words) {
  if (!scratch_used_ && minimum_words <= kScratchWords) {
    scratch_used_ = true;
    return kj::arrayPtr(scratch_, kScratchWords);
  }
  kj::Array<capnp::word> segment =
      kj::heapArray<capnp::word>(std::max<size_t>(minimum_words, kSpillWords));
  std::memset(segment.begin(), 0, segment.size() * sizeof(capnp::word));
  kj::ArrayPtr<capnp::word> out = segment.asPtr();
  spilled_.push_back(kj::mv(segment));
  return out;
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
    case proto::Health::HEALTHY: return "healthy";
    case proto::Health::SUSPECT: return "suspect";
    case proto::Health::FAILED: return "failed";
  }
  return "unknown";
}

const char* KindName(proto::ElementKind kind) {
  switch (kind) {
    case proto::ElementKind::RACKMMU: return "rackmmu";
    case proto::ElementKind::RACKMON: return "rackmon";
    case proto::ElementKind::COMPUTE: return "compute";
    case proto::ElementKind::MEMORY: return "memory";
    case proto::ElementKind::CLIENT: return "client";
  }
  return "unknown";
}

}  // namespace disagg::ipc
