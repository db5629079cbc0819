// mapreduce: word count as a MapReduce over a rack, with the two shuffles of the paper's
// Figure 3 side by side, and a straggler whose half-done work is adopted, not redone.
//
// The orchestrator (this program, under `rackctl run`) starts M mappers and R reducers (this
// program again, --role=worker) spread over the rack's compute elements. Mappers write their
// partitions into remote memory, committing their progress after each block of input through
// a RedoLog. Mapper 0 is slowed down; when the others are done, the orchestrator steals its
// state and committed output, recovers its log, and grants both to a fresh mapper that
// resumes at the first block not done. Then two shuffles move the same intermediate data:
//   copy:  the mapper reads each partition from remote memory and sends it over TCP; the
//          reducer stores it into its own remote memory;
//   grant: the mapper grants each partition's chunks to the reducer: no byte is copied.
// Reducers count each time, and both counts are checked against a plain count of the corpus
// in this one process. The last line is JSON (see the README).
//
//   scripts/mapreduce [--intermediate 1G] [--mappers 4] [--reducers 2] [--input FILE]
//                     [--seed N] [--chunk 8M] [--no-straggler] [--slow-us 5000]
#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_split.h"
#include "disagg/disagg.h"
#include "mapper_state.h"
#include "orchestrator.h"
#include "worker.h"

namespace {

int Usage(const std::string& why) {
  std::fprintf(stderr,
               "mapreduce: %s\n"
               "usage: rackctl run --on cpuN -- mapreduce [--intermediate SIZE] [--mappers M]\n"
               "         [--reducers R] [--input FILE] [--seed N] [--chunk SIZE] [--vocabulary N]\n"
               "         [--no-straggler] [--slow-us N] [--rackctl PATH] [--elements cpu0,cpu1]\n",
               why.c_str());
  return 2;
}

// "64M", "1G", "4096": bytes, or 0 if it is not a size.
uint64_t ParseSize(const std::string& s) {
  char* end = nullptr;
  const uint64_t n = std::strtoull(s.c_str(), &end, 10);
  if (end == s.c_str()) return 0;
  const std::string unit = end;
  if (unit.empty()) return n;
  if (unit == "K" || unit == "KiB") return n << 10;
  if (unit == "M" || unit == "MiB") return n << 20;
  if (unit == "G" || unit == "GiB") return n << 30;
  return 0;
}

bool ParseCount(const std::string& s, uint64_t lo, uint64_t hi, uint64_t* out) {
  char* end = nullptr;
  const uint64_t n = std::strtoull(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || n < lo || n > hi) return false;
  *out = n;
  return true;
}

// The compute elements of the rack: cpu*.pid in its pid directory.
std::vector<std::string> ComputeElements(const std::string& rack) {
  std::vector<std::string> out;
  if (DIR* d = opendir((rack + "/pids").c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string name = e->d_name;
      if (name.rfind("cpu", 0) == 0 && name.size() > 4 &&
          name.compare(name.size() - 4, 4, ".pid") == 0) {
        out.push_back(name.substr(0, name.size() - 4));
      }
    }
    closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string Dir(const std::string& path) { return path.substr(0, path.rfind('/')); }

}  // namespace

int main(int argc, char** argv) {
  mapreduce::Options o;
  bool worker = false;
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return Usage("cannot find this program's path");
  o.self.assign(self, n);
  o.rackctl = Dir(o.self) + "/rackctl";
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i], value;
    if (const size_t eq = flag.find('='); eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag.resize(eq);
    } else if (flag != "--no-straggler" && i + 1 < argc) {
      value = argv[++i];
    }
    uint64_t v = 0;
    if (flag == "--role") {
      if (value != "worker" && value != "orchestrator")
        return Usage("--role is worker or orchestrator");
      worker = value == "worker";
    } else if (flag == "--mappers" && ParseCount(value, 1, 64, &v)) {
      o.mappers = static_cast<uint32_t>(v);
    } else if (flag == "--reducers" && ParseCount(value, 1, mapreduce::kMaxPartitions, &v)) {
      o.reducers = static_cast<uint32_t>(v);
    } else if (flag == "--intermediate" && (v = ParseSize(value)) != 0) {
      o.intermediate = v;
    } else if (flag == "--chunk" && (v = ParseSize(value)) >= (2 << 20) && v % 4096 == 0) {
      o.chunk = v;
    } else if (flag == "--seed" && ParseCount(value, 0, UINT64_MAX, &v)) {
      o.seed = v;
    } else if (flag == "--vocabulary" && ParseCount(value, 1, 10000000, &v)) {
      o.vocabulary = static_cast<uint32_t>(v);
    } else if (flag == "--slow-us" && ParseCount(value, 0, 10000000, &v)) {
      o.slow_us = v;
    } else if (flag == "--no-straggler") {
      o.straggler = false;
    } else if (flag == "--input" && !value.empty()) {
      o.input = value;
    } else if (flag == "--rackctl" && !value.empty()) {
      o.rackctl = value;
    } else if (flag == "--elements" && !value.empty()) {
      o.elements = absl::StrSplit(value, ',');
    } else {
      return Usage("bad flag or value: " + flag + (value.empty() ? "" : " " + value) +
                   " (sizes like 64M or 1G; --chunk at least 2M, a multiple of 4K)");
    }
  }
  auto joined = disagg::Rack::Join();
  if (!joined.ok()) {
    std::fprintf(stderr, "mapreduce: %s\n", std::string(joined.status().message()).c_str());
    return 1;
  }
  if (worker) return mapreduce::RunWorker(**joined);
  if (o.elements.empty()) o.elements = ComputeElements(std::getenv("DISAGG_RACK") ?: "");
  if (o.elements.empty()) return Usage("no compute elements found: name them with --elements");
  if (o.straggler && o.mappers < 2)
    return Usage("a straggler needs at least 2 mappers (or --no-straggler)");
  if (access(o.rackctl.c_str(), X_OK) != 0)
    return Usage("no rackctl at " + o.rackctl + ": use --rackctl");
  return mapreduce::RunOrchestrator(**joined, o);
}
