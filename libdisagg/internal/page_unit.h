// Page units: runs of pages a memory element writes straight into an application's memory
// (PlaceUnit), and the page hash the application uses to tell whether a page placed that way
// has changed since it was hashed in staging. Header-only; thread-safe (pure functions).
//
// The hash is not cryptographic: it tells a page the application changed from the one it was
// given with a chance of a miss of about 2^-64 per changed page, not against a page crafted to
// collide (only the application itself could write one, into its own memory).
#ifndef DISAGG_INTERNAL_PAGE_UNIT_H_
#define DISAGG_INTERNAL_PAGE_UNIT_H_

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace disagg {

// The most pages one PlaceUnit carries: a 2 MiB huge page's worth.
inline constexpr size_t kUnitPages = 512;

// The runtime hashes pages of its own address space that other threads may write; the order
// between those writes and the hashing is kept by the kernel (write-protection faults), which
// ThreadSanitizer cannot see: the hashing is left uninstrumented.
#define DISAGG_PAGE_HASH_UNCHECKED __attribute__((no_sanitize("thread")))

namespace page_hash_internal {

inline constexpr uint64_t kKeys[8] = {
    0xBE4BA423396CFEB8ull, 0x1CAD21F72C81017Cull, 0xDB979083E96DD4DEull, 0x1F67B3B7A4A44072ull,
    0x78E5C0CC4EE679CBull, 0x2172FFCC7DD05A82ull, 0x8E2443F7744608B8ull, 0x4C263A81E69035E0ull};
inline constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;

// Eight lanes; each 64-byte stripe adds to lane j the product of the two halves of its word j
// xor a key, and word j^1 itself (so that a changed word always changes a lane's sum).
inline uint64_t Fold(const uint64_t acc[8]) {
  uint64_t h = 0x243F6A8885A308D3ull;
  for (int j = 0; j < 8; ++j) {
    h = (h ^ acc[j]) * kMul;  // a bijection of acc[j] given h: a changed lane changes h
    h ^= h >> 29;
  }
  return h;
}

DISAGG_PAGE_HASH_UNCHECKED inline uint64_t Scalar(const unsigned char* bytes) {
  uint64_t acc[8] = {};
  for (size_t i = 0; i < 4096; i += 64) {
    uint64_t w[8];
    std::memcpy(w, bytes + i, sizeof(w));
    for (int j = 0; j < 8; ++j) {
      const uint64_t keyed = w[j] ^ kKeys[j];
      acc[j] += (keyed & 0xFFFFFFFFull) * (keyed >> 32) + w[j ^ 1];
    }
  }
  return Fold(acc);
}

// The same sums, four lanes to a register.
__attribute__((target("avx2"))) DISAGG_PAGE_HASH_UNCHECKED inline uint64_t Avx2(
    const unsigned char* bytes) {
  const __m256i key0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kKeys));
  const __m256i key1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kKeys + 4));
  __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
  for (size_t i = 0; i < 4096; i += 64) {
    const __m256i d0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes + i));
    const __m256i d1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes + i + 32));
    const __m256i k0 = _mm256_xor_si256(d0, key0), k1 = _mm256_xor_si256(d1, key1);
    acc0 = _mm256_add_epi64(acc0, _mm256_mul_epu32(k0, _mm256_srli_epi64(k0, 32)));
    acc1 = _mm256_add_epi64(acc1, _mm256_mul_epu32(k1, _mm256_srli_epi64(k1, 32)));
    // Word j^1: the two words of each 128-bit half swapped.
    acc0 = _mm256_add_epi64(acc0, _mm256_shuffle_epi32(d0, _MM_SHUFFLE(1, 0, 3, 2)));
    acc1 = _mm256_add_epi64(acc1, _mm256_shuffle_epi32(d1, _MM_SHUFFLE(1, 0, 3, 2)));
  }
  uint64_t acc[8];
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc), acc0);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + 4), acc1);
  return Fold(acc);
}

inline bool HaveAvx2() {
  static const bool have = __builtin_cpu_supports("avx2");
  return have;
}

}  // namespace page_hash_internal

// A 64-bit hash of the 4096 bytes at `page`; the same on every machine (the vector form, where
// the CPU has it, computes the scalar form's sums).
DISAGG_PAGE_HASH_UNCHECKED inline uint64_t PageHash(const void* page) {
  const auto* bytes = static_cast<const unsigned char*>(page);
  return page_hash_internal::HaveAvx2() ? page_hash_internal::Avx2(bytes)
                                        : page_hash_internal::Scalar(bytes);
}

// Sets changed[k] for each of the `count` pages from `base` whose contents no longer hash to
// hashes[k] (leaves the others as they are).
DISAGG_PAGE_HASH_UNCHECKED inline void MarkChanged(const void* base, const uint64_t* hashes,
                                                   size_t count, std::vector<bool>& changed) {
  const auto* bytes = static_cast<const unsigned char*>(base);
  for (size_t k = 0; k < count; ++k) {
    if (PageHash(bytes + k * 4096) != hashes[k]) changed[k] = true;
  }
}

}  // namespace disagg

#endif  // DISAGG_INTERNAL_PAGE_UNIT_H_
