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

}  // namespace
}  // namespace disagg
