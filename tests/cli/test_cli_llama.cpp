// SPDX-License-Identifier: MIT
// `prefixtune` on Llama-family folders and pre-tokenized data: score, train, generate and export-peft on random
// llama / qwen3 folders give what the library gives in-process; pre-tokenized JSON lines work for GPT-2 too; and the
// errors of text without a tokenizer, of fine-tuning a frozen family, and of bad token lines name what and where.
#include <doctest/doctest.h>

#include <fstream>
#include <string>
#include <vector>

#include "cli/cli_util.hpp"
#include "prefixtune/generate/llama_generate.hpp"
#include "prefixtune/io/token_data.hpp"
#include "prefixtune/models/gpt2_io.hpp"
#include "prefixtune/models/llama_io.hpp"
#include "prefixtune/prefix/prefix_io.hpp"
#include "prefixtune/train/trainer.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::json_lines;
using test::run;
using test::TempDir;

namespace {

LlamaConfig cli_llama(const std::string& family) {
  LlamaConfig c;
  c.model_type = family;
  c.hidden_size = 16, c.intermediate_size = 24, c.num_hidden_layers = 2, c.num_attention_heads = 4;
  c.num_key_value_heads = 2, c.head_dim = family == "qwen3" ? 8 : 4, c.max_position_embeddings = 48;
  c.vocab_size = 40, c.qk_norm = family == "qwen3", c.tie_word_embeddings = family == "qwen3";
  c.eos_token_ids = {2, 7};
  return c;
}

/// A random model of `family` saved in `dir` (weights scaled up so that outputs depend on the input).
Llama<float> save_random(const std::string& family, const std::string& dir) {
  Rng rng(21);
  Llama<float> m = random_llama<float>(cli_llama(family), rng);
  for (auto* w : detail::llama_weight_slots(m))
    if (w->defined() && w->rank() == 2)
      for (std::int64_t i = 0; i < w->numel(); ++i) w->data()[i] *= 15.0f;
  save_llama(dir, m, DType::BF16, 3000);
  return load_llama<float>(dir);  // what the command reads: the BF16-rounded weights
}

void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

const char* kTokenData =
    "{\"input_ids\": [5, 9, 13, 4, 20, 7], \"labels\": [-100, -100, 13, 4, 20, 7]}\n"
    "\n"
    "{\"input_ids\": [3, 4, 5, 6]}\n";

}  // namespace

TEST_CASE("prefixtune on a Llama-family folder: score, train, generate and export-peft with pre-tokenized data") {
  for (const std::string family : {"llama", "qwen3"}) {
    CAPTURE(family);
    TempDir dir;
    const std::string model = dir.file("model");
    const Llama<float> m = save_random(family, model);
    write(dir.file("data.jsonl"), kTokenData);
    // score without a prefix: what score_examples gives in-process, line by line.
    const auto examples = read_token_examples(dir.file("data.jsonl"), m.config.vocab_size);
    REQUIRE(examples.size() == 2);
    CHECK(examples[0].targets == std::vector<std::int32_t>{-100, 13, 4, 20, 7, -100});
    CHECK(examples[1].targets == std::vector<std::int32_t>{4, 5, 6, -100});
    const auto want = score_examples(m, DirectPrefix<float>(), examples, 2);
    auto r = run("score --model " + model + " --data " + dir.file("data.jsonl"));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    auto lines = json_lines(r.output);
    REQUIRE(lines.size() == 2);
    for (std::size_t i = 0; i < 2; ++i) {
      CHECK(lines[i]["loss"].get<double>() == doctest::Approx(want[i].first).epsilon(1e-6));
      CHECK(lines[i]["tokens"].get<std::int64_t>() == want[i].second);
    }
    // train a direct prefix for a few steps, then score and generate with it.
    r = run("train --model " + model + " --train " + dir.file("data.jsonl") + " --out " + dir.file("p.safetensors") +
            " --method direct --prefix-length 3 --epochs 3 --batch-size 2 --lr 0.05");
    REQUIRE_MESSAGE(r.status == 0, r.output);
    const auto prefix = load_prefix<float>(dir.file("p.safetensors"), m.config.kv_shape());
    CHECK(prefix.table.value().shape() == Shape({3, m.config.kv_shape().table_width()}));
    const auto with = score_examples(m, prefix, examples, 2);
    r = run("score --model " + model + " --data " + dir.file("data.jsonl") + " --prefix " + dir.file("p.safetensors"));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    lines = json_lines(r.output);
    REQUIRE(lines.size() == 2);
    CHECK(lines[0]["loss"].get<double>() == doctest::Approx(with[0].first).epsilon(1e-6));
    CHECK(lines[1]["loss"].get<double>() == doctest::Approx(with[1].first).epsilon(1e-6));
    // generate from input_ids: the library's greedy tokens, the model's end ids (2 and 7) ending rows; no "text".
    write(dir.file("prompts.jsonl"), "{\"input_ids\": [5, 9, 13], \"id\": \"a\"}\n{\"input_ids\": [3]}\n");
    r = run("generate --model " + model + " --prefix " + dir.file("p.safetensors") +
            " --max-new-tokens 6 --batch-size 2 < " + dir.file("prompts.jsonl"));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    lines = json_lines(r.output);
    REQUIRE(lines.size() == 2);
    PrefixBank<float> bank(m.config);
    bank.add(prefix.table.value());
    GenerateConfig cfg;
    cfg.max_new_tokens = 6, cfg.eos_id = 2, cfg.more_eos_ids = {7};
    const auto gens = generate(m, bank, {{{5, 9, 13}, 0}, {{3}, 0}}, cfg);
    CHECK(lines[0]["ids"].get<std::vector<std::int32_t>>() == gens[0].ids);
    CHECK(lines[1]["ids"].get<std::vector<std::int32_t>>() == gens[1].ids);
    CHECK(lines[0]["id"] == "a");
    CHECK_FALSE(lines[0].contains("text"));
    // export-peft writes PEFT's KVH-headed layout.
    r = run("export-peft --model " + model + " --prefix " + dir.file("p.safetensors") + " --out " + dir.file("peft"));
    REQUIRE_MESSAGE(r.status == 0, r.output);
    const auto cfg_json = nlohmann::json::parse(read_text_file(dir.file("peft/adapter_config.json")));
    CHECK(cfg_json["num_attention_heads"] == m.config.num_key_value_heads);
    CHECK(cfg_json["token_dim"] == m.config.num_key_value_heads * m.config.head_dim);
    r = run("inspect " + model);
    CHECK(r.status == 0);
    CHECK(r.output.find(family + " folder") != std::string::npos);
  }
}

TEST_CASE("prefixtune on Llama-family folders: what needs a tokenizer, what cannot be trained, bad token lines") {
  TempDir dir;
  const std::string model = dir.file("model");
  save_random("llama", model);
  write(dir.file("text.txt"), "a table||a text\n");
  auto r = run("score --model " + model + " --data " + dir.file("text.txt"));
  CHECK(r.status == 1);
  CHECK(r.output.find("text data (" + dir.file("text.txt") + ") needs the model's tokenizer") != std::string::npos);
  CHECK(r.output.find("give pre-tokenized JSON lines") != std::string::npos);
  write(dir.file("data.jsonl"), kTokenData);
  r = run("train --model " + model + " --train " + dir.file("data.jsonl") + " --out " + dir.file("o") +
          " --method full");
  CHECK(r.status == 1);
  CHECK(r.output.find("--method full fine-tunes GPT-2 models only") != std::string::npos);
  r = run("train --model " + model + " --train " + dir.file("data.jsonl") + " --out " + dir.file("o") +
          " --init words --init-words hello");
  CHECK(r.output.find("--init words needs the model's tokenizer") != std::string::npos);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"{\"input_ids\": [1, 2], \"labels\": [1]}", ":1: \"labels\" has 1 entries but \"input_ids\" has 2"},
      {"{\"input_ids\": [1, 40]}", ":1: \"input_ids\"[1] = 40 is outside the vocabulary [0, 40)"},
      {"{\"input_ids\": [1, 2], \"labels\": [-100, -7]}",
       ":1: \"labels\"[1] = -7 is outside the vocabulary [0, 40) (and not -100)"},
      {"{\"input_ids\": [1, 2], \"label\": [1, 2]}", ":1: unknown field \"label\""},
      {"{\"input_ids\": []}", ":1: \"input_ids\" is empty"},
      {"{\"input_ids\": [1]}\n{\"input_ids\": \"1 2\"}", ":2: field \"input_ids\" must be a list of token ids"},
  };
  for (const auto& [text, message] : bad) {
    CAPTURE(text);
    write(dir.file("bad.jsonl"), text + "\n");
    r = run("score --model " + model + " --data " + dir.file("bad.jsonl"));
    CHECK(r.status == 1);
    CHECK_MESSAGE(r.output.find(dir.file("bad.jsonl") + message) != std::string::npos, r.output);
  }
  r = run("generate --model " + model + " --max-new-tokens 2 < " + dir.file("text.txt"));
  CHECK(r.output.find("stdin:1: invalid JSON") != std::string::npos);
  r = run("tokenize --model " + model + " < " + dir.file("data.jsonl"));
  CHECK(r.output.find("does not read the tokenizers of Llama-family folders") != std::string::npos);
}

TEST_CASE("prefixtune on a GPT-2 folder takes pre-tokenized lines too, and they score as the text they encode") {
  TempDir dir;
  Gpt2Config c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 8, c.n_positions = 32, c.vocab_size = 50257;
  Rng rng(3);
  save_gpt2(dir.file("gpt2"), random_gpt2<float>(c, rng));
  const std::string bpe = std::string(PREFIXTUNE_TEST_DATA_DIR) + "/gpt2-bpe/";
  write_text_file_atomic(dir.file("gpt2/vocab.json"), read_text_file(bpe + "encoder.json"));
  write_text_file_atomic(dir.file("gpt2/merges.txt"), read_text_file(bpe + "vocab.bpe"));
  write(dir.file("text.txt"), "name : Aromi||Aromi is a pub.\n");
  const auto tok = Gpt2Tokenizer::load_dir(dir.file("gpt2"));
  const Example ex = encode_example(tok, read_pairs(dir.file("text.txt"))[0]);
  nlohmann::json labels = nlohmann::json::array();  // HF's labels: targets shifted right
  labels.push_back(-100);
  for (std::size_t t = 0; t + 1 < ex.targets.size(); ++t) labels.push_back(ex.targets[t]);
  write(dir.file("tok.jsonl"), nlohmann::json{{"input_ids", ex.ids}, {"labels", labels}}.dump() + "\n");
  const auto a = run("score --model " + dir.file("gpt2") + " --data " + dir.file("text.txt"));
  const auto b = run("score --model " + dir.file("gpt2") + " --data " + dir.file("tok.jsonl"));
  REQUIRE_MESSAGE(a.status == 0, a.output);
  REQUIRE_MESSAGE(b.status == 0, b.output);
  CHECK(json_lines(a.output)[0] == json_lines(b.output)[0]);
}
