#include "internal/size_flag.h"

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace disagg {

absl::StatusOr<uint64_t> ParseSize(const std::string& text) {
  absl::string_view s = text;
  if (!absl::ConsumeSuffix(&s, "iB")) absl::ConsumeSuffix(&s, "B");
  int shift = 0;
  if (!s.empty()) {
    switch (absl::ascii_toupper(s.back())) {
      case 'K':
        shift = 10;
        break;
      case 'M':
        shift = 20;
        break;
      case 'G':
        shift = 30;
        break;
      case 'T':
        shift = 40;
        break;
      default:
        break;
    }
    if (shift != 0) s.remove_suffix(1);
  }
  uint64_t value = 0;
  if (s.empty() || !absl::SimpleAtoi(s, &value) || (shift && (value >> (64 - shift)) != 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not a size (examples: 4096, 64M, 1G)"));
  }
  return value << shift;
}

}  // namespace disagg
