// SPDX-License-Identifier: MIT
// Attention over a KV cache with grouped K/V heads (GQA: NH query heads over KVH K/V heads) against a naive
// double-precision reference: the output and every cache element (the new tokens' K/V appended, the rest
// untouched); plus the errors of a bad head count or bad shapes, and the slot copy over KVH heads.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "prefixtune/prefixtune.hpp"
#include "reference/cached_attention_reference.hpp"
#include "test_util.hpp"

using namespace prefixtune;

TEST_CASE_TEMPLATE("cached attention with grouped K/V heads equals the naive reference, out and cache", T, float,
                   double) {
  Rng rng(11);
  for (const auto& c : test::gqa_cases()) {
    INFO("NH=", c.d.NH, " KVH=", c.d.KVH, " rows=", c.rows.size());
    auto in = test::cached_inputs<T>(c, rng);
    const auto e = test::cached_attention_reference(c, in);
    Tensor<T> out({in.qkv.size(0), c.d.C()});
    cached_attention_forward(c.d, in.rows, in.qkv, in.cache_k, in.cache_v, out);
    CHECK(test::max_rel_diff(out.to_vector(), e.out) < test::tolerance<T>());
    CHECK(test::max_rel_diff(in.cache_k.to_vector(), e.cache_k) == 0.0);  // copies: exact
    CHECK(test::max_rel_diff(in.cache_v.to_vector(), e.cache_v) == 0.0);
  }
}

TEST_CASE("cached attention with grouped K/V heads equals plain multi-head attention over the repeated heads") {
  // Repeating every K/V head G times (in qkv, the cache and the prefixes) turns a GQA call into an MHA one
  // (KVH == NH, the GPT-2 path) with the same result.
  Rng rng(12);
  const test::CachedCase c = test::gqa_cases()[0];  // NH=6, KVH=2
  auto in = test::cached_inputs<float>(c, rng);
  const std::int64_t NH = c.d.NH, KVH = c.d.KVH, HS = c.d.HS, G = NH / KVH, N = in.qkv.size(0);
  test::CachedCase m = c;
  m.d.KVH = NH;
  auto wide = [&](const Tensor<float>& t, std::int64_t outer, std::int64_t inner) {  // (outer, KVH, inner) -> NH
    Tensor<float> r({outer, NH, inner});
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t h = 0; h < NH; ++h)
        std::copy(t.data() + (o * KVH + h / G) * inner, t.data() + (o * KVH + h / G + 1) * inner,
                  r.data() + (o * NH + h) * inner);
    return r;
  };
  Tensor<float> qkv({N, 3 * NH * HS});
  for (std::int64_t i = 0; i < N; ++i) {
    const float* src = in.qkv.data() + i * c.d.qkv_width();
    std::copy(src, src + NH * HS, qkv.data() + i * 3 * NH * HS);
    for (std::int64_t kv = 0; kv < 2; ++kv)
      for (std::int64_t h = 0; h < NH; ++h)
        std::copy(src + NH * HS + (kv * KVH + h / G) * HS, src + NH * HS + (kv * KVH + h / G + 1) * HS,
                  qkv.data() + i * 3 * NH * HS + (1 + kv) * NH * HS + h * HS);
  }
  auto ck = wide(in.cache_k.reshape({c.slots, KVH, c.d.capacity * HS}), c.slots, c.d.capacity * HS)
                .reshape({c.slots, NH, c.d.capacity, HS});
  auto cv = wide(in.cache_v.reshape({c.slots, KVH, c.d.capacity * HS}), c.slots, c.d.capacity * HS)
                .reshape({c.slots, NH, c.d.capacity, HS});
  std::vector<Tensor<float>> pk, pv;
  auto rows = in.rows;
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const std::int64_t P = rows[r].prefix_len;
    pk.push_back(P > 0 ? wide(in.prefix_k[r].reshape({1, KVH, P * HS}), 1, P * HS) : Tensor<float>());
    pv.push_back(P > 0 ? wide(in.prefix_v[r].reshape({1, KVH, P * HS}), 1, P * HS) : Tensor<float>());
    rows[r].prefix_k = P > 0 ? pk.back().data() : nullptr;
    rows[r].prefix_v = P > 0 ? pv.back().data() : nullptr;
  }
  Tensor<float> out({N, NH * HS}), mout({N, NH * HS});
  cached_attention_forward(c.d, in.rows, in.qkv, in.cache_k, in.cache_v, out);
  cached_attention_forward(m.d, rows, qkv, ck, cv, mout);
  CHECK(test::max_rel_diff(out.to_vector(), mout.to_vector()) < 1e-5);
  CHECK(test::max_rel_diff(
            ck.reshape({c.slots, NH, c.d.capacity * HS}).to_vector(),
            wide(in.cache_k.reshape({c.slots, KVH, c.d.capacity * HS}), c.slots, c.d.capacity * HS).to_vector()) ==
        0.0);
}

TEST_CASE("KvCache::dims takes a positive multiple of its kv_heads as the query heads") {
  const KvShape shape{2, 3, 4, 16};
  KvCache<float> cache(shape, 2, 8);
  const auto d = cache.dims(12);
  CHECK(d.NH == 12);
  CHECK(d.KVH == 3);
  CHECK(d.HS == 4);
  CHECK(d.capacity == 8);
  CHECK(d.C() == 48);
  CHECK(d.KVC() == 12);
  CHECK(d.qkv_width() == 72);
  CHECK(cache.dims().NH == 3);
  CHECK(cache.dims().KVH == 3);
  for (std::int64_t bad : {4, 0, -3}) {
    const std::string err = test::error_of([&] { (void)cache.dims(bad); });
    CHECK(err.find("KvCache: " + std::to_string(bad) +
                   " query heads must be a positive multiple of the cache's 3 kv_heads") != std::string::npos);
  }
}

TEST_CASE("cached attention names the expected shapes of a bad call") {
  const detail::CachedAttentionDims d{6, 2, 8, 10};
  std::vector<detail::CachedAttentionRow<float>> rows(1);
  rows[0].count = 1;
  Tensor<float> qkv({1, 80}), out({1, 48}), ck({2, 2, 10, 8}), cv({2, 2, 10, 8});
  Tensor<float> bad_qkv({1, 3 * 48}), bad_cache({2, 6, 10, 8});
  CHECK(test::error_of([&] {
          cached_attention_forward(d, rows, bad_qkv, ck, cv, out);
        }).find("must be (N, 80) and (N, 48): (N, (NH + 2 KVH) HS) and (N, NH HS) for NH=6 KVH=2 HS=8") !=
        std::string::npos);
  CHECK(test::error_of([&] {
          cached_attention_forward(d, rows, qkv, bad_cache, cv, out);
        }).find("must be (slots, 2, 10, 8): (slots, KVH, capacity, HS)") != std::string::npos);
  const detail::CachedAttentionDims uneven{6, 4, 8, 10};
  CHECK(test::error_of([&] {
          cached_attention_forward(uneven, rows, qkv, ck, cv, out);
        }).find("6 query heads must be a positive multiple of the 4 K/V heads") != std::string::npos);
  CHECK(test::error_of([&] { cached_attention_forward(d, rows, qkv, ck, cv, out); }).empty());
}

TEST_CASE("KvCache::copy_slot copies every K/V head of a grouped cache") {
  const KvShape shape{1, 2, 3, 16};
  KvCache<float> cache(shape, 3, 6);
  Rng rng(3);
  fill_uniform(cache.k(0), rng, -1, 1);
  fill_uniform(cache.v(0), rng, -1, 1);
  cache.reset(0, kNoPrefix);
  cache.advance(0, 4);
  const auto k = cache.k(0).to_vector(), v = cache.v(0).to_vector();
  cache.copy_slot(2, 0);
  CHECK(cache.length(2) == 4);
  const auto k2 = cache.k(0).to_vector(), v2 = cache.v(0).to_vector();
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t t = 0; t < 6; ++t)
      for (std::int64_t x = 0; x < 3; ++x) {
        const auto src = static_cast<std::size_t>(((0 * 2 + h) * 6 + t) * 3 + x);
        const auto dst = static_cast<std::size_t>(((2 * 2 + h) * 6 + t) * 3 + x);
        CHECK(k2[dst] == (t < 4 ? k[src] : k[dst]));  // the first 4 tokens copied, the rest untouched
        CHECK(v2[dst] == (t < 4 ? v[src] : v[dst]));
      }
}
