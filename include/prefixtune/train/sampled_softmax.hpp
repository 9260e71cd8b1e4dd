// SPDX-License-Identifier: MIT
// Sampled softmax (Jean et al. 2015) for the tied LM head, for training a whole model on the CPU with a large
// vocabulary (pretraining, full fine-tuning): each step scores the batch's own labels plus a few thousand uniformly
// drawn other rows instead of all V, and corrects the drawn rows' logits so that the partition function stays an
// unbiased estimate. With GPT-2's 50257 tokens and a small model the head is most of the work; 4096 negatives make
// it about 10x cheaper. Prefix-tuning itself does not need it (its head costs only the forward and dh).
//
// Estimator: with U the distinct labels of the batch and N a uniform draw of K distinct rows outside U,
//   Z = sum_{u in U} exp(z_u) + (V - |U|) / K * sum_{w in N} exp(z_w)
// is an unbiased estimate of sum_{v < V} exp(z_v) given U; the loss of a position is log Z - z_label. When
// K >= V - |U| every row is scored with weight 1 and the loss equals cross_entropy's exactly.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "prefixtune/autograd/functions.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/rng.hpp"
#include "prefixtune/core/tensor.hpp"
#include "prefixtune/ops/cross_entropy.hpp"
#include "prefixtune/ops/gemm.hpp"

namespace prefixtune {

/// The vocabulary rows one sampled-softmax step scores.
struct SampledVocabulary {
  std::vector<std::int32_t> ids;     // the distinct labels (sorted), then the negatives (sorted)
  std::int64_t num_labels = 0;       // ids[0, num_labels) are the labels' rows
  double negative_log_weight = 0.0;  // log((V - num_labels) / negatives), added to each negative's logit
};

/// The distinct values of `labels` (all in [0, V)) and `negatives` distinct other rows drawn uniformly from the
/// rest of [0, V) with `rng` (a partial Fisher-Yates shuffle: deterministic for a given Rng state). negatives >=
/// V - |labels| takes every other row (weight 1: the full softmax).
inline SampledVocabulary sample_vocabulary(std::vector<std::int32_t> labels, std::int64_t V, std::int64_t negatives,
                                           Rng& rng) {
  PREFIXTUNE_CHECK(V >= 1 && negatives >= 0, "sample_vocabulary: V = ", V, " and negatives = ", negatives,
                   " must be >= 1 and >= 0");
  std::sort(labels.begin(), labels.end());
  labels.erase(std::unique(labels.begin(), labels.end()), labels.end());
  PREFIXTUNE_CHECK(labels.empty() || (labels.front() >= 0 && labels.back() < V),
                   "sample_vocabulary: a label is outside [0, ", V, ")");
  SampledVocabulary s;
  s.num_labels = static_cast<std::int64_t>(labels.size());
  std::vector<std::int32_t> rest;
  rest.reserve(static_cast<std::size_t>(V - s.num_labels));
  for (std::int32_t v = 0, k = 0; v < V; ++v) {
    if (k < s.num_labels && labels[static_cast<std::size_t>(k)] == v) {
      ++k;
    } else {
      rest.push_back(v);
    }
  }
  const auto n_rest = static_cast<std::int64_t>(rest.size());
  const std::int64_t K = std::min(negatives, n_rest);
  for (std::int64_t i = 0; i < K && K < n_rest; ++i) {
    const auto j = i + static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(n_rest - i)));
    std::swap(rest[static_cast<std::size_t>(i)], rest[static_cast<std::size_t>(j)]);
  }
  rest.resize(static_cast<std::size_t>(K));
  std::sort(rest.begin(), rest.end());
  s.negative_log_weight = K > 0 ? std::log(static_cast<double>(n_rest) / static_cast<double>(K)) : 0.0;
  s.ids = std::move(labels);
  s.ids.insert(s.ids.end(), rest.begin(), rest.end());
  return s;
}

namespace detail {

/// Forward results and unit gradients of one sampled-softmax loss (mean over labelled positions).
template <class T>
struct SampledSoftmaxResult {
  double loss = 0;
  std::vector<std::int64_t> rows;  // labelled rows of h (B*T, C)
  std::vector<std::int32_t> ids;   // scored rows of E
  std::vector<T> dh_rows;          // (rows, C) d loss / d h at `rows`
  std::vector<T> dE_rows;          // (ids, C) d loss / d E at `ids`
};

}  // namespace detail

/// Mean per labelled position of the sampled-softmax loss of the tied head E (V, C) over h (B, T, C) with labels
/// (B, T) (-100: ignored), `negatives` uniform negatives per call drawn from `rng`. Memory: (labelled positions) x
/// (distinct labels + negatives) logits. CPU only. Zero labelled positions give loss 0 and zero gradients.
template <class H, class E>
detail::var_t<H> sampled_softmax_loss(detail::tape_t<H>& tape, const H& h, const E& embedding_matrix,
                                      const Tensor<std::int32_t, Cpu>& labels, std::int64_t negatives, Rng& rng) {
  static_assert(detail::same_kind_v<H, E>, "sampled_softmax_loss: h and E must share element type and device");
  static_assert(std::is_same_v<detail::device_t<H>, Cpu>, "sampled_softmax_loss runs on the CPU");
  using T = detail::value_t<H>;
  const Tensor<T, Cpu> hv = detail::value_of(h), Ev = detail::value_of(embedding_matrix);
  const detail::LabelledRows sel = detail::check_cross_entropy_args("sampled_softmax_loss", hv, Ev, labels, 1);
  PREFIXTUNE_CHECK(negatives >= 1, "sampled_softmax_loss: negatives must be >= 1, got ", negatives);
  const std::int64_t C = hv.size(2), V = Ev.size(0);
  const auto n = static_cast<std::int64_t>(sel.rows.size());
  const bool rec = detail::should_record(h, embedding_matrix);
  auto r = std::make_shared<detail::SampledSoftmaxResult<T>>();
  if (n > 0) {
    const SampledVocabulary voc = sample_vocabulary(sel.targets, V, negatives, rng);
    const auto S = static_cast<std::int64_t>(voc.ids.size());
    const auto label_end = voc.ids.begin() + voc.num_labels;
    std::vector<T> hr(static_cast<std::size_t>(n * C)), Es(static_cast<std::size_t>(S * C));
    std::vector<T> z(static_cast<std::size_t>(n * S));
    std::vector<std::int32_t> col(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      std::memcpy(hr.data() + i * C, hv.data() + sel.rows[static_cast<std::size_t>(i)] * C, sizeof(T) * C);
      col[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(
          std::lower_bound(voc.ids.begin(), label_end, sel.targets[static_cast<std::size_t>(i)]) - voc.ids.begin());
    }
    for (std::int64_t j = 0; j < S; ++j)
      std::memcpy(Es.data() + j * C, Ev.data() + static_cast<std::int64_t>(voc.ids[static_cast<std::size_t>(j)]) * C,
                  sizeof(T) * C);
    // z (n, S) = hr (n, C) Es^T, plus the negatives' log weight
    gemm(Cpu{}, Trans::N, Trans::T, n, S, C, T(1), hr.data(), C, Es.data(), C, T(0), z.data(), S);
    const auto bias = static_cast<T>(voc.negative_log_weight);
    const bool want_grad = rec && (detail::needs_grad(h) || detail::needs_grad(embedding_matrix));
    std::vector<double> losses(static_cast<std::size_t>(n));
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
    for (std::int64_t i = 0; i < n; ++i) {
      T* zi = z.data() + i * S;
      for (std::int64_t j = voc.num_labels; j < S; ++j) zi[j] += bias;
      losses[static_cast<std::size_t>(i)] =
          detail::cross_entropy_row(zi, S, col[static_cast<std::size_t>(i)], 1.0 / static_cast<double>(n), want_grad);
    }
    double sum = 0;
    for (const double l : losses) sum += l;  // in row order: independent of the thread count
    r->loss = sum / static_cast<double>(n);
    if (want_grad) {  // z now holds d loss / d logits
      r->rows = sel.rows;
      r->ids = voc.ids;
      if (detail::needs_grad(h)) {
        r->dh_rows.resize(static_cast<std::size_t>(n * C));
        gemm(Cpu{}, Trans::N, Trans::N, n, C, S, T(1), z.data(), S, Es.data(), C, T(0), r->dh_rows.data(), C);
      }
      if (detail::needs_grad(embedding_matrix)) {
        r->dE_rows.resize(static_cast<std::size_t>(S * C));
        gemm(Cpu{}, Trans::T, Trans::N, S, C, n, T(1), z.data(), S, hr.data(), C, T(0), r->dE_rows.data(), C);
      }
    }
  }
  Var<T, Cpu> loss(Tensor<T, Cpu>::from_vector(Shape{}, {static_cast<T>(r->loss)}), rec, "sampled_softmax_loss");
  if (rec) {
    tape.record([loss, h, embedding_matrix, r, C] {
      if (!loss.grad().defined()) return;
      const T dloss = loss.grad().item();
      const auto scatter = [&](Tensor<T, Cpu> g, const auto& index, const std::vector<T>& rows) {
        if (!g.defined() || rows.empty()) return;
        for (std::size_t i = 0; i < index.size(); ++i) {
          T* dst = g.data() + static_cast<std::int64_t>(index[i]) * C;
          const T* src = rows.data() + static_cast<std::int64_t>(i) * C;
          for (std::int64_t c = 0; c < C; ++c) dst[c] += dloss * src[c];
        }
      };
      scatter(detail::grad_of(h), r->rows, r->dh_rows);
      scatter(detail::grad_of(embedding_matrix), r->ids, r->dE_rows);
    });
  }
  return loss;
}

}  // namespace prefixtune
