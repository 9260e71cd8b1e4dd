// SPDX-License-Identifier: MIT
// The `prefixtune` command end to end on a tiny random GPT-2 with the real GPT-2 vocabulary: tokenize, score
// (checked against the library), train -> score with the prefix, export-peft -> the same scores, inspect, and the
// error messages users see for a missing folder, a corrupt file and a bad data line.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <sstream>

#include "prefixtune/prefixtune.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::TempDir;
namespace fs = std::filesystem;

namespace {

struct Run {
  int status = -1;
  std::string output;  // stdout and stderr together
};

Run run(const std::string& args) {
  const std::string cmd = std::string(PREFIXTUNE_CLI) + " " + args + " 2>&1";
  Run r;
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::vector<nlohmann::json> json_lines(const std::string& text) {
  std::vector<nlohmann::json> v;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty() && line[0] == '{') v.push_back(nlohmann::json::parse(line));
  return v;
}

// A tiny random GPT-2 with GPT-2's real vocabulary, in a HuggingFace folder.
std::string make_model(const TempDir& dir) {
  const std::string m = dir.file("model");
  Rng rng(3);
  Gpt2Config c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 16, c.n_positions = 128;
  save_gpt2(m, random_gpt2<float>(c, rng));
  const std::string bpe = std::string(PREFIXTUNE_TEST_DATA_DIR) + "/gpt2-bpe/";
  fs::copy_file(bpe + "encoder.json", m + "/vocab.json");
  fs::copy_file(bpe + "vocab.bpe", m + "/merges.txt");
  return m;
}

}  // namespace

TEST_CASE("prefixtune command: tokenize, score, train, export-peft, inspect") {
  TempDir dir;
  const std::string model = make_model(dir);
  write_text_file_atomic(dir.file("in.jsonl"), "{\"text\": \"Hello world\"}\n");
  Run r = run("tokenize --model " + model + " < " + dir.file("in.jsonl"));
  REQUIRE(r.status == 0);
  CHECK(json_lines(r.output).at(0)["ids"] == nlohmann::json::array({15496, 995}));

  write_text_file_atomic(dir.file("data.txt"),
                         "name : Blue Spice | Type : pub||Blue Spice is a pub .\n"
                         "name : Aromi | area : riverside||Aromi is by the riverside .\n"
                         "name : Zizzi||Zizzi serves food .\n");
  r = run("score --model " + model + " --data " + dir.file("data.txt") + " --batch-size 2");
  REQUIRE(r.status == 0);
  const auto scores = json_lines(r.output);
  REQUIRE(scores.size() == 3);
  {  // the same numbers from the library
    const auto m = load_gpt2<float>(model);
    const auto tok = Gpt2Tokenizer::load_dir(model);
    const auto ex = encode_examples(tok, read_pairs(dir.file("data.txt")));
    for (std::size_t i = 0; i < ex.size(); ++i) {
      const double ref = evaluate_prefix(m, Var<float>(), {ex[i]}, 1, 0);
      CHECK(scores[i]["index"] == i);
      CHECK(scores[i]["loss"].get<double>() == doctest::Approx(ref).epsilon(1e-5));
      CHECK(scores[i]["tokens"] ==
            std::count_if(ex[i].targets.begin(), ex[i].targets.end(), [](int t) { return t != kIgnoreLabel; }));
    }
  }

  r = run("train --model " + model + " --train " + dir.file("data.txt") + " --valid " + dir.file("data.txt") +
          " --out " + dir.file("p.safetensors") + " --epochs 2 --batch-size 2 --prefix-length 2 --mid 8 --lr 1e-3");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(r.output.find("train [") != std::string::npos);  // the progress display
  r = run("score --model " + model + " --prefix " + dir.file("p.safetensors") + " --data " + dir.file("data.txt"));
  REQUIRE(r.status == 0);
  const auto with_prefix = json_lines(r.output);
  r = run("export-peft --model " + model + " --prefix " + dir.file("p.safetensors") + " --out " + dir.file("peft"));
  REQUIRE(r.status == 0);
  r = run("score --model " + model + " --prefix " + dir.file("peft") + " --data " + dir.file("data.txt"));
  REQUIRE(r.status == 0);
  CHECK(json_lines(r.output) == with_prefix);
  CHECK(with_prefix.at(0)["loss"] != scores.at(0)["loss"]);

  r = run("inspect " + dir.file("peft"));
  CHECK(r.status == 0);
  CHECK(r.output.find("PREFIX_TUNING") != std::string::npos);
  CHECK(r.output.find("prompt_embeddings F32 [2, 64]") != std::string::npos);
  r = run("inspect " + model);
  CHECK(r.output.find("GPT-2 folder") != std::string::npos);
  CHECK(run("train --help").output.find("--prefix-length") != std::string::npos);
}

TEST_CASE("prefixtune command: errors name what and where") {
  TempDir dir;
  Run r = run("score --model " + dir.file("nowhere") + " --data x.txt");
  CHECK(r.status == 1);
  CHECK(r.output.find("nowhere") != std::string::npos);
  write_text_file_atomic(dir.file("bad.safetensors"), "\x10\x00\x00\x00\x00\x00\x00\x00{not json}......");
  r = run("inspect " + dir.file("bad.safetensors"));
  CHECK(r.status == 1);
  CHECK(r.output.find("bad.safetensors") != std::string::npos);
  const std::string model = make_model(dir);
  write_text_file_atomic(dir.file("data.txt"), "a||b\nno separator\n");
  r = run("score --model " + model + " --data " + dir.file("data.txt"));
  CHECK(r.status == 1);
  CHECK(r.output.find("data.txt:2: expected 'source||target'") != std::string::npos);
  CHECK(run("frobnicate").status != 0);
}
