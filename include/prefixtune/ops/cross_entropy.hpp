// SPDX-License-Identifier: MIT
// Fused language-model head + cross-entropy (logits = h E^T + optional frozen bias, with the tied embedding E),
// run only at labelled positions and in row chunks so the (B, T, V) logits never exist; the gradients come from
// the same pass. Optional label smoothing as in PyTorch. Also the front of the CPU row kernel
// detail::cross_entropy_row (the stable log-softmax of one logits row and its gradient), which the sampled
// softmax of train/ runs on its own logits.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "prefixtune/backend/cpu/cross_entropy.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/tensor.hpp"

namespace prefixtune {

/// How per-position losses are combined into the scalar loss.
enum class Reduction {
  SumPerSequenceMeanBatch,  // sum over all labelled positions / B (the prefix-tuning paper's objective)
  MeanPerToken,             // sum / number of labelled positions; 0 labelled positions give loss 0, zero grads
};

/// Label value of a position that carries no target (as in PyTorch / HuggingFace).
inline constexpr std::int32_t kIgnoreLabel = -100;

/// Loss and "unit" gradients (d loss / d input, i.e. for an incoming dloss of 1) of cross_entropy_forward.
template <class T, class Device>
struct CrossEntropyResult {
  double loss = 0;              // the reduced loss
  std::int64_t num_labels = 0;  // labelled positions
  Tensor<T, Device> dh;         // (B, T, C) d loss / d h, defined only if want_dh (0 at unlabelled positions)
  Tensor<T, Device> dE;         // (V, C) d loss / d E, defined only if want_dE
};

/// Options of the fused LM head + cross-entropy; the defaults give the plain loss, bit for bit.
template <class T, class Device>
struct CrossEntropyOptions {
  double label_smoothing = 0;  // eps in [0, 1): loss (1 - eps) nll + eps mean_v(-log p_v), as PyTorch's
  Tensor<T, Device> bias;      // (V) added to every logits row, frozen (no gradient); undefined = none
};

namespace detail {

/// Checks a logits bias (undefined = none) against the vocabulary size V of E (V, C).
template <class T, class Device>
void check_logits_bias(const char* op, const Tensor<T, Device>& bias, std::int64_t V) {
  PREFIXTUNE_CHECK(!bias.defined() || (bias.rank() == 1 && bias.size(0) == V), op, ": logits bias shape ",
                   bias.defined() ? bias.shape().to_string() : std::string(), " does not match E: it must be (V) = (",
                   V, ")");
}

/// Checks options against E (V, C): label_smoothing finite in [0, 1), the bias (V) or undefined.
template <class T, class Device>
void check_cross_entropy_options(const char* op, const CrossEntropyOptions<T, Device>& o, std::int64_t V) {
  PREFIXTUNE_CHECK(std::isfinite(o.label_smoothing) && o.label_smoothing >= 0 && o.label_smoothing < 1, op,
                   ": label_smoothing must be finite and in [0, 1), got ", o.label_smoothing);
  check_logits_bias(op, o.bias, V);
}

/// The labelled positions of `labels` (B, T) as flat row indices into (B*T, C) and their targets, after
/// checking shapes and that every label is kIgnoreLabel or in [0, V). Throws before any computation.
struct LabelledRows {
  std::vector<std::int64_t> rows;
  std::vector<std::int32_t> targets;
};

template <class T, class Device>
LabelledRows check_cross_entropy_args(const char* op, const Tensor<T, Device>& h, const Tensor<T, Device>& E,
                                      const Tensor<std::int32_t, Device>& labels, std::int64_t chunk_rows) {
  PREFIXTUNE_CHECK(h.defined() && E.defined() && labels.defined(), op, ": undefined tensor argument (h ",
                   h.defined() ? "defined" : "undefined", ", E ", E.defined() ? "defined" : "undefined", ", labels ",
                   labels.defined() ? "defined" : "undefined", ")");
  PREFIXTUNE_CHECK(h.rank() == 3, op, ": h must be (B, T, C), got shape ", h.shape());
  PREFIXTUNE_CHECK(E.rank() == 2 && E.size(1) == h.size(2), op, ": E shape ", E.shape(), " does not match h ",
                   h.shape(), ": E must be (V, C) with C = ", h.size(2));
  PREFIXTUNE_CHECK(labels.rank() == 2 && labels.size(0) == h.size(0) && labels.size(1) == h.size(1), op,
                   ": labels shape ", labels.shape(), " does not match h ", h.shape(), ": labels must be (B, T) = (",
                   h.size(0), ", ", h.size(1), ")");
  PREFIXTUNE_CHECK(chunk_rows >= 1, op, ": chunk_rows must be >= 1, got ", chunk_rows);
  const std::int64_t T_len = h.size(1), V = E.size(0);
  const std::vector<std::int32_t> lab = labels.to_vector();
  LabelledRows r;
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(lab.size()); ++i) {
    const std::int32_t l = lab[static_cast<std::size_t>(i)];
    if (l == kIgnoreLabel) continue;
    PREFIXTUNE_CHECK(l >= 0 && l < V, op, ": label ", l, " at (b=", i / T_len, ", t=", i % T_len,
                     ") is outside [0, V) with V = ", V, " (only ", kIgnoreLabel, " marks an ignored position)");
    r.rows.push_back(i);
    r.targets.push_back(l);
  }
  return r;
}

}  // namespace detail

/// Loss of the tied LM head: for every labelled position, logsumexp(z) - z[label] with logits z = h E^T (+ bias),
/// reduced as asked; options.label_smoothing eps makes it (1 - eps) (lse - z[label]) + eps (lse - mean_v z_v),
/// PyTorch's F.cross_entropy(label_smoothing=eps). The vocabulary GEMM runs only for labelled rows, chunk_rows
/// at a time. With want_dh / want_dE the gradients for an incoming dloss of 1 come from the same pass (scale
/// them by dloss); want_dE = false costs nothing for E; the bias gets no gradient. labels == -100 are ignored;
/// any other label outside [0, V), a bad eps or a bias not of shape (V) throws before any work.
/// // h (B, T, C), E (V, C), labels (B, T), options.bias (V) or undefined
template <class T, class Device>
CrossEntropyResult<T, Device> cross_entropy_forward(const Tensor<T, Device>& h, const Tensor<T, Device>& E,
                                                    const Tensor<std::int32_t, Device>& labels, Reduction reduction,
                                                    bool want_dh, bool want_dE,
                                                    const CrossEntropyOptions<T, Device>& options,
                                                    std::int64_t chunk_rows = 128) {
  const detail::LabelledRows sel = detail::check_cross_entropy_args("cross_entropy_forward", h, E, labels, chunk_rows);
  detail::check_cross_entropy_options("cross_entropy_forward", options, E.size(0));
  const std::int64_t B = h.size(0), C = h.size(2), V = E.size(0);
  const auto n = static_cast<std::int64_t>(sel.rows.size());
  CrossEntropyResult<T, Device> r;  // an undefined dh / dE has data() == nullptr: the kernel skips it
  r.num_labels = n;
  if (want_dh) r.dh = Tensor<T, Device>::zeros(h.shape());
  if (want_dE) r.dE = Tensor<T, Device>::zeros(E.shape());
  if (n == 0) return r;  // loss 0 and zero gradients, for either reduction
  const double weight =
      reduction == Reduction::SumPerSequenceMeanBatch ? 1.0 / static_cast<double>(B) : 1.0 / static_cast<double>(n);
  const double sum = cross_entropy_chunked_kernel(Device{}, h.data(), E.data(), sel.rows.data(), sel.targets.data(), n,
                                                  C, V, weight, chunk_rows, static_cast<T*>(nullptr), r.dh.data(),
                                                  r.dE.data(), options.bias.data(), options.label_smoothing);
  r.loss = sum * weight;
  return r;
}

/// cross_entropy_forward with the default options (no bias, no label smoothing).
/// // h (B, T, C), E (V, C), labels (B, T)
template <class T, class Device>
CrossEntropyResult<T, Device> cross_entropy_forward(const Tensor<T, Device>& h, const Tensor<T, Device>& E,
                                                    const Tensor<std::int32_t, Device>& labels, Reduction reduction,
                                                    bool want_dh, bool want_dE, std::int64_t chunk_rows = 128) {
  return cross_entropy_forward(h, E, labels, reduction, want_dh, want_dE, CrossEntropyOptions<T, Device>{}, chunk_rows);
}

/// Per-position losses logsumexp(z) - z[label] with z = h E^T + bias (undefined bias = none), 0 where the label is
/// -100; forward only, for evaluation and scoring. Label smoothing is a training-loss option and has no place
/// here: these are always the plain negative log-likelihoods.
/// // h (B, T, C), E (V, C), labels (B, T), bias (V) or undefined -> (B, T)
template <class T, class Device>
Tensor<T, Device> cross_entropy_per_position(const Tensor<T, Device>& h, const Tensor<T, Device>& E,
                                             const Tensor<std::int32_t, Device>& labels, const Tensor<T, Device>& bias,
                                             std::int64_t chunk_rows = 128) {
  const detail::LabelledRows sel =
      detail::check_cross_entropy_args("cross_entropy_per_position", h, E, labels, chunk_rows);
  detail::check_logits_bias("cross_entropy_per_position", bias, E.size(0));
  auto out = Tensor<T, Device>::zeros(labels.shape());
  cross_entropy_chunked_kernel(Device{}, h.data(), E.data(), sel.rows.data(), sel.targets.data(),
                               static_cast<std::int64_t>(sel.rows.size()), h.size(2), E.size(0), 0.0, chunk_rows,
                               out.data(), static_cast<T*>(nullptr), static_cast<T*>(nullptr), bias.data());
  return out;
}

/// cross_entropy_per_position without a logits bias. // h (B, T, C), E (V, C), labels (B, T) -> (B, T)
template <class T, class Device>
Tensor<T, Device> cross_entropy_per_position(const Tensor<T, Device>& h, const Tensor<T, Device>& E,
                                             const Tensor<std::int32_t, Device>& labels,
                                             std::int64_t chunk_rows = 128) {
  return cross_entropy_per_position(h, E, labels, Tensor<T, Device>(), chunk_rows);
}

}  // namespace prefixtune
