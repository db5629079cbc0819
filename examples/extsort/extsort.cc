// extsort: an out-of-core external sort over remote memory. It generates N 64-bit keys into
// a remote region at least 4x the process's local cache, sorts cache-sized runs in place,
// merges the runs into a second remote region, and verifies its own output (order, count
// and checksums). The data never fits in the local cache: every phase streams it through.
//
//   rackctl run --on cpu0 -- build/bin/extsort [MiB]    (default: 4x the cache quota)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <queue>
#include <string>
#include <vector>

#include "disagg/disagg.h"

namespace {

uint64_t SplitMix(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

struct Checksum {
  uint64_t count = 0, sum = 0, xored = 0;
  void Add(uint64_t key) {
    ++count;
    sum += key;
    xored ^= key * 0x2545F4914F6CDD1Dull;
  }
  bool operator==(const Checksum&) const = default;
};

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "extsort: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  auto rack = disagg::Rack::Join();
  if (!rack.ok()) return Fail(std::string(rack.status().message()));
  const uint64_t quota = (*rack)->cache_stats().quota_bytes;
  uint64_t bytes = 4 * quota;
  if (argc > 1) bytes = std::strtoull(argv[1], nullptr, 10) << 20;
  if (bytes < 4 * quota) {
    return Fail("the data must be at least 4x the cache quota (" + std::to_string(quota >> 10) +
                " KiB) to be out of core");
  }
  const uint64_t n = bytes / sizeof(uint64_t);
  auto input = (*rack)->Map(n * sizeof(uint64_t));
  auto output = (*rack)->Map(n * sizeof(uint64_t));
  if (!input.ok()) return Fail("map input: " + std::string(input.status().message()));
  if (!output.ok()) return Fail("map output: " + std::string(output.status().message()));
  uint64_t* in = input->as<uint64_t>();
  uint64_t* out = output->as<uint64_t>();

  // 1. Generate.
  auto t0 = std::chrono::steady_clock::now();
  Checksum generated;
  uint64_t state = 2026;
  for (uint64_t i = 0; i < n; ++i) {
    in[i] = SplitMix(state);
    generated.Add(in[i]);
  }
  const double generate_s = Seconds(t0);

  // 2. Runs: each half the cache, sorted in place in remote memory.
  t0 = std::chrono::steady_clock::now();
  const uint64_t run = std::max<uint64_t>(quota / 2 / sizeof(uint64_t), 512);
  std::vector<std::pair<uint64_t, uint64_t>> runs;  // [begin, end) indexes
  for (uint64_t begin = 0; begin < n; begin += run) {
    const uint64_t end = std::min(n, begin + run);
    std::sort(in + begin, in + end);
    runs.emplace_back(begin, end);
  }
  const double runs_s = Seconds(t0);

  // 3. Merge the runs into the output region.
  t0 = std::chrono::steady_clock::now();
  using Head = std::pair<uint64_t, size_t>;  // (key, run)
  std::priority_queue<Head, std::vector<Head>, std::greater<Head>> heads;
  std::vector<uint64_t> cursor(runs.size());
  for (size_t r = 0; r < runs.size(); ++r) {
    cursor[r] = runs[r].first;
    heads.emplace(in[cursor[r]], r);
  }
  for (uint64_t i = 0; i < n; ++i) {
    auto [key, r] = heads.top();
    heads.pop();
    out[i] = key;
    if (++cursor[r] < runs[r].second) heads.emplace(in[cursor[r]], r);
  }
  if (absl::Status s = (*rack)->Flush(out, n * sizeof(uint64_t)); !s.ok()) {
    return Fail("flush: " + std::string(s.message()));
  }
  const double merge_s = Seconds(t0);

  // 4. Verify: sorted, and the same multiset (count and checksums).
  t0 = std::chrono::steady_clock::now();
  Checksum sorted;
  uint64_t disorder = 0;
  for (uint64_t i = 0; i < n; ++i) {
    sorted.Add(out[i]);
    if (i > 0 && out[i - 1] > out[i]) ++disorder;
  }
  const double verify_s = Seconds(t0);
  const disagg::CacheStats stats = (*rack)->cache_stats();
  std::printf(
      "extsort: %llu keys (%llu MiB) in %zu runs through a %llu KiB cache (peak %llu KiB)\n",
      static_cast<unsigned long long>(n), static_cast<unsigned long long>(bytes >> 20), runs.size(),
      static_cast<unsigned long long>(quota >> 10),
      static_cast<unsigned long long>(stats.peak_cached_bytes >> 10));
  std::printf(
      "extsort: generate %.2fs, sort runs %.2fs, merge %.2fs, verify %.2fs; "
      "%llu pages fetched, %llu evicted, %llu written back\n",
      generate_s, runs_s, merge_s, verify_s, static_cast<unsigned long long>(stats.faults),
      static_cast<unsigned long long>(stats.evictions),
      static_cast<unsigned long long>(stats.writebacks));
  if (disorder != 0 || !(sorted == generated)) {
    return Fail("VERIFICATION FAILED: " + std::to_string(disorder) + " keys out of order; count " +
                std::to_string(sorted.count) + " of " + std::to_string(generated.count) +
                (sorted == generated ? "" : "; checksums differ"));
  }
  std::printf("extsort: verified: output sorted, same %llu keys\n",
              static_cast<unsigned long long>(n));
  return 0;
}
