// SPDX-License-Identifier: MIT
// The Llama family's ops (rms_norm, rotary, swiglu, the grouped-query attention input and repeat_heads) on the GPU
// against the CPU kernels on random inputs, through the public op API on Tensor<T, Cuda>, forward and backward:
// max |gpu - cpu| / (1 + |cpu|) within 1e-5 in float and 1e-12 in double.
#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <type_traits>

#include "cuda/cuda_test_util.hpp"
#include "prefixtune/cuda.cuh"
#include "prefixtune/ops/gqa.hpp"
#include "prefixtune/ops/rms_norm.hpp"
#include "prefixtune/ops/rotary.hpp"
#include "prefixtune/ops/swiglu.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::dev;
using test::diff;
using test::random_tensor;

namespace {

template <class T>
constexpr double kTol = std::is_same_v<T, float> ? 1e-5 : 1e-12;

}  // namespace

TEST_CASE_TEMPLATE("CUDA rms_norm equals the CPU kernels, forward (also in place) and backward", T, float, double) {
  Rng rng(21);
  // Rows of one element, a row shorter than a warp, odd widths, and a row wider than a block.
  for (const std::array<std::int64_t, 2> rc :
       {std::array<std::int64_t, 2>{1, 1}, std::array<std::int64_t, 2>{3, 5}, std::array<std::int64_t, 2>{70, 300},
        std::array<std::int64_t, 2>{4, 1031}}) {
    const std::int64_t rows = rc[0], C = rc[1];
    INFO("rows=", rows, " C=", C);
    const auto x = random_tensor<T>({rows, C}, rng, -2, 2), gamma = random_tensor<T>({C}, rng, 0.5, 1.5);
    Tensor<T> y({rows, C}), rstd({rows});
    Tensor<T, Cuda> dy({rows, C}), drstd({rows});
    rms_norm_forward(x, gamma, 1e-6, y, rstd);
    rms_norm_forward(dev(x), dev(gamma), 1e-6, dy, drstd);
    CHECK(diff(dy, y) < kTol<T>);
    CHECK(diff(drstd, rstd) < kTol<T>);
    auto same = dev(x);  // in place, without saving rstd
    Tensor<T, Cuda> none;
    rms_norm_forward(same, dev(gamma), 1e-6, same, none);
    CHECK(diff(same, y) < kTol<T>);

    const auto g = random_tensor<T>({rows, C}, rng);
    auto dx = random_tensor<T>({rows, C}, rng), dgamma = random_tensor<T>({C}, rng);  // the gradients accumulate
    auto ddx = dev(dx), ddgamma = dev(dgamma);
    rms_norm_backward(g, x, gamma, rstd, dx, dgamma);
    rms_norm_backward(dev(g), dev(x), dev(gamma), drstd, ddx, ddgamma);
    CHECK(diff(ddx, dx) < kTol<T>);
    CHECK(diff(ddgamma, dgamma) < kTol<T>);
  }
}

TEST_CASE_TEMPLATE("CUDA rotary and swiglu equal the CPU kernels, forward and backward", T, float, double) {
  Rng rng(22);
  for (const std::array<std::int64_t, 3> c :
       {std::array<std::int64_t, 3>{1, 1, 2}, std::array<std::int64_t, 3>{7, 3, 8},
        std::array<std::int64_t, 3>{33, 5, 70}}) {
    const std::int64_t N = c[0], H = c[1], HD = c[2];
    INFO("N=", N, " H=", H, " HD=", HD);
    const auto x = random_tensor<T>({N, H * HD}, rng, -2, 2), cos = random_tensor<T>({N, HD}, rng),
               sin = random_tensor<T>({N, HD}, rng);
    Tensor<T> y(x.shape());
    Tensor<T, Cuda> dy(x.shape());
    rotary_forward(x, cos, sin, H, y);
    rotary_forward(dev(x), dev(cos), dev(sin), H, dy);
    CHECK(diff(dy, y) < kTol<T>);
    auto same = dev(x);  // in place
    rotary_forward(same, dev(cos), dev(sin), H, same);
    CHECK(diff(same, y) < kTol<T>);
    const auto g = random_tensor<T>(x.shape(), rng);
    auto dx = random_tensor<T>(x.shape(), rng);
    auto ddx = dev(dx);
    rotary_backward(g, cos, sin, H, dx);
    rotary_backward(dev(g), dev(cos), dev(sin), H, ddx);
    CHECK(diff(ddx, dx) < kTol<T>);
  }

  const Shape s{3, 37, 129};  // not a multiple of a block
  const auto gate = random_tensor<T>(s, rng, -8, 8), up = random_tensor<T>(s, rng), g = random_tensor<T>(s, rng);
  Tensor<T> out(s);
  Tensor<T, Cuda> dout(s);
  swiglu_forward(gate, up, out);
  swiglu_forward(dev(gate), dev(up), dout);
  CHECK(diff(dout, out) < kTol<T>);
  for (int which = 0; which < 3; ++which) {  // both gradients, only dgate, only dup
    INFO("which=", which);
    Tensor<T> dgate, dup;
    if (which != 2) dgate = random_tensor<T>(s, rng);
    if (which != 1) dup = random_tensor<T>(s, rng);
    auto ddgate = dev(dgate), ddup = dev(dup);
    swiglu_backward(g, gate, up, dgate, dup);
    swiglu_backward(dev(g), dev(gate), dev(up), ddgate, ddup);
    if (dgate.defined()) CHECK(diff(ddgate, dgate) < kTol<T>);
    if (dup.defined()) CHECK(diff(ddup, dup) < kTol<T>);
  }
}

TEST_CASE_TEMPLATE("CUDA grouped-query attention input equals the CPU kernels, forward and backward", T, float,
                   double) {
  Rng rng(23);
  struct Case {
    std::int64_t NH, KVH, HD;
  };
  // Groups of 3, no grouping (MHA), one K/V head; HD = 70 gives lanes more than one channel pair.
  for (const Case c : {Case{6, 2, 8}, Case{4, 4, 6}, Case{8, 1, 70}})
    for (bool normed : {false, true})
      for (bool expand : {true, false}) {
        INFO("NH=", c.NH, " KVH=", c.KVH, " HD=", c.HD, " norm=", normed, " expand=", expand);
        const std::int64_t B = 2, Tn = 5, N = B * Tn;
        GqaHeads<T, Cpu> h{c.NH, c.KVH, c.HD, {}, {}, 1e-6};
        if (normed) h.q_norm = random_tensor<T>({c.HD}, rng, 0.5, 1.5), h.k_norm = random_tensor<T>({c.HD}, rng);
        const GqaHeads<T, Cuda> dh{c.NH, c.KVH, c.HD, dev(h.q_norm), dev(h.k_norm), h.eps};
        const detail::GqaDims d{N, c.NH, c.KVH, c.HD, h.eps, expand};
        const auto x = random_tensor<T>({B, Tn, d.in_width()}, rng, -2, 2), cos = random_tensor<T>({N, c.HD}, rng),
                   sin = random_tensor<T>({N, c.HD}, rng);
        const auto dcos = dev(cos), dsin = dev(sin), dx_in = dev(x);
        Tensor<T> y({B, Tn, d.out_width()});
        Tensor<T, Cuda> dy(y.shape());
        gqa_qkv_forward(x, cos, sin, h, expand, y);
        gqa_qkv_forward(dx_in, dcos, dsin, dh, expand, dy);
        CHECK(diff(dy, y) < kTol<T>);

        const auto g = random_tensor<T>(y.shape(), rng);
        auto dx = random_tensor<T>(x.shape(), rng);  // the gradient accumulates
        auto ddx = dev(dx);
        gqa_qkv_backward(g, x, cos, sin, h, expand, dx);
        gqa_qkv_backward(dev(g), dx_in, dcos, dsin, dh, expand, ddx);
        CHECK(diff(ddx, dx) < kTol<T>);
      }
}

TEST_CASE_TEMPLATE("CUDA repeat_heads equals the CPU kernel, forward and inverse", T, float, double) {
  Rng rng(24);
  for (std::int64_t group : {1, 3, 4}) {
    INFO("group=", group);
    const auto x = random_tensor<T>({2, 3, 5, 7}, rng);  // (B, KVH, P, HD)
    Tensor<T> y({2, 3 * group, 5, 7});
    Tensor<T, Cuda> dy(y.shape());
    repeat_heads_forward(x, group, y);
    repeat_heads_forward(dev(x), group, dy);
    CHECK(dy.to_vector() == y.to_vector());  // copies: bit for bit
    const auto g = random_tensor<T>(y.shape(), rng);
    auto dx = random_tensor<T>(x.shape(), rng);
    auto ddx = dev(dx);
    repeat_heads_backward(g, group, dx);
    repeat_heads_backward(dev(g), group, ddx);
    CHECK(diff(ddx, dx) < kTol<T>);
  }
}
