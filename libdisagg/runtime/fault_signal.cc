#include "runtime/fault_signal.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>

namespace disagg::runtime {
namespace {

// A direct-mapped table of the causes of recent poisonings. A collision overwrites the
// older entry; a lookup that misses reports kRefused, which is still true ("the rack
// refused this access") if less precise.
constexpr size_t kSlots = 4096;
struct Slot {
  std::atomic<uint64_t> vpage{0};  // 0: empty (page 0 is never in the rack range)
  std::atomic<int> cause{0};
  std::atomic<int> element{-1};  // index into g_names, -1: none
};
Slot g_slots[kSlots];

// Names of memory elements that faults were refused for, each written once before its index
// is published (g_names_used), so the signal handler reads them without a lock.
constexpr int kMaxNames = 256;
char g_names[kMaxNames][sizeof(MemoryFault::element)];
std::atomic<int> g_names_used{0};
std::atomic_flag g_names_lock = ATOMIC_FLAG_INIT;  // taken by writers only, never in the handler

int NameIndex(const std::string& name) {
  if (name.empty() || name.size() >= sizeof(MemoryFault::element)) return -1;
  while (g_names_lock.test_and_set(std::memory_order_acquire)) {
  }
  int used = g_names_used.load(std::memory_order_relaxed);
  int found = -1;
  for (int i = 0; i < used && found < 0; ++i) {
    if (name == g_names[i]) found = i;
  }
  if (found < 0 && used < kMaxNames) {
    std::memcpy(g_names[used], name.c_str(), name.size() + 1);
    found = used;
    g_names_used.store(used + 1, std::memory_order_release);
  }
  g_names_lock.clear(std::memory_order_release);
  return found;
}

std::atomic<uintptr_t> g_base{0};
std::atomic<uint64_t> g_bytes{0};
std::atomic<MemoryFaultHandler> g_handler{nullptr};
struct sigaction g_previous;
std::atomic<bool> g_installed{false};
// The process was fenced: every access the rack refuses from then on is refused for that.
std::atomic<bool> g_fenced{false};

size_t SlotOf(uint64_t vpage) { return (vpage * 0x9E3779B97F4A7C15ull) >> 52; }

MemoryFault LookUp(void* address) {
  // A miss (the slot was taken by another page, or forgotten when the fenced process dropped
  // its cache while this access was raising SIGBUS) is still true as "refused", and exact as
  // "fenced" once the process is.
  const FaultCause miss =
      g_fenced.load(std::memory_order_acquire) ? FaultCause::kFenced : FaultCause::kRefused;
  MemoryFault fault{address, miss, {}};
  const uint64_t vpage = reinterpret_cast<uintptr_t>(address) >> 12;
  const Slot& slot = g_slots[SlotOf(vpage)];
  if (slot.vpage.load(std::memory_order_acquire) == vpage) {
    fault.cause = static_cast<FaultCause>(slot.cause.load(std::memory_order_acquire));
    const int element = slot.element.load(std::memory_order_acquire);
    // Another page's poisoning may have taken the slot meanwhile: then this one is a miss.
    std::atomic_thread_fence(std::memory_order_acquire);
    if (slot.vpage.load(std::memory_order_relaxed) != vpage) return MemoryFault{address, miss, {}};
    if (element >= 0 && element < g_names_used.load(std::memory_order_acquire)) {
      std::memcpy(fault.element, g_names[element], sizeof(fault.element));
    }
  }
  return fault;
}

// Async-signal-safe output.
void Put(const char* s) {
  const size_t n = std::strlen(s);
  ssize_t ignored = write(STDERR_FILENO, s, n);
  (void)ignored;
}

void PutHex(uintptr_t v) {
  char buf[2 + 16 + 1];
  char* p = buf + sizeof(buf) - 1;
  *p = '\0';
  do {
    *--p = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v != 0);
  *--p = 'x';
  *--p = '0';
  Put(p);
}

// Lets the retried access end the process by SIGBUS.
void DieBySigbus() {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(SIGBUS, &dfl, nullptr);
}

void OnSigbus(int sig, siginfo_t* info, void* context) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
  const uintptr_t base = g_base.load(std::memory_order_acquire);
  if (base == 0 || addr < base || addr - base >= g_bytes.load(std::memory_order_relaxed)) {
    // Not ours: pass it on to the handler that was there before.
    if (g_previous.sa_flags & SA_SIGINFO) {
      if (g_previous.sa_sigaction != nullptr) return g_previous.sa_sigaction(sig, info, context);
    } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
      return g_previous.sa_handler(sig);
    }
    return DieBySigbus();
  }
  const MemoryFault fault = LookUp(info->si_addr);
  if (MemoryFaultHandler handler = g_handler.load(std::memory_order_acquire)) handler(fault);
  Put("disagg: memory fault at ");
  PutHex(addr);
  Put(": ");
  Put(FaultCauseName(fault.cause));
  if (fault.element[0] != '\0') {
    Put(" (");
    Put(fault.element);
    Put(")");
  }
  Put(" (the rack refused this access; no OnMemoryFault handler took it)\n");
  DieBySigbus();
}

}  // namespace

absl::Status InstallFaultSignal(uintptr_t base, uint64_t bytes) {
  if (g_installed.exchange(true)) {
    return absl::FailedPreconditionError("the rack's SIGBUS handler is already installed");
  }
  g_fenced.store(false, std::memory_order_relaxed);
  g_bytes.store(bytes, std::memory_order_relaxed);
  g_base.store(base, std::memory_order_release);
  struct sigaction action {};
  action.sa_sigaction = OnSigbus;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  sigaction(SIGBUS, &action, &g_previous);
  return absl::OkStatus();
}

void RemoveFaultSignal() {
  if (!g_installed.load()) return;
  sigaction(SIGBUS, &g_previous, nullptr);
  g_base.store(0, std::memory_order_release);
  g_handler.store(nullptr);
  g_installed.store(false);
}

void SetMemoryFaultHandler(MemoryFaultHandler handler) {
  g_handler.store(handler, std::memory_order_release);
}

void RecordPoison(uint64_t vpage, FaultCause cause, const std::string& element) {
  Slot& slot = g_slots[SlotOf(vpage)];
  const int name = NameIndex(element);
  slot.vpage.store(0, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);  // readers see 0 before the new fields
  slot.cause.store(static_cast<int>(cause), std::memory_order_relaxed);
  slot.element.store(name, std::memory_order_relaxed);
  slot.vpage.store(vpage, std::memory_order_release);
}

void RecordFenced() { g_fenced.store(true, std::memory_order_release); }

void ForgetPoison(uint64_t vpage) {
  Slot& slot = g_slots[SlotOf(vpage)];
  uint64_t expected = vpage;
  slot.vpage.compare_exchange_strong(expected, 0, std::memory_order_acq_rel);
}

}  // namespace disagg::runtime

namespace disagg {

const char* FaultCauseName(FaultCause cause) {
  switch (cause) {
    case FaultCause::kNotMapped:
      return "not mapped";
    case FaultCause::kNotYours:
      return "not yours (another process's memory)";
    case FaultCause::kRefused:
      return "refused by the memory element";
    case FaultCause::kElementFailed:
      return "memory element failed";
    case FaultCause::kLost:
      return "data lost (a write-back failed)";
    case FaultCause::kRevoked:
      return "revoked (granted away or stolen)";
    case FaultCause::kFenced:
      return "fenced (this process was declared failed)";
  }
  return "refused";
}

}  // namespace disagg
