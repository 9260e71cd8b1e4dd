// SPDX-License-Identifier: MIT
// Differentiable wrappers over ops/: each runs the forward op and, when grad mode is on and an argument
// requires grad, records one closure that calls the op's hand-written backward. Every weight-like argument may
// be a Var (trainable: its gradient is produced) or a plain Tensor (frozen: no weight-gradient work at all).
#pragma once

#include <cstdint>
#include <memory>
#include <type_traits>

#include "prefixtune/autograd/tape.hpp"
#include "prefixtune/autograd/var.hpp"
#include "prefixtune/core/rng.hpp"
#include "prefixtune/ops/attention.hpp"
#include "prefixtune/ops/cross_attention.hpp"
#include "prefixtune/ops/cross_entropy.hpp"
#include "prefixtune/ops/elementwise.hpp"
#include "prefixtune/ops/embedding.hpp"
#include "prefixtune/ops/layer_norm.hpp"
#include "prefixtune/ops/layout.hpp"
#include "prefixtune/ops/linear.hpp"
#include "prefixtune/ops/softmax.hpp"

namespace prefixtune {

namespace detail {

template <class A>
using value_t = typename A::value_type;
template <class A>
using device_t = typename A::device_type;
template <class A>
using var_t = Var<value_t<A>, device_t<A>>;
template <class A>
using tape_t = Tape<value_t<A>, device_t<A>>;

/// Arguments of one op must agree on element type and device; a mismatch is a compile-time error.
template <class A, class... Rest>
constexpr bool same_kind_v = ((std::is_same_v<value_t<A>, value_t<Rest>> &&
                               std::is_same_v<device_t<A>, device_t<Rest>>)&&...);

/// True when the op must record a backward closure.
template <class... A>
bool should_record(const A&... args) {
  return grad_enabled() && (needs_grad(args) || ...);
}

/// The shape of every one-input op: y = forward(x) into a fresh tensor; on backward dx += backward(dy, x, y).
template <class X, class Forward, class Backward>
var_t<X> unary_op(tape_t<X>& tape, const X& x, const char* name, Forward forward, Backward backward) {
  using T = value_t<X>;
  using D = device_t<X>;
  const Tensor<T, D> xv = value_of(x);
  PREFIXTUNE_CHECK(xv.defined(), name, ": undefined argument");
  Tensor<T, D> out(xv.shape());
  forward(xv, out);
  const bool rec = should_record(x);
  Var<T, D> y(out, rec, name);
  if (rec) {
    tape.record([y, x, backward] {
      if (!y.grad().defined()) return;
      Tensor<T, D> dx = grad_of(x);
      backward(y.grad(), value_of(x), y.value(), dx);
    });
  }
  return y;
}

}  // namespace detail

/// y = x W + b with W (Cin, Cout) in the GPT-2 Conv1D layout. x (..., Cin) -> (..., Cout). b may be undefined.
template <class X, class W, class B>
detail::var_t<X> linear(detail::tape_t<X>& tape, const X& x, const W& w, const B& b) {
  static_assert(detail::same_kind_v<X, W, B>, "linear: x, w and b must share element type and device");
  using T = detail::value_t<X>;
  using D = detail::device_t<X>;
  const Tensor<T, D> xv = detail::value_of(x), wv = detail::value_of(w), bv = detail::value_of(b);
  PREFIXTUNE_CHECK(xv.defined() && wv.defined() && wv.rank() == 2 && xv.rank() >= 1, "linear: x ", xv.shape(),
                   " and w ", wv.shape(), " must be defined, w of rank 2");
  Tensor<T, D> out(xv.shape().with(-1, wv.size(1)));
  linear_forward(xv, wv, bv, out);
  const bool rec = detail::should_record(x, w, b);
  Var<T, D> y(out, rec, "linear");
  if (rec) {
    tape.record([y, x, w, b, xv, wv] {
      if (!y.grad().defined()) return;
      Tensor<T, D> dx = detail::grad_of(x), dw = detail::grad_of(w), db = detail::grad_of(b);
      linear_backward(y.grad(), xv, wv, dx, dw, db);
    });
  }
  return y;
}

/// Matrix product: a (M, K) or (Bt, M, K) times b (K, N) or (Bt, K, N).
template <class A, class B>
detail::var_t<A> matmul(detail::tape_t<A>& tape, const A& a, const B& b) {
  static_assert(detail::same_kind_v<A, B>, "matmul: a and b must share element type and device");
  using T = detail::value_t<A>;
  using D = detail::device_t<A>;
  const Tensor<T, D> av = detail::value_of(a), bv = detail::value_of(b);
  PREFIXTUNE_CHECK(av.defined() && bv.defined() && av.rank() >= 2 && bv.rank() >= 2, "matmul: a ", av.shape(),
                   " and b ", bv.shape(), " must be defined matrices");
  Tensor<T, D> out(av.shape().with(-1, bv.size(-1)));
  matmul_forward(av, bv, out);
  const bool rec = detail::should_record(a, b);
  Var<T, D> y(out, rec, "matmul");
  if (rec) {
    tape.record([y, a, b, av, bv] {
      if (!y.grad().defined()) return;
      Tensor<T, D> da = detail::grad_of(a), db = detail::grad_of(b);
      matmul_backward(y.grad(), av, bv, da, db);
    });
  }
  return y;
}

/// Element-wise a + b (same shapes): the residual connection.
template <class A, class B>
detail::var_t<A> add(detail::tape_t<A>& tape, const A& a, const B& b) {
  static_assert(detail::same_kind_v<A, B>, "add: a and b must share element type and device");
  using T = detail::value_t<A>;
  using D = detail::device_t<A>;
  const Tensor<T, D> av = detail::value_of(a), bv = detail::value_of(b);
  PREFIXTUNE_CHECK(av.defined() && bv.defined(), "add: undefined argument");
  Tensor<T, D> out(av.shape());
  add_forward(av, bv, out);
  const bool rec = detail::should_record(a, b);
  Var<T, D> y(out, rec, "add");
  if (rec) {
    tape.record([y, a, b] {
      if (!y.grad().defined()) return;
      Tensor<T, D> da = detail::grad_of(a), db = detail::grad_of(b);
      add_backward(y.grad(), da, db);
    });
  }
  return y;
}

/// s * x.
template <class X>
detail::var_t<X> scale(detail::tape_t<X>& tape, const X& x, detail::value_t<X> s) {
  return detail::unary_op(
      tape, x, "scale", [s](const auto& in, auto& out) { scale_forward(in, s, out); },
      [s](const auto& dy, const auto&, const auto&, auto& dx) { scale_backward(dy, s, dx); });
}

/// The same values seen with another shape (a view, no copy); the gradient is reshaped back.
template <class X>
detail::var_t<X> reshape(detail::tape_t<X>& tape, const X& x, const Shape& shape) {
  using T = detail::value_t<X>;
  using D = detail::device_t<X>;
  const Tensor<T, D> xv = detail::value_of(x);
  PREFIXTUNE_CHECK(xv.defined(), "reshape: undefined argument");
  const bool rec = detail::should_record(x);
  Var<T, D> y(xv.reshape(shape), rec, "reshape");
  if (rec) {
    tape.record([y, x] {
      if (!y.grad().defined()) return;
      Tensor<T, D> dx = detail::grad_of(x);
      accumulate(dx, y.grad().reshape(dx.shape()));
    });
  }
  return y;
}

/// Rows [begin, end) of axis 0 (a view, no copy); the gradient lands in the same rows of x's gradient.
template <class X>
detail::var_t<X> rows(detail::tape_t<X>& tape, const X& x, std::int64_t begin, std::int64_t end) {
  using T = detail::value_t<X>;
  using D = detail::device_t<X>;
  const Tensor<T, D> xv = detail::value_of(x);
  PREFIXTUNE_CHECK(xv.defined(), "rows: undefined argument");
  const bool rec = detail::should_record(x);
  Var<T, D> y(xv.rows(begin, end), rec, "rows");
  if (rec) {
    tape.record([y, x, begin, end] {
      if (!y.grad().defined()) return;
      Tensor<T, D> dx = detail::grad_of(x).rows(begin, end);
      accumulate(dx, y.grad());
    });
  }
  return y;
}

/// x (A, B, X) -> (B, A, X): swaps the two outer axes (a copy).
template <class X>
detail::var_t<X> transpose01(detail::tape_t<X>& tape, const X& x) {
  const auto xv = detail::value_of(x);
  PREFIXTUNE_CHECK(xv.defined() && xv.rank() == 3, "transpose01: x must be 3-D");
  return detail::unary_op(
      tape, x, "transpose01",
      [](const auto& in, auto& out) {
        out = out.reshape(Shape{in.size(1), in.size(0), in.size(2)});
        transpose01_forward(in, out);
      },
      [](const auto& dy, const auto&, const auto&, auto& dx) { transpose01_backward(dy, dx); });
}

/// Layer normalization over the last axis: x (..., C), gamma and beta (C).
template <class X, class G, class B>
detail::var_t<X> layer_norm(detail::tape_t<X>& tape, const X& x, const G& gamma, const B& beta,
                            detail::value_t<X> eps) {
  static_assert(detail::same_kind_v<X, G, B>, "layer_norm: x, gamma and beta must share element type and device");
  using T = detail::value_t<X>;
  using D = detail::device_t<X>;
  const Tensor<T, D> xv = detail::value_of(x), gv = detail::value_of(gamma), bv = detail::value_of(beta);
  PREFIXTUNE_CHECK(xv.defined() && xv.rank() >= 1, "layer_norm: undefined or rank-0 input");
  Tensor<T, D> out(xv.shape());
  const bool rec = detail::should_record(x, gamma, beta);
  Tensor<T, D> mean, rstd;
  if (rec) {
    const Shape rows{xv.numel() / std::max<std::int64_t>(1, xv.size(-1))};
    mean = Tensor<T, D>(rows);
    rstd = Tensor<T, D>(rows);
  }
  layer_norm_forward(xv, gv, bv, eps, out, mean, rstd);
  Var<T, D> y(out, rec, "layer_norm");
  if (rec) {
    tape.record([y, x, gamma, beta, xv, gv, mean, rstd, eps] {
      if (!y.grad().defined()) return;
      Tensor<T, D> dx = detail::grad_of(x), dg = detail::grad_of(gamma), db = detail::grad_of(beta);
      layer_norm_backward(y.grad(), xv, gv, mean, rstd, dx, dg, db, eps);
    });
  }
  return y;
}

/// GPT-2's gelu_new (tanh approximation).
template <class X>
detail::var_t<X> gelu(detail::tape_t<X>& tape, const X& x) {
  return detail::unary_op(
      tape, x, "gelu", [](const auto& in, auto& out) { gelu_forward(in, out); },
      [](const auto& dy, const auto& in, const auto&, auto& dx) { gelu_backward(dy, in, dx); });
}

/// The exact (erf) GELU of BART and BERT.
template <class X>
detail::var_t<X> gelu_exact(detail::tape_t<X>& tape, const X& x) {
  return detail::unary_op(
      tape, x, "gelu_exact", [](const auto& in, auto& out) { gelu_exact_forward(in, out); },
      [](const auto& dy, const auto& in, const auto&, auto& dx) { gelu_exact_backward(dy, in, dx); });
}

/// Element-wise tanh.
template <class X>
detail::var_t<X> tanh(detail::tape_t<X>& tape, const X& x) {
  return detail::unary_op(
      tape, x, "tanh", [](const auto& in, auto& out) { tanh_forward(in, out); },
      [](const auto& dy, const auto&, const auto& y, auto& dx) { tanh_backward(dy, y, dx); });
}

/// Softmax over the last axis.
template <class X>
detail::var_t<X> softmax(detail::tape_t<X>& tape, const X& x) {
  return detail::unary_op(
      tape, x, "softmax", [](const auto& in, auto& out) { softmax_forward(in, out); },
      [](const auto& dy, const auto&, const auto& y, auto& dx) { softmax_backward(dy, y, dx); });
}

/// Inverted dropout with probability p, its mask drawn from rng (one seed per call, recomputed in backward).
/// The identity (no copy) when p == 0 or inside a NoGradGuard (inference).
template <class X>
detail::var_t<X> dropout(detail::tape_t<X>& tape, const X& x, detail::value_t<X> p, Rng& rng) {
  using T = detail::value_t<X>;
  using D = detail::device_t<X>;
  const Tensor<T, D> xv = detail::value_of(x);
  PREFIXTUNE_CHECK(xv.defined(), "dropout: undefined argument");
  PREFIXTUNE_CHECK(p >= T(0) && p < T(1), "dropout: probability ", p, " is outside [0, 1)");
  if (p == T(0) || !grad_enabled()) {
    if constexpr (std::is_same_v<X, Var<T, D>>) {
      return x;
    } else {
      return Var<T, D>(xv, false, "dropout");
    }
  }
  const std::uint64_t seed = rng.next_u64();
  Tensor<T, D> out(xv.shape());
  dropout_forward(xv, p, seed, std::uint64_t{0}, out);
  const bool rec = detail::should_record(x);
  Var<T, D> y(out, rec, "dropout");
  if (rec) {
    tape.record([y, x, p, seed] {
      if (!y.grad().defined()) return;
      Tensor<T, D> dx = detail::grad_of(x);
      dropout_backward(y.grad(), p, seed, std::uint64_t{0}, dx);
    });
  }
  return y;
}

/// Rows of table (V, C) for token ids of any shape: ids (B, T) -> (B, T, C). Out-of-range ids throw.
template <class W>
detail::var_t<W> embedding(detail::tape_t<W>& tape, const Tensor<std::int32_t, detail::device_t<W>>& ids,
                           const W& table) {
  using T = detail::value_t<W>;
  using D = detail::device_t<W>;
  const Tensor<T, D> tv = detail::value_of(table);
  PREFIXTUNE_CHECK(ids.defined() && tv.defined() && tv.rank() == 2 && ids.rank() <= 3, "embedding: ids ", ids.shape(),
                   " and table ", tv.shape(), " must be defined, table (V, C), ids of rank <= 3");
  Shape os;
  switch (ids.rank()) {
    case 0:
      os = Shape{tv.size(1)};
      break;
    case 1:
      os = Shape{ids.size(0), tv.size(1)};
      break;
    case 2:
      os = Shape{ids.size(0), ids.size(1), tv.size(1)};
      break;
    default:
      os = Shape{ids.size(0), ids.size(1), ids.size(2), tv.size(1)};
      break;
  }
  Tensor<T, D> out(os);
  embedding_forward(ids, tv, out);
  const bool rec = detail::should_record(table);
  Var<T, D> y(out, rec, "embedding");
  if (rec) {
    tape.record([y, ids, table] {
      if (!y.grad().defined()) return;
      Tensor<T, D> dt = detail::grad_of(table);
      embedding_backward(y.grad(), ids, dt);
    });
  }
  return y;
}

/// Causal multi-head self-attention over qkv (B, T, 3C) with optional per-layer prefix K/V (Bp, NH, P, HS),
/// Bp in {1, B} (undefined = no prefix), and an optional key padding mask (B, T) (1 = token, 0 = padding).
/// Gradients flow to qkv and to the prefix K/V when they are trainable Vars. prefix_from (B), when defined,
/// places the prefix as an infix: query t of row b sees it only when t >= prefix_from[b].
template <class X, class PK, class PV>
detail::var_t<X> attention(
    detail::tape_t<X>& tape, const X& qkv, std::int64_t num_heads, const PK& prefix_k, const PV& prefix_v,
    const Tensor<std::uint8_t, detail::device_t<X>>& mask,
    const Tensor<std::int32_t, detail::device_t<X>>& prefix_from = Tensor<std::int32_t, detail::device_t<X>>()) {
  static_assert(detail::same_kind_v<X, PK, PV>, "attention: qkv and the prefix must share element type and device");
  using T = detail::value_t<X>;
  using D = detail::device_t<X>;
  const Tensor<T, D> xv = detail::value_of(qkv), pk = detail::value_of(prefix_k), pv = detail::value_of(prefix_v);
  PREFIXTUNE_CHECK(xv.defined() && xv.rank() == 3 && xv.size(2) % 3 == 0, "attention: qkv must be (B, T, 3C), got ",
                   xv.shape());
  Tensor<T, D> out(Shape{xv.size(0), xv.size(1), xv.size(2) / 3});
  const bool rec = detail::should_record(qkv, prefix_k, prefix_v);
  auto cache = rec ? std::make_shared<AttentionCache<T, D>>() : nullptr;
  attention_forward(xv, num_heads, pk, pv, mask, out, cache.get(), prefix_from);
  Var<T, D> y(out, rec, "attention");
  if (rec) {
    tape.record([y, qkv, prefix_k, prefix_v, pk, pv, mask, cache, num_heads] {
      if (!y.grad().defined()) return;
      Tensor<T, D> dx = detail::grad_of(qkv), dpk = detail::grad_of(prefix_k), dpv = detail::grad_of(prefix_v);
      attention_backward(y.grad(), num_heads, *cache, pk, pv, mask, dx, dpk, dpv);
    });
  }
  return y;
}

/// Non-causal attention of q (B, Tq, C) over optional prefix K/V (Bp, NH, P, HS) and the keys/values of kv
/// (B, Tk, 2C) = [k | v], keys with key_mask (B, Tk) == 0 hidden: cross-attention, or with q and kv from one
/// sequence bidirectional self-attention. Gradients flow to q, kv and the prefix when they are trainable.
template <class Q, class KV, class PK, class PV>
detail::var_t<Q> cross_attention(detail::tape_t<Q>& tape, const Q& q, const KV& kv, std::int64_t num_heads,
                                 const PK& prefix_k, const PV& prefix_v,
                                 const Tensor<std::uint8_t, detail::device_t<Q>>& key_mask) {
  static_assert(detail::same_kind_v<Q, KV, PK, PV>, "cross_attention: q, kv and the prefix must share type and device");
  using T = detail::value_t<Q>;
  using D = detail::device_t<Q>;
  const Tensor<T, D> qv = detail::value_of(q), kvv = detail::value_of(kv), pk = detail::value_of(prefix_k),
                     pv = detail::value_of(prefix_v);
  PREFIXTUNE_CHECK(qv.defined() && qv.rank() == 3, "cross_attention: q must be (B, Tq, C), got ",
                   qv.defined() ? qv.shape().to_string() : std::string("undefined"));
  Tensor<T, D> out(qv.shape());
  const bool rec = detail::should_record(q, kv, prefix_k, prefix_v);
  auto probs = rec ? std::make_shared<Tensor<T, D>>() : nullptr;
  cross_attention_forward(qv, kvv, num_heads, pk, pv, key_mask, out, probs.get());
  Var<T, D> y(out, rec, "cross_attention");
  if (rec) {
    tape.record([y, q, kv, prefix_k, prefix_v, qv, kvv, pk, pv, key_mask, probs, num_heads] {
      if (!y.grad().defined()) return;
      Tensor<T, D> dq = detail::grad_of(q), dkv = detail::grad_of(kv), dpk = detail::grad_of(prefix_k),
                   dpv = detail::grad_of(prefix_v);
      cross_attention_backward(y.grad(), qv, kvv, num_heads, *probs, pk, pv, key_mask, dq, dkv, dpk, dpv);
    });
  }
  return y;
}

/// The fused LM head + cross-entropy: logits = h E^T (+ options.bias, frozen) only at positions whose label is
/// not -100, in chunks, with options.label_smoothing as in cross_entropy_forward. h (B, T, C), E (V, C) (GPT-2's
/// tied wte), labels (B, T) aligned with h, options.bias (V) or undefined. Returns the scalar loss (shape ()).
template <class H, class E>
detail::var_t<H> cross_entropy(detail::tape_t<H>& tape, const H& h, const E& embedding_matrix,
                               const Tensor<std::int32_t, detail::device_t<H>>& labels, Reduction reduction,
                               const CrossEntropyOptions<detail::value_t<H>, detail::device_t<H>>& options,
                               std::int64_t chunk_rows = 128) {
  static_assert(detail::same_kind_v<H, E>, "cross_entropy: h and E must share element type and device");
  using T = detail::value_t<H>;
  using D = detail::device_t<H>;
  const bool rec = detail::should_record(h, embedding_matrix);
  auto result = std::make_shared<CrossEntropyResult<T, D>>(cross_entropy_forward(
      detail::value_of(h), detail::value_of(embedding_matrix), labels, reduction, rec && detail::needs_grad(h),
      rec && detail::needs_grad(embedding_matrix), options, chunk_rows));
  Var<T, D> loss(Tensor<T, D>::from_vector(Shape{}, {static_cast<T>(result->loss)}), rec, "cross_entropy");
  if (rec) {
    tape.record([loss, h, embedding_matrix, result] {
      if (!loss.grad().defined()) return;
      const T dloss = loss.grad().item();
      Tensor<T, D> dh = detail::grad_of(h), de = detail::grad_of(embedding_matrix);
      if (result->dh.defined()) accumulate(dh, result->dh, dloss);
      if (result->dE.defined()) accumulate(de, result->dE, dloss);
    });
  }
  return loss;
}

/// cross_entropy with the default options (no logits bias, no label smoothing).
template <class H, class E>
detail::var_t<H> cross_entropy(detail::tape_t<H>& tape, const H& h, const E& embedding_matrix,
                               const Tensor<std::int32_t, detail::device_t<H>>& labels, Reduction reduction,
                               std::int64_t chunk_rows = 128) {
  return cross_entropy(tape, h, embedding_matrix, labels, reduction,
                       CrossEntropyOptions<detail::value_t<H>, detail::device_t<H>>{}, chunk_rows);
}

}  // namespace prefixtune
