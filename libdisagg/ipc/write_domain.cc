#include "ipc/write_domain.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace disagg::ipc {

absl::StatusOr<std::unique_ptr<WriteDomain>> WriteDomain::Create() {
  Fd fd(::memfd_create("disagg-write-domain", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) return absl::InternalError(absl::StrCat("memfd_create: ", strerror(errno)));
  if (::ftruncate(fd.get(), kWriteDomainBytes) != 0 ||
      ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return absl::InternalError(absl::StrCat("sealing the write domain: ", strerror(errno)));
  }
  absl::StatusOr<ShmRegion> region = ShmRegion::Map(fd.get(), kWriteDomainBytes);
  if (!region.ok()) return region.status();
  // A fresh memfd reads as zeros: no slots, every counter 0.
  return std::unique_ptr<WriteDomain>(new WriteDomain(std::move(fd), std::move(*region)));
}

int WriteDomain::Begin(const std::string& element) {
  if (element.empty() || element.size() >= kWriteDomainNameBytes) return -1;
  int slot;
  {
    MutexLock lock(&mu_);
    auto it = slot_of_.find(element);
    if (it != slot_of_.end()) {
      slot = it->second;
    } else {
      const uint32_t used = table()->slots.load(std::memory_order_relaxed);
      if (used >= kWriteDomainSlots) {
        table()->overflow.fetch_add(1, std::memory_order_relaxed);
        return -1;
      }
      slot = static_cast<int>(used);
      std::memcpy(table()->slot[slot].element, element.data(), element.size());
      table()->slots.store(used + 1, std::memory_order_release);  // the name first
      slot_of_.emplace(element, slot);
    }
  }
  table()->slot[slot].started.fetch_add(1, std::memory_order_release);
  return slot;
}

void WriteDomain::End(int token) {
  if (token < 0 || static_cast<size_t>(token) >= kWriteDomainSlots) return;
  table()->slot[token].acked.fetch_add(1, std::memory_order_release);
}

absl::StatusOr<WriteDomainView> WriteDomainView::Adopt(Fd fd) {
  const int seals = ::fcntl(fd.get(), F_GET_SEALS);
  struct stat st;
  if (seals < 0 || !(seals & F_SEAL_SHRINK) || ::fstat(fd.get(), &st) != 0 ||
      st.st_size < static_cast<off_t>(kWriteDomainBytes)) {
    return absl::InvalidArgumentError(
        "the write domain is not a memfd of 4 KiB sealed against shrinking");
  }
  absl::StatusOr<ShmRegion> region = ShmRegion::Map(fd.get(), kWriteDomainBytes);
  if (!region.ok()) return region.status();
  return WriteDomainView(std::move(*region));
}

uint32_t WriteDomainView::overflow() const {
  if (region_.data() == nullptr) return 0;
  return reinterpret_cast<const WriteDomainLayout*>(region_.data())
      ->overflow.load(std::memory_order_relaxed);
}

std::vector<WriteDomainView::Unacknowledged> WriteDomainView::Tainted() const {
  std::vector<Unacknowledged> out;
  if (region_.data() == nullptr) return out;
  const auto* table = reinterpret_cast<const WriteDomainLayout*>(region_.data());
  const uint32_t slots =
      std::min<uint32_t>(table->slots.load(std::memory_order_acquire), kWriteDomainSlots);
  for (uint32_t i = 0; i < slots; ++i) {
    const WriteDomainSlot& s = table->slot[i];
    char name[kWriteDomainNameBytes];
    std::memcpy(name, s.element, sizeof(name));  // once: the writer may change it meanwhile
    const size_t length = strnlen(name, sizeof(name));
    if (length == 0 || length == sizeof(name)) continue;
    bool repeated = false;  // a hostile table may name one element in every slot
    for (const Unacknowledged& u : out)
      repeated = repeated || u.element == std::string_view(name, length);
    if (repeated) continue;
    const uint64_t acked = s.acked.load(std::memory_order_acquire);
    const uint64_t started = s.started.load(std::memory_order_acquire);
    if (started > acked) out.push_back({std::string(name, length), started - acked});
  }
  return out;
}

}  // namespace disagg::ipc
