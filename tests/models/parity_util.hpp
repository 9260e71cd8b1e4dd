// SPDX-License-Identifier: MIT
// Helpers of the PyTorch parity tests (tests/reference/*.py outputs): the norm-wise relative error, id casts,
// and the reference's PEFT prefix encoder read into ours.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "prefixtune/io/safetensors.hpp"
#include "prefixtune/models/kv_shape.hpp"
#include "prefixtune/prefix/prefix.hpp"

namespace prefixtune::test {

// max |a - ref| / max |ref|: the norm-wise relative error used for every parity check.
template <class A, class R>
double rel_err(const Tensor<A>& a, const Tensor<R>& ref) {
  REQUIRE(a.numel() == ref.numel());
  const auto av = a.to_vector();
  const auto rv = ref.to_vector();
  double num = 0, den = 0;
  for (std::size_t i = 0; i < av.size(); ++i) {
    num = std::max(num, std::abs(double(av[i]) - double(rv[i])));
    den = std::max(den, std::abs(double(rv[i])));
  }
  return num / std::max(den, 1e-30);
}

template <class T>
Tensor<T> transpose2d(const Tensor<T>& t) {
  auto out = Tensor<T>::empty({t.size(1), t.size(0)});
  for (std::int64_t i = 0; i < t.size(0); ++i)
    for (std::int64_t j = 0; j < t.size(1); ++j) out(j, i) = t(i, j);
  return out;
}

template <class T>
Tensor<T> cast_ids(const Tensor<std::int64_t>& t) {
  auto out = Tensor<T>::empty(t.shape());
  for (std::int64_t i = 0; i < t.numel(); ++i) out.data()[i] = static_cast<T>(t.data()[i]);
  return out;
}

// The reference's PEFT encoder (nn.Linear weights are [out, in]; ours [in, out]), in T.
template <class T = float>
PrefixEncoder<T> reference_encoder(const SafeTensorsFile& f, const KvShape& s) {
  PrefixEncoder<T> e;
  e.shape = s;
  e.embedding = Var<T>(f.load<T>("prefix_encoder.embedding.weight"), true, "prefix.embedding");
  e.w1 = Var<T>(transpose2d(f.load<T>("prefix_encoder.transform.0.weight")), true, "prefix.w1");
  e.b1 = Var<T>(f.load<T>("prefix_encoder.transform.0.bias"), true, "prefix.b1");
  e.w2 = Var<T>(transpose2d(f.load<T>("prefix_encoder.transform.2.weight")), true, "prefix.w2");
  e.b2 = Var<T>(f.load<T>("prefix_encoder.transform.2.bias"), true, "prefix.b2");
  e.config.length = e.embedding.shape()[0];
  e.config.mid = e.w1.shape()[1];
  return e;
}

}  // namespace prefixtune::test
