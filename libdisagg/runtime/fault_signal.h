// The SIGBUS side of refused accesses. The fault path records why it poisons a page
// (RecordPoison) before poisoning it; the access then raises SIGBUS at the exact address,
// and the process-wide handler installed here looks the cause up, calls the application's
// MemoryFaultHandler, or prints the fault and lets SIGBUS end the process. SIGBUS outside
// the rack range goes to whatever handler was installed before.
//
// Thread-safety: all functions may be called from any thread; the handler itself uses only
// async-signal-safe calls and lock-free lookups.
#ifndef DISAGG_RUNTIME_FAULT_SIGNAL_H_
#define DISAGG_RUNTIME_FAULT_SIGNAL_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "disagg/disagg.h"

namespace disagg::runtime {

// Installs the SIGBUS handler for the rack range [base, base + bytes). FAILED_PRECONDITION
// if already installed.
absl::Status InstallFaultSignal(uintptr_t base, uint64_t bytes);
// Restores the SIGBUS handler found at installation.
void RemoveFaultSignal();

void SetMemoryFaultHandler(MemoryFaultHandler handler);

// Remembers that page `vpage` is poisoned because of `cause`, at memory element `element`
// ("" if none) / forgets it.
void RecordPoison(uint64_t vpage, FaultCause cause, const std::string& element);
void ForgetPoison(uint64_t vpage);
// Remembers that the process was fenced: an access whose cause is not (or no longer) recorded
// is then reported as fenced.
void RecordFenced();

}  // namespace disagg::runtime

#endif  // DISAGG_RUNTIME_FAULT_SIGNAL_H_
