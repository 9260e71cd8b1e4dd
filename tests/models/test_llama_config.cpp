// SPDX-License-Identifier: MIT
// The Llama family's configuration: config.json of llama / mistral / qwen2 / qwen3 in transformers 4.x and 5.x
// layouts (each family's defaults, eos lists, generation_config.json's end ids), the K/V shape a prefix fills
// (GQA, explicit head_dim), refusals naming the field, and the rotary frequencies against a double-precision
// recomputation of transformers' formulas (plain and llama3-scaled).
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "prefixtune/io/file.hpp"
#include "prefixtune/models/llama_io.hpp"
#include "prefixtune/models/llama_rope.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::error_of;

namespace {

LlamaConfig parse(const std::string& text) { return LlamaConfig::from_json(nlohmann::json::parse(text), "cfg.json"); }

std::string refusal(const std::string& text) {
  return error_of([&] { (void)parse(text); });
}

/// The Llama 3.1 8B configuration as transformers 4.x writes it.
const char* const kLlama31 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
  "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "pretraining_tp": 1,
  "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
  "original_max_position_embeddings": 8192, "rope_type": "llama3"}, "rope_theta": 500000.0,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.43.0.dev0", "use_cache": true,
  "vocab_size": 128256})";

}  // namespace

TEST_CASE("Llama-family config.json: each family and both transformers layouts") {
  const LlamaConfig l = parse(kLlama31);
  CHECK(l.model_type == "llama");
  CHECK(l.hidden_size == 4096);
  CHECK(l.num_key_value_heads == 8);
  CHECK(l.head_dim == 128);
  CHECK(l.group_size() == 4);
  CHECK(l.rms_norm_eps == 1e-5);
  CHECK(l.rope.type == "llama3");
  CHECK(l.rope.theta == 500000.0);
  CHECK(l.rope.factor == 8.0);
  CHECK(l.rope.original_max_position_embeddings == 8192);
  CHECK(l.eos_token_ids == std::vector<std::int32_t>{128001, 128008, 128009});
  CHECK(l.bos_token_id == 128000);
  CHECK_FALSE(l.tie_word_embeddings);
  CHECK_FALSE(l.attention_bias);
  // The K/V a prefix fills: KVH heads of head_dim, not the query heads (PEFT: token_dim = 8 * 128).
  CHECK(l.kv_shape() == KvShape{32, 8, 128, 131072, true});
  CHECK(l.kv_shape().kv_width() == 1024);

  // transformers 5.x: rope_parameters (with rope_theta inside) and dtype.
  const LlamaConfig v5 = parse(R"({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
    "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64,
    "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}, "dtype": "bfloat16", "eos_token_id": 7})");
  CHECK(v5.rope.type == "llama3");
  CHECK(v5.rope.theta == 500000.0);
  CHECK(v5.rope.factor == 32.0);
  CHECK(v5.num_key_value_heads == 4);  // absent in a llama config: plain multi-head attention
  CHECK(v5.head_dim == 16);
  CHECK(v5.eos_token_ids == std::vector<std::int32_t>{7});
  // "type" instead of "rope_type" (older 4.x files), and a "default" type: no scaling.
  CHECK(parse(R"({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1,
    "vocab_size": 10, "rope_scaling": {"type": "default"}})")
            .rope.type == "default");

  // Qwen2.5-0.5B: q/k/v biases always, tied head, 2 K/V heads of 64.
  const LlamaConfig q2 = parse(R"({"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896,
    "initializer_range": 0.02, "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
    "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
    "torch_dtype": "bfloat16", "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})");
  CHECK(q2.qkv_bias);
  CHECK_FALSE(q2.attention_bias);
  CHECK_FALSE(q2.qk_norm);
  CHECK(q2.tie_word_embeddings);
  CHECK(q2.kv_shape() == KvShape{24, 2, 64, 32768, true});

  // Qwen3: per-head q/k norms, head_dim given and not hidden / heads (1024 / 16 = 64, but 128).
  const LlamaConfig q3 = parse(R"({"model_type": "qwen3", "hidden_size": 1024, "num_attention_heads": 16,
    "num_key_value_heads": 8, "head_dim": 128, "num_hidden_layers": 28, "intermediate_size": 3072,
    "vocab_size": 151936, "max_position_embeddings": 40960, "rope_theta": 1000000, "attention_bias": false,
    "use_sliding_window": false, "sliding_window": null, "tie_word_embeddings": true})");
  CHECK(q3.qk_norm);
  CHECK_FALSE(q3.qkv_bias);
  CHECK(q3.head_dim == 128);
  CHECK(q3.kv_shape().kv_width() == 1024);
  CHECK(q3.kv_shape().table_width() == 2 * 28 * 8 * 128);
  // Absent num_key_value_heads in Qwen configs: transformers' default 32 (not the query head count).
  CHECK(parse(R"({"model_type": "qwen2", "hidden_size": 256, "num_attention_heads": 64, "num_hidden_layers": 1,
    "vocab_size": 10})")
            .num_key_value_heads == 32);

  // Mistral v0.3: no window (null), head_dim null -> hidden / heads, 8 K/V heads by default.
  const LlamaConfig m = parse(R"({"model_type": "mistral", "hidden_size": 4096, "num_attention_heads": 32,
    "num_hidden_layers": 32, "intermediate_size": 14336, "vocab_size": 32768, "max_position_embeddings": 32768,
    "sliding_window": null, "head_dim": null, "rope_theta": 1000000.0})");
  CHECK(m.head_dim == 128);
  CHECK(m.num_key_value_heads == 8);
}

TEST_CASE("Llama-family config.json: what the forward pass cannot honour is refused, naming the file and field") {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"model_type": "gpt2", "n_layer": 2})", "load it with load_gpt2"},
      {R"({"model_type": "bart"})", "load it with load_bart"},
      {R"({"model_type": "gemma"})", "model_type \"gemma\" is not a Llama-family model"},
      {R"({"hidden_size": 64})", "'model_type' is missing"},
      {R"({"model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})",
       "rope scaling type 'yarn' is not supported"},
      {R"({"model_type": "llama", "rope_parameters": {"rope_type": "dynamic", "factor": 2.0}})",
       "rope scaling type 'dynamic'"},
      {R"({"model_type": "llama", "hidden_act": "gelu"})", "hidden_act \"gelu\" is not supported"},
      {R"({"model_type": "llama", "num_attention_heads": 32, "num_key_value_heads": 5})",
       "num_key_value_heads=5 does not divide num_attention_heads=32"},
      {R"({"model_type": "qwen3", "head_dim": 7})", "head_dim=7 must be even"},
      {R"({"model_type": "llama", "vocab_size": 10, "eos_token_id": [2, 10]})", "eos_token_id 10 is outside"},
      {R"({"model_type": "llama", "eos_token_id": "2"})", "'eos_token_id' must be a token id or a list"},
      {R"({"model_type": "llama", "mlp_bias": true})", "mlp_bias=true is not supported"},
      {R"({"model_type": "llama", "rms_norm_eps": -1})", "rms_norm_eps=-1 is out of range"},
      {R"({"model_type": "llama", "hidden_size": "4096"})", "'hidden_size' must be an integer"},
      // Mistral v0.1: a 4096-token window in a 32k context; and a window by default when the key is absent.
      {R"({"model_type": "mistral", "max_position_embeddings": 32768, "sliding_window": 4096})",
       "sliding_window=4096 is in use"},
      {R"({"model_type": "mistral", "max_position_embeddings": 32768})", "sliding_window=4096 is in use"},
      {R"({"model_type": "qwen2", "use_sliding_window": true, "sliding_window": 4096})",
       "sliding-window attention is not supported"},
      {R"({"model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
        "high_freq_factor": 1.0}})",
       "llama3 rope scaling needs"},
      {R"([1, 2])", "config must be a JSON object"},
  };
  for (const auto& [text, want] : bad) {
    const std::string e = refusal(text);
    INFO(text);
    CHECK(e.find(want) != std::string::npos);
    CHECK(e.find("cfg.json") != std::string::npos);
  }
  // An unused window is ignored: Qwen2 with use_sliding_window false; a window as long as the context.
  CHECK_NOTHROW(parse(R"({"model_type": "qwen2", "use_sliding_window": false, "sliding_window": 4096})"));
  CHECK_NOTHROW(parse(R"({"model_type": "mistral", "max_position_embeddings": 4096, "sliding_window": 4096})"));
}

TEST_CASE("Llama-family configs round-trip through to_json; generation_config.json's end ids replace config.json's") {
  for (const char* text : {kLlama31, R"({"model_type": "qwen3", "hidden_size": 32, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "num_hidden_layers": 2, "vocab_size": 50,
    "tie_word_embeddings": true})",
                           R"({"model_type": "qwen2", "hidden_size": 48, "num_attention_heads": 6,
    "num_key_value_heads": 2, "num_hidden_layers": 1, "vocab_size": 60, "eos_token_id": 5})",
                           R"({"model_type": "mistral", "hidden_size": 32, "num_attention_heads": 4,
    "num_key_value_heads": 2, "num_hidden_layers": 1, "vocab_size": 40, "sliding_window": null})"}) {
    const LlamaConfig a = parse(text);
    const LlamaConfig b = LlamaConfig::from_json(a.to_json(), "again");
    INFO(text);
    CHECK(a.to_json() == b.to_json());
    CHECK(b.kv_shape() == a.kv_shape());
    CHECK(b.qkv_bias == a.qkv_bias);
    CHECK(b.qk_norm == a.qk_norm);
    CHECK(b.eos_token_ids == a.eos_token_ids);
    CHECK(b.rope.type == a.rope.type);
    CHECK(b.rope.factor == a.rope.factor);
  }
  test::TempDir dir;
  write_text_file_atomic(dir.file("config.json"), kLlama31);
  CHECK(load_llama_config(dir.path.string()).eos_token_ids.size() == 3);
  write_text_file_atomic(dir.file("generation_config.json"),
                         R"({"bos_token_id": 128000, "do_sample": true, "eos_token_id": [128001, 128009],
                             "temperature": 0.6, "top_p": 0.9})");
  CHECK(load_llama_config(dir.path.string()).eos_token_ids == std::vector<std::int32_t>{128001, 128009});
  write_text_file_atomic(dir.file("generation_config.json"), R"({"eos_token_id": 999999})");
  CHECK(error_of([&] { (void)load_llama_config(dir.path.string()); }).find("generation_config.json") !=
        std::string::npos);
  write_text_file_atomic(dir.file("generation_config.json"), R"({"eos_token_id": )");
  CHECK(error_of([&] { (void)load_llama_config(dir.path.string()); }).find("generation_config.json: invalid JSON") !=
        std::string::npos);
  std::filesystem::remove(dir.file("config.json"));
  CHECK(error_of([&] { (void)load_llama_config(dir.path.string()); }).find("config.json") != std::string::npos);
}

TEST_CASE("rotary frequencies: transformers' formulas in float32 against a double recomputation") {
  // Plain: 1 / theta^(2i / HD).
  RopeConfig plain;
  plain.theta = 10000;
  const auto f = rope_inv_freq(plain, 64);
  REQUIRE(f.size() == 32);
  for (std::size_t i = 0; i < f.size(); ++i) {
    const double want = 1.0 / std::pow(10000.0, 2.0 * double(i) / 64.0);
    CHECK(std::abs(double(f[i]) - want) <= 4e-7 * want);
  }
  CHECK(f[0] == 1.0f);
  // llama3 (Llama 3.1: theta 5e5, factor 8, low 1, high 4, original context 8192), recomputed in double.
  RopeConfig l3;
  l3.theta = 500000, l3.type = "llama3", l3.factor = 8, l3.low_freq_factor = 1, l3.high_freq_factor = 4;
  l3.original_max_position_embeddings = 8192;
  const auto g = rope_inv_freq(l3, 128);
  const auto base = rope_inv_freq(RopeConfig{500000.0}, 128);
  int high = 0, low = 0, band = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const double inv = 1.0 / std::pow(500000.0, 2.0 * double(i) / 128.0);
    const double wavelen = 2 * M_PI / inv;
    double want = inv;
    if (wavelen < 8192.0 / 4) {
      ++high;  // short wavelengths: kept
      CHECK(g[i] == base[i]);
    } else if (wavelen > 8192.0 / 1) {
      ++low;  // long ones: divided by factor
      want = inv / 8;
      CHECK(g[i] == base[i] / 8.0f);
    } else {
      ++band;
      const double smooth = (8192.0 / wavelen - 1) / (4 - 1);
      want = (1 - smooth) * inv / 8 + smooth * inv;
    }
    CHECK(std::abs(double(g[i]) - want) <= 2e-6 * want);
  }
  CHECK(high > 0);  // all three regimes occur at these settings
  CHECK(low > 0);
  CHECK(band > 0);
  // The cos / sin tables: rotate-half layout, angle = position * inv_freq.
  Tensor<double> c, s;
  rope_tables(f, {0, 1, 37}, c, s);
  REQUIRE(c.shape() == Shape({3, 64}));
  for (std::int64_t t = 0; t < 3; ++t)
    for (std::int64_t i = 0; i < 32; ++i) {
      const double p = t == 2 ? 37.0 : double(t);
      CHECK(c(t, i) == c(t, i + 32));
      CHECK(s(t, i) == s(t, i + 32));
      CHECK(std::abs(c(t, i) - std::cos(p * double(f[std::size_t(i)]))) < 5e-6);
      CHECK(std::abs(s(t, i) - std::sin(p * double(f[std::size_t(i)]))) < 5e-6);
    }
  CHECK(error_of([] { (void)rope_inv_freq(RopeConfig{}, 7); }).find("head_dim 7 must be even") != std::string::npos);
}
