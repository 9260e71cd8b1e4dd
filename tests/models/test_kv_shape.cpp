// SPDX-License-Identifier: MIT
// KvShape, the one description of the K/V a prefix fills: the table layout (PEFT's row layout, written once in
// KvShape::table_column) read the same way by the differentiable split, its inverse, a PrefixBank, prefix files and
// a KV cache, for a grouped-query shape (kv_heads < heads, head_dim not C / heads) as for GPT-2 and BART; and the
// position rule of each model.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "prefixtune/generate/kv_cache.hpp"
#include "prefixtune/models/bart_config.hpp"
#include "prefixtune/models/gpt2_config.hpp"
#include "prefixtune/prefix/kv_table.hpp"
#include "prefixtune/prefix/prefix_bank.hpp"
#include "prefixtune/prefix/prefix_io.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::error_of;

namespace {

/// A table whose every element tells where it sits: 1000 * p + column.
Tensor<double> numbered_table(std::int64_t P, const KvShape& s) {
  auto t = Tensor<double>::empty({P, s.table_width()});
  for (std::int64_t p = 0; p < P; ++p)
    for (std::int64_t j = 0; j < s.table_width(); ++j)
      t(p, j) = 1000.0 * static_cast<double>(p) + static_cast<double>(j);
  return t;
}

}  // namespace

TEST_CASE("KvShape: the split, its inverse and a PrefixBank read every table element where table_column says") {
  // Grouped-query: 3 layers, 2 K/V heads of head_dim 5 (a model of, say, 8 query heads of width 40 would have this).
  const KvShape s{3, 2, 5, 32, true};
  CHECK(s.kv_width() == 10);
  CHECK(s.table_width() == 60);
  const std::int64_t P = 4;
  const auto table = numbered_table(P, s);
  NoGradGuard no_grad;
  Tape<double> tape;
  const auto kv = prefix_kv_from_table(tape, Var<double>(table), s);
  REQUIRE(kv.k.size() == 3);
  REQUIRE(kv.v.size() == 3);
  PrefixBank<double> bank(s);
  const std::int64_t i = bank.add(table.to<Cpu>(), "numbered");
  std::int64_t checked = 0;
  for (std::int64_t l = 0; l < s.layers; ++l)
    for (int which = 0; which < 2; ++which) {
      const Tensor<double> block = (which == 0 ? kv.k : kv.v)[static_cast<std::size_t>(l)].value();
      const Tensor<double>& banked = which == 0 ? bank.k(i, l) : bank.v(i, l);
      REQUIRE(block.shape() == Shape({1, 2, P, 5}));
      REQUIRE(banked.shape() == Shape({2, P, 5}));
      for (std::int64_t h = 0; h < s.kv_heads; ++h)
        for (std::int64_t p = 0; p < P; ++p)
          for (std::int64_t e = 0; e < s.head_dim; ++e) {
            const double want = 1000.0 * static_cast<double>(p) + static_cast<double>(s.table_column(l, which, h, e));
            CHECK(block.data()[(h * P + p) * 5 + e] == want);
            CHECK(banked.data()[(h * P + p) * 5 + e] == want);
            ++checked;
          }
    }
  CHECK(checked == P * s.table_width());
  CHECK(test::max_rel_diff(prefix_table_from_kv(kv).to_vector(), table.to_vector()) == 0.0);
  // The layout is PEFT's: column ((2i + kv) * KVH + h) * HD + e.
  CHECK(s.table_column(2, 1, 1, 4) == ((2 * 2 + 1) * 2 + 1) * 5 + 4);
  // A table of another width is refused, naming the shape.
  CHECK(error_of([&] {
          (void)prefix_kv_from_table(tape, Var<double>(Tensor<double>::zeros({P, 50})), s);
        }).find("3 layers x 2 kv_heads x head_dim 5") != std::string::npos);
}

TEST_CASE("KvShape of each model: GPT-2 one shifted stack, BART three unshifted ones; prefix files and caches use it") {
  Gpt2Config g;
  g.n_layer = 2, g.n_head = 4, g.n_embd = 32, g.n_positions = 64;
  const KvShape gs = g;  // a GPT-2 config stands for its stack
  CHECK(gs == KvShape{2, 4, 8, 64, true});
  CHECK(gs.first_position(10) == 10);    // real tokens after P = 10 slots start at 10 (PEFT)
  CHECK(gs.first_position(10, 0) == 0);  // or at 0 on request
  BartConfig b;
  b.d_model = 24, b.encoder_layers = 3, b.decoder_layers = 2, b.encoder_attention_heads = 4;
  b.decoder_attention_heads = 2, b.max_position_embeddings = 40;
  CHECK(b.encoder_kv_shape() == KvShape{3, 4, 6, 40, false});
  CHECK(b.decoder_kv_shape() == KvShape{2, 2, 12, 40, false});
  CHECK(b.decoder_kv_shape().first_position(10) == 0);  // BART's prefixes shift no positions

  // A bank of a grouped-query stack: its positions follow the stack's rule and context.
  const KvShape q{2, 2, 3, 16, true};
  PrefixBank<float> bank(q);
  const auto t = Tensor<float>::zeros({5, q.table_width()});
  CHECK(bank.position_offset(bank.add(t)) == 5);
  CHECK(bank.position_offset(bank.add(t, "", 0)) == 0);
  CHECK(error_of([&] {
          (void)bank.add(Tensor<float>::zeros({5, 7}));
        }).find("2 * layers * kv_heads * head_dim = 24") != std::string::npos);
  // A cache holds (slots, KVH, capacity, HD) per layer.
  KvCache<float> cache(q, 3, 16);
  CHECK(cache.k(1).shape() == Shape({3, 2, 16, 3}));
  CHECK(cache.shape() == q);
  CHECK(error_of([&] { KvCache<float> c(q, 1, 17); }).find("context of 16 positions") != std::string::npos);

  // Prefix files and PEFT adapters record and check kv_heads and token_dim = kv_heads * head_dim.
  test::TempDir dir;
  DirectPrefix<float> p{Var<float>(t, true, "prefix.table")};
  export_peft(dir.file("peft"), p, q);
  const auto cfg = nlohmann::json::parse(read_text_file(dir.file("peft/adapter_config.json")));
  CHECK(cfg["num_attention_heads"] == 2);
  CHECK(cfg["token_dim"] == 6);
  CHECK(cfg["num_layers"] == 2);
  CHECK(import_peft<float>(dir.file("peft"), q).table.value().shape() == Shape({5, 24}));
  KvShape other = q;
  other.kv_heads = 3;
  CHECK(error_of([&] {
          (void)import_peft<float>(dir.file("peft"), other);
        }).find("does not fit the model (layers=2 token_dim=9 kv_heads=3)") != std::string::npos);
}
