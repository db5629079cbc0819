// A user's application against an installed libdisagg: joins the rack it is run on, maps
// remote memory, writes, flushes, unmaps, and says what it saw.
#include <disagg/disagg.h>

#include <cstdio>
#include <cstring>

int main() {
  auto rack = disagg::Rack::Join();
  if (!rack.ok()) {
    std::fprintf(stderr, "app: %s\n", std::string(rack.status().message()).c_str());
    return 1;
  }
  const size_t bytes = 4 << 20;
  auto region = (*rack)->Map(bytes);
  if (!region.ok()) return 2;
  auto* words = region->as<unsigned long>();
  for (size_t i = 0; i < bytes / sizeof(*words); ++i) words[i] = i * 2654435761u;
  if (!(*rack)->Flush(words, bytes).ok()) return 3;
  size_t wrong = 0;
  for (size_t i = 0; i < bytes / sizeof(*words); ++i) wrong += words[i] != i * 2654435761u;
  if (!(*rack)->Unmap(words).ok()) return 4;
  std::printf("app: process %u wrote, flushed and read back %zu bytes, %zu wrong\n",
              (*rack)->self(), bytes, wrong);
  return wrong == 0 ? 0 : 5;
}
