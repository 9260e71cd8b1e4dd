// SPDX-License-Identifier: MIT
// The differentiable ops the Llama family adds to the autograd: rms_norm, rotary (rotate-half position
// embeddings with given cos / sin tables), swiglu (silu(gate) * up), gqa_qkv (the grouped-query attention input)
// and repeat_heads (a prefix's K/V heads for their query heads). Each records one closure, as in functions.hpp;
// frozen Tensor arguments get no gradient.
#pragma once

#include <algorithm>
#include <cstdint>

#include "prefixtune/autograd/functions.hpp"
#include "prefixtune/ops/gqa.hpp"
#include "prefixtune/ops/rms_norm.hpp"
#include "prefixtune/ops/rotary.hpp"
#include "prefixtune/ops/swiglu.hpp"

namespace prefixtune {

/// RMS normalization over the last axis: x (..., C), gamma (C).
template <class X, class G>
detail::var_t<X> rms_norm(detail::tape_t<X>& tape, const X& x, const G& gamma, detail::value_t<X> eps) {
  static_assert(detail::same_kind_v<X, G>, "rms_norm: x and gamma must share element type and device");
  using T = detail::value_t<X>;
  using D = detail::device_t<X>;
  const Tensor<T, D> xv = detail::value_of(x), gv = detail::value_of(gamma);
  PREFIXTUNE_CHECK(xv.defined() && xv.rank() >= 1, "rms_norm: undefined or rank-0 input");
  Tensor<T, D> out(xv.shape());
  const bool rec = detail::should_record(x, gamma);
  Tensor<T, D> rstd;
  if (rec) rstd = Tensor<T, D>(Shape{xv.numel() / std::max<std::int64_t>(1, xv.size(-1))});
  rms_norm_forward(xv, gv, eps, out, rstd);
  Var<T, D> y(out, rec, "rms_norm");
  if (rec) {
    tape.record([y, x, gamma, xv, gv, rstd] {
      if (!y.grad().defined()) return;
      Tensor<T, D> dx = detail::grad_of(x), dg = detail::grad_of(gamma);
      rms_norm_backward(y.grad(), xv, gv, rstd, dx, dg);
    });
  }
  return y;
}

/// Every head of x (..., heads * HD) rotated by its token's angles (cos / sin (N, HD) from rope_tables).
template <class X, class T = detail::value_t<X>, class D = detail::device_t<X>>
detail::var_t<X> rotary(detail::tape_t<X>& tape, const X& x, const Tensor<T, D>& cos, const Tensor<T, D>& sin,
                        std::int64_t heads) {
  return detail::unary_op(
      tape, x, "rotary", [&](const auto& in, auto& out) { rotary_forward(in, cos, sin, heads, out); },
      [cos, sin, heads](const auto& dy, const auto&, const auto&, auto& dx) {
        rotary_backward(dy, cos, sin, heads, dx);
      });
}

/// silu(gate) * up, element-wise.
template <class G, class U>
detail::var_t<G> swiglu(detail::tape_t<G>& tape, const G& gate, const U& up) {
  static_assert(detail::same_kind_v<G, U>, "swiglu: gate and up must share element type and device");
  using T = detail::value_t<G>;
  using D = detail::device_t<G>;
  const Tensor<T, D> gv = detail::value_of(gate), uv = detail::value_of(up);
  PREFIXTUNE_CHECK(gv.defined() && uv.defined(), "swiglu: undefined argument");
  Tensor<T, D> out(gv.shape());
  swiglu_forward(gv, uv, out);
  const bool rec = detail::should_record(gate, up);
  Var<T, D> y(out, rec, "swiglu");
  if (rec) {
    tape.record([y, gate, up, gv, uv] {
      if (!y.grad().defined()) return;
      Tensor<T, D> dg = detail::grad_of(gate), du = detail::grad_of(up);
      swiglu_backward(y.grad(), gv, uv, dg, du);
    });
  }
  return y;
}

/// The attention input of a fused q|k|v projection x (B, T, (NH + 2 KVH) HD): per-head norm (when heads has
/// norm weights, frozen), rotation by cos / sin (B*T, HD), and with expand the K/V heads repeated for their query
/// heads: (B, T, 3 NH HD), what attention() reads with NH heads (without, x's layout: the keys as a cache holds
/// them). Gradients flow to x.
template <class X, class T = detail::value_t<X>, class D = detail::device_t<X>>
detail::var_t<X> gqa_qkv(detail::tape_t<X>& tape, const X& x, const Tensor<T, D>& cos, const Tensor<T, D>& sin,
                         const GqaHeads<T, D>& heads, bool expand = true) {
  const Tensor<T, D> xv = detail::value_of(x);
  const detail::GqaDims d = detail::gqa_dims("gqa_qkv", xv, cos, sin, heads, expand);  // every argument checked
  Tensor<T, D> out(xv.shape().with(xv.rank() - 1, d.out_width()));
  gqa_qkv_forward(xv, cos, sin, heads, expand, out);
  const bool rec = detail::should_record(x);
  Var<T, D> y(out, rec, "gqa_qkv");
  if (rec) {
    tape.record([y, x, xv, cos, sin, heads, expand] {
      if (!y.grad().defined()) return;
      Tensor<T, D> dx = detail::grad_of(x);
      gqa_qkv_backward(y.grad(), xv, cos, sin, heads, expand, dx);
    });
  }
  return y;
}

/// x (B, H, ...) -> (B, H * group, ...), every head repeated `group` times (out head i = x head i / group);
/// group 1 returns x itself. The gradient sums the copies.
template <class X>
detail::var_t<X> repeat_heads(detail::tape_t<X>& tape, const X& x, std::int64_t group) {
  using T = detail::value_t<X>;
  using D = detail::device_t<X>;
  const Tensor<T, D> xv = detail::value_of(x);
  PREFIXTUNE_CHECK(xv.defined() && xv.rank() >= 2, "repeat_heads: x must be (B, heads, ...)");
  if (group == 1) return detail::var_t<X>(x);
  Tensor<T, D> out(xv.shape().with(1, xv.size(1) * group));
  repeat_heads_forward(xv, group, out);
  const bool rec = detail::should_record(x);
  Var<T, D> y(out, rec, "repeat_heads");
  if (rec) {
    tape.record([y, x, group] {
      if (!y.grad().defined()) return;
      Tensor<T, D> dx = detail::grad_of(x);
      repeat_heads_backward(y.grad(), group, dx);
    });
  }
  return y;
}

}  // namespace prefixtune
