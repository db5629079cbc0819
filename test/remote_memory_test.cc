// Remote memory at the message level, on a private rack of real daemons: the Rack MMU places
// and programs, the memory elements serve exactly what they were programmed with.
#include <capnp/message.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <map>
#include <thread>
#include <tuple>
#include <vector>

#include "internal/page_unit.h"
#include "ipc/client.h"
#include "ipc/wire.h"
#include "rack_harness.h"

namespace disagg::testing {
namespace {

constexpr uint64_t kPage = 4096;

struct ExtentInfo {
  uint64_t vpage, pages;
  std::string element;
};

struct App {
  ipc::Client mmu;
  uint32_t id = 0;
  uint64_t window = 0;
  std::map<std::string, ipc::Client> elements;
};

absl::Status Ignore(proto::Message::Reader) { return absl::OkStatus(); }

absl::StatusOr<App> JoinRack(TestRack& rack) {
  auto mmu = ipc::Client::Connect(rack.Socket("mmu"));
  if (!mmu.ok()) return mmu.status();
  App app{*std::move(mmu), 0, 0, {}};
  ipc::SmallMessage m;
  auto root = m.Init();
  root.initJoin().setName("test");
  absl::Status s = app.mmu.Call(m.builder(), root, [&](proto::Message::Reader r) {
    app.id = r.getJoined().getProcessId();
    app.window = r.getJoined().getWindowBase();
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return app;
}

absl::StatusOr<std::pair<uint64_t, std::vector<ExtentInfo>>> Map(App& app, uint64_t bytes,
                                                                 proto::Placement placement) {
  ipc::SmallMessage m;
  auto root = m.Init();
  root.initMap().setBytes(bytes);
  root.getMap().setPlacement(placement);
  std::pair<uint64_t, std::vector<ExtentInfo>> out;
  absl::Status s = app.mmu.Call(m.builder(), root, [&](proto::Message::Reader r) {
    out.first = r.getMapped().getVaddr();
    for (auto e : r.getMapped().getExtents()) {
      out.second.push_back({e.getVpage(), e.getPages(), e.getElement()});
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

ipc::Client& Element(App& app, TestRack& rack, const std::string& name) {
  auto it = app.elements.find(name);
  if (it == app.elements.end()) {
    auto c = ipc::Client::Connect(rack.Socket(name));
    REQUIRE(c.ok());
    it = app.elements.emplace(name, *std::move(c)).first;
  }
  return it->second;
}

absl::Status WritePage(ipc::Client& element, uint64_t vpage, uint8_t fill) {
  capnp::MallocMessageBuilder b;
  auto root = b.initRoot<proto::Message>();
  auto page = root.initPageData();
  page.setVpage(vpage);
  auto data = page.initData(kPage);
  std::memset(data.begin(), fill, kPage);
  for (int i = 0; i < 8; ++i) data[i] = uint8_t(vpage >> (8 * i));
  return element.Call(b, root, Ignore);
}

absl::StatusOr<std::vector<uint8_t>> ReadPage(ipc::Client& element, uint64_t vpage) {
  ipc::SmallMessage m;
  auto root = m.Init();
  root.initReadPage().setVpage(vpage);
  std::vector<uint8_t> out;
  absl::Status s = element.Call(m.builder(), root, [&](proto::Message::Reader r) {
    auto d = r.getPageData().getData();
    out.assign(d.begin(), d.end());
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

// A ReadPages of `pages` pages from `vpage` into the channel's slots from `slot`: how many
// were read.
absl::StatusOr<uint32_t> ReadRun(ipc::Client& element, uint64_t vpage, uint32_t pages,
                                 uint32_t slot) {
  ipc::SmallMessage m;
  auto root = m.Init();
  auto read = root.initReadPages();
  read.setVpage(vpage);
  read.setPages(pages);
  read.setSlot(slot);
  uint32_t n = 0;
  absl::Status s = element.Call(m.builder(), root, [&](proto::Message::Reader r) {
    if (!r.isPagesRead()) return absl::DataLossError("not a PagesRead");
    n = r.getPagesRead().getPages();
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return n;
}

// A WritePages of `pages` pages from `vpage`, whose data the caller put in the slots from
// `slot`.
absl::Status WriteRun(ipc::Client& element, uint64_t vpage, uint32_t pages, uint32_t slot) {
  ipc::SmallMessage m;
  auto root = m.Init();
  auto write = root.initWritePages();
  write.setVpage(vpage);
  write.setPages(pages);
  write.setSlot(slot);
  return element.Call(m.builder(), root, Ignore);
}

// A PlaceUnit of `pages` pages from `vpage` written to `dst` in this process: how many were
// written.
absl::StatusOr<uint32_t> PlaceUnit(ipc::Client& element, uint64_t vpage, uint32_t pages,
                                   uintptr_t dst) {
  ipc::SmallMessage m;
  auto root = m.Init();
  auto place = root.initPlaceUnit();
  place.setVpage(vpage);
  place.setPages(pages);
  place.setDst(dst);
  uint32_t written = 0;
  absl::Status s = element.Call(m.builder(), root, [&](proto::Message::Reader r) {
    if (!r.isUnitPlaced()) return absl::DataLossError("not a UnitPlaced");
    written = r.getUnitPlaced().getPages();
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return written;
}

uint64_t PoolUse(TestRack& rack) {
  uint64_t used = 0;
  for (const auto& [name, row] : rack.Status()) {
    if (row.kind == "memory") used += row.used_bytes;
  }
  return used;
}

// Waits for the memory elements' heartbeat reports to show `bytes` in use.
bool WaitForPoolUse(TestRack& rack, uint64_t bytes) {
  for (int i = 0; i < 1000; ++i) {
    if (PoolUse(rack) == bytes) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST_CASE("Mapped memory lives on the memory elements and only its owner can touch it") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 2 --pool-size 16M") == 0);
  auto app = JoinRack(rack);
  REQUIRE(app.ok());
  auto region = Map(*app, 1 << 20, proto::Placement::SPREAD);
  REQUIRE(region.ok());
  const uint64_t vaddr = region->first;
  REQUIRE(vaddr >= app->window);
  std::map<std::string, uint64_t> per_element;
  for (const auto& e : region->second) per_element[e.element] += e.pages;
  REQUIRE(per_element["mem0"] == 128);
  REQUIRE(per_element["mem1"] == 128);
  REQUIRE(WaitForPoolUse(rack, 1 << 20));

  // Every page written through its element reads back, byte for byte.
  for (const auto& e : region->second) {
    ipc::Client& element = Element(*app, rack, e.element);
    for (uint64_t p = e.vpage; p < e.vpage + e.pages; ++p) {
      REQUIRE(WritePage(element, p, uint8_t(p * 7)).ok());
    }
  }
  for (const auto& e : region->second) {
    ipc::Client& element = Element(*app, rack, e.element);
    for (uint64_t p = e.vpage; p < e.vpage + e.pages; ++p) {
      auto page = ReadPage(element, p);
      REQUIRE(page.ok());
      uint64_t tag = 0;
      std::memcpy(&tag, page->data(), 8);
      REQUIRE(tag == p);
      REQUIRE((*page)[kPage - 1] == uint8_t(p * 7));
    }
  }
  const ExtentInfo first = region->second.front();

  SECTION("another process forging requests for these pages is refused by the element") {
    const pid_t child = fork();
    if (child == 0) {
      int code = 0;
      auto thief = JoinRack(rack);
      if (!thief.ok()) _exit(10);
      auto conn = ipc::Client::Connect(rack.Socket(first.element));
      if (!conn.ok()) _exit(11);
      if (!absl::IsPermissionDenied(ReadPage(*conn, first.vpage).status())) code |= 1;
      if (!absl::IsPermissionDenied(WritePage(*conn, first.vpage, 0xEE))) code |= 2;
      if (!absl::IsPermissionDenied(ReadRun(*conn, first.vpage, 4, 0).status())) code |= 8;
      // A run of forged page data through its own channel's slots.
      std::memset(conn->connection().channel.slot(0), 0xEE, 4 * kPage);
      if (!absl::IsPermissionDenied(WriteRun(*conn, first.vpage, 4, 0))) code |= 16;
      // Programming the table is the Rack MMU's alone.
      ipc::SmallMessage m;
      auto root = m.Init();
      auto program = root.initProgramPages();
      program.setProcessId(thief->id);
      program.setPid(getpid());
      program.setVpage(first.vpage);
      program.setPages(1);
      if (!absl::IsPermissionDenied(conn->Call(m.builder(), root, Ignore))) code |= 4;
      _exit(code);
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    for (uint64_t p = first.vpage; p < first.vpage + 4; ++p) {  // untouched
      auto page = ReadPage(Element(*app, rack, first.element), p);
      REQUIRE(page.ok());
      REQUIRE((*page)[100] == uint8_t(p * 7));
    }
    const std::string log = [&] {
      std::string out;
      RunCommand("cat " + rack.dir() + "/" + first.element + ".log", &out);
      return out;
    }();
    REQUIRE_THAT(log, Catch::Contains("holds no memory on this element"));
  }
  SECTION(
      "runs of pages read through the channel's page slots hold the pages; bad runs are "
      "refused") {
    ipc::Client& element = Element(*app, rack, first.element);
    const ipc::Channel& channel = element.connection().channel;
    REQUIRE(channel.slot_pages() >= 32);
    auto check_slots = [&](uint64_t vpage, uint32_t pages, uint32_t slot) {
      for (uint32_t k = 0; k < pages; ++k) {
        uint64_t tag = 0;
        std::memcpy(&tag, channel.slot(slot + k), 8);
        REQUIRE(tag == vpage + k);
        REQUIRE(channel.slot(slot + k)[kPage - 1] == uint8_t((vpage + k) * 7));
      }
    };
    auto run = ReadRun(element, first.vpage, 8, 3);
    REQUIRE(run.ok());
    REQUIRE(*run == 8);
    check_slots(first.vpage, 8, 3);
    // A run past the region's end stops at its last page.
    const uint64_t end = (vaddr >> 12) + 256;
    for (const auto& e : region->second) {
      if (e.vpage + e.pages != end) continue;
      auto tail = ReadRun(Element(*app, rack, e.element), end - 2, 5, 0);
      REQUIRE(tail.ok());
      REQUIRE(*tail == 2);
      REQUIRE(absl::IsPermissionDenied(
          ReadRun(Element(*app, rack, e.element), end, 1, 0).status()));  // not mapped
    }
    // Runs that do not fit the slots, or wrap the address space, are refused; the connection
    // serves on.
    const uint32_t slots = static_cast<uint32_t>(channel.slot_pages());
    for (auto [vpage, pages, slot] :
         std::vector<std::tuple<uint64_t, uint32_t, uint32_t>>{{first.vpage, 0, 0},
                                                               {first.vpage, slots + 1, 0},
                                                               {first.vpage, 2, slots - 1},
                                                               {first.vpage, 1, 0xFFFFFFFF},
                                                               {~uint64_t{0}, 2, 0}}) {
      INFO("vpage " << vpage << " pages " << pages << " slot " << slot);
      absl::Status refused = ReadRun(element, vpage, pages, slot).status();
      REQUIRE(absl::IsInvalidArgument(refused));
      REQUIRE_THAT(std::string(refused.message()), Catch::Contains("a run of"));
    }
    run = ReadRun(element, first.vpage + 1, 1, slots - 1);
    REQUIRE(run.ok());
    check_slots(first.vpage + 1, 1, slots - 1);

    // Write-backs through the slots land, and read back page by page.
    for (uint32_t k = 0; k < 4; ++k) {
      uint8_t* page = channel.slot(10 + k);
      std::memset(page, 0x5C + k, kPage);
      const uint64_t tag = first.vpage + k;
      std::memcpy(page, &tag, 8);
    }
    REQUIRE(WriteRun(element, first.vpage, 4, 10).ok());
    for (uint32_t k = 0; k < 4; ++k) {
      auto page = ReadPage(element, first.vpage + k);
      REQUIRE(page.ok());
      REQUIRE((*page)[100] == uint8_t(0x5C + k));
    }
    // Runs that do not fit, and a run running past the region: refused; the pages before the
    // first one it may not write are written, the others untouched.
    REQUIRE(absl::IsInvalidArgument(WriteRun(element, first.vpage, slots + 1, 0)));
    REQUIRE(absl::IsInvalidArgument(WriteRun(element, first.vpage, 2, slots - 1)));
    REQUIRE(absl::IsInvalidArgument(WriteRun(element, ~uint64_t{0}, 2, 0)));
    for (const auto& e : region->second) {
      if (e.vpage + e.pages != end) continue;
      ipc::Client& last = Element(*app, rack, e.element);
      std::memset(last.connection().channel.slot(0), 0x77, 3 * kPage);
      const absl::Status partial = WriteRun(last, end - 1, 3, 0);
      REQUIRE(absl::IsPermissionDenied(partial));
      REQUIRE_THAT(std::string(partial.message()), Catch::Contains("first 1 of 3 pages"));
      auto page = ReadPage(last, end - 1);
      REQUIRE(page.ok());
      REQUIRE((*page)[100] == 0x77);
    }
  }
  SECTION(
      "units of pages are written straight into their owner's memory; bad "
      "units are refused and the element serves on") {
    ipc::Client& element = Element(*app, rack, first.element);
    std::vector<uint8_t> dst(10 * kPage + kPage, 0);
    auto* aligned = reinterpret_cast<uint8_t*>(
        (reinterpret_cast<uintptr_t>(dst.data()) + kPage - 1) & ~uintptr_t{kPage - 1});
    auto placed = PlaceUnit(element, first.vpage, 8, reinterpret_cast<uintptr_t>(aligned));
    INFO(placed.status());
    REQUIRE(placed.ok());
    REQUIRE(*placed == 8);
    for (uint64_t k = 0; k < 8; ++k) {
      uint64_t tag = 0;
      std::memcpy(&tag, aligned + k * kPage, 8);
      REQUIRE(tag == first.vpage + k);
      REQUIRE(aligned[k * kPage + kPage - 1] == uint8_t((first.vpage + k) * 7));
    }
    REQUIRE(aligned[8 * kPage] == 0);  // nothing past the unit
    // A unit past the region's end stops at its last page; one starting past it is refused.
    const uint64_t end = (vaddr >> 12) + 256;
    for (const auto& e : region->second) {
      if (e.vpage + e.pages != end) continue;
      ipc::Client& last = Element(*app, rack, e.element);
      auto tail = PlaceUnit(last, end - 2, 5, reinterpret_cast<uintptr_t>(aligned));
      REQUIRE(tail.ok());
      REQUIRE(*tail == 2);
      REQUIRE(absl::IsPermissionDenied(
          PlaceUnit(last, end, 1, reinterpret_cast<uintptr_t>(aligned)).status()));
    }
    // Bad units: empty, too long, a destination off a page boundary, one that wraps.
    for (auto [vpage, pages, to] : std::vector<std::tuple<uint64_t, uint32_t, uintptr_t>>{
             {first.vpage, 0, reinterpret_cast<uintptr_t>(aligned)},
             {first.vpage, kUnitPages + 1, reinterpret_cast<uintptr_t>(aligned)},
             {first.vpage, 1, reinterpret_cast<uintptr_t>(aligned) + 8},
             {first.vpage, 2, ~uintptr_t{0} & ~uintptr_t{kPage - 1}}}) {
      INFO("vpage " << vpage << " pages " << pages << " dst " << to);
      REQUIRE(absl::IsInvalidArgument(PlaceUnit(element, vpage, pages, to).status()));
    }
    // Destinations the element cannot write: unmapped here, and memory behind this process's
    // own userfaultfd, whose faults nobody serves (the element must not wait on them).
    REQUIRE(absl::IsAborted(PlaceUnit(element, first.vpage, 1, kPage).status()));
    void* trap =
        mmap(nullptr, 4 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(trap != MAP_FAILED);
    const int uffd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
    REQUIRE(uffd >= 0);
    uffdio_api api{UFFD_API, 0, 0};
    REQUIRE(ioctl(uffd, UFFDIO_API, &api) == 0);
    uffdio_register reg{};
    reg.range = {reinterpret_cast<uintptr_t>(trap), 4 * kPage};
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    REQUIRE(ioctl(uffd, UFFDIO_REGISTER, &reg) == 0);
    const absl::Status trapped =
        PlaceUnit(element, first.vpage, 4, reinterpret_cast<uintptr_t>(trap)).status();
    INFO(trapped);
    REQUIRE(absl::IsAborted(trapped));
    close(uffd);
    munmap(trap, 4 * kPage);
    auto page = ReadPage(element, first.vpage);  // served on, on the same connection
    REQUIRE(page.ok());
    REQUIRE((*page)[100] == uint8_t(first.vpage * 7));
  }
  SECTION("a write-back of the wrong size is refused and the page keeps its data") {
    ipc::Client& element = Element(*app, rack, first.element);
    for (size_t size : {size_t{0}, size_t{100}, size_t{kPage - 1}, size_t{kPage + 8}}) {
      INFO("size " << size);
      capnp::MallocMessageBuilder b;
      auto root = b.initRoot<proto::Message>();
      auto page = root.initPageData();
      page.setVpage(first.vpage);
      std::memset(page.initData(size).begin(), 0xAA, size);
      REQUIRE(absl::IsInvalidArgument(element.Call(b, root, Ignore)));
    }
    auto page = ReadPage(element, first.vpage);  // served on, on the same connection
    REQUIRE(page.ok());
    REQUIRE((*page)[100] == uint8_t(first.vpage * 7));
  }
  SECTION("mapping more than the rack holds fails cleanly and allocates nothing") {
    auto too_big = Map(*app, 40 << 20, proto::Placement::SPREAD);
    REQUIRE(absl::IsResourceExhausted(too_big.status()));
    auto fill = Map(*app, 31 << 20, proto::Placement::FILL);  // what is left
    REQUIRE(fill.ok());
    REQUIRE(WaitForPoolUse(rack, 32 << 20));
    REQUIRE(absl::IsResourceExhausted(Map(*app, kPage, proto::Placement::FILL).status()));
  }
  SECTION("unmapped pages are refused and their pool space is released") {
    ipc::SmallMessage m;
    auto root = m.Init();
    root.initUnmap().setVaddr(vaddr);
    REQUIRE(app->mmu.Call(m.builder(), root, Ignore).ok());
    REQUIRE(WaitForPoolUse(rack, 0));
    REQUIRE(absl::IsPermissionDenied(
        ReadPage(Element(*app, rack, first.element), first.vpage).status()));
    REQUIRE(absl::IsNotFound(app->mmu.Call(m.builder(), root, Ignore)));
  }
}

TEST_CASE(
    "A process that ends without leaving has its memory held for the grace period, then freed") {
  TestRack rack;
  // Long enough to see the memory held on a loaded machine; the test waits it out.
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M --grace-ms 4000") == 0);
  int mapped[2], go[2];
  REQUIRE(pipe(mapped) == 0);
  REQUIRE(pipe(go) == 0);
  const pid_t child = fork();
  if (child == 0) {
    auto other = JoinRack(rack);
    const bool ok = other.ok() && Map(*other, 4 << 20, proto::Placement::FILL).ok();
    char c = ok ? 'y' : 'n';
    (void)!write(mapped[1], &c, 1);
    (void)!read(go[0], &c, 1);
    _exit(ok ? 0 : 1);  // without a leave: as a crash
  }
  char c = 0;
  REQUIRE(read(mapped[0], &c, 1) == 1);
  REQUIRE(c == 'y');
  // The element reports the memory first: a release seen later is a real one.
  REQUIRE(WaitForPoolUse(rack, 4 << 20));
  REQUIRE(write(go[1], &c, 1) == 1);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WEXITSTATUS(status) == 0);
  bool held = false;
  for (int i = 0; i < 200 && !held; ++i) {
    const std::vector<ProcessRow> processes = rack.Processes();
    held = processes.size() == 1 && processes[0].dead && processes[0].mapped_bytes == 4 << 20;
    if (!held) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  REQUIRE(held);
  REQUIRE(PoolUse(rack) == 4 << 20);
  bool freed = false;  // once the grace period ended
  for (int i = 0; i < 3000 && !freed; ++i) {
    freed = PoolUse(rack) == 0;
    if (!freed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(freed);
  REQUIRE(rack.Processes().empty());
}

TEST_CASE("Remote-memory requests out of order get clear errors") {
  TestRack rack;
  REQUIRE(rack.Up("--compute 1 --memory 1 --pool-size 16M") == 0);
  auto mmu = ipc::Client::Connect(rack.Socket("mmu"));
  REQUIRE(mmu.ok());
  ipc::SmallMessage m;
  auto root = m.Init();
  root.initMap().setBytes(kPage);
  absl::Status s = mmu->Call(m.builder(), root, Ignore);
  REQUIRE(absl::IsFailedPrecondition(s));
  REQUIRE_THAT(std::string(s.message()), Catch::Contains("join"));
  auto app = JoinRack(rack);
  REQUIRE(app.ok());
  REQUIRE(absl::IsInvalidArgument(Map(*app, 0, proto::Placement::SPREAD).status()));
}

}  // namespace
}  // namespace disagg::testing
