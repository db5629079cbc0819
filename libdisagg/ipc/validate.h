// Structural validation of a single-segment Cap'n Proto message, so that it can then be read
// without Cap'n Proto's per-message reader (whose construction costs about as much as the rest
// of a small round trip).
//
// ValidateSegment walks every pointer reachable from the root once and accepts the segment only
// if each one is null, a struct pointer or a list pointer whose target lies wholly inside the
// segment; far and capability pointers are refused (a single-segment rack message has no use
// for them). It enforces the same limits Cap'n Proto's checked reader would: a nesting limit
// (depth of pointers followed, counted the same way) and a traversal budget in words, charged
// for every object reached, including lists of zero-sized elements that claim many elements
// without sending data. A segment that passes can be read with capnp::readMessageUnchecked:
// every pointer the generated readers can follow lands inside the segment, and the readers
// still check each pointer's kind and element size and throw on a mismatch.
//
// Thread-safe (no state).
#ifndef DISAGG_IPC_VALIDATE_H_
#define DISAGG_IPC_VALIDATE_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace disagg::ipc {

// Checks `segment` (the root pointer is its first word). OK, or INVALID_ARGUMENT naming the
// first problem found and the word where it was found.
absl::Status ValidateSegment(absl::Span<const uint64_t> segment, int nesting_limit,
                             uint64_t traversal_limit_words);

}  // namespace disagg::ipc

#endif  // DISAGG_IPC_VALIDATE_H_
