// SPDX-License-Identifier: MIT
// Tape<T, Device>: records one backward closure per differentiable op and replays them in reverse from a
// scalar loss. Saved activations live in the closures and are freed when backward finishes.
#pragma once

#include <functional>
#include <utility>
#include <vector>

#include "prefixtune/autograd/var.hpp"
#include "prefixtune/core/error.hpp"

namespace prefixtune {

/// The record of one forward pass. Ops append closures only when grad mode is on and some input requires
/// grad, so a forward through frozen layers records nothing until the first trainable value joins in.
template <class T, class Device = Cpu>
class Tape {
 public:
  using Closure = std::function<void()>;

  Tape() = default;
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;

  /// Appends a backward closure (called by ops, in forward order).
  void record(Closure fn) {
    closures_.push_back(std::move(fn));
    consumed_ = false;
  }

  /// Number of recorded ops not yet replayed.
  std::size_t size() const { return closures_.size(); }

  /// Back-propagates d loss / d loss = seed from a one-element loss through every recorded op, accumulating
  /// into the gradients of Vars that require grad, then frees the closures (and the activations they saved).
  void backward(const Var<T, Device>& loss, T seed = T(1)) {
    PREFIXTUNE_CHECK(!consumed_, "backward() called twice on the same tape: the first call freed the saved ",
                     "activations; run the forward pass again to record a new one");
    PREFIXTUNE_CHECK(loss.defined(), "backward() on an undefined Var");
    PREFIXTUNE_CHECK(loss.value().numel() == 1, "backward() needs a scalar loss, got shape ", loss.shape(),
                     " (reduce it to one element first)");
    PREFIXTUNE_CHECK(loss.requires_grad(), "backward(): the loss '", loss.name(),
                     "' does not depend on any Var that requires grad (was the forward pass run under NoGradGuard?)");
    loss.grad_for_accumulation().fill(seed);
    // Clear before replaying so that an exception midway still leaves the tape consistent.
    std::vector<Closure> closures = std::move(closures_);
    closures_.clear();
    consumed_ = true;
    for (auto it = closures.rbegin(); it != closures.rend(); ++it) {
      (*it)();
      *it = nullptr;  // free this op's saved activations as soon as it has run
    }
  }

  /// Drops every recorded closure without running them (e.g. after an evaluation forward with grad on).
  void clear() {
    closures_.clear();
    consumed_ = false;
  }

 private:
  std::vector<Closure> closures_;
  bool consumed_ = false;
};

}  // namespace prefixtune
