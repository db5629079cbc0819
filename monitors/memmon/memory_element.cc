#include "memory_element.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "internal/logging.h"
#include "internal/page_unit.h"
#include "internal/status_macros.h"
#include "ipc/wire.h"

namespace disagg::memmon {
namespace {
// Fenced identities kept before those of ended processes are pruned.
constexpr size_t kMaxFenced = 1024;
}  // namespace

MemoryElement::MemoryElement(ipc::EventLoop& loop, ElementOptions options, PageStore store,
                             MemoryOptions memory_options)
    : Element(loop,
              [&] {
                options.used_bytes = [this] { return store_.used_bytes(); };
                options.slot_pages = kSlotPages;
                return std::move(options);
              }()),
      store_(std::move(store)),
      memory_options_(memory_options) {}

absl::Status MemoryElement::HandleOther(ipc::Link& link, proto::Message::Reader message) {
  const uint64_t seq = message.getSeq();
  switch (message.which()) {
    case proto::Message::PROGRAM_PAGES:
      return HandleProgram(link, seq, message.getProgramPages());
    case proto::Message::REVOKE_PAGES:
      return HandleRevoke(link, seq, message.getRevokePages());
    case proto::Message::MOVE_PAGES:
      return HandleMove(link, seq, message.getMovePages());
    case proto::Message::PAGE_TABLE_REQUEST:
      return HandlePageTable(link, seq);
    case proto::Message::FENCE:
      return HandleFence(link, seq, message.getFence());
    case proto::Message::STATUS_REQUEST:
      return HandleStatus(link, seq);
    case proto::Message::READ_PAGE:
      loop().KeepSpinning(memory_options_.burst_spin);  // page traffic comes in bursts
      return HandleRead(link, seq, message.getReadPage().getVpage());
    case proto::Message::READ_PAGES:
      loop().KeepSpinning(memory_options_.burst_spin);
      return HandleReadPages(link, seq, message.getReadPages());
    case proto::Message::PLACE_UNIT:
      loop().KeepSpinning(memory_options_.burst_spin);
      return HandlePlaceUnit(link, seq, message.getPlaceUnit());
    case proto::Message::WRITE_PAGES:
      loop().KeepSpinning(memory_options_.burst_spin);
      return HandleWritePages(link, seq, message.getWritePages());
    case proto::Message::PAGE_DATA:
      loop().KeepSpinning(memory_options_.burst_spin);
      return HandleWrite(link, seq, message.getPageData());
    default:
      return Element::HandleOther(link, message);
  }
}

absl::Status MemoryElement::Refuse(ipc::Link& link, uint64_t seq, const absl::Status& why) {
  // A fenced process is told on every request, logged only at its first and then every
  // 10,000th: it may keep trying for a long time.
  if (!absl::IsFailedPrecondition(why) || quiet_refusals_++ % 10000 == 0) {
    LOG(WARNING) << options().name << ": refused " << link.label() << ": " << why.message();
  }
  return link.ReplyError(seq, why);
}

absl::Status MemoryElement::HandleProgram(ipc::Link& link, uint64_t seq,
                                          proto::ProgramPages::Reader program) {
  if (!IsRackMmu(link)) {
    return Refuse(link, seq,
                  absl::PermissionDeniedError(
                      absl::StrCat(options().name, ": only the Rack MMU programs the page table")));
  }
  if (store_.ProcessFor(program.getPid(), program.getStartTime()) != program.getProcessId()) {
    counters_.erase(program.getProcessId());  // a new process under a recycled id
  }
  absl::Status status =
      store_.Program(program.getProcessId(), program.getPid(), program.getStartTime(),
                     program.getVpage(), program.getPages(), program.getPoolPage());
  if (!status.ok()) return Refuse(link, seq, status);
  return link.ReplyOk(seq);
}

absl::Status MemoryElement::HandleRevoke(ipc::Link& link, uint64_t seq,
                                         proto::RevokePages::Reader revoke) {
  if (!IsRackMmu(link)) {
    return Refuse(link, seq,
                  absl::PermissionDeniedError(
                      absl::StrCat(options().name, ": only the Rack MMU revokes pages")));
  }
  store_.Revoke(revoke.getProcessId(), revoke.getVpage(), revoke.getPages());
  return seq == 0 ? absl::OkStatus() : link.ReplyOk(seq);
}

absl::Status MemoryElement::HandleMove(ipc::Link& link, uint64_t seq,
                                       proto::MovePages::Reader move) {
  if (!IsRackMmu(link)) {
    return Refuse(link, seq,
                  absl::PermissionDeniedError(
                      absl::StrCat(options().name, ": only the Rack MMU moves pages")));
  }
  absl::Status status = store_.Move(move.getFromProcess(), move.getToProcess(), move.getToPid(),
                                    move.getToStartTime(), move.getVpage(), move.getPages());
  if (!status.ok()) return Refuse(link, seq, status);
  VLOG(1) << options().name << ": moved [0x" << std::hex << (move.getVpage() << 12) << std::dec
          << ", +" << move.getPages() << " pages) from process " << move.getFromProcess() << " to "
          << move.getToProcess();
  return link.ReplyOk(seq);
}

absl::Status MemoryElement::HandlePageTable(ipc::Link& link, uint64_t seq) {
  if (!IsRackMmu(link)) {
    return Refuse(link, seq,
                  absl::PermissionDeniedError(
                      absl::StrCat(options().name, ": only the Rack MMU reads the page table")));
  }
  const std::vector<PageStore::Binding> bindings = store_.Dump();
  capnp::MallocMessageBuilder builder;
  auto reply = builder.initRoot<proto::Message>();
  reply.setSeq(seq);
  auto entries = reply.initPageTable().initEntries(bindings.size());
  for (size_t i = 0; i < bindings.size(); ++i) {
    entries[i].setProcessId(bindings[i].process_id);
    entries[i].setVpage(bindings[i].vpage);
    entries[i].setPages(bindings[i].pages);
    entries[i].setPoolPage(bindings[i].pool_page);
  }
  absl::Status sent = link.Send(builder);
  if (absl::IsInvalidArgument(sent)) {  // larger than the channel takes
    return link.ReplyError(seq, absl::ResourceExhaustedError(absl::StrCat(
                                    options().name, ": its page table (", bindings.size(),
                                    " runs) is too large for one message")));
  }
  return sent;
}

absl::Status MemoryElement::HandleFence(ipc::Link& link, uint64_t seq, proto::Fence::Reader fence) {
  if (!IsRackMmu(link)) {
    return Refuse(link, seq,
                  absl::PermissionDeniedError(
                      absl::StrCat(options().name, ": only the Rack MMU fences processes")));
  }
  auto [it, added] = fenced_.try_emplace({fence.getPid(), fence.getStartTime()},
                                         Fenced{fence.getProcessId(), fence.getReason()});
  if (added && fenced_.size() > kMaxFenced) {
    // Fenced processes that have ended (their pid is free, or another process's now) can
    // never ask again: forget them.
    for (auto f = fenced_.begin(); f != fenced_.end();) {
      absl::StatusOr<uint64_t> now = ipc::StartTimeOfPid(f->first.first);
      f = !now.ok() || *now != f->first.second ? fenced_.erase(f) : std::next(f);
    }
  }
  if (added) {
    LOG(INFO) << options().name << ": fenced process " << fence.getProcessId() << " (pid "
              << fence.getPid() << "): " << fence.getReason().cStr();
  }
  return link.ReplyOk(seq);
}

absl::Status MemoryElement::HandleStatus(ipc::Link& link, uint64_t seq) {
  std::map<uint32_t, uint64_t> bound;  // process id -> bound pages
  for (const PageStore::Binding& b : store_.Dump()) bound[b.process_id] += b.pages;
  for (const auto& [id, c] : counters_) bound.try_emplace(id, 0);
  std::set<uint32_t> fenced;
  for (const auto& [who, f] : fenced_) fenced.insert(f.process_id);
  capnp::MallocMessageBuilder builder;
  auto reply = builder.initRoot<proto::Message>();
  reply.setSeq(seq);
  auto status = reply.initStatus();
  auto rows = status.initProcesses(bound.size());
  size_t i = 0;
  for (const auto& [id, pages] : bound) {
    auto row = rows[i++];
    row.setProcessId(id);
    row.setElement(options().name);
    row.setMappedBytes(pages * kPageBytes);
    auto c = counters_.find(id);
    if (c != counters_.end()) {
      row.setWritebacks(c->second.writebacks);
      row.setRefused(c->second.refused);
    }
    row.setFenced(fenced.contains(id));
  }
  return link.Send(builder);
}

absl::StatusOr<uint32_t> MemoryElement::ProcessOn(ipc::Link& link) {
  auto it = identities_.find(link.id());
  if (it == identities_.end()) {
    absl::StatusOr<uint64_t> start_time = ipc::ProcessStartTime(link.peer());
    if (!start_time.ok()) return start_time.status();
    it = identities_.emplace(link.id(), *start_time).first;
  }
  if (auto f = fenced_.find({link.peer().pid, it->second}); f != fenced_.end()) {
    ++counters_[f->second.process_id].refused;
    return absl::FailedPreconditionError(absl::StrCat(
        options().name, ": process ", f->second.process_id, " is fenced: ", f->second.reason));
  }
  const uint32_t id = store_.ProcessFor(link.peer().pid, it->second);
  if (id == 0) {
    return absl::PermissionDeniedError(absl::StrCat(options().name, ": pid ", link.peer().pid,
                                                    " holds no memory on this element"));
  }
  return id;
}

absl::Status MemoryElement::HandleRead(ipc::Link& link, uint64_t seq, uint64_t vpage) {
  absl::StatusOr<uint32_t> process = ProcessOn(link);
  if (!process.ok()) return Refuse(link, seq, process.status());
  absl::StatusOr<const uint8_t*> page = store_.Read(*process, vpage);
  if (!page.ok()) return Refuse(link, seq, page.status());
  capnp::MallocMessageBuilder builder(kPageBytes / sizeof(capnp::word) + 16);
  auto reply = builder.initRoot<proto::Message>();
  reply.setSeq(seq);
  auto data = reply.initPageData();
  data.setVpage(vpage);
  data.setData(kj::arrayPtr(*page, kPageBytes));
  return link.Send(builder);
}

absl::Status MemoryElement::CheckRun(const ipc::Link& link, uint64_t vpage, uint64_t pages,
                                     uint64_t slot) {
  if (pages == 0 || slot + pages > link.slot_pages()) {
    return absl::InvalidArgumentError(
        absl::StrCat(options().name, ": a run of ", pages, " pages in slot ", slot,
                     " does not fit the channel's ", link.slot_pages(), " page slots"));
  }
  if (vpage + pages < vpage) {
    return absl::InvalidArgumentError(absl::StrCat(options().name, ": a run of ", pages,
                                                   " pages from page ", vpage,
                                                   " wraps the address space"));
  }
  return absl::OkStatus();
}

absl::Status MemoryElement::HandleReadPages(ipc::Link& link, uint64_t seq,
                                            proto::ReadPages::Reader read) {
  const uint64_t vpage = read.getVpage();
  const uint64_t pages = read.getPages();
  const uint64_t slot = read.getSlot();
  if (absl::Status bad = CheckRun(link, vpage, pages, slot); !bad.ok()) {
    return Refuse(link, seq, bad);
  }
  absl::StatusOr<uint32_t> process = ProcessOn(link);
  if (!process.ok()) return Refuse(link, seq, process.status());
  uint64_t done = 0;
  for (; done < pages; ++done) {
    absl::StatusOr<const uint8_t*> page = store_.Read(*process, vpage + done);
    if (!page.ok()) {
      if (done == 0) return Refuse(link, seq, page.status());
      break;  // the run ends at the first page it may not read
    }
    std::memcpy(link.slot(slot + done), *page, kPageBytes);
  }
  capnp::MallocMessageBuilder builder(16);
  auto reply = builder.initRoot<proto::Message>();
  reply.setSeq(seq);
  reply.initPagesRead().setPages(static_cast<uint32_t>(done));
  return link.Send(builder);
}

absl::Status MemoryElement::HandlePlaceUnit(ipc::Link& link, uint64_t seq,
                                            proto::PlaceUnit::Reader place) {
  const uint64_t vpage = place.getVpage();
  const uint64_t pages = place.getPages();
  const uint64_t dst = place.getDst();
  if (pages == 0 || pages > kUnitPages || dst % kPageBytes != 0 || vpage + pages < vpage ||
      dst + pages * kPageBytes < dst) {
    return Refuse(link, seq,
                  absl::InvalidArgumentError(absl::StrCat(
                      options().name, ": a unit of ", pages, " pages from page ", vpage, " to 0x",
                      absl::Hex(dst), " (at most ", kUnitPages, " pages, to a page boundary)")));
  }
  absl::StatusOr<uint32_t> process = ProcessOn(link);
  if (!process.ok()) return Refuse(link, seq, process.status());
  std::vector<const uint8_t*> data;
  for (uint64_t done = 0; done < pages; ++done) {
    absl::StatusOr<const uint8_t*> page = store_.Read(*process, vpage + done);
    if (!page.ok()) {
      if (done == 0) return Refuse(link, seq, page.status());
      break;  // the unit ends at the first page it may not read
    }
    data.push_back(*page);
  }
  if (absl::Status written = WriteInto(link, data, dst); !written.ok()) {
    return Refuse(link, seq, written);
  }
  capnp::MallocMessageBuilder builder(16);
  auto reply = builder.initRoot<proto::Message>();
  reply.setSeq(seq);
  reply.initUnitPlaced().setPages(static_cast<uint32_t>(data.size()));
  return link.Send(builder);
}

namespace {

// True if process `pid` runs with its user's own privileges: its effective, saved and
// filesystem user and group IDs are its real ones, and, unless it is root, it holds no
// capabilities.
bool PlainCredentials(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  bool uids = false, gids = false, caps = false;
  uint64_t uid = 0;
  while (std::getline(status, line)) {
    std::istringstream fields(line);
    std::string key;
    fields >> key;
    if (key == "Uid:" || key == "Gid:") {
      uint64_t real = 0, other = 0;
      fields >> real;
      bool same = static_cast<bool>(fields);
      for (int i = 0; i < 3 && same; ++i)
        same = static_cast<bool>(fields >> other) && other == real;
      if (!same) return false;  // effective, saved or filesystem ID differs from the real one
      (key == "Uid:" ? uids : gids) = true;
      if (key == "Uid:") uid = real;
    } else if (key == "CapPrm:") {
      std::string hex;
      fields >> hex;
      // Capabilities in a process of an ordinary user came from a file's capabilities.
      if (uid != 0 && hex.find_first_not_of('0') != std::string::npos) return false;
      caps = true;
    }
  }
  return uids && gids && caps;
}

}  // namespace

absl::StatusOr<int> MemoryElement::MemoryOf(ipc::Link& link) {
  if (auto it = memory_of_.find(link.id()); it != memory_of_.end()) return it->second.get();
  const std::string path = absl::StrCat("/proc/", link.peer().pid, "/mem");
  ipc::Fd fd(open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) {
    const int error = errno;
    const std::string why = absl::StrCat(options().name, ": opening ", path, " of ", link.label(),
                                         ": ", std::strerror(error));
    if (error == ENOENT || error == ESRCH) return absl::UnavailableError(why);
    return absl::UnimplementedError(why);  // EACCES, EPERM: the kernel's ptrace access check
  }
  // Opened while the peer lived (its pidfd says): the pid was not someone else's.
  pollfd exited{link.peer().pidfd.get(), POLLIN, 0};
  if (poll(&exited, 1, 0) != 0) {
    return absl::UnavailableError(absl::StrCat(options().name, ": ", link.label(), " has exited"));
  }
  // The file holds the address space the process had when it was opened. A process that had
  // exec'd a program with more privilege than its user (set-user-ID, set-group-ID, file
  // capabilities) by then is not written into: an element running as root could be opened
  // into it where the process itself could not write.
  if (!PlainCredentials(link.peer().pid)) {
    return absl::UnimplementedError(absl::StrCat(options().name, ": ", link.label(),
                                                 " runs with privileges its user does not have"));
  }
  const int raw = fd.get();
  memory_of_.emplace(link.id(), std::move(fd));
  return raw;
}

absl::Status MemoryElement::WriteInto(ipc::Link& link, const std::vector<const uint8_t*>& pages,
                                      uint64_t dst) {
  ASSIGN_OR_RETURN(const int memory, MemoryOf(link));
  // In chunks of at most IOV_MAX runs (never-written pages are all one zero page).
  constexpr size_t kChunk = 256;
  std::vector<iovec> from;
  for (size_t first = 0; first < pages.size(); first += kChunk) {
    const size_t end = std::min(pages.size(), first + kChunk);
    from.clear();
    for (size_t k = first; k < end; ++k) {
      auto* data = const_cast<uint8_t*>(pages[k]);
      if (!from.empty() &&
          static_cast<uint8_t*>(from.back().iov_base) + from.back().iov_len == data) {
        from.back().iov_len += kPageBytes;
      } else {
        from.push_back({data, kPageBytes});
      }
    }
    const size_t bytes = (end - first) * kPageBytes;
    const ssize_t written = pwritev(memory, from.data(), static_cast<int>(from.size()),
                                    static_cast<off_t>(dst + first * kPageBytes));
    if (written == static_cast<ssize_t>(bytes)) continue;
    // A destination that is not plain memory of the process (unmapped, read-only, or behind
    // its own userfaultfd: the kernel does not wait for the process here), or an address
    // space it left by exec.
    return absl::AbortedError(absl::StrCat(
        options().name, ": writing ", pages.size(), " pages into ", link.label(), " at 0x",
        absl::Hex(dst), ": ",
        written < 0 ? std::strerror(errno) : absl::StrCat(written, " of ", bytes, " bytes")));
  }
  return absl::OkStatus();
}

absl::Status MemoryElement::HandleWritePages(ipc::Link& link, uint64_t seq,
                                             proto::WritePages::Reader write) {
  const uint64_t vpage = write.getVpage();
  const uint64_t pages = write.getPages();
  const uint64_t slot = write.getSlot();
  if (absl::Status bad = CheckRun(link, vpage, pages, slot); !bad.ok()) {
    return Refuse(link, seq, bad);
  }
  absl::StatusOr<uint32_t> process = ProcessOn(link);
  if (!process.ok()) return Refuse(link, seq, process.status());
  for (uint64_t k = 0; k < pages; ++k) {
    absl::StatusOr<uint8_t*> target = store_.Write(*process, vpage + k);
    if (!target.ok()) {
      ++counters_[*process].refused;
      // The pages before it are written: say how many, so the writer knows which landed.
      return Refuse(link, seq,
                    absl::Status(target.status().code(),
                                 absl::StrCat(target.status().message(), " (the run's first ", k,
                                              " of ", pages, " pages are written)")));
    }
    // The application may scribble on its slots meanwhile: only its own page suffers.
    std::memcpy(*target, link.slot(slot + k), kPageBytes);
    ++counters_[*process].writebacks;
  }
  return link.ReplyOk(seq);
}

absl::Status MemoryElement::HandleWrite(ipc::Link& link, uint64_t seq,
                                        proto::PageData::Reader page) {
  absl::StatusOr<uint32_t> process = ProcessOn(link);
  if (!process.ok()) return Refuse(link, seq, process.status());
  if (page.getData().size() != kPageBytes) {
    return Refuse(link, seq,
                  absl::InvalidArgumentError(
                      absl::StrCat(options().name, ": a page write-back carries ",
                                   page.getData().size(), " bytes, not ", kPageBytes)));
  }
  absl::StatusOr<uint8_t*> target = store_.Write(*process, page.getVpage());
  if (!target.ok()) {
    ++counters_[*process].refused;
    return Refuse(link, seq, target.status());
  }
  std::memcpy(*target, page.getData().begin(), kPageBytes);
  ++counters_[*process].writebacks;
  return link.ReplyOk(seq);
}

}  // namespace disagg::memmon
