#include "runtime/element_pool.h"

#include <capnp/message.h>

#include "absl/strings/str_cat.h"
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

// Write-backs in flight per connection: well under what its ring holds.
constexpr size_t kWriteWindow = 16;

// Unavailable errors name the element.
absl::Status Unreachable(const std::string& element, const absl::Status& why) {
  if (why.code() != absl::StatusCode::kUnavailable &&
      why.code() != absl::StatusCode::kDeadlineExceeded) {
    return why;
  }
  return absl::UnavailableError(
      absl::StrCat("memory element ", element, " cannot be reached: ", why.message()));
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

absl::Status ElementPool::ReadPages(
    const std::string& element, absl::Span<const uint64_t> vpages,
    absl::FunctionRef<absl::Status(size_t, absl::StatusOr<const uint8_t*>)> use) {
  if (vpages.size() > kMaxPipelined) {
    return absl::InvalidArgumentError("too many page reads in one pipeline");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ipc::Client> client, Borrow(element));
  uint64_t seqs[kMaxPipelined];
  absl::Status transport;
  size_t sent = 0;
  for (; sent < vpages.size(); ++sent) {
    ipc::SmallMessage request;
    auto root = request.Init();
    root.initReadPage().setVpage(vpages[sent]);
    absl::StatusOr<uint64_t> seq = client->Send(request.builder(), root);
    if (!seq.ok()) {
      transport = seq.status();
      break;
    }
    seqs[sent] = *seq;
  }
  absl::Status first_use_error;
  for (size_t i = 0; i < sent && transport.ok(); ++i) {
    absl::Status use_status;
    absl::Status reply = client->Await(
        seqs[i],
        [&](proto::Message::Reader message) -> absl::Status {
          if (!message.isPageData() || message.getPageData().getVpage() != vpages[i] ||
              message.getPageData().getData().size() != kPageBytes) {
            return absl::DataLossError(absl::StrCat("memory element ", element,
                                                    " answered a page read with a wrong reply"));
          }
          use_status = use(i, message.getPageData().getData().begin());
          return absl::OkStatus();
        },
        timeout_);
    switch (reply.code()) {
      case absl::StatusCode::kOk:
        break;
      case absl::StatusCode::kUnavailable:
      case absl::StatusCode::kDeadlineExceeded:
      case absl::StatusCode::kDataLoss:
      case absl::StatusCode::kInvalidArgument:  // undecodable reply
        transport = reply;
        continue;
      default:  // the element refused this page: the connection stays good
        use_status = use(i, reply);
    }
    if (first_use_error.ok()) first_use_error = use_status;
  }
  if (!transport.ok()) return Unreachable(element, transport);
  Return(element, std::move(client));
  return first_use_error;
}

absl::Status ElementPool::WritePages(const std::string& element,
                                     absl::Span<const PageWrite> pages) {
  ASSIGN_OR_RETURN(std::unique_ptr<ipc::Client> client, Borrow(element));
  absl::Status failure;
  size_t next = 0;
  std::vector<uint64_t> in_flight;
  while ((next < pages.size() || !in_flight.empty()) && failure.ok()) {
    while (next < pages.size() && in_flight.size() < kWriteWindow) {
      capnp::MallocMessageBuilder builder(kPageBytes / sizeof(capnp::word) + 16);
      auto root = builder.initRoot<proto::Message>();
      auto data = root.initPageData();
      data.setVpage(pages[next].vpage);
      data.setData(kj::arrayPtr(pages[next].data, kPageBytes));
      absl::StatusOr<uint64_t> seq = client->Send(builder, root);
      if (!seq.ok()) {
        failure = seq.status();
        break;
      }
      in_flight.push_back(*seq);
      ++next;
    }
    if (!failure.ok() || in_flight.empty()) break;
    failure = client->Await(
        in_flight.front(), [](proto::Message::Reader) { return absl::OkStatus(); }, timeout_);
    in_flight.erase(in_flight.begin());
  }
  // After a failure replies may still be in flight: the connection is not reused.
  if (failure.ok()) Return(element, std::move(client));
  return Unreachable(element, failure);
}

}  // namespace disagg::runtime
