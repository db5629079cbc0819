#include "ipc/write_domain.h"

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>

namespace disagg::ipc {
namespace {

WriteDomainView ViewOf(const WriteDomain& domain) {
  absl::StatusOr<WriteDomainView> view =
      WriteDomainView::Adopt(Fd(::fcntl(domain.fd(), F_DUPFD_CLOEXEC, 0)));
  REQUIRE(view.ok());
  return std::move(*view);
}

TEST_CASE("A write domain names the elements with write-backs not acknowledged") {
  absl::StatusOr<std::unique_ptr<WriteDomain>> domain = WriteDomain::Create();
  REQUIRE(domain.ok());
  WriteDomainView view = ViewOf(**domain);
  CHECK(view.Tainted().empty());
  const int a = (*domain)->Begin("mem0");
  const int b = (*domain)->Begin("mem1");
  REQUIRE(a >= 0);
  REQUIRE(b >= 0);
  CHECK(a != b);
  CHECK((*domain)->Begin("mem0") == a);  // a second batch under way to mem0
  (*domain)->End(b);
  (*domain)->End(a);
  auto tainted = view.Tainted();
  REQUIRE(tainted.size() == 1);
  CHECK(tainted[0].element == "mem0");
  CHECK(tainted[0].batches == 1);
  (*domain)->End(a);
  CHECK(view.Tainted().empty());
  SECTION("names too long for the table are not recorded") {
    CHECK((*domain)->Begin(std::string(40, 'm')) == -1);
    const int longest = (*domain)->Begin(std::string(32, 'm'));  // as long as element names go
    REQUIRE(longest >= 0);
    REQUIRE(view.Tainted().size() == 1);
    (*domain)->End(longest);
    CHECK((*domain)->Begin("") == -1);
    (*domain)->End(-1);  // ignored
    CHECK(view.Tainted().empty());
  }
}

TEST_CASE("A write domain's reader trusts nothing of the table") {
  absl::StatusOr<std::unique_ptr<WriteDomain>> domain = WriteDomain::Create();
  REQUIRE(domain.ok());
  WriteDomainView view = ViewOf(**domain);
  (*domain)->Begin("mem0");
  // What a hostile process could write into its own table.
  absl::StatusOr<ShmRegion> raw = ShmRegion::Map((*domain)->fd(), kWriteDomainBytes);
  REQUIRE(raw.ok());
  auto* table = reinterpret_cast<WriteDomainLayout*>(raw->data());
  table->slots.store(1u << 30);                                     // far more slots than there are
  std::memset(table->slot[1].element, 'x', kWriteDomainNameBytes);  // a name with no end
  table->slot[1].started.store(5);
  table->slot[2].started.store(5);                 // a nameless slot
  std::memcpy(table->slot[3].element, "mem0", 5);  // mem0 again
  table->slot[3].started.store(5);
  auto tainted = view.Tainted();
  REQUIRE(tainted.size() == 1);
  CHECK(tainted[0].element == "mem0");
  SECTION("a file that is no write domain is refused") {
    int pipe_fds[2];
    REQUIRE(::pipe(pipe_fds) == 0);
    ::close(pipe_fds[1]);
    CHECK(absl::IsInvalidArgument(WriteDomainView::Adopt(Fd(pipe_fds[0])).status()));
  }
}

}  // namespace
}  // namespace disagg::ipc
