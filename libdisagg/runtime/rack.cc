// RackImpl: joining and leaving, Map/Unmap/Flush, and the compute element's side (cache
// quota). The fault path is in rack_faults.cc.
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>

#include "absl/memory/memory.h"
#include "absl/strings/str_cat.h"
#include "internal/status_macros.h"
#include "ipc/socket.h"
#include "ipc/wire.h"
#include "runtime/fault_signal.h"
#include "runtime/log.h"
#include "runtime/rack_impl.h"

namespace disagg {

absl::StatusOr<std::unique_ptr<Rack>> Rack::Join(JoinOptions options) {
  return runtime::RackImpl::Join(std::move(options));
}

namespace runtime {
namespace {

constexpr uint64_t kUserSpaceEnd = uint64_t{1} << 47;
// Pages written back per round of a Flush.
constexpr size_t kFlushBatch = 64;
// Staging slots for 2 MiB units (address space only; what holds pages is bounded by
// UnitStaging::kKeepFull): units in flight, and the holes evicted units are moved to.
constexpr size_t kStagingUnits = 64;

std::string FromEnv(const std::string& given, const char* variable) {
  if (!given.empty()) return given;
  const char* value = std::getenv(variable);
  return value == nullptr ? "" : value;
}

}  // namespace

RackImpl::RackImpl(JoinOptions options, ipc::Client mmu, Userfaultfd uffd,
                   std::shared_ptr<const ipc::Fabric> fabric)
    : options_(std::move(options)),
      mmu_(std::move(mmu), options_.timeout),
      uffd_(std::move(uffd)),
      elements_(options_.rack_dir, options_.timeout, std::move(fabric), options_.element) {}

absl::StatusOr<std::unique_ptr<Rack>> RackImpl::Join(JoinOptions options) {
  options.rack_dir = FromEnv(options.rack_dir, "DISAGG_RACK");
  options.element = FromEnv(options.element, "DISAGG_ELEMENT");
  options.app = FromEnv(options.app, "DISAGG_APP");
  if (options.name.empty()) options.name = program_invocation_short_name;
  if (options.rack_dir.empty()) {
    return absl::InvalidArgumentError(
        "no rack to join: start the program with `rackctl run --on cpuN`, or set DISAGG_RACK "
        "(or JoinOptions::rack_dir) to the rack's run directory");
  }
  if (options.element.empty()) {
    return absl::InvalidArgumentError(
        "no compute element to run on: start the program with `rackctl run --on cpuN`, or "
        "set DISAGG_ELEMENT (or JoinOptions::element)");
  }
  if (options.fault_threads < 1 || options.fault_threads > 64) {
    return absl::InvalidArgumentError("JoinOptions::fault_threads must be 1..64");
  }
  if (options.readahead_pages < 1 ||
      static_cast<size_t>(options.readahead_pages) > ElementPool::kMaxRun) {
    return absl::InvalidArgumentError(
        absl::StrCat("JoinOptions::readahead_pages must be 1..", ElementPool::kMaxRun));
  }
  ASSIGN_OR_RETURN(Userfaultfd uffd, Userfaultfd::Open());
  absl::StatusOr<ipc::Client> mmu =
      ipc::Client::Connect(SocketPath(options.rack_dir, "mmu"), options.timeout);
  if (!mmu.ok()) {
    return absl::UnavailableError(absl::StrCat("cannot reach the Rack MMU of ", options.rack_dir,
                                               ": ", mmu.status().message()));
  }
  absl::StatusOr<ipc::Connection> compute =
      ipc::DialUnix(SocketPath(options.rack_dir, options.element), options.timeout);
  if (!compute.ok()) {
    return absl::UnavailableError(absl::StrCat("cannot reach compute element ", options.element,
                                               ": ", compute.status().message()));
  }
  // Injected partitions and delays (a rack without the file injects none).
  std::shared_ptr<const ipc::Fabric> fabric;
  if (auto opened = ipc::Fabric::Open(options.rack_dir + "/fabric"); opened.ok()) {
    fabric = *opened;
    mmu->set_fabric(fabric, options.element, "mmu", options.timeout);
  }
  auto rack =
      absl::WrapUnique(new RackImpl(options, std::move(*mmu), std::move(uffd), std::move(fabric)));
  RETURN_IF_ERROR(rack->Start(std::move(*compute)));
  return rack;
}

absl::Status RackImpl::Start(ipc::Connection compute) {
  RETURN_IF_ERROR(JoinMmu());
  RETURN_IF_ERROR(SubscribeEvents());
  RETURN_IF_ERROR(ReserveRange());
  RETURN_IF_ERROR(AttachCompute(std::move(compute)));
  for (int i = 0; i < options_.fault_threads; ++i) {
    threads_.emplace_back([this] {
      pthread_setname_np(pthread_self(), "disagg-fault");  // as top -H and gdb show them
      FaultLoop();
    });
  }
  return absl::OkStatus();
}

absl::Status RackImpl::JoinMmu() {
  ASSIGN_OR_RETURN(JoinedInfo joined, mmu_.Join(options_.name, options_.element, options_.app));
  id_ = joined.process_id;
  range_base_ = joined.range_base;
  range_bytes_ = joined.range_bytes;
  window_base_ = joined.window_base;
  window_bytes_ = joined.window_bytes;
  if (range_base_ % kPageBytes != 0 || range_bytes_ == 0 || range_base_ >= kUserSpaceEnd ||
      range_bytes_ > kUserSpaceEnd - range_base_ || window_base_ < range_base_ ||
      window_base_ + window_bytes_ > range_base_ + range_bytes_) {
    return absl::InternalError("the Rack MMU gave an impossible rack range or window");
  }
  return absl::OkStatus();
}

absl::Status RackImpl::SubscribeEvents() {
  // A second connection, read only by the control thread: what the Rack MMU sends unasked
  // never meets a reply that a caller waits for.
  absl::StatusOr<ipc::Client> link =
      ipc::Client::Connect(SocketPath(options_.rack_dir, "mmu"), options_.timeout);
  if (!link.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot open the event link to the Rack MMU: ", link.status().message()));
  }
  ipc::SmallMessage request;
  auto root = request.Init();
  root.initSubscribe().setProcessId(id_);
  RETURN_IF_ERROR(link->Call(
      request.builder(), root, [](proto::Message::Reader) { return absl::OkStatus(); },
      options_.timeout));
  event_link_ = std::make_unique<ipc::Connection>(std::move(link->connection()));
  // The write domain: which memory elements hold write-backs this process never saw
  // acknowledged, for the Rack MMU to read if the process fails (tainted fate sharing).
  if (auto domain = ipc::WriteDomain::Create(); !domain.ok()) {
    RLOG(WARNING) << "disagg: no write domain: " << domain.status();
  } else {
    write_domain_ = std::move(*domain);
    ipc::SmallMessage message;
    message.Init(0).initWriteDomain().setFd(write_domain_->fd());
    RETURN_IF_ERROR(event_link_->channel.Send(message.builder()));
  }
  return absl::OkStatus();
}

absl::Status RackImpl::ReserveRange() {
  void* at = mmap(reinterpret_cast<void*>(range_base_), range_bytes_, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
  if (at == MAP_FAILED || reinterpret_cast<uintptr_t>(at) != range_base_) {
    if (at != MAP_FAILED) munmap(at, range_bytes_);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot reserve the rack range [0x", absl::Hex(range_base_), ", 0x",
                     absl::Hex(range_base_ + range_bytes_), "): ", std::strerror(errno),
                     " (has this process joined already, or mapped something there?)"));
  }
  reserved_ = true;
  // A forked child must not see the range as plain zero-filled memory; core dumps skip it.
  madvise(at, range_bytes_, MADV_DONTFORK);
  madvise(at, range_bytes_, MADV_DONTDUMP);
  RETURN_IF_ERROR(uffd_.Register(range_base_, range_bytes_));
  if (options_.unit_installs) {
    absl::StatusOr<std::unique_ptr<UnitStaging>> staging =
        UnitStaging::Create(uffd_, kStagingUnits);
    if (staging.ok()) {
      staging_ = std::move(*staging);
    } else {
      VLOG(1) << "disagg: streams are read in runs: " << staging.status();
    }
  }
  RETURN_IF_ERROR(InstallFaultSignal(range_base_, range_bytes_));
  signal_installed_ = true;
  return absl::OkStatus();
}

absl::Status RackImpl::AttachCompute(ipc::Connection compute) {
  // The compute element leases the cache quota; its answer is the initial quota.
  compute_ = std::make_unique<ipc::Connection>(std::move(compute));
  ipc::SmallMessage request;
  auto root = request.Init(1);
  auto attach = root.initAttach();
  attach.setProcessId(id_);
  attach.setName(options_.name);
  attach.setApp(options_.app);
  RETURN_IF_ERROR(compute_->channel.Send(request.builder()));
  stop_ = ipc::Fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_.valid()) return ErrnoStatus("eventfd");
  threads_.emplace_back([this] {
    pthread_setname_np(pthread_self(), "disagg-control");
    ControlLoop();
  });
  MutexLock lock(&mu_);
  const absl::Time deadline = absl::Now() + options_.timeout;
  // A new process may start with no quota while the others shrink to make room for it.
  while (!quota_known_ || cache_.quota_pages() == 0 || !attach_status_.ok()) {
    if (!attach_status_.ok()) {
      return absl::Status(attach_status_.code(),
                          absl::StrCat("compute element ", options_.element,
                                       " refused this process: ", attach_status_.message()));
    }
    if (changed_.WaitWithDeadline(&mu_, deadline)) {
      return absl::UnavailableError(absl::StrCat(
          "compute element ", options_.element,
          quota_known_ ? " leases all its cache to processes that did not shrink in time"
                       : " did not lease a cache quota in time"));
    }
  }
  attached_ = true;
  return absl::OkStatus();
}

RackImpl::~RackImpl() {
  // The event handler may use the Rack (and touch its memory): it finishes while everything
  // it may need still runs.
  // procmon hears first that this is a clean exit: from here on this process no longer
  // answers its heartbeats.
  if (compute_) {
    ipc::SmallMessage leave;
    leave.Init(0).setLeave();
    (void)SendCompute(leave.builder());
  }
  events_.Stop();
  if (stop_.valid()) {
    const uint64_t one = 1;
    ssize_t ignored = write(stop_.get(), &one, sizeof(one));
    (void)ignored;
  }
  for (std::thread& t : threads_) t.join();
  tasks_.Stop();  // after the control thread, which pushes to it
  // A clean exit frees this process's memory now; a death would hold it for adoption.
  if (id_ != 0) {
    // Refused when this process was declared failed (the Rack MMU says why: its memory and id
    // are then held for the grace period, for whoever adopts it), or when the Rack MMU is gone.
    if (absl::Status left = mmu_.Leave(); !left.ok()) {
      RLOG(WARNING) << "disagg: leaving the rack: " << left;
    }
  }
  if (signal_installed_) RemoveFaultSignal();
  if (reserved_) munmap(reinterpret_cast<void*>(range_base_), range_bytes_);
}

absl::StatusOr<Region> RackImpl::Map(size_t bytes, MapOptions options) {
  ASSIGN_OR_RETURN(MappedRange mapped, mmu_.Map(bytes, options.placement == Placement::kFill
                                                           ? proto::Placement::FILL
                                                           : proto::Placement::SPREAD));
  const uint64_t vaddr = mapped.vaddr;
  if (vaddr < window_base_ || mapped.info.bytes > window_base_ + window_bytes_ - vaddr ||
      mapped.info.bytes < bytes) {
    return absl::InternalError("the Rack MMU placed a region outside this process's window");
  }
  const size_t size = mapped.info.bytes;
  MutexLock lock(&mu_);
  Adopt(vaddr, std::move(mapped.info));
  return Region(reinterpret_cast<void*>(vaddr), size);
}

absl::Status RackImpl::Unmap(void* data) {
  const uint64_t vaddr = reinterpret_cast<uintptr_t>(data);
  RETURN_IF_ERROR(mmu_.Unmap(vaddr));
  MutexLock lock(&mu_);
  std::optional<uint64_t> bytes = translations_.Remove(vaddr);
  if (!bytes) return absl::OkStatus();  // it was known to the Rack MMU only
  ForgetFailed(vaddr >> kPageShift, (vaddr + *bytes) >> kPageShift);
  RETURN_IF_ERROR(DropRange(vaddr >> kPageShift, (vaddr + *bytes) >> kPageShift,
                            /*write_back=*/false));
  return absl::OkStatus();
}

absl::Status RackImpl::Flush(const void* addr, size_t len) {
  if (len == 0) return absl::OkStatus();
  const uintptr_t start = reinterpret_cast<uintptr_t>(addr);
  const uint64_t first = start >> kPageShift;
  const uint64_t last = (start + len + kPageBytes - 1) >> kPageShift;
  MutexLock lock(&mu_);
  if (fenced_) {
    return absl::FailedPreconditionError(
        absl::StrCat("disagg: this process was declared failed and fenced: ", *fenced_));
  }
  // Memory granted to this process may be used before its event arrived: ask the Rack MMU
  // about what is not known here.
  for (int learnt = 0;; ++learnt) {
    absl::Status owned = translations_.CheckOwned(start, len);
    if (owned.ok()) break;
    uint64_t missing = start;
    while (translations_.CheckOwned(missing, 1).ok())
      missing = (missing & ~(kPageBytes - 1)) + kPageBytes;
    mu_.Unlock();
    absl::StatusOr<MappedRange> found = mmu_.Translate(missing >> kPageShift);
    mu_.Lock();
    if (!found.ok() || learnt >= 64) return owned;
    VLOG(1) << "disagg: learnt of 0x" << std::hex << found->vaddr << std::dec
            << " from the Rack MMU";
    translations_.AddExtent(found->vaddr, found->info.bytes, found->info.extents[0]);
  }
  // What lived on a failed memory element cannot be made durable: its pages are gone.
  if (const FailedRange* f = FailedAt(first)) {
    return absl::UnavailableError(absl::StrCat("disagg: memory element ", f->element,
                                               " failed; the page at 0x",
                                               absl::Hex(first << kPageShift), " is lost"));
  }
  if (auto it = failed_.lower_bound(first); it != failed_.end() && it->first < last) {
    return absl::UnavailableError(absl::StrCat("disagg: memory element ", it->second.element,
                                               " failed; [0x", absl::Hex(it->first << kPageShift),
                                               ", +", (it->second.end - it->first) << kPageShift,
                                               ") on it is lost"));
  }
  return WriteBackRange(first, last);
}

absl::Status RackImpl::WriteBackRange(uint64_t first, uint64_t last) {
  // A page a fault thread installed (so the application may have written it) is recorded as
  // present, and dirty, only when its fetch completes: wait for those first, or their writes
  // would be skipped.
  while (cache_.BusyIn(first, last)) changed_.Wait(&mu_);
  // Per thread, reused: zeroing a fresh batch buffer would cost more than a clean range.
  thread_local std::vector<uint8_t> buffer(kFlushBatch * kPageBytes);
  std::vector<std::pair<std::string, PageWrite>> batch;
  for (uint64_t cursor = first; cursor < last;) {
    batch.clear();
    cursor = SnapshotDirty(cursor, last, buffer.data(), batch);
    std::vector<absl::Status> results;
    mu_.Unlock();
    WriteBack(batch, results);
    mu_.Lock();
    absl::Status failure;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (results[i].ok()) ++writebacks_;
      if (failure.ok()) failure = results[i];
      PageEntry* entry = cache_.Find(batch[i].second.vpage);
      // Unmapped meanwhile (and perhaps mapped and fetched afresh, unpinned): nothing to undo.
      if (entry == nullptr || entry->state != PageState::kPresent || entry->pins == 0) continue;
      --entry->pins;
      if (!results[i].ok()) entry->dirty = true;  // not durable: it stays to be written back
    }
    changed_.SignalAll();
    if (!failure.ok()) return failure;
  }
  // Pages evicted before this call may still be on their way back: wait for them.
  while (cache_.BusyIn(first, last)) changed_.Wait(&mu_);
  for (auto it = cache_.pages().lower_bound(first); it != cache_.pages().end() && it->first < last;
       ++it) {
    if (it->second.state == PageState::kPoisoned) {
      return absl::DataLossError(absl::StrCat("0x", absl::Hex(it->first << kPageShift),
                                              " was lost: its write-back failed"));
    }
  }
  return absl::OkStatus();
}

uint64_t RackImpl::SnapshotDirty(uint64_t cursor, uint64_t last, uint8_t* buffer,
                                 std::vector<std::pair<std::string, PageWrite>>& batch) {
  auto& pages = cache_.pages();
  auto it = pages.lower_bound(cursor);
  for (; it != pages.end() && it->first < last && batch.size() < kFlushBatch; ++it) {
    PageEntry& entry = it->second;
    if (entry.state != PageState::kPresent || !entry.dirty) continue;
    const uint64_t vpage = it->first;
    const ExtentInfo* extent = translations_.Find(vpage);
    if (extent == nullptr) continue;  // unmapped meanwhile: nothing to make durable
    // Writes from here on fault and mark the page dirty again.
    if (absl::Status s = uffd_.WriteProtect(vpage << kPageShift, kPageBytes, true); !s.ok()) {
      RLOG(ERROR) << "disagg: flush: " << s;  // it stays dirty: a later write-back takes it
      continue;
    }
    const void* data = reinterpret_cast<const void*>(vpage << kPageShift);
    uint8_t* copy = buffer + batch.size() * kPageBytes;
    std::memcpy(copy, data, kPageBytes);
    // Clean from now on, but pinned until the element holds the copy: evicting it as clean
    // meanwhile would let a fetch read the element's older contents.
    it->second.dirty = false;
    ++it->second.pins;
    batch.push_back({extent->element, PageWrite{vpage, copy}});
  }
  return (it == pages.end() || it->first >= last) ? last : it->first;
}

void RackImpl::WriteBack(std::vector<std::pair<std::string, PageWrite>>& writes,
                         std::vector<absl::Status>& results) {
  std::stable_sort(writes.begin(), writes.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  results.assign(writes.size(), absl::OkStatus());
  for (size_t i = 0; i < writes.size();) {
    size_t j = i;
    std::vector<PageWrite> group;
    while (j < writes.size() && writes[j].first == writes[i].first)
      group.push_back(writes[j++].second);
    // Under way in the write domain until its outcome is known here: a process that dies
    // meanwhile leaves it open, for tainted fate sharing.
    const int batch = write_domain_ ? write_domain_->Begin(writes[i].first) : -1;
    const absl::Status status = elements_.WritePages(writes[i].first, group);
    if (write_domain_) write_domain_->End(batch);
    for (size_t k = i; k < j; ++k) results[k] = status;
    i = j;
  }
}

void RackImpl::OnMemoryFault(MemoryFaultHandler handler) { SetMemoryFaultHandler(handler); }

void RackImpl::OnEvent(EventHandler handler) { events_.SetHandler(std::move(handler)); }

absl::Status RackImpl::SetEmergencyContacts(const std::vector<uint32_t>& contacts) {
  constexpr size_t kMaxContacts = 64;
  if (contacts.size() > kMaxContacts) {
    return absl::InvalidArgumentError(absl::StrCat("disagg: at most ", kMaxContacts,
                                                   " emergency contacts, not ", contacts.size()));
  }
  for (uint32_t c : contacts) {
    if (c == 0 || c == id_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "disagg: emergency contact ", c, c == 0 ? " is no process" : " is this process"));
    }
  }
  capnp::MallocMessageBuilder builder;
  auto list =
      builder.initRoot<proto::Message>().initEmergencyContacts().initContacts(contacts.size());
  for (size_t i = 0; i < contacts.size(); ++i) list.set(i, contacts[i]);
  absl::Status sent = SendCompute(builder);
  if (!sent.ok()) {
    return absl::UnavailableError(absl::StrCat("disagg: compute element ", options_.element,
                                               " cannot be told: ", sent.message()));
  }
  return absl::OkStatus();
}

CacheStats RackImpl::cache_stats() const {
  CacheStats stats;
  {
    MutexLock lock(&mu_);
    auto& cache = const_cast<PageCache&>(cache_);
    stats.quota_bytes = stats_quota_pages_ * kPageBytes;
    stats.cached_bytes = cache.present_pages() * kPageBytes;
    stats.peak_cached_bytes = cache.peak_present_pages() * kPageBytes;
  }
  stats.faults = faults_.load();
  stats.read_ahead = read_ahead_.load();
  stats.placed = placed_.load();
  stats.evictions = evictions_.load();
  stats.writebacks = writebacks_.load();
  return stats;
}

// ---- The compute element's side ----

void RackImpl::ControlLoop() {
  ipc::Channel& channel = compute_->channel;
  // The life words, one for the compute element and one for the Rack MMU: both see this
  // process die as soon as the kernel releases them, before its memory is torn down.
  if (auto lives = ipc::LifeWordHolder::Start(event_link_ ? 2 : 1); !lives.ok()) {
    RLOG(WARNING) << "disagg: no life words: " << lives.status();
  } else {
    lives_ = std::move(*lives);
    ipc::SmallMessage to_compute, to_mmu;
    to_compute.Init(0).initLifeWord().setFd(lives_->fd(0));
    (void)SendCompute(to_compute.builder());
    if (event_link_) {
      to_mmu.Init(0).initLifeWord().setFd(lives_->fd(1));
      (void)event_link_->channel.Send(to_mmu.builder());
    }
  }
  std::vector<uint64_t> words;
  uint64_t reported = ~uint64_t{0};
  // Drains `from`; false if its ring is corrupt.
  auto drain = [&](ipc::Channel& from, const char* who,
                   absl::Status (RackImpl::*handle)(proto::Message::Reader)) {
    while (true) {
      absl::StatusOr<bool> got = from.Receive(words);
      if (!got.ok()) {
        RLOG(WARNING) << "disagg: " << who << ": " << got.status();
        return false;
      }
      if (!*got) return true;
      absl::Status status = ipc::DecodeMessage(
          words, [&](proto::Message::Reader message) { return (this->*handle)(message); });
      if (!status.ok()) RLOG(WARNING) << "disagg: " << who << ": " << status;
    }
  };
  while (true) {
    drain(channel, "compute element", &RackImpl::HandleControl);
    if (event_link_ &&
        !drain(event_link_->channel, "Rack MMU events", &RackImpl::HandleRackEvent)) {
      event_link_.reset();
    }
    uint64_t cached;
    {
      MutexLock lock(&mu_);
      cached = cache_.present_pages();
    }
    if (cached != reported && ReportUsage(0).ok()) reported = cached;
    if (channel.PrepareToSleep()) continue;  // a message arrived meanwhile
    if (event_link_ && event_link_->channel.PrepareToSleep()) {
      channel.Awake();
      continue;
    }
    struct pollfd fds[5] = {{channel.doorbell_fd(), POLLIN, 0},
                            {compute_->socket.get(), POLLRDHUP, 0},
                            {stop_.get(), POLLIN, 0},
                            {-1, POLLIN, 0},
                            {-1, POLLRDHUP, 0}};
    if (event_link_) {
      fds[3].fd = event_link_->channel.doorbell_fd();
      fds[4].fd = event_link_->socket.get();
    }
    const int rc = poll(fds, 5, 100);
    channel.Awake();
    if (event_link_) event_link_->channel.Awake();
    if (rc < 0 && errno != EINTR) continue;
    if (fds[2].revents & POLLIN) {
      lives_.reset();  // released: a clean end (LEAVE went first)
      return;
    }
    if (fds[0].revents & POLLIN) channel.DrainDoorbell();
    if (event_link_ && (fds[3].revents & POLLIN)) event_link_->channel.DrainDoorbell();
    if (event_link_ && (fds[4].revents & (POLLRDHUP | POLLHUP | POLLERR))) {
      // The Rack MMU is gone: memory already mapped keeps working; no more events come.
      drain(event_link_->channel, "Rack MMU events", &RackImpl::HandleRackEvent);
      RLOG(WARNING) << "disagg: the Rack MMU closed the event link";
      event_link_.reset();
    }
    if (fds[1].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
      drain(channel, "compute element", &RackImpl::HandleControl);  // its last word, if any
      {
        // Still joining: Join reports the refusal (or the hang-up) and nothing ends.
        MutexLock lock(&mu_);
        if (!attached_) {
          if (attach_status_.ok()) {
            attach_status_ = absl::UnavailableError("it hung up while this process attached");
          }
          changed_.SignalAll();
          return;
        }
      }
      // The process runs on that compute element: it fails with it.
      std::fprintf(stderr, "disagg: compute element %s is gone; process %d (%s) ends with it\n",
                   options_.element.c_str(), getpid(), options_.name.c_str());
      std::_Exit(70);
    }
  }
}

absl::Status RackImpl::HandleControl(proto::Message::Reader message) {
  switch (message.which()) {
    case proto::Message::CACHE_QUOTA: {
      const uint64_t pages = message.getCacheQuota().getBytes() / kPageBytes;
      bool fits;
      {
        MutexLock lock(&mu_);
        cache_.set_quota_pages(pages);  // admissions obey the new quota at once
        quota_known_ = true;
        fits = cache_.present_pages() <= pages;
        if (fits) stats_quota_pages_ = pages;
        changed_.SignalAll();
      }
      if (fits) return message.getSeq() != 0 ? ReportUsage(message.getSeq()) : absl::OkStatus();
      // Shrinking to it (write-backs) is left to the task queue.
      tasks_.Push([this, pages, seq = message.getSeq()] {
        {
          MutexLock lock(&mu_);
          ShrinkToQuota();
          stats_quota_pages_ = pages;  // it shows once the cache fits it
          changed_.SignalAll();
        }
        if (seq != 0) (void)ReportUsage(seq);
      });
      return absl::OkStatus();
    }
    case proto::Message::PING: {
      ipc::SmallMessage pong;
      pong.Init(message.getSeq()).initPong().setSentNanos(message.getPing().getSentNanos());
      return SendCompute(pong.builder());
    }
    case proto::Message::ERROR: {
      MutexLock lock(&mu_);
      attach_status_ = ipc::ErrorToStatus(message.getError());
      changed_.SignalAll();
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected message ", static_cast<int>(message.which())));
  }
}

absl::Status RackImpl::ReportUsage(uint64_t seq) {
  uint64_t cached;
  {
    MutexLock lock(&mu_);
    cached = cache_.present_pages() * kPageBytes;
  }
  ipc::SmallMessage report;
  report.Init(seq).initCacheUsage().setCachedBytes(cached);
  return SendCompute(report.builder());
}

absl::Status RackImpl::SendCompute(capnp::MessageBuilder& message) {
  MutexLock lock(&compute_send_mu_);
  return compute_->channel.Send(message);
}

}  // namespace runtime
}  // namespace disagg
