// Parsing of byte sizes given on command lines ("64M", "1G", "4096").
#ifndef DISAGG_INTERNAL_SIZE_FLAG_H_
#define DISAGG_INTERNAL_SIZE_FLAG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace disagg {

// "4096", "64K", "64M", "1G", "1T" (binary units; a trailing "iB" or "B" is accepted).
// INVALID_ARGUMENT for anything else or a value that overflows 64 bits.
absl::StatusOr<uint64_t> ParseSize(const std::string& text);

}  // namespace disagg

#endif  // DISAGG_INTERNAL_SIZE_FLAG_H_
