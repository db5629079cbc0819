// RackImpl's fault path: fault threads read the userfaultfd; a missing page is fetched from
// its memory element and installed write-protected (writable at once for a write fault), a
// write to a write-protected page marks it dirty, and a refused page is poisoned so that the
// access raises SIGBUS. Room in the cache is made by evicting the longest-present page.
#include <errno.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iterator>
#include <map>

#include "absl/strings/str_cat.h"
#include "internal/page_unit.h"
#include "internal/status_macros.h"
#include "ipc/wire.h"
#include "runtime/fault_signal.h"
#include "runtime/log.h"
#include "runtime/rack_impl.h"

namespace disagg::runtime {
namespace {

// Pages evicted together when a fault needs room: their write-backs travel pipelined.
constexpr uint64_t kEvictBatch = 16;
// Faults read from the userfaultfd at once and served together.
constexpr size_t kFaultBatch = 16;
// A stream's run is read ahead only in a cache this many times the pages in flight for it, so
// that what is read ahead does not evict what the stream is still reading.
constexpr uint64_t kAheadRoom = 4;
// Units a stream's fault asks for after the faulting one: the element writes them while the
// access reads the units before.
constexpr uint64_t kUnitsAhead = 2;
// Streams go in 2 MiB units only in a cache of at least this many units (those in flight for
// one fault, kAheadRoom times).
constexpr uint64_t kUnitRoom = kAheadRoom * (1 + kUnitsAhead);
// Units that could not be moved into place before streams stop going in units.
constexpr uint64_t kMaxMoveFailures = 8;

// Which pages of [addr, addr + bytes) are in the address space, for a log line.
std::string Resident(uintptr_t addr, uint64_t bytes) {
  std::vector<unsigned char> in(bytes / kPageBytes);
  if (mincore(reinterpret_cast<void*>(addr), bytes, in.data()) != 0) return "residency unknown";
  std::string out;
  size_t count = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    if (!(in[i] & 1)) continue;
    if (++count <= 4) absl::StrAppend(&out, out.empty() ? "" : ", ", "page ", i);
  }
  return absl::StrCat(count, " of ", in.size(), " pages resident", count ? ": " : "", out);
}

FaultCause CauseOfTranslation(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kPermissionDenied:
      return FaultCause::kNotYours;
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kOutOfRange:
      return FaultCause::kNotMapped;
    case absl::StatusCode::kFailedPrecondition:  // the Rack MMU fenced this process
      return FaultCause::kFenced;
    default:
      return FaultCause::kRefused;
  }
}

FaultCause CauseOfRead(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return FaultCause::kElementFailed;
    case absl::StatusCode::kFailedPrecondition:  // the memory element fenced this process
      return FaultCause::kFenced;
    default:
      return FaultCause::kRefused;
  }
}

}  // namespace

void RackImpl::FaultLoop() {
  // Leader/followers: one thread at a time reads the userfaultfd; when it gets a fault it
  // hands the reading to another thread and serves the fault, so faults from many threads
  // are served at once and the next fault finds a reader already awake.
  while (true) {
    {
      MutexLock lock(&reader_mu_);
      while (reader_busy_ && !stopping_) reader_free_.Wait(&reader_mu_);
      if (stopping_) return;
      reader_busy_ = true;
    }
    std::optional<uffd_msg> msg = ReadFault();
    // Faults that arrived together (several threads faulting at once) are served together.
    std::vector<uffd_msg> msgs;
    if (msg) {
      msgs.push_back(*msg);
      uffd_msg more;
      while (msgs.size() < kFaultBatch && read(uffd_.fd(), &more, sizeof(more)) == sizeof(more)) {
        msgs.push_back(more);
      }
    }
    {
      MutexLock lock(&reader_mu_);
      reader_busy_ = false;
      if (!msg) stopping_ = true;
      reader_free_.SignalAll();
    }
    if (!msg) return;
    std::vector<MissingFault> missing;
    for (const uffd_msg& m : msgs) {
      if (m.event != UFFD_EVENT_PAGEFAULT) continue;
      const uint64_t vpage = m.arg.pagefault.address >> kPageShift;
      const bool write = (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0;
      if (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
        if (staging_ != nullptr && staging_->Contains(m.arg.pagefault.address)) {
          // Staging holds no write-protected page (moves clear the bit); should one fault, an
          // element's write must not wait on it.
          (void)uffd_.WriteProtect(vpage << kPageShift, kPageBytes, false);
          continue;
        }
        HandleWriteProtect(vpage);
      } else {
        missing.push_back({vpage, write});
      }
    }
    ServeMissing(missing);
  }
}

std::optional<uffd_msg> RackImpl::ReadFault() {
  const auto spin_until = std::chrono::steady_clock::now() +
                          std::chrono::nanoseconds(absl::ToInt64Nanoseconds(options_.fault_spin));
  uffd_msg msg;
  while (true) {
    // Spin a while after the last fault (bursts cost no wake-up), then sleep in poll.
    do {
      if (read(uffd_.fd(), &msg, sizeof(msg)) == sizeof(msg)) return msg;
      __builtin_ia32_pause();
    } while (std::chrono::steady_clock::now() < spin_until);
    struct pollfd fds[2] = {{uffd_.fd(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (poll(fds, 2, -1) < 0 && errno != EINTR) {
      RPLOG(ERROR) << "disagg: polling the userfaultfd";
      return std::nullopt;
    }
    if (fds[1].revents & POLLIN) return std::nullopt;
    if (read(uffd_.fd(), &msg, sizeof(msg)) == sizeof(msg)) return msg;
  }
}

void RackImpl::ServeMissing(const std::vector<MissingFault>& faults) {
  size_t next = 0;
  while (next < faults.size()) {
    std::vector<Fetch> fetches, ahead;
    {
      MutexLock lock(&mu_);
      for (; next < faults.size(); ++next) {
        Fetch fetch;
        const Admission admission = Admit(faults[next].vpage, faults[next].write,
                                          /*may_wait=*/fetches.empty(), fetch, ahead);
        if (admission == Admission::kDefer) break;  // no room until these fetches land
        if (admission == Admission::kFetch) fetches.push_back(std::move(fetch));
      }
    }
    // Every faulting run before any run read ahead: runs are read and installed in order.
    std::move(ahead.begin(), ahead.end(), std::back_inserter(fetches));
    FetchAndInstall(fetches);
  }
}

RackImpl::Admission RackImpl::Admit(uint64_t vpage, bool write, bool may_wait, Fetch& fetch,
                                    std::vector<Fetch>& ahead) {
  const uintptr_t addr = vpage << kPageShift;
  while (true) {
    if (PageEntry* entry = cache_.Find(vpage)) {
      switch (entry->state) {
        case PageState::kFetching:
          return Admission::kDone;  // its installation wakes this access too
        case PageState::kPresent:
        case PageState::kPoisoned:
          (void)uffd_.Wake(addr);  // the access retries: it reads, or raises SIGBUS
          return Admission::kDone;
        case PageState::kWritingBack:
          changed_.Wait(&mu_);  // fetch only what the memory element holds after it
          continue;
      }
    }
    if (InTransfer(vpage)) {
      changed_.Wait(&mu_);  // being granted: served once the outcome is known
      continue;
    }
    if (cache_.HasRoom()) break;
    if (EvictBatch(kEvictBatch) > 0) continue;
    // Everything is in flight, or the quota is 0.
    if (!may_wait) return Admission::kDefer;
    changed_.Wait(&mu_);
  }
  cache_.BeginFetch(vpage);
  fetch.write = write;
  fetch.pages = {vpage};
  // A page given away or taken from here: the Rack MMU is asked (it may have come back, its
  // event not yet arrived); if it is not ours, the touch faults as revoked.
  fetch.revoked = translations_.Revoked(vpage);
  if (fenced_) {
    fetch.refusal = FaultCause::kFenced;
    return Admission::kFetch;
  }
  if (const ExtentInfo* extent = translations_.Find(vpage); extent != nullptr && !fetch.revoked) {
    fetch.element = extent->element;
    if (FailedAt(vpage) != nullptr) {
      fetch.refusal = FaultCause::kElementFailed;
      return Admission::kFetch;
    }
    std::vector<uint64_t> next_run;
    fetch.unit =
        PlanReadahead(vpage, extent->vpage + extent->pages, fetch.element, fetch.pages, next_run);
    // One fetch per run, or per unit.
    for (size_t first = 0; first < next_run.size();) {
      const size_t end =
          fetch.unit ? std::min(first + kUnitPages, next_run.size()) : next_run.size();
      Fetch& more = ahead.emplace_back();
      more.write = write;
      more.element = fetch.element;
      more.pages.assign(next_run.begin() + first, next_run.begin() + end);
      more.ahead = true;
      more.unit = fetch.unit;
      first = end;
    }
  }
  return Admission::kFetch;
}

void RackImpl::FetchAndInstall(std::vector<Fetch>& fetches) {
  // Pages the local translations do not cover: ask the Rack MMU.
  for (Fetch& f : fetches) {
    if (!f.element.empty() || f.refusal) continue;
    absl::StatusOr<std::string> remote = Translate(f.pages[0]);
    if (remote.ok()) {
      f.element = std::move(*remote);
    } else {
      VLOG(1) << "disagg: refused 0x" << std::hex << (f.pages[0] << kPageShift) << std::dec << ": "
              << remote.status();
      f.refusal = f.revoked ? FaultCause::kRevoked : CauseOfTranslation(remote.status());
    }
  }
  ReadAndInstall(fetches);
  Complete(fetches);
}

void RackImpl::ReadAndInstall(std::vector<Fetch>& fetches) {
  // Each fetch is one run (its pages are consecutive), read into the channel's page slots and
  // installed from there with one call: the memory element copies each page once, from its
  // pool, and the kernel once, into place. A write fault's pages are installed writable (and
  // count as dirty): a sequential writer takes one fault per window, not a write-protect
  // fault per page. A read fault's pages are read-only, so that the first write marks each.
  std::map<std::string, std::vector<size_t>> by_element;  // fetch indexes
  std::map<std::string, std::vector<size_t>> units_by_element;
  for (size_t i = 0; i < fetches.size(); ++i) {
    Fetch& f = fetches[i];
    f.results.assign(f.pages.size(), absl::UnavailableError("not read"));
    if (!f.refusal) (f.unit ? units_by_element : by_element)[f.element].push_back(i);
  }
  for (const auto& [element, indexes] : units_by_element) {
    PlaceAndInstall(fetches, element, indexes);
  }
  std::vector<ElementPool::PageRun> runs;
  std::vector<bool> delivered;
  for (const auto& [element, indexes] : by_element) {
    runs.clear();
    for (size_t i : indexes) runs.push_back({fetches[i].pages[0], fetches[i].pages.size()});
    delivered.assign(runs.size(), false);
    const absl::Status transport = elements_.ReadRuns(
        element, runs, [&](size_t r, absl::StatusOr<size_t> read, const uint8_t* data) {
          Fetch& f = fetches[indexes[r]];
          delivered[r] = true;
          if (!read.ok()) {
            f.results[0] = read.status();
            return absl::OkStatus();
          }
          const absl::Status installed =
              uffd_.CopyRun(f.pages[0] << kPageShift, data, *read, /*write_protect=*/!f.write);
          for (size_t k = 0; k < *read; ++k) f.results[k] = installed;
          return absl::OkStatus();
        });
    for (size_t r = 0; r < runs.size() && !transport.ok(); ++r) {
      if (delivered[r]) continue;
      for (absl::Status& result : fetches[indexes[r]].results) result = transport;
    }
  }
}

void RackImpl::PlaceAndInstall(std::vector<Fetch>& fetches, const std::string& element,
                               const std::vector<size_t>& indexes) {
  // Each unit is written by the element into a staging slot, then moved into place whole: the
  // element copies each page once, from its pool, and the kernel moves page tables.
  const absl::Status unplaced = absl::AbortedError("the unit was not placed");
  std::vector<ElementPool::UnitPlacement> units;
  std::vector<UnitStaging::Slot> slots;
  std::vector<size_t> placing;  // fetch indexes, as units
  for (size_t i : indexes) {
    Fetch& f = fetches[i];
    std::optional<UnitStaging::Slot> slot = staging_->Take();
    if (!slot) {
      f.results.assign(f.pages.size(), unplaced);
      continue;
    }
    units.push_back({f.pages[0], f.pages.size(), slot->addr});
    slots.push_back(*slot);
    placing.push_back(i);
  }
  if (units.empty()) return;
  std::vector<bool> delivered(units.size(), false);
  bool refused = false, move_failed = false;
  size_t sent = 0;
  const absl::Status transport = elements_.PlaceUnits(
      element, units,
      [&](size_t u, absl::StatusOr<size_t> placed) {
        Fetch& f = fetches[placing[u]];
        delivered[u] = true;
        if (placed.ok()) {
          slots[u].holds_pages = true;
          move_failed |= !InstallPlaced(f, slots[u], *placed);
          if (u == 0) MakeUnitRoom();
          return absl::OkStatus();
        }
        staging_->Give(slots[u]);  // nothing was written
        if (absl::IsUnimplemented(placed.status())) {
          RLOG(WARNING) << "disagg: " << placed.status() << "; streams from " << element
                        << " are read in runs from now on";
          refused = true;
          f.results.assign(f.pages.size(), unplaced);
        } else if (absl::IsAborted(placed.status())) {
          VLOG(1) << "disagg: " << placed.status();  // this unit goes in runs
          f.results.assign(f.pages.size(), unplaced);
        } else {
          f.results[0] = placed.status();  // its first page refused, as a run's would be
        }
        return absl::OkStatus();
      },
      sent);
  for (size_t u = 0; u < units.size(); ++u) {
    if (delivered[u]) continue;
    // Not answered: an element that got the request may still write into the slot, which is
    // then not used again.
    if (u < sent) {
      staging_->Retire(slots[u].addr);
    } else {
      staging_->Give(slots[u]);
    }
    for (absl::Status& result : fetches[placing[u]].results) result = transport;
  }
  if (refused || move_failed) {
    MutexLock lock(&mu_);
    if (refused) no_units_.insert(element);
    if (move_failed && ++unit_move_failures_ == kMaxMoveFailures) {
      RLOG(WARNING) << "disagg: " << kMaxMoveFailures
                    << " units could not be moved into place: streams are read in runs from now on";
    }
  }
}

bool RackImpl::InstallPlaced(Fetch& f, UnitStaging::Slot& slot, size_t placed) {
  const uintptr_t addr = f.pages[0] << kPageShift;
  if (placed < f.pages.size()) {
    // Cut short at a page the element may not read: what it wrote goes in as a run.
    const absl::Status installed =
        uffd_.CopyRun(addr, reinterpret_cast<void*>(slot.addr), placed, /*write_protect=*/!f.write);
    for (size_t k = 0; k < placed; ++k) f.results[k] = installed;
    staging_->Give(slot);
    return true;
  }
  // What the element wrote, for the check after the move (a read fault's unit only).
  thread_local std::vector<uint64_t> hashes;
  hashes.resize(f.write ? 0 : placed);
  for (size_t k = 0; k < hashes.size(); ++k) {
    hashes[k] = PageHash(reinterpret_cast<const void*>(slot.addr + k * kPageBytes));
  }
  // A fault there left an empty page table behind: dropping the (absent) unit frees it, so
  // that the unit moves in as one huge page, not 512 small ones.
  (void)uffd_.Drop(addr, kUnitBytes);
  uint64_t moved = 0;
  const absl::Status move = uffd_.Move(addr, slot.addr, kUnitBytes, moved);
  if (!move.ok()) {
    // Not expected (every page there is being fetched, so absent). What moved is installed;
    // the rest is fetched afresh in runs.
    RLOG(WARNING) << "disagg: placing a unit: " << move << " ("
                  << Resident(addr + moved, kUnitBytes - moved) << ")";
    staging_->Retire(slot.addr);
  } else {
    slot.holds_pages = false;
    staging_->Give(slot);
  }
  const size_t in_place = moved / kPageBytes;
  // A read fault's unit is write-protected, so that the first write to each page faults, as
  // any page installed for a read; a write fault's stays writable and counts as written, as a
  // write fault's run does. A move cannot install pages write-protected: a write between the
  // move and the protection takes no fault, so the pages are checked against their hashes
  // taken in staging (writes from then on fault, and wait until the unit is recorded), and those
  // that differ count as written. If the protection fails, every page counts as written.
  f.written.assign(f.pages.size(), true);
  bool protected_ = false;
  if (!f.write && in_place > 0) {
    absl::Status wp = uffd_.WriteProtect(addr, moved, /*protect=*/true);
    protected_ = wp.ok();
    if (!protected_) RLOG(ERROR) << "disagg: " << wp;
  }
  if (absl::Status woken = uffd_.WakeRange(addr, kUnitBytes); !woken.ok()) {
    RLOG(ERROR) << "disagg: " << woken;
  }
  if (protected_) {  // the access goes on meanwhile
    std::fill(f.written.begin(), f.written.begin() + in_place, false);
    MarkChanged(reinterpret_cast<const void*>(addr), hashes.data(), in_place, f.written);
  }
  const absl::Status unplaced = absl::AbortedError("the unit was not placed");
  for (size_t k = 0; k < f.pages.size(); ++k) {
    f.results[k] = k < in_place ? absl::OkStatus() : unplaced;
  }
  return move.ok();
}

void RackImpl::MakeUnitRoom() {
  MutexLock lock(&mu_);
  const uint64_t wanted = (1 + kUnitsAhead) * kUnitPages;
  if (cache_.free_pages() < wanted) EvictBatch(wanted - cache_.free_pages());
}

bool RackImpl::UnitsFor(const std::string& element) const {
  return staging_ != nullptr && unit_move_failures_ < kMaxMoveFailures &&
         staging_->available() >= 1 + kUnitsAhead &&
         cache_.quota_pages() >= kUnitRoom * kUnitPages && !no_units_.contains(element);
}

bool RackImpl::ClaimUnit(uint64_t first, uint64_t from, uint64_t extent_end,
                         std::vector<uint64_t>& pages) {
  const uint64_t end = first + kUnitPages;
  auto all_free = [&] {
    if (fenced_ || end > extent_end || FailedAt(first) != nullptr ||
        translations_.RevokedIn(first, end) || InTransfer(first)) {
      return false;
    }
    auto cached = cache_.pages().lower_bound(from);
    if (cached != cache_.pages().end() && cached->first < end) return false;
    auto granting = transfers_.lower_bound(first << kPageShift);
    return granting == transfers_.end() || granting->first >= (end << kPageShift);
  };
  if (!all_free()) return false;
  const uint64_t wanted = end - from;
  if (cache_.free_pages() < wanted) {
    EvictBatch(wanted - cache_.free_pages());
    // mu_ was released: look again.
    if (cache_.free_pages() < wanted || !all_free()) return false;
  }
  cache_.BeginFetchRun(from, end);
  for (uint64_t p = from; p < end; ++p) pages.push_back(p);
  return true;
}

void RackImpl::Complete(std::vector<Fetch>& fetches) {
  MutexLock lock(&mu_);
  for (Fetch& f : fetches) {
    const bool placed = f.unit && f.written.size() == f.pages.size();
    for (size_t i = 0; i < f.pages.size(); ++i) {
      if (f.results[i].ok()) {
        cache_.FinishFetch(f.pages[i], /*dirty=*/placed ? f.written[i] : f.write, placed);
        if (placed) ++placed_;
        ++faults_;
        if (f.ahead) ++read_ahead_;
      } else if (i == 0 && !f.ahead && !(f.unit && absl::IsAborted(f.results[0]))) {
        if (!f.refusal) {
          RLOG(WARNING) << "disagg: page 0x" << std::hex << (f.pages[0] << kPageShift) << std::dec
                        << ": " << f.results[0];
        }
        cache_.AbortFetch(f.pages[0], /*poisoned=*/true);
        Refuse(f.pages[0], f.refusal ? *f.refusal : CauseOfRead(f.results[0]), f.element);
      } else {
        // A page read ahead that did not arrive: forgotten; an access waiting on it retries.
        cache_.AbortFetch(f.pages[i], /*poisoned=*/false);
        (void)uffd_.Wake(f.pages[i] << kPageShift);
      }
    }
  }
  changed_.SignalAll();
}

bool RackImpl::PlanReadahead(uint64_t vpage, uint64_t extent_end, const std::string& element,
                             std::vector<uint64_t>& batch, std::vector<uint64_t>& ahead) {
  // A fault that continues one of the recent sequential streams doubles that stream's window
  // (up to a pipeline's worth); any other starts a stream in the least recently used slot.
  // Several streams at once are common: a merge reads one per run and writes another.
  ReadaheadStream* stream = nullptr;
  for (ReadaheadStream& s : streams_) {
    if (s.used != 0 && (vpage == s.next || vpage == s.last + 1)) stream = &s;
  }
  // A run of at most readahead_pages, and of at most half the cache: the rest of the cache
  // keeps what the stream read before.
  const uint64_t longest =
      std::clamp<uint64_t>(cache_.quota_pages() / 2, 1, options_.readahead_pages) - 1;
  const bool continuing = stream != nullptr;
  if (continuing) {
    stream->window = std::min<uint64_t>(std::max<uint64_t>(stream->window * 2, 4), longest);
  } else {
    stream = &*std::min_element(streams_.begin(), streams_.end(),
                                [](const auto& a, const auto& b) { return a.used < b.used; });
    *stream = ReadaheadStream{};
  }
  stream->last = vpage;
  stream->used = ++stream_clock_;
  if (UnitsFor(element)) {
    // At a unit boundary, with whole units free there: the unit, and the one after it, go in
    // whole. Elsewhere runs stop at the boundary, so that the stream's next fault comes there.
    if (continuing && stream->window >= longest && vpage % kUnitPages == 0 &&
        ClaimUnit(vpage, vpage + 1, extent_end, batch)) {
      stream->next = vpage + kUnitPages;
      for (uint64_t k = 0;
           k < kUnitsAhead && ClaimUnit(stream->next, stream->next, extent_end, ahead); ++k) {
        stream->next += kUnitPages;
      }
      return true;
    }
    extent_end = std::min(extent_end, (vpage / kUnitPages + 1) * kUnitPages);
  }
  uint64_t wanted = 0;
  while (wanted < stream->window && vpage + 1 + wanted < extent_end &&
         MayReadAhead(vpage + 1 + wanted)) {
    ++wanted;
  }
  // Making room may write dirty pages back (mu_ is released meanwhile): look again after.
  if (cache_.free_pages() < wanted) EvictBatch(wanted - cache_.free_pages());
  ClaimRun(vpage + 1, vpage + 1 + wanted, batch);
  stream->next = batch.back() + 1;
  // At the longest window, with the whole window read, both runs fitting a channel's slots
  // together, and the cache at least kAheadRoom times what the two take: the run after it too,
  // read in the same request (the memory element copies it while the faulting run is
  // installed) and installed while the access reads the faulting run. A write stream's is
  // installed writable, as its faulting run is.
  const uint64_t run = batch.size();
  if (run < 2 || run < static_cast<uint64_t>(options_.readahead_pages) ||
      2 * run > ElementPool::kMaxRun || cache_.quota_pages() < kAheadRoom * 2 * run ||
      stream->next >= extent_end) {
    return false;
  }
  const uint64_t first = stream->next;
  const uint64_t end = std::min(first + run, extent_end);
  const uint64_t used = stream->used;
  if (cache_.free_pages() < end - first) {
    EvictBatch(end - first - cache_.free_pages());
    // mu_ was released: the process may have been fenced, the element may have failed, and
    // the stream's slot may have gone to another stream meanwhile.
    if (fenced_ || FailedAt(first) != nullptr || stream->used != used) return false;
  }
  ClaimRun(first, end, ahead);
  if (!ahead.empty()) stream->next = ahead.back() + 1;
  return false;
}

bool RackImpl::MayReadAhead(uint64_t vpage) {
  // Not cached or being fetched; not in a range being granted, or given away: those pages
  // are not to be read here.
  return cache_.Find(vpage) == nullptr && !InTransfer(vpage) && !translations_.Revoked(vpage);
}

void RackImpl::ClaimRun(uint64_t first, uint64_t end, std::vector<uint64_t>& pages) {
  for (uint64_t p = first; p < end && cache_.HasRoom() && MayReadAhead(p); ++p) {
    cache_.BeginFetch(p);
    pages.push_back(p);
  }
}

void RackImpl::HandleWriteProtect(uint64_t vpage) {
  const uintptr_t addr = vpage << kPageShift;
  MutexLock lock(&mu_);
  PageEntry* entry = cache_.Find(vpage);
  // Installed but not yet recorded; or being granted: a write then must not land in a copy
  // that is about to leave.
  while ((entry != nullptr && entry->state == PageState::kFetching) || InTransfer(vpage)) {
    changed_.Wait(&mu_);
    entry = cache_.Find(vpage);
  }
  if (entry != nullptr && entry->state == PageState::kPresent) {
    entry->dirty = true;
    absl::Status status = uffd_.WriteProtect(addr, kPageBytes, false);  // wakes the writer
    if (status.ok()) return;
    RLOG(ERROR) << "disagg: " << status;
  }
  // Evicted meanwhile: the retried write faults the page in again.
  (void)uffd_.Wake(addr);
}

void RackImpl::Refuse(uint64_t vpage, FaultCause cause, const std::string& element) {
  RecordPoison(vpage, cause, element);
  absl::Status status = uffd_.Poison(vpage << kPageShift);
  if (!status.ok()) RLOG(ERROR) << "disagg: " << status;
}

absl::StatusOr<std::string> RackImpl::Translate(uint64_t vpage) {
  // A page being mapped, granted or stolen right now is answered once that is done.
  absl::StatusOr<MappedRange> answer = mmu_.Translate(vpage);
  const absl::Time deadline = absl::Now() + options_.timeout;
  while (absl::IsAborted(answer.status()) && absl::Now() < deadline) {
    absl::SleepFor(absl::Microseconds(100));
    answer = mmu_.Translate(vpage);
  }
  ASSIGN_OR_RETURN(MappedRange found, std::move(answer));
  std::string element = found.info.extents[0].element;
  MutexLock lock(&mu_);
  translations_.AddExtent(found.vaddr, found.info.bytes, std::move(found.info.extents[0]));
  return element;
}

uint64_t RackImpl::EvictBatch(uint64_t pages) {
  std::vector<PageCache::Victim> victims;
  while (victims.size() < pages) {
    std::optional<PageCache::Victim> victim = cache_.NextVictim();
    if (!victim) break;
    victims.push_back(*victim);
  }
  // A unit leaves whole (its pages are next to each other in the queue): it goes back to
  // staging in one move.
  while (!victims.empty() && (victims.back().vpage + 1) % kUnitPages != 0 &&
         victims.back().placed) {
    std::optional<PageCache::Victim> victim = cache_.NextVictim();
    if (!victim) break;
    victims.push_back(*victim);
  }
  std::sort(victims.begin(), victims.end(),
            [](const auto& a, const auto& b) { return a.vpage < b.vpage; });
  // Dirty pages are write-protected first (writers block from then on), so the copies taken
  // here are their last contents; then every victim leaves the address space.
  // Runs of adjacent victims are dropped, and runs of adjacent dirty ones write-protected,
  // with one call each: each costs a TLB shootdown. (Clean pages are write-protected already.)
  std::vector<std::pair<size_t, size_t>> runs;            // (first victim, victims)
  std::vector<std::pair<uint64_t, uint64_t>> dirty_runs;  // (first page, pages)
  for (size_t i = 0; i < victims.size(); ++i) {
    if (!runs.empty() && victims[i - 1].vpage + 1 == victims[i].vpage) {
      ++runs.back().second;
    } else {
      runs.emplace_back(i, 1);
    }
    if (!victims[i].dirty) continue;
    if (!dirty_runs.empty() &&
        dirty_runs.back().first + dirty_runs.back().second == victims[i].vpage) {
      ++dirty_runs.back().second;
    } else {
      dirty_runs.emplace_back(victims[i].vpage, 1);
    }
  }
  for (const auto& [first, count] : dirty_runs) {
    absl::Status status = uffd_.WriteProtect(first << kPageShift, count * kPageBytes, true);
    if (!status.ok()) RLOG(ERROR) << "disagg: evicting: " << status;
  }
  // Grown, never shrunk: resizing back and forth would zero megabytes on every eviction.
  thread_local std::vector<uint8_t> staging;
  if (staging.size() < victims.size() * kPageBytes) staging.resize(victims.size() * kPageBytes);
  std::vector<std::pair<std::string, PageWrite>> writes;
  const ExtentInfo* extent = nullptr;
  std::vector<bool> writing_back(victims.size(), false);
  for (size_t i = 0; i < victims.size(); ++i) {
    const uint64_t vpage = victims[i].vpage;
    if (!victims[i].dirty) continue;
    if (extent == nullptr || vpage < extent->vpage || vpage >= extent->vpage + extent->pages) {
      extent = translations_.Find(vpage);  // victims are sorted: mostly the same extent
    }
    if (extent == nullptr) continue;
    writing_back[i] = true;
    uint8_t* copy = staging.data() + writes.size() * kPageBytes;
    std::memcpy(copy, reinterpret_cast<const void*>(vpage << kPageShift), kPageBytes);
    writes.push_back({extent->element, PageWrite{vpage, copy}});
  }
  for (const auto& [first, count] : runs) LeaveAddressSpace(&victims[first], count);
  cache_.Evicted(victims, writing_back);
  evictions_ += victims.size();
  if (writes.empty()) return victims.size();

  mu_.Unlock();
  std::vector<absl::Status> results;
  WriteBack(writes, results);
  mu_.Lock();
  for (size_t i = 0; i < writes.size(); ++i) {
    const uint64_t vpage = writes[i].second.vpage;
    cache_.Remove(vpage);
    if (!results[i].ok()) {
      RLOG(ERROR) << "disagg: write-back of 0x" << std::hex << (vpage << kPageShift) << std::dec
                  << " failed; the page is lost: " << results[i];
      cache_.MarkPoisoned(vpage);
      Refuse(vpage,
             absl::IsFailedPrecondition(results[i]) ? FaultCause::kFenced : FaultCause::kLost,
             writes[i].first);
    }
  }
  writebacks_ += writes.size();
  changed_.SignalAll();
  return victims.size();
}

void RackImpl::LeaveAddressSpace(const PageCache::Victim* run, size_t count) {
  // Whole units placed together, still one huge page, go back to staging (the next unit
  // written there needs no allocation); the rest is dropped.
  const uint64_t first = run[0].vpage;
  uint64_t dropped = first;  // [dropped, p) is still to drop
  size_t placed = 0;         // victims placed up to p, in a row
  for (size_t i = 0; i < count; ++i) {
    placed = run[i].placed ? placed + 1 : 0;
    const uint64_t p = first + i + 1 - kUnitPages;  // the unit [p, first + i] if it is one
    if (staging_ == nullptr || placed < kUnitPages || p % kUnitPages != 0 ||
        !staging_->HugePage(p << kPageShift)) {
      continue;
    }
    placed = 0;
    std::optional<uintptr_t> hole = staging_->TakeHole();
    if (!hole) continue;
    uint64_t moved = 0;
    if (uffd_.Move(*hole, p << kPageShift, kUnitBytes, moved).ok()) {
      // Pages that were swapped out keep their write protection through a move: the element
      // must never wait on this process's faults when it writes the slot.
      (void)uffd_.WriteProtect(*hole, kUnitBytes, /*protect=*/false);
      staging_->Give({*hole, true});
      if (p > dropped) (void)uffd_.Drop(dropped << kPageShift, (p - dropped) * kPageBytes);
      dropped = p + kUnitPages;
    } else {
      staging_->Retire(*hole);  // perhaps partly filled
    }
  }
  const uint64_t end = first + count;
  if (end > dropped) (void)uffd_.Drop(dropped << kPageShift, (end - dropped) * kPageBytes);
}

void RackImpl::ShrinkToQuota() {
  while (cache_.OverQuota()) {
    if (EvictBatch(kEvictBatch) == 0) changed_.Wait(&mu_);
  }
}

}  // namespace disagg::runtime
