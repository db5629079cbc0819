// RackImpl: the application's share of the rack, behind <disagg/disagg.h>.
//
// A facade over parts that each do one job: MmuStub (calls to the Rack MMU), Translations
// (where owned memory lives, what was revoked), PageCache (which pages are local),
// ElementPool (page reads and write-backs), EventQueue (OnEvent delivery), Userfaultfd.
//
// Threads: the application's own threads call Map/Unmap/Flush/Grant/Steal; `fault_threads`
// threads read the userfaultfd and serve faults (fetch, install, write-protect, evict); one
// control thread holds the connection to the compute element (cache quota, usage reports,
// the element's death) and the event link from the Rack MMU (granted, revoked); the
// EventQueue's thread runs the OnEvent handler. All cache state lives under mu_. Page data moves
// with mu_ released, except the 4 KiB copies taken of pages that are being evicted or flushed,
// which are taken under mu_ so that no other thread can drop the page meanwhile.
//
// Lifetime: one per process at a time (the rack range is a fixed reservation); the
// destructor stops the threads before anything they use goes away.
#ifndef DISAGG_RUNTIME_RACK_IMPL_H_
#define DISAGG_RUNTIME_RACK_IMPL_H_

#include <linux/userfaultfd.h>

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "disagg/disagg.h"
#include "internal/mutex.h"
#include "ipc/client.h"
#include "ipc/life_word.h"
#include "ipc/write_domain.h"
#include "runtime/element_pool.h"
#include "runtime/events.h"
#include "runtime/mmu_stub.h"
#include "runtime/page_cache.h"
#include "runtime/task_queue.h"
#include "runtime/translations.h"
#include "runtime/unit_staging.h"
#include "runtime/userfaultfd.h"

namespace disagg::runtime {

class RackImpl final : public Rack {
 public:
  static absl::StatusOr<std::unique_ptr<Rack>> Join(JoinOptions options);
  ~RackImpl() override;

  uint32_t self() const override { return id_; }
  uintptr_t window_base() const override { return window_base_; }
  size_t window_bytes() const override { return window_bytes_; }
  absl::StatusOr<Region> Map(size_t bytes, MapOptions options) override;
  absl::Status Unmap(void* data) override;
  absl::Status Flush(const void* addr, size_t len) override;
  absl::Status Grant(void* addr, size_t len, uint32_t to) override;
  absl::StatusOr<Region> Steal(uint32_t from, void* addr, size_t len) override;
  absl::Status JoinGroup(const std::string& name) override;
  absl::Status Publish(const std::string& name, const void* addr) override;
  absl::StatusOr<void*> Lookup(uint32_t owner, const std::string& name) override;
  absl::Status SetEmergencyContacts(const std::vector<uint32_t>& contacts) override;
  void OnEvent(EventHandler handler) override;
  void OnMemoryFault(MemoryFaultHandler handler) override;
  CacheStats cache_stats() const override;

 private:
  RackImpl(JoinOptions options, ipc::Client mmu, Userfaultfd uffd,
           std::shared_ptr<const ipc::Fabric> fabric);

  // Joining, in order: the Rack MMU's process id and window, the event link, the
  // reservation of the rack range (with userfaultfd and the SIGBUS handler), the compute
  // element's cache quota.
  absl::Status Start(ipc::Connection compute);
  absl::Status JoinMmu();
  absl::Status SubscribeEvents();
  absl::Status ReserveRange();
  absl::Status AttachCompute(ipc::Connection compute);

  // Fault path (rack_faults.cc).
  void FaultLoop();
  // The next userfaultfd event; nullopt when the Rack stops.
  std::optional<uffd_msg> ReadFault();
  struct MissingFault {
    uint64_t vpage;
    bool write;
  };
  // A fetch in the making: the faulting page, then the pages read ahead with it.
  struct Fetch {
    bool write = false;
    std::string element;          // empty: the Rack MMU is asked
    std::vector<uint64_t> pages;  // consecutive
    std::optional<FaultCause> refusal;
    bool revoked = false;  // the page was given away or taken: refused as revoked
    // Read ahead of a sequential stream, no access waiting on its first page: a page that
    // cannot be had is forgotten, not poisoned.
    bool ahead = false;
    // A 2 MiB unit (kUnitPages pages, the first one unit-aligned), placed by its memory element
    // into staging and moved into place; which of its pages were written before they were
    // write-protected (set once it is in place).
    bool unit = false;
    std::vector<bool> written;
    std::vector<absl::Status> results;
  };
  enum class Admission { kDone, kFetch, kDefer };
  // Serves missing-page faults that arrived together: fetches pipelined per memory element.
  void ServeMissing(const std::vector<MissingFault>& faults);
  // Decides what a missing fault needs: nothing (being fetched, present, poisoned), or a
  // fetch (marked as such in the cache, with room made for it), in `fetch`, and the run read
  // ahead of it, if any, appended to `ahead`. kDefer when no room can be made without waiting
  // and `may_wait` is false.
  Admission Admit(uint64_t vpage, bool write, bool may_wait, Fetch& fetch,
                  std::vector<Fetch>& ahead) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FetchAndInstall(std::vector<Fetch>& fetches);
  // The steps of FetchAndInstall: read each fetch's run into the channel's page slots and
  // install it from there, then record the results in the cache (poisoning faulting pages
  // that could not be had).
  void ReadAndInstall(std::vector<Fetch>& fetches);
  // ReadAndInstall's way for unit fetches (`indexes` into `fetches`) on `element`. A unit that
  // cannot be placed (no staging slot, the element may not write here, the move failed) ends
  // with ABORTED results: its pages are forgotten and fetched again in runs.
  void PlaceAndInstall(std::vector<Fetch>& fetches, const std::string& element,
                       const std::vector<size_t>& indexes) ABSL_LOCKS_EXCLUDED(mu_);
  // Installs the unit `f` the element wrote into `slot` (`placed` pages of it) and gives the
  // slot back (or retires it). False if the move into place failed.
  bool InstallPlaced(Fetch& f, UnitStaging::Slot& slot, size_t placed) ABSL_LOCKS_EXCLUDED(mu_);
  void Complete(std::vector<Fetch>& fetches);
  void HandleWriteProtect(uint64_t vpage);
  // Where `vpage` lives: its memory element, or why the rack refuses it.
  absl::StatusOr<std::string> Translate(uint64_t vpage);
  // Adds to `batch` the pages after `vpage` (up to `extent_end`) worth reading with it, and
  // marks them as being fetched. A stream read at its longest window also gets the run after
  // the batch, in `ahead`: installed while the access reads the batch.
  // Returns true if the batch (and `ahead`) are 2 MiB units rather than runs: a stream at its
  // longest window reaching a unit boundary where whole units are free, on an element that
  // places units.
  bool PlanReadahead(uint64_t vpage, uint64_t extent_end, const std::string& element,
                     std::vector<uint64_t>& batch, std::vector<uint64_t>& ahead)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // True if streams reading from `element` go in units: staging exists, the cache holds
  // kUnitRoom units, and the element has not refused to place units.
  bool UnitsFor(const std::string& element) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts until the cache has room for a fault's units (called without mu_, while units are
  // being placed).
  void MakeUnitRoom() ABSL_LOCKS_EXCLUDED(mu_);
  // Marks the pages of the unit [first, first + kUnitPages) from `from` on as being fetched
  // (the pages before `from` are already) and appends them to `pages`, making room first; false
  // (nothing marked) if a page there is known to the cache, being granted, given away, or on a
  // failed element, or the unit passes `extent_end`.
  bool ClaimUnit(uint64_t first, uint64_t from, uint64_t extent_end, std::vector<uint64_t>& pages)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // True if `vpage` may be read ahead: not in the cache, not being granted, not given away.
  bool MayReadAhead(uint64_t vpage) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks the pages of [first, end) as being fetched and appends them to `pages`, up to the
  // first that may not be read ahead or that the cache has no room for.
  void ClaimRun(uint64_t first, uint64_t end, std::vector<uint64_t>& pages)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Poisons `vpage`: its accesses raise the memory-fault callback with `cause` (and the
  // memory element `element`, if one is to blame).
  void Refuse(uint64_t vpage, FaultCause cause, const std::string& element = "")
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts up to `pages` of the longest-present pages, writing the dirty ones back (mu_ is
  // released meanwhile). Returns how many left; 0 if no page is present to evict.
  uint64_t EvictBatch(uint64_t pages) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes `count` evicted pages, consecutive from run[0], out of the address space: whole
  // units placed together are moved back to staging, the rest dropped.
  void LeaveAddressSpace(const PageCache::Victim* run, size_t count)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts until the cache fits its quota (waits for fetches in flight to land first).
  void ShrinkToQuota() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The compute element's side (rack.cc).
  void ControlLoop();
  absl::Status HandleControl(proto::Message::Reader message);
  absl::Status ReportUsage(uint64_t seq);
  // Sends on the compute element's connection (from any thread).
  absl::Status SendCompute(capnp::MessageBuilder& message);

  // Grant and steal (rack_transfer.cc).
  // Drops every cached page of [first, last) from the address space and the cache; with
  // `write_back`, dirty ones are written back first (mu_ is released meanwhile) and the
  // first failure is returned. Waits for fetches and write-backs in flight there first.
  absl::Status DropRange(uint64_t first, uint64_t last, bool write_back)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Faults in ranges being granted wait for the outcome.
  bool InTransfer(uint64_t vpage) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes [vaddr, +info.bytes) usable here: translations known, earlier refusals forgotten.
  void Adopt(uint64_t vaddr, RegionInfo info) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A message on the event link from the Rack MMU: checked on the control thread, applied
  // there if that needs no waiting and the task queue is idle (events keep their order), else
  // on the task queue; then passed to the application's handler.
  absl::Status HandleRackEvent(proto::Message::Reader message);
  void ApplyRackEvent(const Event& event, RegionInfo granted) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // True if applying `event` now would wait for fetches or write-backs in flight.
  bool MustWait(const Event& event) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Failures (rack_failures.cc): memory element `element` failed: its pages here are dropped
  // (without write-back) and their touches refused as kElementFailed from now on.
  void ElementFailed(const std::string& element) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // This process was declared failed: every cached page is dropped without write-back and
  // every later touch of rack memory is refused as kFenced.
  void Fenced(const std::string& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Flush's step under mu_: write-protects, copies (into `buffer`) and pins the dirty pages
  // of [cursor, last), up to a batch; returns where the next batch starts.
  uint64_t SnapshotDirty(uint64_t cursor, uint64_t last, uint8_t* buffer,
                         std::vector<std::pair<std::string, PageWrite>>& batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes back the dirty pages of [first, last) (mu_ is released while they travel) and
  // waits for earlier write-backs there. UNAVAILABLE (the pages stay dirty) or DATA_LOSS
  // (a page there was lost or refused) on failure.
  absl::Status WriteBackRange(uint64_t first, uint64_t last) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes `writes` back (reordered by element, pipelined per element); `results` gets each
  // write's outcome, in the new order. Called without mu_.
  void WriteBack(std::vector<std::pair<std::string, PageWrite>>& writes,
                 std::vector<absl::Status>& results);

  const JoinOptions options_;
  uint32_t id_ = 0;
  uintptr_t range_base_ = 0;
  uint64_t range_bytes_ = 0;
  uintptr_t window_base_ = 0;
  uint64_t window_bytes_ = 0;
  bool reserved_ = false;
  bool signal_installed_ = false;

  MmuStub mmu_;
  Userfaultfd uffd_;
  ElementPool elements_;
  EventQueue events_;
  TaskQueue tasks_;  // what the control thread must not wait for

  mutable Mutex mu_;
  CondVar changed_;  // a fetch, write-back or quota change completed
  Translations translations_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, uint64_t> transfers_ ABSL_GUARDED_BY(mu_);  // being granted: [start, end)
  PageCache cache_ ABSL_GUARDED_BY(mu_);
  bool quota_known_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t stats_quota_pages_ ABSL_GUARDED_BY(mu_) = 0;  // the quota the cache fits
  struct ReadaheadStream {
    uint64_t last = 0;    // the last page faulted in it
    uint64_t next = 0;    // the page after the last one read ahead
    uint64_t window = 0;  // pages read ahead at its last fault
    uint64_t used = 0;    // when it last faulted (0: free)
  };
  std::array<ReadaheadStream, 16> streams_ ABSL_GUARDED_BY(mu_);
  uint64_t stream_clock_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status attach_status_ ABSL_GUARDED_BY(mu_);  // the compute element's refusal
  bool attached_ ABSL_GUARDED_BY(mu_) = false;       // Join's attach succeeded
  // Pages of this process that were on a failed memory element: first vpage -> (end vpage,
  // the element). Ranges, not element names: an element restarted under its old name holds
  // new regions fine.
  struct FailedRange {
    uint64_t end;
    std::string element;
  };
  std::map<uint64_t, FailedRange> failed_ ABSL_GUARDED_BY(mu_);
  // The failed range holding `vpage`, or nullptr.
  const FailedRange* FailedAt(uint64_t vpage) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets the failed ranges inside [first, last) (unmapped: the addresses may be reused).
  void ForgetFailed(uint64_t first, uint64_t last) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::optional<std::string> fenced_ ABSL_GUARDED_BY(mu_);  // why this process was fenced
  Mutex reader_mu_;  // which fault thread reads the userfaultfd
  CondVar reader_free_;
  bool reader_busy_ ABSL_GUARDED_BY(reader_mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(reader_mu_) = false;
  // Where memory elements write units before they are moved into place; null without
  // JoinOptions::unit_installs or where the kernel cannot move pages.
  std::unique_ptr<UnitStaging> staging_;
  // Memory elements that may not write into this process: streams from them go in runs.
  absl::flat_hash_set<std::string> no_units_ ABSL_GUARDED_BY(mu_);
  uint64_t unit_move_failures_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<uint64_t> faults_{0};
  std::atomic<uint64_t> read_ahead_{0};
  std::atomic<uint64_t> placed_{0};
  std::atomic<uint64_t> evictions_{0};
  std::atomic<uint64_t> writebacks_{0};

  ipc::Fd stop_;                                // eventfd: the threads return when it is readable
  Mutex compute_send_mu_;                       // one sender at a time on compute_
  std::unique_ptr<ipc::LifeWordHolder> lives_;  // set and reset by the control thread
  // Write-backs in flight per memory element, for the Rack MMU (set before the threads start).
  std::unique_ptr<ipc::WriteDomain> write_domain_;
  std::unique_ptr<ipc::Connection> compute_;     // received from by the control thread only
  std::unique_ptr<ipc::Connection> event_link_;  // from the Rack MMU; the control thread's
  std::vector<std::thread> threads_;
};

}  // namespace disagg::runtime

#endif  // DISAGG_RUNTIME_RACK_IMPL_H_
