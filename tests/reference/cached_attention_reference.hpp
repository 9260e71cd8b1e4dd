// SPDX-License-Identifier: MIT
// Cases of attention over a KV cache with grouped K/V heads (random inputs, rows with their own past, count,
// prefix and infix position) and a naive double-precision reference of it, written from the definition: query head
// h of a token reads K/V head h / (NH / KVH), sees its prefix when visible and every cached token up to itself.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "prefixtune/backend/common/attention.hpp"
#include "prefixtune/core/rng.hpp"
#include "prefixtune/core/tensor.hpp"
#include "test_util.hpp"

namespace prefixtune::test {

/// One row of a case: its slot, the tokens it holds already, its new tokens, its prefix length (0: none) and the
/// slot index from which its tokens see the prefix.
struct CachedRowSpec {
  std::int64_t slot = 0, past = 0, count = 0, prefix_len = 0, prefix_from = 0;
};

struct CachedCase {
  detail::CachedAttentionDims d;
  std::int64_t slots = 0;
  std::vector<CachedRowSpec> rows;
};

/// Random inputs of a case: qkv (N, (NH + 2 KVH) HS), caches (slots, KVH, capacity, HS) filled with random values
/// everywhere (also past every slot's tokens), per row prefix K/V (KVH, P, HS) or undefined.
template <class T>
struct CachedInputs {
  Tensor<T> qkv, cache_k, cache_v;
  std::vector<Tensor<T>> prefix_k, prefix_v;
  std::vector<detail::CachedAttentionRow<T>> rows;  // packed in order, prefix pointers into prefix_k / prefix_v
};

template <class T>
CachedInputs<T> cached_inputs(const CachedCase& c, Rng& rng) {
  CachedInputs<T> in;
  const auto& d = c.d;
  std::int64_t N = 0;
  for (const auto& s : c.rows) {
    detail::CachedAttentionRow<T> w;
    w.slot = s.slot, w.past = s.past, w.count = s.count, w.first = N, w.prefix_len = s.prefix_len;
    w.prefix_from = s.prefix_from;
    N += s.count;
    Tensor<T> pk, pv;
    if (s.prefix_len > 0) {
      pk = random_tensor<T>({d.KVH, s.prefix_len, d.HS}, rng, -2, 2);
      pv = random_tensor<T>({d.KVH, s.prefix_len, d.HS}, rng);
      w.prefix_k = pk.data(), w.prefix_v = pv.data();
    }
    in.prefix_k.push_back(pk);
    in.prefix_v.push_back(pv);
    in.rows.push_back(w);
  }
  in.qkv = random_tensor<T>({N, d.qkv_width()}, rng, -2, 2);
  in.cache_k = random_tensor<T>({c.slots, d.KVH, d.capacity, d.HS}, rng, -2, 2);
  in.cache_v = random_tensor<T>({c.slots, d.KVH, d.capacity, d.HS}, rng);
  return in;
}

/// The expected out (N, NH HS) and caches after the call, in double.
struct CachedExpected {
  std::vector<double> out, cache_k, cache_v;
};

template <class T>
CachedExpected cached_attention_reference(const CachedCase& c, const CachedInputs<T>& in) {
  const auto& d = c.d;
  const std::int64_t NH = d.NH, KVH = d.KVH, HS = d.HS, cap = d.capacity, G = NH / KVH;
  const std::int64_t C = NH * HS, KVC = KVH * HS, W = C + 2 * KVC;
  const std::vector<double> qkv = as_double(in.qkv);
  CachedExpected e{std::vector<double>(static_cast<std::size_t>(in.qkv.size(0) * C), 0.0), as_double(in.cache_k),
                   as_double(in.cache_v)};
  auto at = [&](std::int64_t slot, std::int64_t h, std::int64_t t, std::int64_t x) {
    return static_cast<std::size_t>(((slot * KVH + h) * cap + t) * HS + x);
  };
  for (const auto& w : in.rows)  // every new token's K/V lands at slot index past + j
    for (std::int64_t j = 0; j < w.count; ++j)
      for (std::int64_t h = 0; h < KVH; ++h)
        for (std::int64_t x = 0; x < HS; ++x) {
          const std::int64_t i = (w.first + j) * W + C + h * HS + x;
          e.cache_k[at(w.slot, h, w.past + j, x)] = qkv[static_cast<std::size_t>(i)];
          e.cache_v[at(w.slot, h, w.past + j, x)] = qkv[static_cast<std::size_t>(i + KVC)];
        }
  for (std::size_t r = 0; r < in.rows.size(); ++r) {
    const auto& w = in.rows[r];
    const std::int64_t P = w.prefix_len;
    const std::vector<double> pk = P > 0 ? as_double(in.prefix_k[r]) : std::vector<double>();
    const std::vector<double> pv = P > 0 ? as_double(in.prefix_v[r]) : std::vector<double>();
    for (std::int64_t j = 0; j < w.count; ++j) {
      const std::int64_t t = w.past + j;  // this token's slot index: it sees cached tokens 0..t
      const bool prefix = P > 0 && t >= w.prefix_from;
      for (std::int64_t h = 0; h < NH; ++h) {
        const std::int64_t kvh = h / G;
        const double* q = qkv.data() + (w.first + j) * W + h * HS;
        std::vector<double> s;  // the visible keys' scores: prefix slots (when seen), then tokens 0..t
        std::vector<const double*> vals;
        auto score = [&](const double* k, const double* v) {
          double dot = 0;
          for (std::int64_t x = 0; x < HS; ++x) dot += q[x] * k[x];
          s.push_back(dot / std::sqrt(static_cast<double>(HS)));
          vals.push_back(v);
        };
        if (prefix)
          for (std::int64_t p = 0; p < P; ++p)
            score(&pk[static_cast<std::size_t>((kvh * P + p) * HS)], &pv[static_cast<std::size_t>((kvh * P + p) * HS)]);
        for (std::int64_t u = 0; u <= t; ++u)
          score(&e.cache_k[at(w.slot, kvh, u, 0)], &e.cache_v[at(w.slot, kvh, u, 0)]);
        double mx = s[0], sum = 0;
        for (double x : s) mx = std::max(mx, x);
        for (double& x : s) sum += (x = std::exp(x - mx));
        double* o = e.out.data() + (w.first + j) * C + h * HS;
        for (std::size_t u = 0; u < s.size(); ++u)
          for (std::int64_t x = 0; x < HS; ++x) o[x] += s[u] / sum * vals[u][x];
      }
    }
  }
  return e;
}

/// The cases of the GQA tests: NH=6 over KVH=2 and NH=4 over KVH=1 (plus KVH == NH), HS 8; rows in mixed slot
/// order with different past lengths and counts, prefixes of 0..4 slots, infixes seen from slot index > 0, and
/// one long prefill row (enough work for the CPU kernel's parallel path).
inline std::vector<CachedCase> gqa_cases() {
  std::vector<CachedCase> cases;
  for (const auto& [NH, KVH] : {std::pair<std::int64_t, std::int64_t>{6, 2}, {4, 1}, {3, 3}}) {
    CachedCase c;
    c.d = {NH, KVH, 8, 64};
    c.slots = 5;
    c.rows = {{2, 0, 5, 3, 0}, {0, 4, 1, 0, 0}, {3, 3, 3, 2, 4}, {1, 7, 1, 4, 2}, {4, 0, 1, 1, 0}};
    cases.push_back(c);
    c.rows = {{4, 20, 40, 2, 0}, {0, 9, 2, 3, 10}, {2, 0, 33, 0, 0}};
    cases.push_back(c);
  }
  return cases;
}

}  // namespace prefixtune::test
