// rack_peer: a libdisagg application driven line by line on stdin, for tests that need more
// than one process of the rack. It joins the rack named by DISAGG_RACK/DISAGG_ELEMENT and
// answers each command with one line on stdout:
//   id                          -> its rack process id
//   map BYTES                   -> the region's address (hex)
//   unmap ADDR                  -> ok | the error
//   fill ADDR BYTES SEED        -> ok: writes a pattern of 64-bit words (each word's value
//                                  follows from its address and SEED)
//   verify ADDR BYTES SEED      -> ok | bad N (words that differ) | fault CAUSE [at ELEMENT]
//   zeros ADDR BYTES            -> ok | nonzero N (words that are not zero) | fault ...
//   flush ADDR BYTES            -> ok | the error
//   grant ADDR BYTES TO         -> ok | the error
//   steal FROM ADDR BYTES       -> ok | the error
//   group NAME                  -> ok | the error
//   publish NAME ADDR           -> ok | the error
//   lookup OWNER NAME           -> the address (hex) | the error
//   touch ADDR                  -> ok | fault CAUSE [at ELEMENT] (a read of one word, faults
//                                  caught)
//   churn ADDR BYTES            -> ok: a thread writes and verifies the range (a word per
//                                  4 KiB page), pass after pass, until a touch is refused
//   churned                     -> passes N running | passes N fault CAUSE | passes N bad
//   contacts [ID...]            -> ok | the error: sets the emergency contacts
//   reasons                     -> the events' reasons, " | " between them
//   balloon BYTES               -> ok: allocates and touches BYTES of local memory
//   stats                       -> faults N writebacks N evictions N cached BYTES
//   returning-handler           -> ok: a fault handler that returns (the process then ends by
//                                  SIGBUS after the fault's message, as without one)
//   nohandler                   -> ok: the default fault handling from now on (a refused touch
//                                  prints the fault and ends the process by SIGBUS)
//   events                      -> the events received so far: kind:process:addr:bytes[:element]
//                                  (kinds: granted revoked memory-failed peer-failed fenced)
//   crash                       -> (no answer) ends without leaving the rack
//   quit                        -> (no answer) leaves the rack and exits 0
// Errors are printed as "error CODE message" on one line.
#include <setjmp.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "disagg/disagg.h"

namespace {

sigjmp_buf g_touch;
volatile disagg::FaultCause g_cause;
char g_element[sizeof(disagg::MemoryFault::element)];
// A fault in the churn thread ends the churn, not the process: the thread records the cause
// and parks in the handler for good (pause is async-signal-safe; no longjmp across threads).
std::atomic<int> g_churn_end{0};  // 0 running, -1 bad data, else the fault's cause + 1
thread_local bool g_churn_thread = false;
void OnFault(const disagg::MemoryFault& fault) {
  if (g_churn_thread) {
    g_churn_end.store(static_cast<int>(fault.cause) + 1);
    while (true) pause();
  }
  g_cause = fault.cause;
  std::memcpy(g_element, fault.element, sizeof(g_element));
  siglongjmp(g_touch, 1);
}

const char* KindName(disagg::EventKind kind) {
  switch (kind) {
    case disagg::EventKind::kGranted:
      return "granted";
    case disagg::EventKind::kRevoked:
      return "revoked";
    case disagg::EventKind::kMemoryFailed:
      return "memory-failed";
    case disagg::EventKind::kPeerFailed:
      return "peer-failed";
    case disagg::EventKind::kFenced:
      return "fenced";
  }
  return "unknown";
}

// What a caught fault says: "fault CAUSE[ at ELEMENT]".
std::string FaultText() {
  std::string out = std::string("fault ") + disagg::FaultCauseName(g_cause);
  if (g_element[0] != '\0') out += std::string(" at ") + g_element;
  return out;
}

// The word at rack address `word * 8`: the same at any address whatever range was filled.
uint64_t Pattern(uint64_t word, uint64_t seed) { return (word + 1) * 0x9E3779B97F4A7C15ull ^ seed; }

std::string Say(const absl::Status& s) {
  if (s.ok()) return "ok";
  return "error " + std::string(absl::StatusCodeToString(s.code())) + " " +
         std::string(s.message());
}

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%" PRIx64, v);
  return buf;
}

}  // namespace

int main() {
  auto joined = disagg::Rack::Join();
  if (!joined.ok()) {
    std::printf("%s\n", Say(joined.status()).c_str());
    return 1;
  }
  disagg::Rack& rack = **joined;
  rack.OnMemoryFault(OnFault);
  std::mutex mu;
  std::vector<std::string> events;
  std::vector<std::string> reasons;  // of each event
  std::vector<char*> balloons;
  std::atomic<uint64_t> churn_passes{0};
  rack.OnEvent([&](const disagg::Event& e) {
    std::lock_guard<std::mutex> lock(mu);
    std::string line = std::string(KindName(e.kind)) + ":" + std::to_string(e.process) + ":" +
                       Hex(reinterpret_cast<uintptr_t>(e.address)) + ":" + std::to_string(e.size);
    if (!e.element.empty()) line += ":" + e.element;
    events.push_back(line);
    reasons.push_back(e.reason);
  });
  std::printf("ready %u\n", rack.self());
  std::fflush(stdout);
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    std::string out;
    uint64_t addr = 0, bytes = 0, seed = 0;
    uint32_t who = 0;
    std::string name;
    auto ptr = [&] { return reinterpret_cast<void*>(addr); };
    if (cmd == "id") {
      out = std::to_string(rack.self());
    } else if (cmd == "map" && in >> bytes) {
      auto r = rack.Map(bytes);
      out = r.ok() ? Hex(reinterpret_cast<uintptr_t>(r->data())) : Say(r.status());
    } else if (cmd == "unmap" && in >> std::hex >> addr) {
      out = Say(rack.Unmap(ptr()));
    } else if (cmd == "fill" && in >> std::hex >> addr >> std::dec >> bytes >> seed) {
      auto* words = static_cast<uint64_t*>(ptr());
      if (sigsetjmp(g_touch, 1) != 0) {
        out = FaultText();
      } else {
        for (uint64_t i = 0; i < bytes / 8; ++i) words[i] = Pattern(addr / 8 + i, seed);
        out = "ok";
      }
    } else if (cmd == "verify" && in >> std::hex >> addr >> std::dec >> bytes >> seed) {
      auto* words = static_cast<const uint64_t*>(ptr());
      if (sigsetjmp(g_touch, 1) != 0) {
        out = FaultText();
      } else {
        uint64_t bad = 0;
        for (uint64_t i = 0; i < bytes / 8; ++i) bad += words[i] != Pattern(addr / 8 + i, seed);
        out = bad == 0 ? "ok" : "bad " + std::to_string(bad);
      }
    } else if (cmd == "zeros" && in >> std::hex >> addr >> std::dec >> bytes) {
      auto* words = static_cast<const uint64_t*>(ptr());
      if (sigsetjmp(g_touch, 1) != 0) {
        out = FaultText();
      } else {
        uint64_t nonzero = 0;
        for (uint64_t i = 0; i < bytes / 8; ++i) nonzero += words[i] != 0;
        out = nonzero == 0 ? "ok" : "nonzero " + std::to_string(nonzero);
      }
    } else if (cmd == "flush" && in >> std::hex >> addr >> std::dec >> bytes) {
      out = Say(rack.Flush(ptr(), bytes));
    } else if (cmd == "grant" && in >> std::hex >> addr >> std::dec >> bytes >> who) {
      out = Say(rack.Grant(ptr(), bytes, who));
    } else if (cmd == "steal" && in >> who >> std::hex >> addr >> std::dec >> bytes) {
      out = Say(rack.Steal(who, ptr(), bytes).status());
    } else if (cmd == "group" && in >> name) {
      out = Say(rack.JoinGroup(name));
    } else if (cmd == "publish" && in >> name >> std::hex >> addr) {
      out = Say(rack.Publish(name, ptr()));
    } else if (cmd == "lookup" && in >> who >> name) {
      auto root = rack.Lookup(who, name);
      out = root.ok() ? Hex(reinterpret_cast<uintptr_t>(*root)) : Say(root.status());
    } else if (cmd == "touch" && in >> std::hex >> addr) {
      if (sigsetjmp(g_touch, 1) == 0) {
        volatile uint64_t word = *static_cast<volatile uint64_t*>(ptr());
        (void)word;
        out = "ok";
      } else {
        out = FaultText();
      }
    } else if (cmd == "churn" && in >> std::hex >> addr >> std::dec >> bytes) {
      // Writes and verifies [addr, +bytes) pass after pass, in the background, until a touch
      // is refused: `churned` tells how far it got.
      std::thread([addr, bytes, &churn_passes] {
        auto* words = reinterpret_cast<volatile uint64_t*>(addr);
        g_churn_thread = true;
        for (uint64_t pass = 1;; ++pass) {
          for (uint64_t i = 0; i < bytes / 8; i += 512) words[i] = Pattern(i, pass);
          for (uint64_t i = 0; i < bytes / 8; i += 512) {
            if (words[i] != Pattern(i, pass)) {
              g_churn_end.store(-1);
              return;
            }
          }
          churn_passes.store(pass);
        }
      }).detach();
      out = "ok";
    } else if (cmd == "churned") {
      const int end = g_churn_end.load();
      out = "passes " + std::to_string(churn_passes.load()) +
            (end == 0  ? " running"
             : end < 0 ? " bad"
                       : std::string(" fault ") +
                             disagg::FaultCauseName(static_cast<disagg::FaultCause>(end - 1)));
    } else if (cmd == "reasons") {
      std::lock_guard<std::mutex> lock(mu);
      for (const std::string& r : reasons) out += (out.empty() ? "" : " | ") + r;
      if (out.empty()) out = "none";
    } else if (cmd == "balloon" && in >> bytes) {
      // Local memory, touched: a process whose teardown takes a while.
      char* b = static_cast<char*>(std::malloc(bytes));
      for (uint64_t i = 0; b != nullptr && i < bytes; i += 4096) b[i] = 1;
      if (b != nullptr) balloons.push_back(b);
      out = b != nullptr ? "ok" : "error RESOURCE_EXHAUSTED malloc";
    } else if (cmd == "contacts") {
      std::vector<uint32_t> contacts;
      uint32_t c;
      while (in >> c) contacts.push_back(c);
      out = Say(rack.SetEmergencyContacts(contacts));
    } else if (cmd == "stats") {
      const disagg::CacheStats st = rack.cache_stats();
      out = "faults " + std::to_string(st.faults) + " writebacks " + std::to_string(st.writebacks) +
            " evictions " + std::to_string(st.evictions) + " cached " +
            std::to_string(st.cached_bytes);
    } else if (cmd == "events") {
      std::lock_guard<std::mutex> lock(mu);
      for (const std::string& e : events) out += (out.empty() ? "" : " ") + e;
      if (out.empty()) out = "none";
    } else if (cmd == "returning-handler") {
      rack.OnMemoryFault([](const disagg::MemoryFault&) {});
      out = "ok";
    } else if (cmd == "nohandler") {
      rack.OnMemoryFault(nullptr);
      out = "ok";
    } else if (cmd == "crash") {
      std::_Exit(3);
    } else if (cmd == "quit") {
      break;
    } else {
      out = "error INVALID_ARGUMENT cannot read: " + line;
    }
    std::printf("%s\n", out.c_str());
    std::fflush(stdout);
  }
  // The Rack goes first: its event thread uses `events` and `mu` until then.
  joined->reset();
  return 0;
}
