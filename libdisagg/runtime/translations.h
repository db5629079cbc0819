// Translations: the application's cache of where its rack memory lives: ranges it owns
// (mapped, granted to it, stolen), each with its extents (runs of pages on one memory
// element), and the ranges it gave away or had stolen ("revoked"), whose touches fault with
// FaultCause::kRevoked. Filled by Map, Translate answers, grants and steals; carved by Unmap,
// Grant and revocations.
// Value type; not thread-safe (RackImpl holds it under its cache lock).
#ifndef DISAGG_RUNTIME_TRANSLATIONS_H_
#define DISAGG_RUNTIME_TRANSLATIONS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace disagg::runtime {

// Where a run of a range's pages lives.
struct ExtentInfo {
  uint64_t vpage = 0;
  uint64_t pages = 0;
  std::string element;
};

struct RegionInfo {
  uint64_t bytes = 0;
  std::vector<ExtentInfo> extents;  // sorted by vpage; may cover only part (learnt lazily)
};

class Translations {
 public:
  // Records the range [vaddr, +info.bytes) as this process's, replacing whatever was known
  // there, and no longer revoked.
  void Add(uint64_t vaddr, RegionInfo info);
  // Records one extent of the region [vaddr, +bytes) that the Rack MMU translated.
  void AddExtent(uint64_t vaddr, uint64_t bytes, ExtentInfo extent);
  // Forgets the region that starts at `vaddr`; returns its size, or nullopt if none starts
  // there.
  std::optional<uint64_t> Remove(uint64_t vaddr);
  // Forgets [vaddr, +bytes) wherever it lies, splitting ranges at its ends.
  void Carve(uint64_t vaddr, uint64_t bytes);

  // The extent holding `vpage`, or nullptr if none is known.
  const ExtentInfo* Find(uint64_t vpage) const;
  // The known extents on memory element `element`, anywhere in the ranges this process owns.
  std::vector<ExtentInfo> ExtentsOn(const std::string& element) const;
  // OK if [addr, addr + len) lies in ranges this process owns; INVALID_ARGUMENT naming the
  // first address that does not.
  absl::Status CheckOwned(uintptr_t addr, size_t len) const;

  void MarkRevoked(uint64_t vaddr, uint64_t bytes);
  bool Revoked(uint64_t vpage) const;
  // True if a page of [first, last) was given away or taken.
  bool RevokedIn(uint64_t first, uint64_t last) const;

 private:
  static void CarveFrom(std::map<uint64_t, RegionInfo>& ranges, uint64_t vaddr, uint64_t bytes);
  std::map<uint64_t, RegionInfo> ranges_;   // by start address
  std::map<uint64_t, RegionInfo> revoked_;  // extents unused
};

}  // namespace disagg::runtime

#endif  // DISAGG_RUNTIME_TRANSLATIONS_H_
