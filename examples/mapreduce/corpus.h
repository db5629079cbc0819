// The word-count corpus, cut into blocks that mappers take whole: either generated text
// (words of a fixed vocabulary drawn with Zipf's law, each block from its own seed, so any
// block can be produced alone and again) or a file (1 MiB blocks; a word belongs to the block
// it starts in). A word is a run of bytes other than space, tab, newline, CR, FF and VT, cut
// to 255 bytes; the same rule serves the mappers and the plain count.
#ifndef DISAGG_EXAMPLES_MAPREDUCE_CORPUS_H_
#define DISAGG_EXAMPLES_MAPREDUCE_CORPUS_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mapreduce {

constexpr size_t kMaxWord = 255;
using Counts = absl::flat_hash_map<std::string, uint64_t>;

class Corpus {
 public:
  // Generated text of about `bytes` bytes of intermediate data (a word costs its length
  // plus one) over a vocabulary of `vocabulary` words.
  static Corpus Generated(uint64_t seed, uint64_t bytes, uint32_t vocabulary = 50000);
  // The file at `path` (mapped read-only for the corpus's life).
  static absl::StatusOr<Corpus> File(const std::string& path);
  Corpus(Corpus&&) noexcept;
  Corpus& operator=(Corpus&&) = delete;
  ~Corpus();

  uint64_t blocks() const { return blocks_; }
  std::string Describe() const;

  // Calls f(absl::string_view word) for every word of block `block`, in order.
  template <typename F>
  void ForEachWord(uint64_t block, F&& f) const {
    if (is_file_) {
      ForEachFileWord(block, f);
      return;
    }
    uint64_t state = seed_ ^ (block + 1) * 0xD1B54A32D192ED03ull;
    for (uint32_t i = 0; i < kBlockWords; ++i) {
      const uint32_t rank = Draw(state);
      f(absl::string_view(&spelling_[offset_[rank]], offset_[rank + 1] - offset_[rank]));
    }
  }

  // The plain count of the whole corpus in this one process.
  Counts CountAll() const;

 private:
  static constexpr uint32_t kBlockWords = 65536;
  static constexpr uint64_t kFileBlock = 1 << 20;
  Corpus() = default;
  uint32_t Draw(uint64_t& state) const;  // a rank, by the alias method
  template <typename F>
  void ForEachFileWord(uint64_t block, F& f) const {
    const uint64_t begin = block * kFileBlock;
    const uint64_t end = std::min<uint64_t>(begin + kFileBlock, file_bytes_);
    uint64_t at = begin;
    if (at > 0 && !IsSpace(file_[at - 1])) {  // the word under way is the last block's
      while (at < file_bytes_ && !IsSpace(file_[at])) ++at;
    }
    while (true) {
      while (at < end && IsSpace(file_[at])) ++at;
      if (at >= end) return;
      const uint64_t start = at;
      while (at < file_bytes_ && !IsSpace(file_[at])) ++at;
      f(absl::string_view(file_ + start, std::min<uint64_t>(at - start, kMaxWord)));
    }
  }
  static bool IsSpace(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  }

  uint64_t blocks_ = 0;
  // Generated: the vocabulary's spellings back to back, and the alias table of its ranks.
  uint64_t seed_ = 0;
  std::string spelling_;
  std::vector<uint32_t> offset_;  // rank k is spelling_[offset_[k], offset_[k+1])
  std::vector<uint32_t> threshold_;
  std::vector<uint32_t> alias_;
  // A file.
  bool is_file_ = false;
  std::string path_;
  const char* file_ = nullptr;
  uint64_t file_bytes_ = 0;
};

// The partition (of `partitions`) a word goes to.
uint32_t PartitionOf(absl::string_view word, uint32_t partitions);

}  // namespace mapreduce

#endif  // DISAGG_EXAMPLES_MAPREDUCE_CORPUS_H_
