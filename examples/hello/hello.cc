// hello: the smallest libdisagg program. It joins the rack it was started in (`rackctl run`
// sets the environment), maps remote memory, writes a greeting into it with plain stores,
// flushes it to the memory elements, and reads it back.
//
//   rackctl --rack /tmp/disagg/rack run --on cpu0 -- build/bin/hello
#include <cstdio>
#include <cstring>

#include "disagg/disagg.h"

int main() {
  absl::StatusOr<std::unique_ptr<disagg::Rack>> rack = disagg::Rack::Join();
  if (!rack.ok()) {
    std::fprintf(stderr, "hello: %s\n", std::string(rack.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<disagg::Region> region = (*rack)->Map(1 << 20);
  if (!region.ok()) {
    std::fprintf(stderr, "hello: map: %s\n", std::string(region.status().message()).c_str());
    return 1;
  }
  char* text = region->as<char>();
  std::snprintf(text, 64, "hello from process %u", (*rack)->self());
  if (absl::Status s = (*rack)->Flush(text, 64); !s.ok()) {
    std::fprintf(stderr, "hello: flush: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  const disagg::CacheStats stats = (*rack)->cache_stats();
  std::printf("%s, at rack address %p (1 MiB region; %llu page(s) fetched, %llu written back)\n",
              text, region->data(), static_cast<unsigned long long>(stats.faults),
              static_cast<unsigned long long>(stats.writebacks));
  return 0;
}
