// mt19937 and the libstdc++ (GCC >= 11) distribution algorithms, written out so that the random
// matrices are identical on every compiler and standard library (see FDE-SPEC.md section 3a).
// <random>'s distributions are implementation-defined, so none of them is used.
#pragma once
#include <cmath>
#include <cstdint>

namespace muvera {

class Mt19937 {
 public:
  explicit Mt19937(uint32_t seed) {
    state_[0] = seed;
    for (int i = 1; i < kN; ++i)
      state_[i] = 1812433253u * (state_[i - 1] ^ (state_[i - 1] >> 30)) + static_cast<uint32_t>(i);
    index_ = kN;
  }

  uint32_t operator()() {
    if (index_ >= kN) twist();
    uint32_t y = state_[index_++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
  }

 private:
  static constexpr int kN = 624, kM = 397;
  void twist() {
    for (int i = 0; i < kN; ++i) {
      uint32_t y = (state_[i] & 0x80000000u) | (state_[(i + 1) % kN] & 0x7fffffffu);
      uint32_t v = state_[(i + kM) % kN] ^ (y >> 1);
      if (y & 1u) v ^= 0x9908b0dfu;
      state_[i] = v;
    }
    index_ = 0;
  }
  uint32_t state_[kN];
  int index_;
};

// generate_canonical<float, 24>: a single draw scaled by 2^-32, clamped below 1.
inline float canonical_float(Mt19937& g) {
  float c = static_cast<float>(g()) / 4294967296.0f;
  return c >= 1.0f ? std::nextafter(1.0f, 0.0f) : c;
}

// normal_distribution<float>(0, 1): Marsaglia polar; returns y*m and saves x*m for the next call.
class NormalFloat {
 public:
  float operator()(Mt19937& g) {
    if (has_saved_) {
      has_saved_ = false;
      return saved_;
    }
    float x, y, r2;
    do {
      x = 2.0f * canonical_float(g) - 1.0f;
      y = 2.0f * canonical_float(g) - 1.0f;
      float xx = x * x;  // separate statements: no fused multiply-add, as in the reference build
      float yy = y * y;
      r2 = xx + yy;
    } while (r2 > 1.0f || r2 == 0.0f);
    float num = -2.0f * logf(r2);
    float mult = sqrtf(num / r2);
    saved_ = x * mult;
    has_saved_ = true;
    return y * mult;
  }

 private:
  float saved_ = 0.0f;
  bool has_saved_ = false;
};

// uniform_int_distribution(0, n-1) on a 32-bit engine: Lemire's nearly-divisionless method.
inline uint32_t uniform_below(Mt19937& g, uint32_t n) {
  uint64_t product = static_cast<uint64_t>(g()) * n;
  uint32_t low = static_cast<uint32_t>(product);
  if (low < n) {
    uint32_t threshold = static_cast<uint32_t>(-n) % n;
    while (low < threshold) {
      product = static_cast<uint64_t>(g()) * n;
      low = static_cast<uint32_t>(product);
    }
  }
  return static_cast<uint32_t>(product >> 32);
}

// bernoulli_distribution(0.5): generate_canonical<double, 53> from two draws.
inline bool bernoulli_half(Mt19937& g) {
  double lo = static_cast<double>(g());
  double hi = static_cast<double>(g());
  double sum = lo + hi * 4294967296.0;
  double c = sum / 18446744073709551616.0;
  if (c >= 1.0) c = std::nextafter(1.0, 0.0);
  return c < 0.5;
}

}  // namespace muvera
