#include "internal/page_unit.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <random>
#include <vector>

namespace disagg {
namespace {

TEST_CASE("PageHash tells a changed page from the one it was, the same in its vector form") {
  std::mt19937_64 random(7);
  std::vector<uint64_t> words(512 * 64);
  for (uint64_t& w : words) w = random();
  std::memset(words.data(), 0, 4096);  // a zero page among them
  auto page = [&](size_t i) { return reinterpret_cast<unsigned char*>(&words[i * 512]); };
  for (size_t i = 0; i < 64; ++i) {
    const uint64_t before = PageHash(page(i));
    REQUIRE(page_hash_internal::Scalar(page(i)) == before);
    if (page_hash_internal::HaveAvx2()) REQUIRE(page_hash_internal::Avx2(page(i)) == before);
    // Any one bit of any word, two words swapped, a word moved to its neighbour: all seen.
    const size_t word = random() % 512;
    const uint64_t bit = uint64_t{1} << (random() % 64);
    words[i * 512 + word] ^= bit;
    REQUIRE(PageHash(page(i)) != before);
    words[i * 512 + word] ^= bit;
    REQUIRE(PageHash(page(i)) == before);
    std::swap(words[i * 512 + word], words[i * 512 + (word + 9) % 512]);
    if (words[i * 512 + word] != words[i * 512 + (word + 9) % 512]) {
      REQUIRE(PageHash(page(i)) != before);
    }
  }
  // Distinct pages, distinct hashes.
  REQUIRE(PageHash(page(1)) != PageHash(page(2)));
}

TEST_CASE("MarkChanged marks exactly the pages that no longer match their hashes") {
  std::vector<uint64_t> words(512 * 16);
  for (size_t i = 0; i < words.size(); ++i) words[i] = i * 0x9E3779B97F4A7C15ull;
  std::vector<uint64_t> hashes;
  for (size_t p = 0; p < 16; ++p) hashes.push_back(PageHash(&words[p * 512]));
  std::vector<bool> changed(16, false);
  MarkChanged(words.data(), hashes.data(), 16, changed);
  REQUIRE(changed == std::vector<bool>(16, false));
  words[3 * 512 + 100] ^= 1;          // one bit of page 3
  words[9 * 512 + 511] = 0;           // the last word of page 9
  words[15 * 512] = words[15 * 512];  // rewritten with the same value: not a change
  MarkChanged(words.data(), hashes.data(), 16, changed);
  for (size_t p = 0; p < 16; ++p) {
    INFO("page " << p);
    REQUIRE(changed[p] == (p == 3 || p == 9));
  }
}

}  // namespace
}  // namespace disagg
