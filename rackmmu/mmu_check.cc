// The Rack MMU's consistency check (`rackctl check`): its map against every memory element's
// page table. The dumps are requested in the same turn of the loop as the snapshot of the map
// is taken, and each element serves the Rack MMU's requests in order, so every dump reflects
// exactly the programming sent before it: the two agree unless something is broken.
#include <capnp/message.h>

#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "internal/logging.h"
#include "ipc/wire.h"
#include "mmu.h"

namespace disagg::rackmmu {
namespace {

// (process, vpage, pages, pool page): a maximal run, contiguous in both page spaces.
using Run = std::tuple<uint32_t, uint64_t, uint64_t, uint64_t>;

// Merges runs that continue each other, so that the same binding split differently on the
// two sides compares equal.
std::set<Run> Normalize(std::vector<Run> runs) {
  std::sort(runs.begin(), runs.end());
  std::set<Run> out;
  for (size_t i = 0; i < runs.size();) {
    auto [process, vpage, pages, pool] = runs[i];
    size_t j = i + 1;
    while (j < runs.size() && std::get<0>(runs[j]) == process &&
           std::get<1>(runs[j]) == vpage + pages && std::get<3>(runs[j]) == pool + pages) {
      pages += std::get<2>(runs[j++]);
    }
    out.insert({process, vpage, pages, pool});
    i = j;
  }
  return out;
}

std::string Describe(const std::string& element, const Run& run) {
  const auto& [process, vpage, pages, pool] = run;
  return absl::StrCat(element, ": process ", process, " [0x", absl::Hex(vpage << kPageShift), ", +",
                      pages, " pages) at pool page ", pool);
}

struct Check {
  uint64_t link_id = 0;
  uint64_t seq = 0;
  std::map<std::string, std::vector<Run>> expected;  // by element
  std::map<std::string, std::vector<Run>> found;
  std::vector<std::string> differences;
  uint32_t answered = 0;
  uint64_t extents = 0;
};

}  // namespace

absl::Status RackMmu::HandleCheck(ipc::Link& link, uint64_t seq) {
  auto check = std::make_shared<Check>();
  check->link_id = link.id();
  check->seq = seq;
  for (const auto& [vaddr, region] : memory_.regions()) {
    for (const ExtentRecord& e : region.extents) {
      if (!memory_.Current(e) || ElementLink(e.element) == nullptr) continue;  // died with it
      check->expected[e.element].push_back({region.owner, e.vpage, e.pages, e.pool_page});
      ++check->extents;
    }
  }
  auto batch = CallBatch::Make([this, check](const absl::Status&) {
    std::set<std::string> elements;
    for (const auto& [element, runs] : check->found) elements.insert(element);
    for (const std::string& element : elements) {
      const std::set<Run> want = Normalize(check->expected[element]);
      const std::set<Run> have = Normalize(check->found[element]);
      for (const Run& run : want) {
        if (!have.contains(run)) {
          check->differences.push_back(absl::StrCat(
              Describe(element, run), ": in the Rack MMU's map, not in the page table"));
        }
      }
      for (const Run& run : have) {
        if (!want.contains(run)) {
          check->differences.push_back(absl::StrCat(
              Describe(element, run), ": in the page table, not in the Rack MMU's map"));
        }
      }
    }
    auto app = links_.find(check->link_id);
    if (app == links_.end()) return;
    capnp::MallocMessageBuilder builder;
    auto reply = builder.initRoot<proto::Message>();
    reply.setSeq(check->seq);
    auto result = reply.initCheckResult();
    result.setExtents(check->extents);
    result.setElements(check->answered);
    auto list = result.initDifferences(check->differences.size());
    for (size_t i = 0; i < check->differences.size(); ++i) list.set(i, check->differences[i]);
    (void)app->second->Send(builder);
  });
  for (const auto& [name, record] : registry_.elements()) {
    if (record.kind != proto::ElementKind::MEMORY || record.link_id == 0) continue;
    batch->Expect();
    absl::Status sent = CallElement(
        name, [](proto::Message::Builder m) { m.setPageTableRequest(); },
        [check, batch, name](const absl::StatusOr<proto::Message::Reader>& reply) {
          if (!reply.ok() || !reply->isPageTable()) {
            check->differences.push_back(absl::StrCat(
                name, ": did not show its page table: ",
                reply.ok() ? "it answered oddly" : std::string(reply.status().message())));
          } else {
            ++check->answered;
            auto& runs = check->found[name];
            for (auto e : reply->getPageTable().getEntries()) {
              runs.push_back({e.getProcessId(), e.getVpage(), e.getPages(), e.getPoolPage()});
            }
          }
          batch->Answer(absl::OkStatus());
        });
    if (!sent.ok()) {
      check->differences.push_back(absl::StrCat(name, ": ", sent.message()));
      batch->Answer(absl::OkStatus());
    }
  }
  batch->Seal();
  return absl::OkStatus();
}

}  // namespace disagg::rackmmu
