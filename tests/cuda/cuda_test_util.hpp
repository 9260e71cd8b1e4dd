// SPDX-License-Identifier: MIT
// Helpers of the CUDA tests: copies to the GPU and the GPU-vs-CPU comparison (max |gpu - cpu| / (1 + |cpu|)).
#pragma once

#include <doctest/doctest.h>

#include "prefixtune/cuda.cuh"
#include "test_util.hpp"

namespace prefixtune::test {

/// A copy of t on the GPU (undefined stays undefined).
template <class T>
Tensor<T, Cuda> dev(const Tensor<T>& t) {
  return t.defined() ? t.template to<Cuda>() : Tensor<T, Cuda>();
}

/// max |gpu - cpu| / (1 + |cpu|) of two tensors of one shape.
template <class T>
double diff(const Tensor<T, Cuda>& gpu, const Tensor<T>& cpu) {
  REQUIRE(gpu.shape() == cpu.shape());
  return max_rel_diff(gpu.to_vector(), cpu.to_vector());
}

}  // namespace prefixtune::test
