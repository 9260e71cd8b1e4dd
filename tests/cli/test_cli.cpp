// SPDX-License-Identifier: MIT
// The `prefixtune` command end to end on a tiny random GPT-2 with the real GPT-2 vocabulary: tokenize, score
// (checked against the library), train -> score with the prefix, export-peft -> the same scores, inspect, generate
// (checked against the library's generate), the error messages users see for a missing folder, a corrupt file and
// a bad data line, and serve_many_prefixes (several users' prefixes in one batch, checked request by request).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <thread>

#include "cli/cli_util.hpp"
#include "prefixtune/prefixtune.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::json_lines;
using test::Run;
using test::run;
using test::run_program;
using test::TempDir;
namespace fs = std::filesystem;

namespace {

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

// The paper's decoding prompt, built here independently of the programs: ' ' + source + ' ', then <|endoftext|>.
std::vector<std::int32_t> source_prompt(const Gpt2Tokenizer& tok, const std::string& source) {
  auto ids = tok.encode(" " + source + " ");
  ids.push_back(50256);
  return ids;
}

// The library's generation for each request on its own (a batch of one), with the prefix at `prefix_path` or none.
std::vector<Generation> generate_alone(const Gpt2<float>& m, const std::string& prefix_path,
                                       const std::vector<std::vector<std::int32_t>>& prompts,
                                       const GenerateConfig& cfg) {
  PrefixBank<float> bank(m.config);
  const std::int64_t index = prefix_path.empty() ? kNoPrefix : bank.add(load_prefix<float>(prefix_path, m.config));
  std::vector<Generation> out;
  for (const auto& p : prompts) out.push_back(generate(m, bank, {GenerationRequest{p, index}}, cfg).at(0));
  return out;
}

// Writes a random prefix of length P for the model in `model_dir` to `path` (a file) or as a PEFT folder.
void save_random_prefix(const std::string& model_dir, const std::string& path, std::int64_t P, std::uint64_t seed,
                        bool peft) {
  const Gpt2Config c = load_gpt2_config(model_dir);
  Rng rng(seed);
  const auto prefix = DirectPrefix<float>::random_normal(P, c, rng);
  if (peft) {
    export_peft(path, prefix, c, model_dir);
  } else {
    save_prefix(path, prefix, c);
  }
}

/// Starts the prefixtune command with args (no shell), its output discarded; returns the child's pid.
pid_t spawn_cli(const std::vector<std::string>& args) {
  std::vector<char*> argv{const_cast<char*>(PREFIXTUNE_CLI)};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {  // the child: only async-signal-safe calls until exec
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    ::execv(PREFIXTUNE_CLI, argv.data());
    ::_exit(127);
  }
  return pid;
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

TEST_CASE("prefixtune train: the paper's variants and baselines (--method, --infix, --init, --low-data)") {
  TempDir dir;
  const std::string model = make_model(dir);
  const std::string data = dir.file("data.txt");
  write_text_file_atomic(data,
                         "name : Blue Spice | Type : pub||Blue Spice is a pub .\n"
                         "name : Aromi | area : riverside||Aromi is by the riverside .\n"
                         "name : Zizzi||Zizzi serves food .\n");
  const std::string common =
      " --model " + model + " --train " + data + " --valid " + data + " --batch-size 2 --lr 1e-2 --max-steps 4";
  const Gpt2<float> m = load_gpt2<float>(model);
  const Gpt2Tokenizer tok = Gpt2Tokenizer::load_dir(model);
  const auto examples = encode_examples(tok, read_pairs(data));
  struct Case {
    std::string flags, expect;  // what the run prints
    std::string words;          // --init-words: the prefix takes their token count (else P = 2)
    Placement placement;
  };
  const std::vector<Case> cases = {
      {"--method deep --prefix-length 2 --mid 8", "training a deep prefix", "", Placement::Prefix},
      {"--method direct --init uniform --prefix-length 2", "training a direct prefix", "", Placement::Prefix},
      {"--method emb-mlp --prefix-length 2 --mid 8", "training a emb-mlp prefix", "", Placement::Prefix},
      {"--method mlp --infix --prefix-length 2 --mid 8", "training a mlp infix", "", Placement::Infix},
      {"--method mlp --init words --prefit-steps 20 --mid 8", "pre-fit the MLP", " table-to-text:", Placement::Prefix},
      {"--method emb --init words", "prefix takes the length", " summarize the table", Placement::Prefix},
      {"--method direct --init words", "training a direct prefix", " elephant", Placement::Prefix}};
  for (const Case& c : cases) {
    const std::string words = c.words.empty() ? "" : " --init-words '" + c.words + "'";
    const Run r = run("train" + common + " " + c.flags + words + " --out " + dir.file("v.safetensors"));
    INFO(c.flags, "\n", r.output);
    REQUIRE(r.status == 0);
    CHECK(r.output.find(c.expect) != std::string::npos);
    const auto p = load_prefix<float>(dir.file("v.safetensors"), m.config);
    CHECK(p.length() == (c.words.empty() ? 2 : static_cast<std::int64_t>(tok.encode(c.words).size())));
    CHECK(p.placement == c.placement);
    // score reads the placement from the file: the same loss as the library computes for that prefix.
    const Run s = run("score --model " + model + " --prefix " + dir.file("v.safetensors") + " --data " + data);
    REQUIRE(s.status == 0);
    const auto scores = json_lines(s.output);
    REQUIRE(scores.size() == 3);
    CHECK(scores[1]["loss"].get<double>() == doctest::Approx(evaluate_prefix(m, p, {examples[1]}, 1)).epsilon(1e-5));
  }
  // An infix prefix generates (the bank serves it as an infix) and equals the library's generation.
  Run r = run("train" + common + " --infix --prefix-length 2 --mid 8 --out " + dir.file("infix.safetensors"));
  REQUIRE(r.status == 0);
  write_text_file_atomic(dir.file("req.jsonl"), "{\"source\": \"name : Aromi\"}\n");
  r = run("generate --model " + model + " --prefix " + dir.file("infix.safetensors") +
          " --greedy --max-new-tokens 5 < " + dir.file("req.jsonl"));
  REQUIRE(r.status == 0);
  GenerateConfig gcfg;
  gcfg.max_new_tokens = 5;
  const auto lib = generate_alone(m, dir.file("infix.safetensors"), {source_prompt(tok, "name : Aromi")}, gcfg);
  INFO(r.output);
  const auto lines = json_lines(r.output);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["ids"].get<std::vector<std::int32_t>>() == lib.at(0).ids);
  CHECK(lib.at(0).ids.size() == 5);
  // --low-data: 400 steps with 100 warmup unless given.
  r = run("train --model " + model + " --train " + data + " --out " + dir.file("low.safetensors") +
          " --prefix-length 1 --mid 4 --batch-size 3 --low-data --max-steps 3");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(r.output.find("3/3") != std::string::npos);
  // The discrete-prompt baseline: --instruction before every source changes the score.
  r = run("score --model " + model + " --data " + data + " --instruction ' Describe the table:'");
  REQUIRE(r.status == 0);
  const auto prompted = prepend_prompt(examples, tok.encode(" Describe the table:"));
  CHECK(json_lines(r.output).at(0)["loss"].get<double>() ==
        doctest::Approx(evaluate_prefix(m, DirectPrefix<float>(), {prompted[0]}, 1)).epsilon(1e-5));
  // Full fine-tuning writes a model folder that loads and scores lower on its training data.
  r = run("train --model " + model + " --train " + data + " --valid " + data +
          " --batch-size 3 --method full --lr 1e-3 --max-steps 6 --out " + dir.file("ft"));
  INFO(r.output);
  REQUIRE(r.status == 0);
  const auto tuned = load_gpt2<float>(dir.file("ft"));
  CHECK(fs::exists(dir.file("ft") + "/vocab.json"));
  CHECK(evaluate_prefix(tuned, DirectPrefix<float>(), examples, 3) <
        evaluate_prefix(m, DirectPrefix<float>(), examples, 3));
  r = run("train" + common + " --method ft-top2 --infix --out " + dir.file("ft2"));
  CHECK(r.status == 1);
  CHECK(r.output.find("--infix applies to") != std::string::npos);
  CHECK(r.output.find("--method ft-top2 has no prefix") != std::string::npos);
  r = run("train" + common + " --method mlp --init uniform --out " + dir.file("x"));
  CHECK(r.status == 1);
  CHECK(r.output.find("--method direct only") != std::string::npos);
  r = run("train" + common + " --method nonsense --out " + dir.file("x"));
  CHECK(r.status != 0);
}

TEST_CASE("prefixtune command: errors name what and where") {
  TempDir dir;
  Run r = run("score --model " + dir.file("nowhere") + " --data x.txt");
  CHECK(r.status == 1);
  CHECK(r.output.find("nowhere") != std::string::npos);
  // A 16-byte header that is not JSON (std::string with its length: the literal holds NUL bytes).
  const char bad_header[] = "\x10\x00\x00\x00\x00\x00\x00\x00{not json}......";
  write_text_file_atomic(dir.file("bad.safetensors"), std::string(bad_header, sizeof bad_header - 1));
  r = run("inspect " + dir.file("bad.safetensors"));
  CHECK(r.status == 1);
  CHECK(r.output.find("bad.safetensors") != std::string::npos);
  CHECK(r.output.find("header is not valid JSON") != std::string::npos);
  const std::string model = make_model(dir);
  write_text_file_atomic(dir.file("data.txt"), "a||b\nno separator\n");
  r = run("score --model " + model + " --data " + dir.file("data.txt"));
  CHECK(r.status == 1);
  CHECK(r.output.find("data.txt:2: expected 'source||target'") != std::string::npos);
  CHECK(run("frobnicate").status != 0);
}

TEST_CASE("prefixtune generate: greedy, beam and seeded sampling equal the library; bad lines get an error") {
  TempDir dir;
  const std::string model = make_model(dir);
  const auto m = load_gpt2<float>(model);
  const auto tok = Gpt2Tokenizer::load_dir(model);
  save_random_prefix(model, dir.file("p.safetensors"), 3, 11, false);
  const std::vector<std::string> sources = {"name : Blue Spice | Type : pub", "name : Aromi | area : riverside",
                                            "name : Zizzi", "", "name : The Eagle | food : Chinese"};
  std::string input;
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::size_t i = 0; i < sources.size(); ++i) {
    input += nlohmann::json{{"source", sources[i]}, {"id", i}}.dump() + "\n";
    prompts.push_back(source_prompt(tok, sources[i]));
  }
  input += "{\"prompt\": \"Hello<|endoftext|> world\"}\n";
  prompts.push_back(tok.encode("Hello<|endoftext|> world", true));
  REQUIRE(prompts.back() == std::vector<std::int32_t>{15496, 50256, 995});  // the special token was parsed
  write_text_file_atomic(dir.file("in.jsonl"), input);
  const std::string common =
      "generate --model " + model + " --max-new-tokens 6 --batch-size 2 < " + dir.file("in.jsonl");

  // Checks that the program's lines are the input lines with the library's generations added.
  auto check_lines = [&](const Run& r, const std::vector<Generation>& expected) {
    INFO(r.output);
    REQUIRE(r.status == 0);
    const auto lines = json_lines(r.output);
    REQUIRE(lines.size() == expected.size());
    for (std::size_t i = 0; i < lines.size(); ++i) {
      INFO("line " << i + 1);
      CHECK_FALSE(lines[i].contains("error"));
      CHECK(lines[i]["ids"].get<std::vector<std::int32_t>>() == expected[i].ids);
      CHECK(lines[i]["text"] == tok.decode_lossy(expected[i].ids));
      if (i < sources.size()) {
        CHECK(lines[i]["source"] == sources[i]);
        CHECK(lines[i]["id"] == i);
      }
    }
    return lines;
  };

  GenerateConfig cfg;
  cfg.max_new_tokens = 6;
  cfg.ban_ids = {198, 628};
  const auto greedy = check_lines(run(common + " --prefix " + dir.file("p.safetensors") + " --ban-ids 198,628"),
                                  generate_alone(m, dir.file("p.safetensors"), prompts, cfg));
  CHECK(greedy[0]["ids"].size() > 0);
  cfg.ban_ids.clear();
  const auto bare = check_lines(run(common + " --greedy"), generate_alone(m, "", prompts, cfg));
  CHECK(bare[0]["ids"] != greedy[0]["ids"]);  // the prefix changes what the model says

  // --eos-id: a token the bare model says on line 1 ends that line there, without the end token.
  const auto eos = bare[0]["ids"][2].get<std::int32_t>();
  cfg.eos_id = eos;
  const auto ended = check_lines(run(common + " --eos-id " + std::to_string(eos)), generate_alone(m, "", prompts, cfg));
  const auto first = bare[0]["ids"].get<std::vector<std::int32_t>>();
  CHECK(ended[0]["ids"].get<std::vector<std::int32_t>>() ==
        std::vector<std::int32_t>(first.begin(), std::find(first.begin(), first.end(), eos)));
  cfg.eos_id = 50256;

  cfg.num_beams = 3;
  cfg.length_penalty = 0.5;
  check_lines(run(common + " --prefix " + dir.file("p.safetensors") + " --beam 3 --length-penalty 0.5"),
              generate_alone(m, dir.file("p.safetensors"), prompts, cfg));

  // Sampling: one batch (--batch-size 8) samples exactly as one library call with the same seed, twice alike.
  cfg = GenerateConfig{};
  cfg.max_new_tokens = 6;
  cfg.sample = true;
  cfg.temperature = 1.5;
  cfg.top_k = 100;
  cfg.seed = 7;
  std::vector<GenerationRequest> requests;
  for (const auto& p : prompts)  // line n of the input samples from stream n
    requests.push_back(GenerationRequest{p, kNoPrefix, static_cast<std::int64_t>(requests.size() + 1)});
  const std::string sample_args = "generate --model " + model + " --max-new-tokens 6 --batch-size 8 --temperature " +
                                  "1.5 --top-k 100 --seed 7 < " + dir.file("in.jsonl");
  const auto sampled = check_lines(run(sample_args), generate(m, PrefixBank<float>(m.config), requests, cfg));
  CHECK(json_lines(run(sample_args).output) == sampled);
  const std::string one_by_one = "generate --model " + model + " --max-new-tokens 6 --batch-size 1 --temperature " +
                                 "1.5 --top-k 100 --seed 7 < " + dir.file("in.jsonl");
  CHECK(json_lines(run(one_by_one).output) == sampled);  // batching does not change what a line samples
  CHECK(sampled != bare);
  Run other = run("generate --model " + model + " --max-new-tokens 6 --seed 8 < " + dir.file("in.jsonl"));
  REQUIRE(other.status == 0);
  CHECK(json_lines(other.output) != sampled);

  // Bad lines are written back with "error", in place; the others are served in order.
  std::string too_long(2000, ' ');
  for (std::size_t i = 0; i < too_long.size(); i += 5) too_long.replace(i, 5, " word");
  write_text_file_atomic(dir.file("bad.jsonl"),
                         "{\"source\": \"name : Zizzi\"}\n"
                         "this is not JSON\n"
                         "{\"text\": \"neither field\", \"n\": 3}\n"
                         "\n"
                         "{\"prompt\": \"" +
                             too_long +
                             "\"}\n"
                             "{\"prompt\": \"\"}\n"
                             "{\"source\": 42}\n"
                             "[1, 2]\n"
                             "{\"source\": \"name : Aromi | area : riverside\"}\n");
  Run r = run("generate --model " + model + " --max-new-tokens 6 --batch-size 1 < " + dir.file("bad.jsonl"));
  INFO(r.output);
  REQUIRE(r.status == 0);
  const auto lines = json_lines(r.output);
  REQUIRE(lines.size() == 8);
  CHECK(lines[0]["ids"] == bare[2]["ids"]);
  CHECK(lines[1]["error"].get<std::string>().find("stdin:2: invalid JSON") != std::string::npos);
  CHECK(lines[1]["input"] == "this is not JSON");
  CHECK(lines[2]["error"].get<std::string>().find("found none") != std::string::npos);
  CHECK(lines[2]["n"] == 3);
  CHECK(lines[3]["error"].get<std::string>().find("request 5 has a prompt of 400 tokens") != std::string::npos);
  CHECK(lines[4]["error"].get<std::string>().find("request 6 has an empty prompt") != std::string::npos);
  CHECK(lines[5]["error"].get<std::string>().find("\"source\" is not a string") != std::string::npos);
  CHECK(lines[6]["error"].get<std::string>().find("expected a JSON object") != std::string::npos);
  CHECK(lines[7]["ids"] == bare[1]["ids"]);
  for (std::size_t i : {0, 7}) CHECK_FALSE(lines[i].contains("error"));
  for (std::size_t i = 1; i < 7; ++i) CHECK_FALSE(lines[i].contains("ids"));

  // Flags that contradict each other, a missing model and the help text.
  for (const char* flags : {"--greedy --beam 2", "--beam 2 --seed 1", "--greedy --top-p 0.9"}) {
    r = run("generate --model " + model + " --max-new-tokens 2 " + flags + " < " + dir.file("in.jsonl"));
    CHECK(r.status != 0);
    CHECK(r.output.find("excludes") != std::string::npos);
  }
  r = run("generate --model " + dir.file("nowhere") + " --max-new-tokens 2 < " + dir.file("in.jsonl"));
  CHECK(r.status == 1);
  CHECK(r.output.find("nowhere") != std::string::npos);
  r = run("generate --model " + model + " --prefix " + dir.file("none.safetensors") + " --max-new-tokens 2 < " +
          dir.file("in.jsonl"));
  CHECK(r.status == 1);
  CHECK(r.output.find("none.safetensors") != std::string::npos);
  CHECK(run("generate --help").output.find("--max-new-tokens") != std::string::npos);
}

TEST_CASE("serve_many_prefixes: mixed users in one batch, each as if served alone; unknown users get an error") {
  TempDir dir;
  const std::string model = make_model(dir);
  const auto m = load_gpt2<float>(model);
  const auto tok = Gpt2Tokenizer::load_dir(model);
  fs::create_directories(dir.file("prefixes"));
  save_random_prefix(model, dir.file("prefixes/alice.safetensors"), 2, 21, false);  // a prefix file
  save_random_prefix(model, dir.file("prefixes/bob"), 5, 22, true);                 // a PEFT adapter folder
  const std::vector<std::pair<std::string, std::string>> requests = {{"alice", "name : Blue Spice | Type : pub"},
                                                                     {"bob", "name : Blue Spice | Type : pub"},
                                                                     {"carol", "name : Zizzi"},
                                                                     {"bob", "name : Aromi | area : riverside"},
                                                                     {"alice", "name : Zizzi"},
                                                                     {"../prefixes/alice", "name : Zizzi"},
                                                                     {"bob", "name : The Eagle"}};
  std::string input;
  for (const auto& [user, source] : requests) input += nlohmann::json{{"user", user}, {"source", source}}.dump() + "\n";
  write_text_file_atomic(dir.file("requests.jsonl"), input);
  const std::string args = "--model " + model + " --prefixes " + dir.file("prefixes") + " --max-new-tokens 5";

  for (const std::string beam : {"1", "2"}) {
    const Run r =
        run_program(PREFIXTUNE_SERVE, args + " --batch-size 3 --beam " + beam + " < " + dir.file("requests.jsonl"));
    INFO(r.output);
    REQUIRE(r.status == 0);
    CHECK(r.output.find("7 requests (2 errors), 2 users' prefixes loaded, 2 batches") != std::string::npos);
    const auto lines = json_lines(r.output);
    REQUIRE(lines.size() == requests.size());
    GenerateConfig cfg;
    cfg.max_new_tokens = 5;
    cfg.num_beams = std::stoi(beam);
    std::vector<std::vector<std::int32_t>> seen;
    for (std::size_t i = 0; i < requests.size(); ++i) {
      const auto& [user, source] = requests[i];
      INFO("request " << i + 1 << " of " << user);
      CHECK(lines[i]["user"] == user);
      CHECK(lines[i]["source"] == source);
      if (user == "carol" || user[0] == '.') {
        REQUIRE(lines[i].contains("error"));
        CHECK(lines[i]["error"].get<std::string>().find(
                  user == "carol" ? "user 'carol' has no prefix" : "cannot name a prefix file") != std::string::npos);
        CHECK_FALSE(lines[i].contains("ids"));
        continue;
      }
      const std::string path = dir.file(user == "alice" ? "prefixes/alice.safetensors" : "prefixes/bob");
      const Generation g = generate_alone(m, path, {source_prompt(tok, source)}, cfg).at(0);
      CHECK(lines[i]["ids"].get<std::vector<std::int32_t>>() == g.ids);
      CHECK(lines[i]["text"] == tok.decode_lossy(g.ids));
      seen.push_back(g.ids);
    }
    CHECK(seen.at(0) != seen.at(1));  // the same source, two users' prefixes
  }
  Run r = run_program(PREFIXTUNE_SERVE, "--model " + model + " --prefixes " + dir.file("nowhere"));
  CHECK(r.status == 1);
  CHECK(r.output.find("nowhere") != std::string::npos);
  CHECK(run_program(PREFIXTUNE_SERVE, "--help").output.find("U.safetensors") != std::string::npos);
}

TEST_CASE("prefixtune --device cuda: train, score and generate equal --device cpu (a clear error without CUDA)") {
  TempDir dir;
  const std::string model = make_model(dir);
  write_text_file_atomic(dir.file("data.txt"),
                         "name : Blue Spice | Type : pub||Blue Spice is a pub .\n"
                         "name : Aromi | area : riverside||Aromi is by the riverside .\n"
                         "name : Zizzi||Zizzi serves food .\n");
  const std::string score = "score --model " + model + " --data " + dir.file("data.txt") + " --batch-size 2";
  Run gpu = run(score + " --device cuda");
  if (gpu.status != 0) {
    INFO(gpu.output);
    const bool no_cuda_build = gpu.output.find("built without CUDA") != std::string::npos;
    const bool no_gpu = gpu.output.find("not available") != std::string::npos;
    CHECK((no_cuda_build || no_gpu));
    const std::string why = no_cuda_build ? "a build without CUDA" : "no GPU";
    MESSAGE("--device cuda not run here: ", why);
    return;
  }
  const auto cpu_scores = json_lines(run(score).output), gpu_scores = json_lines(gpu.output);
  REQUIRE(gpu_scores.size() == cpu_scores.size());
  for (std::size_t i = 0; i < cpu_scores.size(); ++i)
    CHECK(gpu_scores[i]["loss"].get<double>() == doctest::Approx(cpu_scores[i]["loss"].get<double>()).epsilon(1e-5));

  const std::string train = "train --model " + model + " --train " + dir.file("data.txt") + " --valid " +
                            dir.file("data.txt") + " --epochs 2 --batch-size 2 --prefix-length 2 --mid 8 --lr 1e-3";
  REQUIRE(run(train + " --out " + dir.file("cpu.safetensors")).status == 0);
  REQUIRE(run(train + " --out " + dir.file("gpu.safetensors") + " --device cuda").status == 0);
  const Gpt2Config c = load_gpt2_config(model);
  const auto a = load_prefix<float>(dir.file("cpu.safetensors"), c),
             b = load_prefix<float>(dir.file("gpu.safetensors"), c);
  CHECK(test::max_rel_diff(b.table.value().to_vector(), a.table.value().to_vector()) < 1e-4);

  write_text_file_atomic(dir.file("in.jsonl"),
                         "{\"source\": \"name : Aromi | area : riverside\"}\n"
                         "{\"prompt\": \"The pub\"}\n");
  for (const std::string flags : {" --greedy", " --beam 3"}) {
    const std::string gen = "generate --model " + model + " --prefix " + dir.file("cpu.safetensors") +
                            " --max-new-tokens 8" + flags + " < " + dir.file("in.jsonl");
    const auto c_lines = json_lines(run(gen).output), g_lines = json_lines(run(gen + " --device cuda").output);
    REQUIRE(g_lines.size() == c_lines.size());
    for (std::size_t i = 0; i < c_lines.size(); ++i) CHECK(g_lines[i]["ids"] == c_lines[i]["ids"]);
  }
}

namespace {

// Trains once without interruption, then kills resumed runs of the same command with SIGKILL at seeded random
// moments until `want_kills` kills landed mid-run (bounded), resumes to the end, and checks that the resumed run
// wrote a prefix file byte-identical to the uninterrupted run's. `extra` adds flags to both (e.g. validation).
void kill_and_resume(TempDir& dir, const std::vector<std::string>& extra, int want_kills, std::uint64_t seed) {
  const std::string model = make_model(dir);
  std::string data;
  for (int i = 0; i < 16; ++i)
    data += "name : Place " + std::to_string(i) + " | area : riverside||Place " + std::to_string(i) +
            " is by the river .\n";
  write_text_file_atomic(dir.file("data.txt"), data);
  std::vector<std::string> common = {"train",
                                     "--model",
                                     model,
                                     "--train",
                                     dir.file("data.txt"),
                                     "--epochs",
                                     "8",
                                     "--batch-size",
                                     "2",
                                     "--prefix-length",
                                     "2",
                                     "--mid",
                                     "8",
                                     "--lr",
                                     "1e-3",
                                     "--seed",
                                     "5"};
  common.insert(common.end(), extra.begin(), extra.end());
  const auto joined = [](const std::vector<std::string>& args) {
    std::string s;
    for (const auto& a : args) s += a + " ";
    return s;
  };
  const std::string straight_args = joined(common) + "--out " + dir.file("straight.safetensors");
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(run(straight_args).status == 0);
  const double full_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Kill resumed runs at seeded random moments until the kills landed mid-run (or the run finished; bounded loop).
  const std::string ckpt = dir.file("run.ckpt");
  std::vector<std::string> args = common;
  args.insert(args.end(),
              {"--checkpoint", ckpt, "--checkpoint-every", "1", "--resume", "--out", dir.file("resumed.safetensors")});
  Rng rng(seed);
  int kills = 0, finished = 0, kills_after_a_checkpoint = 0;
  for (int round = 0; round < 4 * want_kills && kills < want_kills; ++round) {
    const pid_t pid = spawn_cli(args);
    std::this_thread::sleep_for(std::chrono::duration<double>(rng.uniform(0.05, 0.7) * full_s));
    ::kill(pid, SIGKILL);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    if (WIFSIGNALED(status)) {
      ++kills;
    } else {
      REQUIRE(WIFEXITED(status));
      CHECK(WEXITSTATUS(status) == 0);
      ++finished;
      fs::remove(dir.file("resumed.safetensors"));
      fs::remove(ckpt);  // start over: the next rounds kill a fresh run again
    }
    if (fs::exists(ckpt)) {  // whatever the moment, the newest checkpoint on disk is whole
      const SafeTensorsFile f = SafeTensorsFile::open(ckpt);
      CHECK(f.metadata().at("format") == "prefixtune.checkpoint");
      kills_after_a_checkpoint += WIFSIGNALED(status) ? 1 : 0;
    }
  }
  MESSAGE(kills, " kills landed (", kills_after_a_checkpoint, " after a checkpoint was written), ", finished,
          " runs finished before their kill; one run takes ", full_s, " s");
  CHECK(kills >= want_kills - 2);
  CHECK(kills_after_a_checkpoint >= 3);  // most kills hit training, not the program's start-up
  // Resuming from whatever the last kill left ends exactly where the uninterrupted run did: the same file.
  REQUIRE(run(joined(args)).status == 0);
  const std::string expected = read_text_file(dir.file("straight.safetensors"));
  CHECK(read_text_file(dir.file("resumed.safetensors")) == expected);
  // Resumed once more from the final step's checkpoint (nothing left to train), it writes the same file again.
  fs::remove(dir.file("resumed.safetensors"));
  REQUIRE(run(joined(args)).status == 0);
  CHECK(read_text_file(dir.file("resumed.safetensors")) == expected);
  for (const auto& e : fs::directory_iterator(dir.path))  // no temporary file left next to the checkpoint
    CHECK(e.path().filename().string().find("run.ckpt.") == std::string::npos);
}

}  // namespace

TEST_CASE(
    "training killed with SIGKILL at random moments leaves a loadable checkpoint and resumes to the same prefix") {
  TempDir dir;
  kill_and_resume(dir, {}, 10, 17);
}

TEST_CASE("training with validation killed with SIGKILL at random moments resumes to the same best prefix file") {
  TempDir dir;
  std::string valid;
  for (int i = 0; i < 4; ++i)
    valid += "name : Spot " + std::to_string(i) + " | area : city centre||Spot " + std::to_string(i) +
             " is in the city centre .\n";
  write_text_file_atomic(dir.file("valid.txt"), valid);
  kill_and_resume(dir, {"--valid", dir.file("valid.txt"), "--eval-every", "3"}, 6, 23);
}
