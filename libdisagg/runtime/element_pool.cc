#include "runtime/element_pool.h"

#include <capnp/message.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "internal/page_unit.h"
#include "internal/status_macros.h"
#include "ipc/socket.h"
#include "ipc/wire.h"
#include "runtime/userfaultfd.h"

namespace disagg::runtime {
namespace {

// Element names come from the Rack MMU and become socket paths: only plain names pass.
bool PlainName(const std::string& name) {
  if (name.empty() || name.size() > 32) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return false;
  }
  return true;
}

// Write-back requests in flight per connection: well under what an element reads of one peer
// in a turn of its loop.
constexpr size_t kWriteWindow = 16;

// A memory element's channel carries at least a longest run's page slots.
absl::Status CheckSlots(const std::string& element, const ipc::Channel& channel) {
  if (channel.slot_pages() >= ElementPool::kMaxRun) return absl::OkStatus();
  // Not FAILED_PRECONDITION: that is how a memory element says this process is fenced.
  return absl::InternalError(absl::StrCat("memory element ", element, " offers ",
                                          channel.slot_pages(), " page slots, not ",
                                          ElementPool::kMaxRun));
}

// Unavailable errors name the element.
absl::Status Unreachable(const std::string& element, const absl::Status& why) {
  if (why.code() != absl::StatusCode::kUnavailable &&
      why.code() != absl::StatusCode::kDeadlineExceeded) {
    return why;
  }
  return absl::UnavailableError(
      absl::StrCat("memory element ", element, " cannot be reached: ", why.message()));
}

// True if `reply`, an awaited answer, means the connection is no good (the element is gone,
// too slow, or answered something undecodable or wrong); any other error is the element
// refusing that one request, and the connection stays good.
bool ConnectionBroke(const absl::Status& reply) {
  switch (reply.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kInvalidArgument:  // undecodable reply
      return true;
    default:
      return false;
  }
}

absl::Status WrongReply(const std::string& element) {
  return absl::DataLossError(
      absl::StrCat("memory element ", element, " answered a page request with a wrong reply"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<ipc::Client>> ElementPool::Borrow(const std::string& element) {
  {
    MutexLock lock(&mu_);
    auto& idle = idle_[element];
    if (!idle.empty()) {
      std::unique_ptr<ipc::Client> client = std::move(idle.back());
      idle.pop_back();
      return client;
    }
  }
  if (!PlainName(element)) {
    return absl::InvalidArgumentError(absl::StrCat("bad memory element name '", element, "'"));
  }
  absl::StatusOr<ipc::Client> client =
      ipc::Client::Connect(SocketPath(run_dir_, element), timeout_);
  if (!client.ok()) return Unreachable(element, client.status());
  if (fabric_ != nullptr) client->set_fabric(fabric_, local_, element, timeout_);
  return std::make_unique<ipc::Client>(std::move(*client));
}

void ElementPool::Return(const std::string& element, std::unique_ptr<ipc::Client> client) {
  MutexLock lock(&mu_);
  idle_[element].push_back(std::move(client));
}

absl::Status ElementPool::ReadRuns(
    const std::string& element, absl::Span<const PageRun> runs,
    absl::FunctionRef<absl::Status(size_t, absl::StatusOr<size_t>, const uint8_t*)> use) {
  for (const PageRun& run : runs) {
    if (run.pages == 0 || run.pages > kMaxRun) {
      return absl::InvalidArgumentError(absl::StrCat("a page run of ", run.pages, " pages"));
    }
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ipc::Client> client, Borrow(element));
  const ipc::Channel& channel = client->connection().channel;
  RETURN_IF_ERROR(CheckSlots(element, channel));
  absl::Status transport;
  absl::Status first_use_error;
  // Groups of runs that fit the slots at once: sent together, then awaited in order.
  struct Sent {
    uint64_t seq;
    size_t slot;
  };
  std::vector<Sent> sent;
  for (size_t next = 0; next < runs.size() && transport.ok();) {
    const size_t group = next;
    sent.clear();
    for (size_t slot = 0; next < runs.size() && slot + runs[next].pages <= channel.slot_pages();
         ++next) {
      ipc::SmallMessage request;
      auto root = request.Init();
      auto read = root.initReadPages();
      read.setVpage(runs[next].vpage);
      read.setPages(static_cast<uint32_t>(runs[next].pages));
      read.setSlot(static_cast<uint32_t>(slot));
      absl::StatusOr<uint64_t> seq = client->Send(request.builder(), root);
      if (!seq.ok()) {
        transport = seq.status();
        break;
      }
      sent.push_back({*seq, slot});
      slot += runs[next].pages;
    }
    for (size_t i = 0; i < sent.size() && transport.ok(); ++i) {
      const PageRun& run = runs[group + i];
      absl::Status use_status;
      absl::Status reply = client->Await(
          sent[i].seq,
          [&](proto::Message::Reader message) -> absl::Status {
            if (!message.isPagesRead() || message.getPagesRead().getPages() == 0 ||
                message.getPagesRead().getPages() > run.pages) {
              return absl::DataLossError(absl::StrCat("memory element ", element,
                                                      " answered a page read with a wrong reply"));
            }
            use_status = use(group + i, size_t{message.getPagesRead().getPages()},
                             channel.slot(sent[i].slot));
            return absl::OkStatus();
          },
          timeout_);
      if (ConnectionBroke(reply)) {
        transport = reply;
        continue;
      }
      if (!reply.ok()) use_status = use(group + i, reply, nullptr);  // this run refused
      if (first_use_error.ok()) first_use_error = use_status;
    }
  }
  if (!transport.ok()) return Unreachable(element, transport);
  Return(element, std::move(client));
  return first_use_error;
}

absl::Status ElementPool::PlaceUnits(
    const std::string& element, absl::Span<const UnitPlacement> units,
    absl::FunctionRef<absl::Status(size_t, absl::StatusOr<size_t>)> use, size_t& sent_count) {
  sent_count = 0;
  for (const UnitPlacement& unit : units) {
    if (unit.pages == 0 || unit.pages > kUnitPages || unit.dst % kPageBytes != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("a unit of ", unit.pages, " pages to 0x", absl::Hex(unit.dst)));
    }
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ipc::Client> client, Borrow(element));
  std::vector<uint64_t> sent;
  absl::Status transport;
  for (const UnitPlacement& unit : units) {
    ipc::SmallMessage request;
    auto root = request.Init();
    auto place = root.initPlaceUnit();
    place.setVpage(unit.vpage);
    place.setPages(static_cast<uint32_t>(unit.pages));
    place.setDst(unit.dst);
    absl::StatusOr<uint64_t> seq = client->Send(request.builder(), root);
    if (!seq.ok()) {
      transport = seq.status();
      break;
    }
    sent.push_back(*seq);
  }
  sent_count = sent.size();
  absl::Status first_use_error;
  for (size_t i = 0; i < sent.size() && transport.ok(); ++i) {
    absl::Status use_status;
    absl::Status reply = client->Await(
        sent[i],
        [&](proto::Message::Reader message) -> absl::Status {
          if (!message.isUnitPlaced()) return WrongReply(element);
          auto placed = message.getUnitPlaced();
          const size_t pages = placed.getPages();
          if (pages == 0 || pages > units[i].pages) return WrongReply(element);
          use_status = use(i, pages);
          return absl::OkStatus();
        },
        timeout_);
    if (ConnectionBroke(reply)) {
      transport = reply;
      continue;
    }
    if (!reply.ok()) use_status = use(i, reply);  // this unit refused
    if (first_use_error.ok()) first_use_error = use_status;
  }
  if (!transport.ok()) return Unreachable(element, transport);
  Return(element, std::move(client));
  return first_use_error;
}

absl::Status ElementPool::WritePages(const std::string& element,
                                     absl::Span<const PageWrite> pages) {
  ASSIGN_OR_RETURN(std::unique_ptr<ipc::Client> client, Borrow(element));
  const ipc::Channel& channel = client->connection().channel;
  RETURN_IF_ERROR(CheckSlots(element, channel));
  absl::Status failure;
  std::vector<uint64_t> in_flight;
  for (size_t next = 0; next < pages.size() && failure.ok();) {
    // The slots filled with runs of consecutive pages, one request each; then all awaited,
    // so that the slots are free again.
    in_flight.clear();
    size_t slot = 0;
    // At most kWriteWindow requests in flight: a connection dropped after a failure leaves
    // no more queued at the element than it drains at the hang-up, in order.
    while (next < pages.size() && slot < channel.slot_pages() && in_flight.size() < kWriteWindow) {
      const size_t first = slot;
      const uint64_t vpage = pages[next].vpage;
      do {
        std::memcpy(channel.slot(slot++), pages[next++].data, kPageBytes);
      } while (next < pages.size() && slot < channel.slot_pages() &&
               pages[next].vpage == pages[next - 1].vpage + 1);
      ipc::SmallMessage request;
      auto root = request.Init();
      auto write = root.initWritePages();
      write.setVpage(vpage);
      write.setPages(static_cast<uint32_t>(slot - first));
      write.setSlot(static_cast<uint32_t>(first));
      absl::StatusOr<uint64_t> seq = client->Send(request.builder(), root);
      if (!seq.ok()) {
        failure = seq.status();
        break;
      }
      in_flight.push_back(*seq);
    }
    for (size_t i = 0; i < in_flight.size() && failure.ok(); ++i) {
      failure = client->Await(
          in_flight[i], [](proto::Message::Reader) { return absl::OkStatus(); }, timeout_);
    }
  }
  // After a failure replies may still be in flight: the connection is not reused.
  if (failure.ok()) Return(element, std::move(client));
  return Unreachable(element, failure);
}

}  // namespace disagg::runtime
