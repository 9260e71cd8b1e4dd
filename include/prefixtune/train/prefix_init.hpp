// SPDX-License-Identifier: MIT
// Initializing the MLP reparameterizer from real words (the paper's code): pre-fit the encoder by MSE to a target
// table, e.g. prefix_from_words(model, ids), before prefix-tuning starts.
#pragma once

#include <cstdint>
#include <vector>

#include "prefixtune/prefix/prefix.hpp"
#include "prefixtune/train/adamw.hpp"

namespace prefixtune {

/// Fits `encoder` (its P must equal the target's rows) to `target` (P, 2*L*C) by Adam on the mean squared error
/// (the paper's code: 500 steps, lr 1e-4, no weight decay) and returns the MSE after the last step. Dropout is
/// off during the fit.
template <class T, class Device>
double fit_encoder_to_table(PrefixEncoder<T, Device>& encoder, const Tensor<T, Device>& target,
                            std::int64_t steps = 500, double lr = 1e-4) {
  PREFIXTUNE_CHECK(steps >= 0 && lr > 0, "fit_encoder_to_table: steps ", steps, " must be >= 0 and lr ", lr, " > 0");
  PREFIXTUNE_CHECK(target.defined() && target.rank() == 2 && target.size(0) == encoder.length() &&
                       target.size(1) == encoder.shape.table_width(),
                   "fit_encoder_to_table: target ",
                   target.defined() ? target.shape().to_string() : std::string("(undefined)"),
                   " must be (P = ", encoder.length(), ", 2 * L * KVH * HD = ", encoder.shape.table_width(),
                   ") (the encoder's prefix length must equal the words' token count)");
  AdamWConfig oc;
  oc.lr = lr;
  oc.weight_decay = 0;
  AdamW<T, Device> opt(encoder.parameters(), oc);
  const Tensor<T, Cpu> goal = target.template to<Cpu>();
  const auto N = static_cast<double>(goal.numel());
  auto mse_and_grad = [&](const Tensor<T, Device>& y, Tensor<T, Cpu>* grad) {
    const Tensor<T, Cpu> v = y.template to<Cpu>();
    double sum = 0;
    for (std::int64_t i = 0; i < v.numel(); ++i) {
      const double d = static_cast<double>(v.data()[i]) - static_cast<double>(goal.data()[i]);
      sum += d * d;
      if (grad) grad->data()[i] = static_cast<T>(2.0 * d / N);
    }
    return sum / N;
  };
  for (std::int64_t s = 0; s < steps; ++s) {
    Tape<T, Device> tape;
    const Var<T, Device> y = encoder.forward(tape);
    auto g = Tensor<T, Cpu>::empty({goal.numel(), 1});
    mse_and_grad(y.value(), &g);
    // d MSE / d y is g; backpropagate it through <y, g> (a scalar whose gradient in y is exactly g).
    const auto surrogate = matmul(tape, reshape(tape, y, Shape{1, goal.numel()}), g.template to<Device>());
    tape.backward(surrogate);
    opt.step();
    opt.zero_grad();
  }
  NoGradGuard no_grad;
  Tape<T, Device> tape;
  return mse_and_grad(encoder.forward(tape).value(), nullptr);
}

}  // namespace prefixtune
