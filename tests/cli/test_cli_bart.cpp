// SPDX-License-Identifier: MIT
// `prefixtune train` and `prefixtune generate` on a BART folder (detected from config.json): a tiny random BART
// saved in HuggingFace's layout with a BART-style vocabulary (<s> <pad> </s> <unk> first, then GPT-2's byte-level
// tokens); the three prefixes trained, saved and served; the output checked against the library; errors.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "cli/cli_util.hpp"
#include "prefixtune/prefixtune.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::json_lines;
using test::run;
using test::TempDir;
namespace fs = std::filesystem;

namespace {

// GPT-2's vocabulary renumbered as BART's is laid out: the four specials first, <|endoftext|> left out, <mask> last.
std::int64_t write_bart_vocab(const std::string& dir) {
  const std::string bpe = std::string(PREFIXTUNE_TEST_DATA_DIR) + "/gpt2-bpe/";
  const auto gpt2 = nlohmann::json::parse(read_text_file(bpe + "encoder.json"));
  std::vector<std::string> tokens(gpt2.size());
  for (const auto& [token, id] : gpt2.items()) tokens[id.get<std::size_t>()] = token;
  nlohmann::json vocab = {{"<s>", 0}, {"<pad>", 1}, {"</s>", 2}, {"<unk>", 3}};
  for (const auto& t : tokens)
    if (t != "<|endoftext|>") vocab[t] = static_cast<std::int64_t>(vocab.size());
  vocab["<mask>"] = static_cast<std::int64_t>(vocab.size());
  write_text_file_atomic(dir + "/vocab.json", vocab.dump());
  fs::copy_file(bpe + "vocab.bpe", dir + "/merges.txt");
  return static_cast<std::int64_t>(vocab.size());
}

std::string make_bart(const TempDir& dir) {
  const std::string m = dir.file("bart");
  fs::create_directories(m);
  BartConfig c;
  c.vocab_size = write_bart_vocab(m);
  c.d_model = 16, c.encoder_layers = 2, c.decoder_layers = 2, c.encoder_attention_heads = 2;
  c.decoder_attention_heads = 4, c.encoder_ffn_dim = 32, c.decoder_ffn_dim = 32, c.max_position_embeddings = 64;
  c.forced_bos_token_id = 0;
  Rng rng(4);
  save_bart(m, random_bart<float>(c, rng, 0.3));
  return m;
}

}  // namespace

TEST_CASE("prefixtune train / generate on a BART folder: three prefixes trained, saved and served as the library") {
  TempDir dir;
  const std::string model = make_bart(dir);
  std::string data;
  const std::vector<std::string> sources = {"the cat sat on the mat", "a dog ran in the park", "rain fell all day",
                                            "the sun came out",       "birds sang at dawn",    "the river was cold"};
  for (std::size_t i = 0; i < sources.size(); ++i) data += sources[i] + "||summary number " + std::to_string(i) + "\n";
  write_text_file_atomic(dir.file("train.txt"), data);
  const std::string out = dir.file("p.safetensors");
  auto r = run("train --arch bart --model " + model + " --train " + dir.file("train.txt") + " --valid " +
               dir.file("train.txt") + " --out " + out +
               " --prefix-length 2 --mid 8 --epochs 2 --batch-size 3 --lr 1e-3 --label-smoothing 0.1 --seed 2");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(r.output.find("three prefixes (encoder, decoder, cross) of length 2 on 6 examples") != std::string::npos);
  const auto bart = load_bart<float>(model);
  const auto tables = load_seq2seq_prefix<float>(out, bart.config);
  CHECK(tables.cross.table.value().shape() == Shape({2, 2 * 2 * 16}));

  std::string input;
  for (const auto& s : sources) input += nlohmann::json{{"source", s}}.dump() + "\n";
  input += "{\"prompt\": \"not for BART\"}\n";
  write_text_file_atomic(dir.file("in.jsonl"), input);
  const auto tok = Gpt2Tokenizer::load_dir(model);
  Seq2SeqBank<float> bank(bart.config);
  bank.add(tables);
  std::vector<GenerationRequest> requests;
  for (const auto& s : sources) requests.push_back({encode_seq2seq(tok, {TextPair{s, "", 1}}).front().source, 0});

  // Greedy (the model's forced BOS from config.json) and the XSUM preset, each line as the library gives it.
  GenerateConfig greedy = bart_generate_config(bart.config, 5);
  GenerateConfig xsum = bart_xsum_config(bart.config);
  xsum.max_new_tokens = 14;
  for (const auto& [args, cfg] :
       {std::pair<std::string, GenerateConfig>{" --max-new-tokens 5", greedy}, {" --xsum --max-new-tokens 14", xsum}}) {
    CAPTURE(args);
    r = run("generate --model " + model + " --prefix " + out + " --batch-size 4" + args + " < " + dir.file("in.jsonl"));
    INFO(r.output);
    REQUIRE(r.status == 0);
    const auto lines = json_lines(r.output);
    REQUIRE(lines.size() == sources.size() + 1);
    const auto want = generate(bart, bank, requests, cfg);
    for (std::size_t i = 0; i < sources.size(); ++i) {
      REQUIRE_FALSE(lines[i].contains("error"));
      const auto ids = lines[i]["ids"].get<std::vector<std::int32_t>>();
      CHECK(ids == want[i].ids);
      CHECK(ids.at(0) == 0);  // the forced <s>
      std::vector<std::int32_t> shown;
      for (auto id : ids)
        if (id > 2) shown.push_back(id);
      CHECK(lines[i]["text"] == tok.decode_lossy(shown));  // <s> </s> <pad> left out of the text
    }
    CHECK(lines.back()["error"].get<std::string>().find("needs a string field \"source\"") != std::string::npos);
  }
}

TEST_CASE("prefixtune on a BART folder: options that do not apply and files of the other kind are refused") {
  TempDir dir;
  const std::string model = make_bart(dir);
  write_text_file_atomic(dir.file("train.txt"), "a b c||d e\n");
  const std::string train = "train --model " + model + " --train " + dir.file("train.txt") + " --out " +
                            dir.file("p.safetensors") + " --epochs 1";
  auto fails = [](const test::Run& r, const std::string& what) {
    CHECK(r.status != 0);
    CHECK_MESSAGE(r.output.find(what) != std::string::npos, r.output);
  };
  fails(run(train + " --method direct"), "trains the paper's three MLP-reparameterized prefixes");
  fails(run(train + " --infix"), "no --infix form");
  fails(run(train + " --arch gpt2"), "--arch gpt2 but " + model + "/config.json says model_type 'bart'");
  // A GPT-2 prefix file given to a BART model names the loader it belongs to.
  Gpt2Config g;
  g.n_layer = 2, g.n_embd = 16, g.n_head = 2;
  Rng rng(1);
  save_prefix(dir.file("gpt2.safetensors"), DirectPrefix<float>::random_normal(2, g, rng), g);
  write_text_file_atomic(dir.file("in.jsonl"), "{\"source\": \"x\"}\n");
  fails(run("generate --model " + model + " --prefix " + dir.file("gpt2.safetensors") + " --max-new-tokens 3 < " +
            dir.file("in.jsonl")),
        "a decoder-only (GPT-2) prefix file");
  fails(run("generate --model " + model + " < " + dir.file("in.jsonl")), "--max-new-tokens is required (or --xsum)");
  fails(run("generate --model " + model + " --xsum --instruction hi < " + dir.file("in.jsonl")),
        "--instruction applies to GPT-2 models only");
}

TEST_CASE("prefixtune --device cuda on a BART folder: train and generate equal --device cpu") {
  TempDir dir;
  const std::string model = make_bart(dir);
  write_text_file_atomic(dir.file("data.txt"), "the cat sat||a cat\nrain fell all day||rain\nbirds sang||song\n");
  const std::string train = "train --model " + model + " --train " + dir.file("data.txt") + " --valid " +
                            dir.file("data.txt") + " --epochs 2 --batch-size 2 --prefix-length 2 --mid 8 --lr 1e-3";
  const auto gpu = run(train + " --out " + dir.file("gpu.safetensors") + " --device cuda");
  if (gpu.status != 0) {
    INFO(gpu.output);
    const bool no_cuda_build = gpu.output.find("built without CUDA") != std::string::npos;
    CHECK((no_cuda_build || gpu.output.find("not available") != std::string::npos));
    MESSAGE("--device cuda not run here: ", no_cuda_build ? "a build without CUDA" : "no GPU");
    return;
  }
  REQUIRE(run(train + " --out " + dir.file("cpu.safetensors")).status == 0);
  const BartConfig c = load_bart_config(model);
  const auto a = load_seq2seq_prefix<float>(dir.file("cpu.safetensors"), c);
  const auto b = load_seq2seq_prefix<float>(dir.file("gpu.safetensors"), c);
  const DirectPrefix<float>* cpu_tables[] = {&a.encoder, &a.decoder, &a.cross};
  const DirectPrefix<float>* gpu_tables[] = {&b.encoder, &b.decoder, &b.cross};
  for (int i = 0; i < 3; ++i)
    CHECK(test::max_rel_diff(gpu_tables[i]->table.value().to_vector(), cpu_tables[i]->table.value().to_vector()) <
          1e-4);
  write_text_file_atomic(dir.file("in.jsonl"), "{\"source\": \"the cat sat\"}\n{\"source\": \"birds sang\"}\n");
  for (const std::string flags : {" --max-new-tokens 8", " --xsum --max-new-tokens 8"}) {
    const std::string gen =
        "generate --model " + model + " --prefix " + dir.file("cpu.safetensors") + flags + " < " + dir.file("in.jsonl");
    const auto c_lines = json_lines(run(gen).output), g_lines = json_lines(run(gen + " --device cuda").output);
    REQUIRE(g_lines.size() == c_lines.size());
    for (std::size_t i = 0; i < c_lines.size(); ++i) CHECK(g_lines[i]["ids"] == c_lines[i]["ids"]);
  }
}
