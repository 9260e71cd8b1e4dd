// SPDX-License-Identifier: MIT
// Var<T, Device>: a tensor value with an optional gradient, the unit autograd-lite differentiates; and the
// thread-local no-grad switch used for inference.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune {

namespace detail {
inline bool& grad_mode_flag() {
  thread_local bool enabled = true;
  return enabled;
}
}  // namespace detail

/// Whether ops on this thread record backward closures (false inside a NoGradGuard).
inline bool grad_enabled() { return detail::grad_mode_flag(); }

/// Inference scope: while alive, no op records anything, outputs never require grad and dropout is the
/// identity. Restores the previous mode on destruction, so scopes nest.
class NoGradGuard {
 public:
  NoGradGuard() : previous_(detail::grad_mode_flag()) { detail::grad_mode_flag() = false; }
  ~NoGradGuard() { detail::grad_mode_flag() = previous_; }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

/// A value and, when requires_grad(), the gradient that Tape::backward accumulates into it.
/// Copies share the same node (like a shared_ptr). A leaf with requires_grad is a trainable parameter; op
/// outputs are intermediate Vars. A frozen weight is not a Var at all but a plain Tensor.
template <class T, class Device = Cpu>
class Var {
 public:
  using value_type = T;
  using device_type = Device;

  Var() = default;
  explicit Var(Tensor<T, Device> value, bool requires_grad = false, std::string name = "")
      : node_(std::make_shared<Node>()) {
    PREFIXTUNE_CHECK(value.defined(), "Var '", name, "': undefined value");
    node_->value = std::move(value);
    node_->requires_grad = requires_grad;
    node_->name = std::move(name);
  }

  bool defined() const { return node_ != nullptr; }
  const Tensor<T, Device>& value() const { return node().value; }
  const Shape& shape() const { return node().value.shape(); }
  bool requires_grad() const { return node_ && node_->requires_grad; }
  const std::string& name() const { return node().name; }

  /// The accumulated gradient (same shape as value), or an undefined tensor if none reached this Var.
  const Tensor<T, Device>& grad() const { return node().grad; }

  /// The gradient buffer to accumulate into, zero-allocated on first use; undefined unless requires_grad().
  Tensor<T, Device> grad_for_accumulation() const {
    if (!requires_grad()) return Tensor<T, Device>();
    if (!node_->grad.defined()) node_->grad = Tensor<T, Device>::zeros(node_->value.shape());
    return node_->grad;
  }

  /// Sets the gradient to zero (keeps the buffer so optimizer steps do not reallocate).
  void zero_grad() const {
    if (node_ && node_->grad.defined()) node_->grad.fill(T(0));
  }
  /// Drops the gradient buffer entirely.
  void clear_grad() const {
    if (node_) node_->grad = Tensor<T, Device>();
  }

  bool same_node(const Var& o) const { return node_ == o.node_; }

 private:
  struct Node {
    Tensor<T, Device> value;
    Tensor<T, Device> grad;
    bool requires_grad = false;
    std::string name;
  };
  const Node& node() const {
    PREFIXTUNE_CHECK(node_ != nullptr, "use of an undefined Var");
    return *node_;
  }
  std::shared_ptr<Node> node_;
};

/// Sets every parameter's gradient to zero.
template <class T, class Device>
void zero_grad(const std::vector<Var<T, Device>>& params) {
  for (const auto& p : params) p.zero_grad();
}

namespace detail {

// Uniform access to "an op argument that may be trainable (Var) or frozen (Tensor)".
// An undefined Var stands for "no such argument" (e.g. no prefix), like an undefined Tensor.
template <class T, class D>
Tensor<T, D> value_of(const Tensor<T, D>& t) {
  return t;
}
template <class T, class D>
Tensor<T, D> value_of(const Var<T, D>& v) {
  return v.defined() ? v.value() : Tensor<T, D>();
}
template <class T, class D>
bool needs_grad(const Tensor<T, D>&) {
  return false;
}
template <class T, class D>
bool needs_grad(const Var<T, D>& v) {
  return v.requires_grad();
}
/// The gradient buffer of an argument, or an undefined tensor for frozen ones (ops then skip that work).
template <class T, class D>
Tensor<T, D> grad_of(const Tensor<T, D>&) {
  return Tensor<T, D>();
}
template <class T, class D>
Tensor<T, D> grad_of(const Var<T, D>& v) {
  return v.grad_for_accumulation();
}

}  // namespace detail
}  // namespace prefixtune
