#include "ipc/fabric.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

namespace disagg::ipc {
namespace {

struct RawRule {
  char a[kFabricNameBytes];
  char b[kFabricNameBytes];
  uint64_t delay_ns;
};
struct Layout {
  std::atomic<uint32_t> seq;    // odd while the writer writes
  std::atomic<uint32_t> count;  // rules in force
  RawRule rules[kFabricRules];
};
static_assert(sizeof(Layout) <= kFabricBytes);

std::string NameOf(const char (&raw)[kFabricNameBytes]) {
  return std::string(raw, strnlen(raw, kFabricNameBytes - 1));
}

}  // namespace

absl::StatusOr<FabricWriter> FabricWriter::Create(const std::string& path) {
  // Never truncated: processes that map it must not find it shorter, even for a moment.
  Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  struct stat st;
  if (!fd.valid() || ::fstat(fd.get(), &st) != 0 ||
      (st.st_size < static_cast<off_t>(kFabricBytes) && ::ftruncate(fd.get(), kFabricBytes) != 0)) {
    return absl::InternalError(absl::StrCat("cannot make ", path, ": ", std::strerror(errno)));
  }
  absl::StatusOr<ShmRegion> region = ShmRegion::Map(fd.get(), kFabricBytes);
  if (!region.ok()) return region.status();
  FabricWriter writer(std::move(*region));
  absl::Status emptied = writer.Set({});
  if (!emptied.ok()) return emptied;
  return writer;
}

absl::Status FabricWriter::Set(const std::vector<FabricRule>& rules) {
  if (rules.size() > kFabricRules) {
    return absl::InvalidArgumentError(absl::StrCat("at most ", kFabricRules, " fabric rules"));
  }
  for (const FabricRule& r : rules) {
    if (r.a.size() >= kFabricNameBytes || r.b.size() >= kFabricNameBytes) {
      return absl::InvalidArgumentError("an element name too long for the fabric");
    }
  }
  auto* layout = reinterpret_cast<Layout*>(region_.data());
  const uint32_t seq = layout->seq.load(std::memory_order_relaxed);
  layout->seq.store(seq + 1, std::memory_order_relaxed);  // odd: readers retry
  std::atomic_thread_fence(std::memory_order_release);
  std::memset(layout->rules, 0, sizeof(layout->rules));
  for (size_t i = 0; i < rules.size(); ++i) {
    std::memcpy(layout->rules[i].a, rules[i].a.data(), rules[i].a.size());
    std::memcpy(layout->rules[i].b, rules[i].b.data(), rules[i].b.size());
    layout->rules[i].delay_ns = rules[i].delay_ns;
  }
  layout->count.store(static_cast<uint32_t>(rules.size()), std::memory_order_relaxed);
  layout->seq.store(seq + 2, std::memory_order_release);
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const Fabric>> Fabric::Open(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno)));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0 || st.st_size < static_cast<off_t>(kFabricBytes)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is no fabric file"));
  }
  void* data = ::mmap(nullptr, kFabricBytes, PROT_READ, MAP_SHARED, fd.get(), 0);
  if (data == MAP_FAILED) {
    return absl::InternalError(absl::StrCat("mmap ", path, ": ", std::strerror(errno)));
  }
  return std::shared_ptr<const Fabric>(new Fabric(data));
}

Fabric::~Fabric() { ::munmap(const_cast<void*>(data_), kFabricBytes); }

FabricGate Fabric::Gate(const std::string& local, const std::string& remote) const {
  const auto* layout = static_cast<const Layout*>(data_);
  FabricGate gate;
  // Nothing injected, the common case: two loads.
  if (layout->count.load(std::memory_order_acquire) == 0) return gate;
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const uint32_t before = layout->seq.load(std::memory_order_acquire);
    if (before & 1) {
      std::this_thread::yield();
      continue;
    }
    RawRule rules[kFabricRules];
    const uint32_t count =
        std::min<uint32_t>(layout->count.load(std::memory_order_relaxed), kFabricRules);
    std::memcpy(rules, layout->rules, sizeof(RawRule) * count);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (layout->seq.load(std::memory_order_relaxed) != before) continue;
    gate = FabricGate{};
    for (uint32_t i = 0; i < count; ++i) {
      const std::string a = NameOf(rules[i].a), b = NameOf(rules[i].b);
      if (b.empty()) {
        if (a == local || a == remote) gate.delay += absl::Nanoseconds(rules[i].delay_ns);
      } else if ((a == local && b == remote) || (a == remote && b == local)) {
        gate.partitioned = true;
      }
    }
    return gate;
  }
  return gate;  // the writer never settled: treat as nothing injected
}

absl::Status Fabric::Pass(const std::string& local, const std::string& remote,
                          absl::Time deadline) const {
  FabricGate gate = Gate(local, remote);
  while (gate.partitioned) {
    if (absl::Now() >= deadline) {
      return absl::UnavailableError(absl::StrCat(local, " is partitioned from ", remote,
                                                 " (injected: `rackctl heal` ends it)"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    gate = Gate(local, remote);
  }
  if (gate.delay <= absl::ZeroDuration()) return absl::OkStatus();
  const absl::Time until = absl::Now() + gate.delay;
  if (gate.delay > absl::Microseconds(100)) absl::SleepFor(gate.delay - absl::Microseconds(50));
  while (absl::Now() < until) __builtin_ia32_pause();  // the last stretch, exactly
  return absl::OkStatus();
}

}  // namespace disagg::ipc
