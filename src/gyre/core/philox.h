// Philox4x32-10 counter-based RNG (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC'11). A draw is a pure function of (key = seed, counter), so the CPU and CUDA backends produce
// the same numbers for the same (seed, stream, offset) whatever the batch or thread layout: this is
// what makes per-request seeded sampling independent of what else is being decoded.
#pragma once
#include <array>
#include <cstdint>

#if defined(__CUDACC__)
#define GYRE_HD __host__ __device__
#else
#define GYRE_HD
#endif

namespace gyre {

struct Philox4x32 {
  static constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  static constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;

  // Ten rounds over the 128-bit counter with the 64-bit key.
  GYRE_HD static void generate(const uint32_t ctr_in[4], const uint32_t key_in[2],
                               uint32_t out[4]) {
    uint32_t c0 = ctr_in[0], c1 = ctr_in[1], c2 = ctr_in[2], c3 = ctr_in[3];
    uint32_t k0 = key_in[0], k1 = key_in[1];
    for (int r = 0; r < 10; ++r) {
      uint64_t p0 = uint64_t(kM0) * c0, p1 = uint64_t(kM1) * c2;
      uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
      uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
      uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
      c0 = n0, c1 = n1, c2 = n2, c3 = n3;
      k0 += kW0, k1 += kW1;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
  }

  // Four uint32 for (seed, stream, offset): key = seed; counter = (offset lo, offset hi, stream lo,
  // hi).
  GYRE_HD static void draw(uint64_t seed, uint64_t stream, uint64_t offset, uint32_t out[4]) {
    uint32_t key[2] = {uint32_t(seed), uint32_t(seed >> 32)};
    uint32_t ctr[4] = {uint32_t(offset), uint32_t(offset >> 32), uint32_t(stream),
                       uint32_t(stream >> 32)};
    generate(ctr, key, out);
  }

  // Uniform float in [0, 1) from the top 24 bits (exactly representable, identical on every
  // device).
  GYRE_HD static float uniform(uint32_t bits) { return float(bits >> 8) * (1.0f / 16777216.0f); }
};

// A sequential stream convenience over Philox: next_u32()/next_uniform() walk the counter.
class PhiloxStream {
 public:
  explicit PhiloxStream(uint64_t seed, uint64_t stream = 0) : seed_(seed), stream_(stream) {}
  uint32_t next_u32() {
    if (idx_ == 4) {
      Philox4x32::draw(seed_, stream_, offset_++, buf_);
      idx_ = 0;
    }
    return buf_[idx_++];
  }
  float next_uniform() { return Philox4x32::uniform(next_u32()); }
  // Standard normal via Box-Muller on two uniforms.
  float next_normal();
  uint64_t offset() const { return offset_; }
  int index() const { return idx_; }
  // Restores a position saved from offset()/index() (checkpointed RNG state).
  void seek(uint64_t offset, int index);

 private:
  uint64_t seed_, stream_, offset_ = 0;
  uint32_t buf_[4] = {0, 0, 0, 0};
  int idx_ = 4;
};

}  // namespace gyre
