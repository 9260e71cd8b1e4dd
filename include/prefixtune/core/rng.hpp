// SPDX-License-Identifier: MIT
// Rng: a deterministic, counter-based random generator (Philox-4x32-10), identical on every platform and
// usable from device code, with uniform and normal draws and tensor fills.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "prefixtune/core/macros.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune {

namespace detail {

/// One Philox-4x32-10 block: 4 random 32-bit words for (key, counter). Pure function, so a kernel can compute
/// element i's randomness from (seed, i) with no shared state.
PREFIXTUNE_HOST_DEVICE inline void philox4x32(std::uint64_t key, std::uint64_t ctr_lo, std::uint64_t ctr_hi,
                                              std::uint32_t out[4]) {
  std::uint32_t c0 = static_cast<std::uint32_t>(ctr_lo), c1 = static_cast<std::uint32_t>(ctr_lo >> 32);
  std::uint32_t c2 = static_cast<std::uint32_t>(ctr_hi), c3 = static_cast<std::uint32_t>(ctr_hi >> 32);
  std::uint32_t k0 = static_cast<std::uint32_t>(key), k1 = static_cast<std::uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t p0 = std::uint64_t{0xD2511F53u} * c0;
    const std::uint64_t p1 = std::uint64_t{0xCD9E8D57u} * c2;
    const std::uint32_t hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
    const std::uint32_t hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/// Maps 32 random bits to a float in [0, 1) (24 significant bits).
PREFIXTUNE_HOST_DEVICE inline float u32_to_unit_float(std::uint32_t x) {
  return static_cast<float>(x >> 8) * (1.0f / 16777216.0f);
}

}  // namespace detail

/// A seeded stream of random numbers. Two Rngs with the same (seed, stream) produce the same sequence on
/// every machine; state() / set_state() let a training checkpoint resume the stream exactly.
class Rng {
 public:
  struct State {
    std::uint64_t seed = 0, stream = 0, counter = 0;
    std::uint32_t index = 4;
    double spare = 0.0;  // the pending second value of a Box-Muller pair
    bool has_spare = false;
  };

  explicit Rng(std::uint64_t seed = 0, std::uint64_t stream = 0) { state_.seed = seed, state_.stream = stream; }

  std::uint32_t next_u32() {
    if (state_.index >= 4) {
      detail::philox4x32(state_.seed, state_.counter++, state_.stream, block_);
      state_.index = 0;
    }
    return block_[state_.index++];
  }
  std::uint64_t next_u64() {
    const std::uint64_t hi = next_u32();
    return (hi << 32) | next_u32();
  }
  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  /// Integer uniform in [0, n), unbiased (rejection sampling).
  std::uint64_t below(std::uint64_t n) {
    PREFIXTUNE_CHECK(n > 0, "Rng::below(0)");
    const std::uint64_t limit = ~std::uint64_t{0} - (~std::uint64_t{0} % n);
    std::uint64_t x;
    do {
      x = next_u64();
    } while (x >= limit);
    return x % n;
  }
  /// Normal draw (Box-Muller; the second value of each pair is kept for the next call).
  double normal(double mean = 0.0, double stddev = 1.0) {
    if (state_.has_spare) {
      state_.has_spare = false;
      return mean + stddev * state_.spare;
    }
    double u1;
    do {
      u1 = uniform();
    } while (u1 <= 0.0);
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double theta = 6.283185307179586476925 * u2;
    state_.spare = r * std::sin(theta);
    state_.has_spare = true;
    return mean + stddev * r * std::cos(theta);
  }

  /// The whole stream position; set_state(state()) continues exactly where this Rng is.
  State state() const { return state_; }
  void set_state(const State& s) {
    state_ = s;
    if (state_.index < 4) detail::philox4x32(state_.seed, state_.counter - 1, state_.stream, block_);
  }

 private:
  State state_;
  std::uint32_t block_[4] = {0, 0, 0, 0};
};

/// Fills t with N(mean, stddev) draws, generated on the host in row-major order (any device).
template <class T, class Device>
void fill_normal(Tensor<T, Device>& t, Rng& rng, double mean = 0.0, double stddev = 1.0) {
  std::vector<T> v(static_cast<std::size_t>(t.numel()));
  for (auto& x : v) x = static_cast<T>(rng.normal(mean, stddev));
  t.copy_from(Tensor<T, Cpu>::from_vector(t.shape(), v));
}

/// Fills t with U[lo, hi) draws, generated on the host in row-major order (any device).
template <class T, class Device>
void fill_uniform(Tensor<T, Device>& t, Rng& rng, double lo = 0.0, double hi = 1.0) {
  std::vector<T> v(static_cast<std::size_t>(t.numel()));
  for (auto& x : v) x = static_cast<T>(rng.uniform(lo, hi));
  t.copy_from(Tensor<T, Cpu>::from_vector(t.shape(), v));
}

}  // namespace prefixtune
