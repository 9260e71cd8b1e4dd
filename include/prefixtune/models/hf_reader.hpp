// SPDX-License-Identifier: MIT
// Reading and writing HuggingFace nn.Linear weights by key: a reader that transposes [out, in] weights to our
// [in, out] and fuses several projections column-wise, remembering every key it read (so that a loader can
// refuse the keys no model part claims); and the writer's inverse. Shared by the BART and Llama loaders.
#pragma once

#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"
#include "prefixtune/io/safetensors_write.hpp"

namespace prefixtune::detail {

/// Whether two host tensors of the same size hold the same values, compared in place (a tied head stored beside
/// its embedding is (V, C): copies of both would double the load's peak memory).
template <class T>
bool same_values(const Tensor<T, Cpu>& a, const Tensor<T, Cpu>& b) {
  return a.numel() == b.numel() && std::equal(a.data(), a.data() + a.numel(), b.data());
}

/// Reads tensors prefix + key from a SafeTensorsFile or SafeTensorsCheckpoint (Source), converted to T.
template <class T, class Source>
class HfReader {
 public:
  HfReader(const Source& f, std::string prefix) : f_(f), prefix_(std::move(prefix)) {}

  bool has(const std::string& key) const { return f_.has(prefix_ + key); }
  Tensor<T, Cpu> get(const std::string& key, const Shape& shape) {
    const std::string k = prefix_ + key;
    PREFIXTUNE_CHECK(f_.has(k), f_.path(), ": missing tensor '", k, "' (expected shape ", shape,
                     " for the config in config.json)");
    seen_.insert(k);
    return f_.template load<T>(k, shape, false);
  }
  /// Linear layers base + names[i] (weight [outs[i], in] in the file, bias [outs[i]] when `bias`) as one
  /// [in, sum outs] weight and its fused bias (undefined without biases).
  std::pair<Tensor<T, Cpu>, Tensor<T, Cpu>> linear(const std::string& base, const std::vector<std::string>& names,
                                                   std::int64_t in, const std::vector<std::int64_t>& outs,
                                                   bool bias = true) {
    std::int64_t total = 0;
    for (auto o : outs) total += o;
    auto w = Tensor<T, Cpu>::empty({in, total});
    Tensor<T, Cpu> b = bias ? Tensor<T, Cpu>::empty({total}) : Tensor<T, Cpu>();
    std::int64_t col = 0;
    for (std::size_t i = 0; i < names.size(); ++i) {
      const std::int64_t out = outs[i];
      const auto wi = get(base + names[i] + ".weight", Shape{out, in});
      for (std::int64_t o = 0; o < out; ++o)
        for (std::int64_t r = 0; r < in; ++r) w(r, col + o) = wi(o, r);
      if (bias) {
        const auto bi = get(base + names[i] + ".bias", Shape{out});
        for (std::int64_t o = 0; o < out; ++o) b(col + o) = bi(o);
      }
      col += out;
    }
    return {w, b};
  }
  /// linear() with every layer `out_each` wide.
  std::pair<Tensor<T, Cpu>, Tensor<T, Cpu>> linear(const std::string& base, const std::vector<std::string>& names,
                                                   std::int64_t in, std::int64_t out_each) {
    return linear(base, names, in, std::vector<std::int64_t>(names.size(), out_each), true);
  }
  void mark(const std::string& full_key) { seen_.insert(full_key); }
  const std::set<std::string>& seen() const { return seen_; }
  const std::string& prefix() const { return prefix_; }

 private:
  const Source& f_;
  std::string prefix_;
  std::set<std::string> seen_;
};

/// A fused [in, sum outs] linear weight and its bias (undefined: none) split into HuggingFace nn.Linear tensors
/// base + names[i] (weight [outs[i], in], bias [outs[i]]), keyed: HfReader::linear's inverse.
template <class T>
std::vector<std::pair<std::string, Tensor<T, Cpu>>> hf_linear_tensors(const std::string& base,
                                                                      const std::vector<std::string>& names,
                                                                      const Tensor<T, Cpu>& weight,
                                                                      const Tensor<T, Cpu>& bias,
                                                                      const std::vector<std::int64_t>& outs) {
  std::vector<std::pair<std::string, Tensor<T, Cpu>>> v;
  const std::int64_t in = weight.size(0);
  std::int64_t col = 0;
  for (std::size_t i = 0; i < names.size(); ++i) {
    const std::int64_t out = outs[i];
    auto wi = Tensor<T, Cpu>::empty({out, in});
    for (std::int64_t o = 0; o < out; ++o)
      for (std::int64_t r = 0; r < in; ++r) wi(o, r) = weight(r, col + o);
    v.emplace_back(base + names[i] + ".weight", wi);
    if (bias.defined()) {
      auto bi = Tensor<T, Cpu>::empty({out});
      for (std::int64_t o = 0; o < out; ++o) bi(o) = bias(col + o);
      v.emplace_back(base + names[i] + ".bias", bi);
    }
    col += out;
  }
  return v;
}

/// Adds hf_linear_tensors(...) to a writer in `dtype`.
template <class T>
void add_hf_linear(SafeTensorsWriter& w, const std::string& base, const std::vector<std::string>& names,
                   const Tensor<T, Cpu>& weight, const Tensor<T, Cpu>& bias, const std::vector<std::int64_t>& outs,
                   DType dtype) {
  for (const auto& [key, t] : hf_linear_tensors(base, names, weight, bias, outs)) w.add(key, t, dtype);
}

}  // namespace prefixtune::detail
