#include "ipc/validate.h"

#include "absl/strings/str_cat.h"

namespace disagg::ipc {
namespace {

// Pointer kinds and list element sizes, as the Cap'n Proto encoding spec numbers them.
enum Kind : uint32_t { kStruct = 0, kList = 1, kFar = 2, kOther = 3 };
constexpr uint32_t kVoid = 0;
constexpr uint32_t kPointerList = 6;
constexpr uint32_t kInlineComposite = 7;
// Bits per element of list element sizes 0..6 (VOID, BIT, BYTE, TWO, FOUR, EIGHT, POINTER).
constexpr uint64_t kElementBits[7] = {0, 1, 8, 16, 32, 64, 64};

enum class Problem { kNone, kOutOfBounds, kFar, kCapability, kTooDeep, kTooBig, kBadTag, kOverrun };

// One walk over one segment. Recursion depth is bounded by the nesting limit, and the number of
// pointers visited by the traversal budget (every pointer visited was charged as part of the
// object holding it).
class Walker {
 public:
  Walker(absl::Span<const uint64_t> segment, uint64_t budget)
      : words_(segment.data()), size_(segment.size()), budget_(budget) {}

  // Checks the pointer at word `at` (< size) and everything it reaches; `nesting` is the
  // nesting limit Cap'n Proto would read it with.
  bool Pointer(uint64_t at, int nesting);

  Problem problem() const { return problem_; }
  uint64_t where() const { return where_; }

 private:
  bool Fail(Problem p, uint64_t at) {
    problem_ = p;
    where_ = at;
    return false;
  }
  bool Charge(uint64_t words, uint64_t at) {
    if (words > budget_) return Fail(Problem::kTooBig, at);
    budget_ -= words;
    return true;
  }
  // True if [begin, begin + n) lies in the segment; `begin` may be negative.
  bool InBounds(int64_t begin, uint64_t n) const {
    return begin >= 0 && static_cast<uint64_t>(begin) <= size_ &&
           n <= size_ - static_cast<uint64_t>(begin);
  }
  bool List(uint64_t at, uint64_t target, uint32_t upper, int nesting);
  bool CompositeList(uint64_t at, uint64_t target, uint64_t words, int nesting);

  const uint64_t* words_;
  uint64_t size_;
  uint64_t budget_;
  Problem problem_ = Problem::kNone;
  uint64_t where_ = 0;
};

bool Walker::Pointer(uint64_t at, int nesting) {
  const uint64_t p = words_[at];
  if (p == 0) return true;
  if (nesting <= 0) return Fail(Problem::kTooDeep, at);
  const uint32_t lower = static_cast<uint32_t>(p);
  const uint32_t upper = static_cast<uint32_t>(p >> 32);
  // The offset is a signed 30-bit word count from the word after the pointer.
  const int64_t target = static_cast<int64_t>(at) + 1 + (static_cast<int32_t>(lower) >> 2);
  switch (lower & 3) {
    case kStruct: {
      const uint64_t data = upper & 0xffff;
      const uint64_t pointers = upper >> 16;
      if (!InBounds(target, data + pointers)) return Fail(Problem::kOutOfBounds, at);
      if (!Charge(data + pointers, at)) return false;
      for (uint64_t i = 0; i < pointers; ++i) {
        if (!Pointer(target + data + i, nesting - 1)) return false;
      }
      return true;
    }
    case kList:
      if (target < 0) return Fail(Problem::kOutOfBounds, at);
      return List(at, static_cast<uint64_t>(target), upper, nesting);
    case kFar:
      return Fail(Problem::kFar, at);
    default:
      return Fail(Problem::kCapability, at);
  }
}

bool Walker::List(uint64_t at, uint64_t target, uint32_t upper, int nesting) {
  const uint32_t element_size = upper & 7;
  const uint64_t count = upper >> 3;  // element count, or words for INLINE_COMPOSITE
  if (element_size == kInlineComposite) return CompositeList(at, target, count, nesting);
  const uint64_t words = (count * kElementBits[element_size] + 63) / 64;
  if (!InBounds(static_cast<int64_t>(target), words)) return Fail(Problem::kOutOfBounds, at);
  // A list of voids claims elements without sending data: charge for the claim.
  if (!Charge(element_size == kVoid ? count : words, at)) return false;
  if (element_size == kPointerList) {
    for (uint64_t i = 0; i < count; ++i) {
      if (!Pointer(target + i, nesting - 1)) return false;
    }
  }
  return true;
}

bool Walker::CompositeList(uint64_t at, uint64_t target, uint64_t words, int nesting) {
  // A tag word shaped like a struct pointer precedes the elements.
  if (!InBounds(static_cast<int64_t>(target), words + 1)) return Fail(Problem::kOutOfBounds, at);
  const uint64_t tag = words_[target];
  if ((tag & 3) != kStruct) return Fail(Problem::kBadTag, at);
  const uint64_t count = static_cast<uint32_t>(tag) >> 2;
  const uint64_t data = (tag >> 32) & 0xffff;
  const uint64_t pointers = tag >> 48;
  const uint64_t per_element = data + pointers;
  if (count * per_element > words) return Fail(Problem::kOverrun, at);
  // Zero-sized elements claim a count without sending data: charge for the claim too.
  if (!Charge(words + 1 + (per_element == 0 ? count : 0), at)) return false;
  if (count > 0 && nesting - 1 <= 0) return Fail(Problem::kTooDeep, at);
  // Cap'n Proto reads a list element as a struct one level below the list.
  for (uint64_t e = 0; e < count && pointers > 0; ++e) {
    const uint64_t element = target + 1 + e * per_element;
    for (uint64_t i = 0; i < pointers; ++i) {
      if (!Pointer(element + data + i, nesting - 2)) return false;
    }
  }
  return true;
}

const char* Describe(Problem p) {
  switch (p) {
    case Problem::kNone:
      return "no problem";
    case Problem::kOutOfBounds:
      return "points outside the message";
    case Problem::kFar:
      return "is a far pointer (a rack message is one segment)";
    case Problem::kCapability:
      return "is a capability or reserved pointer (rack messages carry none)";
    case Problem::kTooDeep:
      return "is nested deeper than the limit";
    case Problem::kTooBig:
      return "reaches more words than the traversal limit allows";
    case Problem::kBadTag:
      return "is a composite list whose tag is not a struct tag";
    case Problem::kOverrun:
      return "is a composite list whose elements overrun it";
  }
  return "is invalid";
}

}  // namespace

absl::Status ValidateSegment(absl::Span<const uint64_t> segment, int nesting_limit,
                             uint64_t traversal_limit_words) {
  if (segment.empty()) return absl::InvalidArgumentError("empty segment: no root pointer");
  Walker walker(segment, traversal_limit_words);
  if (walker.Pointer(0, nesting_limit)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("the pointer at word ", walker.where(), " of ",
                                                 segment.size(), " ", Describe(walker.problem())));
}

}  // namespace disagg::ipc
