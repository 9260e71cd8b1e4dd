// SPDX-License-Identifier: MIT
// Element-wise ops on tensors of any device: accumulate (the "+=" of every gradient), add, scale, GELU, tanh and
// seeded Philox dropout. Forward writes a preallocated output; backward accumulates and skips undefined gradients.
#pragma once

#include <cstdint>
#include <type_traits>

#include "prefixtune/backend/cpu/elementwise.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune {
namespace detail {

/// Throws (naming `op`) unless tensor `name` is defined.
template <class T, class Device>
void check_elementwise_defined(const char* op, const char* name, const Tensor<T, Device>& t) {
  if (!t.defined()) throw_error(op, str_cat(op, ": ", name, " is undefined"));
}

/// Throws (naming `op`) unless `t` is undefined or has the shape of `ref`, e.g.
/// "add_forward: b shape (2, 4) does not match a (2, 3)".
template <class T, class Device>
void check_elementwise_shape(const char* op, const char* name, const Tensor<T, Device>& t, const char* ref_name,
                             const Tensor<T, Device>& ref) {
  if (t.defined() && t.shape() != ref.shape()) {
    throw_error(op, str_cat(op, ": ", name, " shape ", t.shape(), " does not match ", ref_name, " ", ref.shape()));
  }
}

/// Throws (naming `op`) unless `in` and `out` are both defined and of the same shape (the forward of a map).
template <class T, class Device>
void check_map_args(const char* op, const char* in_name, const Tensor<T, Device>& in, const char* out_name,
                    const Tensor<T, Device>& out) {
  check_elementwise_defined(op, in_name, in);
  check_elementwise_defined(op, out_name, out);
  check_elementwise_shape(op, out_name, out, in_name, in);
}

/// Throws (naming `op`) unless dout is defined and the optional gradient `grad_name` is undefined or shaped like it.
template <class T, class Device>
void check_grad_args(const char* op, const Tensor<T, Device>& dout, const char* grad_name,
                     const Tensor<T, Device>& grad) {
  check_elementwise_defined(op, "dout", dout);
  check_elementwise_shape(op, grad_name, grad, "dout", dout);
}

/// Throws (naming `op`) unless the dropout probability lies in [0, 1) (NaN fails too).
template <class T>
void check_dropout_p(const char* op, T p) {
  if (!(p >= T(0) && p < T(1))) throw_error(op, str_cat(op, ": dropout probability p=", p, " is not in [0, 1)"));
}

/// The type T itself, spelled so that T is deduced from the tensor arguments only: a scalar argument of another
/// arithmetic type (scale_forward(x_float, 0.125, out)) converts to T instead of making deduction fail.
template <class T>
using nondeduced_t = typename std::common_type<T>::type;

}  // namespace detail

/// dst += alpha * src; a no-op when dst is undefined (a gradient nobody wants). // dst, src: any shape, equal
template <class T, class Device>
void accumulate(Tensor<T, Device>& dst, const Tensor<T, Device>& src, detail::nondeduced_t<T> alpha = T(1)) {
  if (!dst.defined()) return;
  detail::check_map_args("accumulate", "dst", dst, "src", src);
  accumulate_kernel(Device{}, dst.data(), src.data(), alpha, dst.numel());
}

/// out = a + b; out may be a or b itself. // a, b, out: any shape, equal
template <class T, class Device>
void add_forward(const Tensor<T, Device>& a, const Tensor<T, Device>& b, Tensor<T, Device>& out) {
  detail::check_map_args("add_forward", "a", a, "b", b);
  detail::check_map_args("add_forward", "a", a, "out", out);
  add_forward_kernel(Device{}, a.data(), b.data(), out.data(), a.numel());
}

/// da += dout, db += dout; either may be undefined (skipped). // dout, da, db: any shape, equal
template <class T, class Device>
void add_backward(const Tensor<T, Device>& dout, Tensor<T, Device>& da, Tensor<T, Device>& db) {
  detail::check_grad_args("add_backward", dout, "da", da);
  detail::check_grad_args("add_backward", dout, "db", db);
  accumulate(da, dout);
  accumulate(db, dout);
}

/// out = s * x; out may be x itself. // x, out: any shape, equal
template <class T, class Device>
void scale_forward(const Tensor<T, Device>& x, detail::nondeduced_t<T> s, Tensor<T, Device>& out) {
  detail::check_map_args("scale_forward", "x", x, "out", out);
  scale_forward_kernel(Device{}, x.data(), s, out.data(), x.numel());
}

/// dx += s * dout; skipped when dx is undefined. // dout, dx: any shape, equal
template <class T, class Device>
void scale_backward(const Tensor<T, Device>& dout, detail::nondeduced_t<T> s, Tensor<T, Device>& dx) {
  detail::check_grad_args("scale_backward", dout, "dx", dx);
  accumulate(dx, dout, s);
}

/// out = gelu_new(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (GPT-2), evaluated in the equivalent,
/// cancellation-free form x / (1 + exp(-2 sqrt(2/pi) (x + 0.044715 x^3))); out may be x. // x, out: equal shapes
template <class T, class Device>
void gelu_forward(const Tensor<T, Device>& x, Tensor<T, Device>& out) {
  detail::check_map_args("gelu_forward", "x", x, "out", out);
  gelu_forward_kernel(Device{}, x.data(), out.data(), x.numel());
}

/// dx += dout * gelu_new'(x), x the forward input; skipped when dx is undefined. // dout, x, dx: equal shapes
template <class T, class Device>
void gelu_backward(const Tensor<T, Device>& dout, const Tensor<T, Device>& x, Tensor<T, Device>& dx) {
  detail::check_map_args("gelu_backward", "dout", dout, "x", x);
  detail::check_grad_args("gelu_backward", dout, "dx", dx);
  if (!dx.defined()) return;
  gelu_backward_kernel(Device{}, dout.data(), x.data(), dx.data(), dx.numel());
}

/// out = gelu(x) = 0.5 x (1 + erf(x / sqrt(2))), the exact GELU (BART, BERT); out may be x.
template <class T, class Device>
void gelu_exact_forward(const Tensor<T, Device>& x, Tensor<T, Device>& out) {
  detail::check_map_args("gelu_exact_forward", "x", x, "out", out);
  gelu_exact_forward_kernel(Device{}, x.data(), out.data(), x.numel());
}

/// dx += dout * gelu_exact'(x), x the forward input; skipped when dx is undefined.
template <class T, class Device>
void gelu_exact_backward(const Tensor<T, Device>& dout, const Tensor<T, Device>& x, Tensor<T, Device>& dx) {
  detail::check_map_args("gelu_exact_backward", "dout", dout, "x", x);
  detail::check_grad_args("gelu_exact_backward", dout, "dx", dx);
  if (!dx.defined()) return;
  gelu_exact_backward_kernel(Device{}, dout.data(), x.data(), dx.data(), dx.numel());
}

/// out = tanh(x); out may be x. // x, out: any shape, equal
template <class T, class Device>
void tanh_forward(const Tensor<T, Device>& x, Tensor<T, Device>& out) {
  detail::check_map_args("tanh_forward", "x", x, "out", out);
  tanh_forward_kernel(Device{}, x.data(), out.data(), x.numel());
}

/// dx += dout * (1 - y^2), y = tanh(x) the forward output; skipped when dx is undefined. // all: equal shapes
template <class T, class Device>
void tanh_backward(const Tensor<T, Device>& dout, const Tensor<T, Device>& out_y, Tensor<T, Device>& dx) {
  detail::check_map_args("tanh_backward", "dout", dout, "out_y", out_y);
  detail::check_grad_args("tanh_backward", dout, "dx", dx);
  if (!dx.defined()) return;
  tanh_backward_kernel(Device{}, dout.data(), out_y.data(), dx.data(), dx.numel());
}

/// Inverted dropout with a mask that is a pure function of (seed, offset, element index): element i (row-major)
/// is kept iff u_i >= p, where u_i = u32_to_unit_float(philox4x32(seed, i / 4 + offset, 0)[i % 4]); kept values
/// are scaled by 1 / (1 - p). `offset` counts Philox blocks of 4 elements: a caller that draws several masks from
/// one seed advances it by (numel + 3) / 4 per mask. p must lie in [0, 1); p == 0 is a plain copy. Whether
/// dropout runs at all (training vs inference) is the autograd layer's decision. out may be x. x, out: any shape,
/// equal.
template <class T, class Device>
void dropout_forward(const Tensor<T, Device>& x, detail::nondeduced_t<T> p, std::uint64_t seed, std::uint64_t offset,
                     Tensor<T, Device>& out) {
  detail::check_map_args("dropout_forward", "x", x, "out", out);
  detail::check_dropout_p("dropout_forward", p);
  if (p == T(0)) {
    Device::copy(out.data(), x.data(), x.bytes());
    return;
  }
  dropout_forward_kernel(Device{}, x.data(), p, seed, offset, out.data(), x.numel());
}

/// dx += dout * mask / (1 - p) with the mask dropout_forward drew for the same (p, seed, offset), recomputed
/// (no mask tensor is stored); skipped when dx is undefined. // dout, dx: any shape, equal
template <class T, class Device>
void dropout_backward(const Tensor<T, Device>& dout, detail::nondeduced_t<T> p, std::uint64_t seed,
                      std::uint64_t offset, Tensor<T, Device>& dx) {
  detail::check_grad_args("dropout_backward", dout, "dx", dx);
  detail::check_dropout_p("dropout_backward", p);
  if (!dx.defined()) return;
  if (p == T(0)) {
    accumulate(dx, dout);
    return;
  }
  dropout_backward_kernel(Device{}, dout.data(), p, seed, offset, dx.data(), dx.numel());
}

}  // namespace prefixtune
