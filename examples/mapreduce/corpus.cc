#include "corpus.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>

#include "absl/strings/str_format.h"

namespace mapreduce {
namespace {

uint64_t SplitMix(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

Corpus Corpus::Generated(uint64_t seed, uint64_t bytes, uint32_t vocabulary) {
  Corpus c;
  c.seed_ = seed * 0x9E3779B97F4A7C15ull + 1;
  // The spellings: 2 to 10 letters, from the rank.
  c.offset_.reserve(vocabulary + 1);
  for (uint32_t k = 0; k < vocabulary; ++k) {
    uint64_t h = k + 0x51ED2701;
    const uint64_t shape = SplitMix(h);
    const uint64_t letters = SplitMix(h);
    c.offset_.push_back(static_cast<uint32_t>(c.spelling_.size()));
    const int len = 2 + static_cast<int>(shape % 9);
    for (int i = 0; i < len; ++i)
      c.spelling_.push_back(static_cast<char>('a' + (letters >> (5 * i)) % 26));
  }
  c.offset_.push_back(static_cast<uint32_t>(c.spelling_.size()));
  // Zipf's law (s = 1) as an alias table (Vose): one draw and one compare per word.
  std::vector<double> p(vocabulary);
  double sum = 0;
  for (uint32_t k = 0; k < vocabulary; ++k) sum += p[k] = 1.0 / (k + 1);
  double bytes_per_word = 0;
  for (uint32_t k = 0; k < vocabulary; ++k) {
    p[k] /= sum;
    bytes_per_word += p[k] * (c.offset_[k + 1] - c.offset_[k] + 1);
    p[k] *= vocabulary;
  }
  c.threshold_.assign(vocabulary, UINT32_MAX);
  c.alias_.resize(vocabulary);
  for (uint32_t k = 0; k < vocabulary; ++k) c.alias_[k] = k;
  std::vector<uint32_t> small, large;
  for (uint32_t k = 0; k < vocabulary; ++k) (p[k] < 1.0 ? small : large).push_back(k);
  while (!small.empty() && !large.empty()) {
    const uint32_t s = small.back(), l = large.back();
    small.pop_back();
    c.threshold_[s] = static_cast<uint32_t>(p[s] * 4294967296.0);
    c.alias_[s] = l;
    p[l] -= 1.0 - p[s];
    if (p[l] < 1.0) {
      large.pop_back();
      small.push_back(l);
    }
  }
  const double per_block = bytes_per_word * kBlockWords;
  c.blocks_ = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(bytes / per_block)));
  return c;
}

uint32_t Corpus::Draw(uint64_t& state) const {
  const uint64_t r = SplitMix(state);
  const auto k = static_cast<uint32_t>(((r >> 32) * threshold_.size()) >> 32);
  return static_cast<uint32_t>(r) < threshold_[k] ? k : alias_[k];
}

absl::StatusOr<Corpus> Corpus::File(const std::string& path) {
  Corpus c;
  c.is_file_ = true;
  c.path_ = path;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    const int err = errno;
    if (fd >= 0) close(fd);
    return absl::NotFoundError(absl::StrFormat("cannot read %s: %s", path, strerror(err)));
  }
  c.file_bytes_ = static_cast<uint64_t>(st.st_size);
  if (c.file_bytes_ > 0) {
    void* data = mmap(nullptr, c.file_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data == MAP_FAILED) {
      const int err = errno;
      close(fd);
      return absl::InvalidArgumentError(absl::StrFormat("cannot map %s: %s", path, strerror(err)));
    }
    c.file_ = static_cast<const char*>(data);
  }
  close(fd);
  c.blocks_ = (c.file_bytes_ + kFileBlock - 1) / kFileBlock;
  return c;
}

Corpus::Corpus(Corpus&& other) noexcept
    : blocks_(other.blocks_),
      seed_(other.seed_),
      spelling_(std::move(other.spelling_)),
      offset_(std::move(other.offset_)),
      threshold_(std::move(other.threshold_)),
      alias_(std::move(other.alias_)),
      is_file_(other.is_file_),
      path_(std::move(other.path_)),
      file_(other.file_),
      file_bytes_(other.file_bytes_) {
  other.file_ = nullptr;
  other.file_bytes_ = 0;
}

Corpus::~Corpus() {
  if (file_ != nullptr) munmap(const_cast<char*>(file_), file_bytes_);
}

std::string Corpus::Describe() const {
  if (is_file_)
    return absl::StrFormat("the file %s (%d bytes, %d blocks)", path_, file_bytes_, blocks_);
  return absl::StrFormat("generated Zipf text (%d words, %d blocks of %d words)", threshold_.size(),
                         blocks_, kBlockWords);
}

Counts Corpus::CountAll() const {
  Counts counts;
  for (uint64_t b = 0; b < blocks_; ++b) {
    ForEachWord(b, [&](absl::string_view w) { ++counts[w]; });
  }
  return counts;
}

uint32_t PartitionOf(absl::string_view word, uint32_t partitions) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (char c : word) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001B3ull;
  return static_cast<uint32_t>((h ^ (h >> 32)) % partitions);
}

}  // namespace mapreduce
