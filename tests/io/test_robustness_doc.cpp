// SPDX-License-Identifier: MIT
// docs/robustness.md cannot go stale: every row of its "Input | What is wrong | What the user sees | Test" tables
// names a case here (`<!-- check: ID -->`), which feeds that bad input to the library (or the CLI's own code in
// examples/) and checks that the message printed contains every `quoted` text of the row; rows printed by programs
// this test cannot run quote the code instead (`<!-- source: FILE -->`), and rows without a message say why
// (`<!-- unchecked: ... -->`).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <prefixtune/prefixtune.hpp>

#include "../../tools/prefixtune/cuda_commands.hpp"
#include "test_util.hpp"
#include "train/train_fixture.hpp"

#ifndef PREFIXTUNE_TEST_DATA_DIR
#error "PREFIXTUNE_TEST_DATA_DIR must name the tests/data folder"
#endif

using namespace prefixtune;
namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;
using test::error_of;
using test::TempDir;

namespace {

const std::string kRoot = std::string(PREFIXTUNE_TEST_DATA_DIR) + "/../..";

/// What a case printed, and the paths its quotes may name as <path> and <dir>.
struct Seen {
  std::string text, path, dir;
};

template <class F>
Seen seen(F&& f, std::string path = "", std::string dir = "") {
  return {error_of(std::forward<F>(f)), std::move(path), std::move(dir)};
}

// ---- inputs -----------------------------------------------------------------------------------------------------

void write_bytes(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  REQUIRE(f.good());
}

void write_text(const std::string& path, const std::string& text) {
  write_bytes(path, Bytes(text.begin(), text.end()));
}

/// A safetensors image: u64 LE header length, header text, data.
Bytes make_file(const std::string& header, const Bytes& data = Bytes(16, 0)) {
  Bytes b;
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<std::uint8_t>(std::uint64_t{header.size()} >> (8 * i)));
  b.insert(b.end(), header.begin(), header.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

template <class S>
Bytes le_bytes(const std::vector<S>& v) {
  Bytes b(v.size() * sizeof(S));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

/// Opening bytes as <dir>/bad.safetensors and loading every tensor (finiteness checked).
Seen open_bytes(const Bytes& bytes) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  write_bytes(path, bytes);
  return seen(
      [&] {
        const SafeTensorsFile f = SafeTensorsFile::open(path);
        for (const std::string& name : f.names())
          if (f.info(name).shape.size() <= 4) (void)f.load<double>(name, true);
        (void)f.metadata();
      },
      path);
}

Seen header(const std::string& h) { return open_bytes(make_file(h)); }
Seen entry(const std::string& body) { return header(R"({"w":{)" + body + "}}"); }

/// A file with a float tensor x (2, 2) holding NaN and inf, and r5 of rank 5; f(file, path) is the case.
template <class F>
Seen loaded(F f) {
  TempDir dir;
  const std::string path = dir.file("x.safetensors");
  write_bytes(path, make_file(R"({"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                              R"("r5":{"dtype":"F32","shape":[1,1,1,0,1],"data_offsets":[0,0]}})",
                              le_bytes(std::vector<float>{1, 2, std::nanf(""), INFINITY})));
  return seen([&] { f(SafeTensorsFile::open(path)); }, path);
}

/// A one-tensor file of the given dtype and values, loaded as T with finiteness checked.
template <class T, class S>
Seen load_one(const char* dtype, const std::vector<S>& values) {
  TempDir dir;
  const std::string path = dir.file("x.safetensors");
  write_bytes(path,
              make_file(std::string(R"({"x":{"dtype":")") + dtype + R"(","shape":[)" + std::to_string(values.size()) +
                            R"(],"data_offsets":[0,)" + std::to_string(values.size() * sizeof(S)) + "]}}",
                        le_bytes(values)));
  return seen([&] { (void)SafeTensorsFile::open(path).load<T>("x", true); }, path);
}

/// An I64 tensor 'ids' holding 2^40 at flat index 3, loaded by f.
template <class F>
Seen int_file(F f) {
  TempDir dir;
  const std::string path = dir.file("ints.safetensors");
  SafeTensorsWriter().add("ids", Tensor<std::int64_t>::from_vector(Shape{4}, {0, 1, 2, 1LL << 40})).write(path);
  return seen([&] { f(SafeTensorsFile::open(path)); }, path);
}

Seen write_error(const std::function<void(SafeTensorsWriter&)>& add) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  write_text_file_atomic(path, "old");
  return seen(
      [&] {
        SafeTensorsWriter w;
        add(w);
        w.write(path);
      },
      path);
}

Seen writer_error(const std::function<void(SafeTensorsWriter&)>& add) {
  return seen([&] {
    SafeTensorsWriter w;
    add(w);
    (void)w.to_bytes();
  });
}

/// load_gpt2_config of a folder whose config.json holds json (none when json is empty).
Seen config_error(const std::string& json) {
  TempDir dir;
  if (!json.empty()) write_text(dir.file("config.json"), json);
  return seen([&] { (void)load_gpt2_config(dir.path.string()); }, dir.file("config.json"), dir.path.string());
}

/// load_llama_config of a folder whose config.json holds json.
Seen llama_config_error(const std::string& json) {
  TempDir dir;
  write_text(dir.file("config.json"), json);
  return seen([&] { (void)load_llama_config(dir.path.string()); }, dir.file("config.json"), dir.path.string());
}

Gpt2Config tiny_config() {
  Gpt2Config c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 8, c.n_positions = 12, c.vocab_size = 17;
  return c;
}

const Gpt2<float>& tiny_gpt2() {
  static const Gpt2<float> m = [] {
    Rng rng(2);
    return random_gpt2<float>(tiny_config(), rng);
  }();
  return m;
}

using Weights = std::map<std::string, Tensor<float>>;

Weights named_weights(const Gpt2<float>& m) {
  Weights w;
  const auto shapes = detail::gpt2_weight_shapes(m.config);
  const auto slots = detail::gpt2_weight_slots(m);
  for (std::size_t i = 0; i < shapes.size(); ++i) w[shapes[i].first] = *slots[i];
  return w;
}

/// load_gpt2 of a folder with config c and weights edited by edit (check_finite as asked).
Seen model_error(const Gpt2Config& c, const std::function<void(Weights&)>& edit, bool check_finite = false) {
  TempDir dir;
  Weights w = named_weights(tiny_gpt2());
  edit(w);
  save_safetensors(dir.file("model.safetensors"), w);
  write_text(dir.file("config.json"), c.to_json().dump());
  Gpt2LoadOptions options;
  options.check_finite = check_finite;
  return seen([&] { (void)load_gpt2<float>(dir.path.string(), options); }, dir.file("model.safetensors"),
              dir.path.string());
}

Gpt2Config with_layers(std::int64_t n) {
  Gpt2Config c = tiny_config();
  c.n_layer = n;
  return c;
}

const Gpt2Tokenizer& gpt2_tokenizer() {
  static const Gpt2Tokenizer tok = Gpt2Tokenizer::load_dir(std::string(PREFIXTUNE_TEST_DATA_DIR) + "/gpt2-bpe");
  return tok;
}

/// The 256 byte tokens (id = byte) plus extra tokens (raw bytes) from id 256 on.
nlohmann::json mini_vocab(const std::vector<std::string>& extra) {
  nlohmann::json v = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) v[detail::bytes_to_token_text(std::string(1, static_cast<char>(b)))] = b;
  for (std::size_t k = 0; k < extra.size(); ++k) v[detail::bytes_to_token_text(extra[k])] = 256 + k;
  return v;
}

/// Gpt2Tokenizer::load of vocab.json and merges.txt; <path> is the file the message should name.
Seen bpe_error(const std::string& vocab, const std::string& merges, const char* named = "vocab.json") {
  TempDir dir;
  write_text(dir.file("vocab.json"), vocab);
  write_text(dir.file("merges.txt"), merges);
  return seen([&] { (void)Gpt2Tokenizer::load(dir.file("vocab.json"), dir.file("merges.txt")); }, dir.file(named));
}

const std::string kGoodMerges = "#version: 0.2\na b\nab a\n";

Seen vocab_error(const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json v = mini_vocab({"ab"});
  edit(v);
  return bpe_error(v.dump(), kGoodMerges);
}

Seen merges_error(const std::string& merges) {
  return bpe_error(mini_vocab({"ab", "aba"}).dump(), merges, "merges.txt");
}

Seen encode_error(const std::string& text, bool special = false) {
  return seen([&] { (void)gpt2_tokenizer().encode(text, special); });
}

/// read_pairs of a file named name holding text.
Seen data_error(const std::string& name, const std::string& text) {
  TempDir dir;
  write_text(dir.file(name), text);
  return seen([&] { (void)read_pairs(dir.file(name)); }, dir.file(name), dir.path.string());
}

/// A pre-tokenized data file of `text` read for a vocabulary of 40 tokens.
Seen token_error(const std::string& text) {
  TempDir dir;
  write_text(dir.file("data.jsonl"), text);
  return seen([&] { (void)read_token_examples(dir.file("data.jsonl"), 40); }, dir.file("data.jsonl"),
              dir.path.string());
}

/// A tiny untied Llama saved in 5 shards into a folder, `edit`ed, then loaded.
Seen llama_folder_error(const std::function<void(const std::string& dir)>& edit) {
  TempDir dir;
  LlamaConfig c;
  c.hidden_size = 8, c.intermediate_size = 12, c.num_hidden_layers = 2, c.num_attention_heads = 2;
  c.num_key_value_heads = 1, c.head_dim = 4, c.max_position_embeddings = 16, c.vocab_size = 23;
  Rng rng(3);
  save_llama(dir.path.string(), random_llama<float>(c, rng), DType::F32, 400);
  edit(dir.path.string());
  return seen([&] { (void)load_llama<float>(dir.path.string()); }, dir.file("model.safetensors.index.json"),
              dir.path.string());
}

/// The shard file the index of folder `dir` maps `key` to.
std::string shard_of(const std::string& dir, const std::string& key) {
  return nlohmann::json::parse(read_text_file(dir + "/model.safetensors.index.json"))["weight_map"][key];
}

/// The index of a folder written by llama_folder_error, edited as JSON.
void edit_index(const std::string& dir, const std::function<void(nlohmann::json&)>& edit) {
  const std::string path = dir + "/model.safetensors.index.json";
  nlohmann::json j = nlohmann::json::parse(read_text_file(path));
  edit(j);
  write_text(path, j.dump());
}

const TextPair kLongPair{"one two three four five six seven eight", "nine ten", 7};

Gpt2Config peft_config(std::int64_t layers) {
  Gpt2Config c;
  c.n_layer = layers, c.n_head = 2, c.n_embd = 8, c.n_positions = 16, c.vocab_size = 23;
  return c;
}

/// A PEFT adapter folder of a 4-token prefix for peft_config(2), its adapter_config.json edited by edit.
Seen peft_error(const std::function<void(nlohmann::json&)>& edit, std::int64_t model_layers = 2,
                const std::string& raw_config = "") {
  TempDir dir;
  Rng rng(11);
  const std::string folder = dir.file("peft");
  export_peft(folder, DirectPrefix<float>::random_normal(4, peft_config(2), rng), peft_config(2));
  const std::string config = folder + "/adapter_config.json";
  nlohmann::json j = nlohmann::json::parse(read_text_file(config));
  edit(j);
  write_text(config, raw_config.empty() ? j.dump() : raw_config);
  return seen([&] { (void)load_prefix<float>(folder, peft_config(model_layers)); }, config, folder);
}

/// Three parameters a (3, 4), b (5), c (2, 3, 2) after one AdamW step, their state in "state.safetensors".
struct OptState {
  std::vector<Var<double>> params() const {
    return {Var<double>(Tensor<double>::full({3, 4}, 1), true, "a"),
            Var<double>(Tensor<double>::full({5}, 1), true, "b"),
            Var<double>(Tensor<double>::full({2, 3, 2}, 1), true, "c")};
  }
  SafeTensorsFile file() const {
    auto ps = params();
    AdamW<double> opt(ps);
    for (auto& p : ps) {
      Tensor<double> g = p.grad_for_accumulation();
      for (std::int64_t i = 0; i < g.numel(); ++i) g.data()[i] = 0.5;
    }
    opt.step();
    SafeTensorsWriter w;
    opt.save_state(w, "opt.");
    return SafeTensorsFile::from_bytes(w.to_bytes(), "state.safetensors");
  }
};

Seen adamw_error(const std::function<void(AdamWConfig&)>& edit) {
  AdamWConfig c;
  edit(c);
  return seen([&] { AdamW<double> opt({Var<double>(Tensor<double>::zeros({2}), true, "prefix.w1")}, c); });
}

Seen schedule_error(double base, std::int64_t warmup, std::int64_t total, std::int64_t step = 0) {
  return seen([&] { (void)LinearSchedule{base, warmup, total}.lr_at(step); });
}

/// The generation tests' model: 2 layers, n_embd 16, vocabulary 50, 16 positions; a bank with prefix "u" (P = 4).
struct GenSetup {
  Gpt2<float> model;
  PrefixBank<float> bank;
  GenSetup() : model(make()), bank(model.config) {
    Rng rng(2);
    auto t = Tensor<float>::empty({4, 2 * 2 * 16});
    fill_normal(t, rng);
    bank.add(t, "u");
  }
  static Gpt2<float> make() {
    Rng rng(5);
    Gpt2Config c;
    c.n_layer = 2, c.n_head = 2, c.n_embd = 16, c.n_positions = 16, c.vocab_size = 50;
    return random_gpt2<float>(c, rng);
  }
  Seen error(const std::vector<GenerationRequest>& requests, const GenerateConfig& cfg) const {
    return seen([&] { (void)generate(model, bank, requests, cfg); });
  }
};

const GenSetup& gen() {
  static const GenSetup g;
  return g;
}

GenerateConfig gen_config(const std::function<void(GenerateConfig&)>& edit = {}) {
  GenerateConfig c;
  c.max_new_tokens = 8, c.eos_id = 49;
  if (edit) edit(c);
  return c;
}

/// `prefixtune generate`'s parsing of stdin line n (a model with GPT-2's tokenizer and a context of 128): the error
/// of the output line, then the whole line.
Seen stdin_line(const std::string& line, std::size_t n) {
  using M = prefixtune_cli::Model<Gpt2<float>, Cpu>;
  static const M m = [] {
    Rng rng(3);
    Gpt2Config c;
    c.n_layer = 1, c.n_head = 2, c.n_embd = 8, c.n_positions = 128, c.vocab_size = 50257;
    return M{random_gpt2<float>(c, rng), Gpt2Tokenizer::load_dir(std::string(PREFIXTUNE_TEST_DATA_DIR) + "/gpt2-bpe"),
             "model"};
  }();
  const PrefixBank<float> bank(m.net.config);
  const auto p = prefixtune_cli::parse_generate_line(line, n, m, bank, kNoPrefix, {});
  REQUIRE(p.out.contains("error"));
  return {p.out["error"].get<std::string>() + "\n" + p.out.dump(), "", ""};  // the error, then the whole line
}

/// Trains the fixture's prefix encoder with a checkpoint after every step; a parameter turns NaN after step 5.
Seen nan_training() {
  const test::Setup s;
  TempDir dir;
  TrainConfig cfg;
  cfg.epochs = 2, cfg.batch_size = 4, cfg.lr = 5e-3, cfg.checkpoint_every = 1;
  cfg.checkpoint_path = dir.file("run.ckpt");
  auto enc = s.fresh_encoder(4);
  float* poison = enc.parameters().front().value().data();
  return seen(
      [&] {
        (void)train_prefix(s.model, enc, s.train, {}, cfg, [&](const TrainProgress& p) {
          if (p.step == 5) *poison = std::numeric_limits<float>::quiet_NaN();
        });
      },
      cfg.checkpoint_path, dir.path.string());
}

/// The training loop on a parameter 'b' whose loss is 0 and whose gradient is infinite.
Seen infinite_gradient() {
  Var<float> a(Tensor<float>::zeros({1}), true, "a"), b(Tensor<float>::zeros({1}), true, "b");
  detail::TrainHooks<float, Cpu, int> hooks;
  hooks.params = {a, b};
  hooks.make = [](const std::vector<std::size_t>&, std::size_t, std::size_t) { return 0; };
  hooks.loss = [&](Tape<float>& tape, const int&, Rng&) {
    return detail::unary_op(
        tape, b, "sqrt at 0", [](const auto&, auto& out) { out.data()[0] = 0; },
        [](const auto&, const auto&, const auto&, auto& dx) { dx.data()[0] = INFINITY; });
  };
  const std::vector<Example> train = {example_from_ids({1}, {2}, 3, 1)};
  TrainConfig cfg;
  cfg.epochs = 1, cfg.batch_size = 1;
  return seen([&] { (void)detail::train_loop(hooks, train, cfg, {}); });
}

/// A checkpoint of the fixture's encoder (seed 42) with the metadata in meta replaced and, unless keep_tensors,
/// its tensors dropped; loaded back with seed `seed`.
Seen checkpoint_error(const std::map<std::string, std::string>& meta, bool keep_tensors = true, std::uint64_t seed = 42,
                      const std::vector<std::string>& drop = {}) {
  const test::Setup s;
  TempDir dir;
  auto enc = s.fresh_encoder(1);
  AdamW<float> opt(enc.parameters());
  const std::string good = dir.file("good.ckpt"), path = dir.file("bad.ckpt");
  detail::save_checkpoint(good, enc.parameters(), opt, 3, 42);
  const SafeTensorsFile f = SafeTensorsFile::open(good);
  SafeTensorsWriter w;
  if (keep_tensors) {
    for (const std::string& name : f.names()) {
      if (dtype_is_floating(f.info(name).dtype)) {
        w.add(name, f.load<float>(name), f.info(name).dtype);
      } else {
        w.add(name, f.load<std::int64_t>(name), f.info(name).dtype);
      }
    }
  } else {
    w.add("x", Tensor<float>::zeros({1}));
  }
  std::map<std::string, std::string> m = f.metadata();
  for (const auto& [k, v] : meta) m[k] = v;
  for (const auto& k : drop) m.erase(k);
  for (const auto& [k, v] : m) w.add_metadata(k, v);
  w.write(path);
  return seen([&] { (void)detail::load_checkpoint(path, enc.parameters(), opt, seed); }, path);
}

std::string joined(const std::vector<Seen>& all) {
  std::string s;
  for (const Seen& e : all) s += e.text + "\n";
  return s;
}

// ---- the cases ----------------------------------------------------------------------------------------------------

using Case = std::function<Seen()>;

const std::map<std::string, Case>& cases() {
  static const std::map<std::string, Case> all = [] {
    std::map<std::string, Case> c;
    // safetensors reading
    c["st-empty"] = [] { return open_bytes({}); };
    c["st-3-bytes"] = [] { return open_bytes({4, 0, 0}); };
    c["st-header-past-end"] = [] { return open_bytes({100, 0, 0, 0, 0, 0, 0, 0, '{', '}'}); };
    c["st-header-2^60"] = [] {
      Bytes b = make_file("{}");
      b[0] = 0, b[7] = 0x10;
      return open_bytes(b);
    };
    // safetensors headers, and tensor entries {"w":{...}}, that are refused
    const std::vector<std::pair<std::string, std::string>> headers = {
        {"st-json-cut", R"({"a":)"},
        {"st-json-utf8", "{\"a\xff\":1}"},
        {"st-json-array", "[1, 2]"},
        {"st-entry-number", R"({"w":3})"},
        {"st-overlap", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})"},
        {"st-repeated-key", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})"},
        {"st-metadata-array", R"({"__metadata__":[1]})"},
        {"st-metadata-number", R"({"__metadata__":{"epoch":3}})"}};
    for (const auto& [id, input] : headers) c[id] = [in = input] { return header(in); };
    const std::vector<std::pair<std::string, std::string>> entries = {
        {"st-dtype-unknown", R"("dtype":"F8","shape":[2],"data_offsets":[0,2])"},
        {"st-dtype-number", R"("dtype":4,"shape":[2],"data_offsets":[0,8])"},
        {"st-missing-field", R"("dtype":"F32","data_offsets":[0,8])"},
        {"st-extra-field", R"("dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1)"},
        {"st-negative-dim", R"("dtype":"F32","shape":[-2],"data_offsets":[0,8])"},
        {"st-float-dim", R"("dtype":"F32","shape":[2.5],"data_offsets":[0,8])"},
        {"st-shape-number", R"("dtype":"F32","shape":2,"data_offsets":[0,8])"},
        {"st-rank-9", R"("dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4])"},
        {"st-numel-overflow", R"("dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8])"},
        {"st-dim-overflow", R"("dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8])"},
        {"st-bytes-overflow", R"("dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8])"},
        {"st-offsets-past-end", R"("dtype":"F32","shape":[8],"data_offsets":[0,32])"},
        {"st-offsets-reversed", R"("dtype":"F32","shape":[0],"data_offsets":[8,4])"},
        {"st-offsets-negative", R"("dtype":"F32","shape":[1],"data_offsets":[-4,0])"},
        {"st-offsets-single", R"("dtype":"F32","shape":[1],"data_offsets":[0])"},
        {"st-repeated-field", R"("dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8])"}};
    for (const auto& [id, input] : entries) c[id] = [in = input] { return entry(in); };
    c["st-offsets-short"] = [] {
      return open_bytes(make_file(R"({"h.0.attn.c_attn.weight":{"dtype":"F32","shape":[4,8],"data_offsets":[0,100]}})",
                                  Bytes(128, 0)));
    };
    c["st-load-nan"] = [] { return loaded([](const SafeTensorsFile& f) { (void)f.load<double>("x", true); }); };
    c["st-load-inf"] = [] { return load_one<float>("F32", std::vector<float>{1, -INFINITY}); };
    c["st-load-f64-overflow"] = [] { return load_one<float>("F64", std::vector<double>{1e300}); };
    c["st-load-shape"] = [] { return loaded([](const SafeTensorsFile& f) { (void)f.load<float>("x", Shape{4, 1}); }); };
    c["st-load-rank-5"] = [] { return loaded([](const SafeTensorsFile& f) { (void)f.load<float>("r5"); }); };
    c["st-load-missing"] = [] { return loaded([](const SafeTensorsFile& f) { (void)f.load<float>("missing.key"); }); };
    c["st-load-i64-as-i32"] = [] {
      return int_file([](const SafeTensorsFile& f) { (void)f.load<std::int32_t>("ids"); });
    };
    c["st-load-int-as-float"] = [] { return int_file([](const SafeTensorsFile& f) { (void)f.load<float>("ids"); }); };
    c["st-dtype-name"] = [] { return seen([] { (void)parse_dtype("F8_E4M3"); }); };
    c["file-missing"] = [] {
      TempDir dir;
      return seen([&] { MappedFile m(dir.file("nothing.json")); }, dir.file("nothing.json"));
    };
    c["file-folder"] = [] {
      TempDir dir;
      return seen([&] { MappedFile m(dir.path.string()); }, dir.path.string());
    };
    // writing
    c["wr-u8-range"] = [] {
      return write_error([](SafeTensorsWriter& w) {
        w.add("b", Tensor<std::int32_t>::from_vector(Shape{2}, {1, 256}), DType::U8);
      });
    };
    c["wr-i32-range"] = [] {
      return write_error([](SafeTensorsWriter& w) {
        w.add("ids", Tensor<std::int64_t>::from_vector(Shape{1}, {1LL << 40}), DType::I32);
      });
    };
    const auto t = Tensor<float>::from_vector(Shape{1}, {1.0f});
    c["wr-twice"] = [t] { return writer_error([&](SafeTensorsWriter& w) { w.add("a", t).add("a", t); }); };
    c["wr-reserved"] = [t] { return writer_error([&](SafeTensorsWriter& w) { w.add("__metadata__", t); }); };
    c["wr-undefined"] = [] { return writer_error([](SafeTensorsWriter& w) { w.add("u", Tensor<float>()); }); };
    c["wr-float-as-int"] = [t] { return writer_error([&](SafeTensorsWriter& w) { w.add("i", t, DType::I32); }); };
    c["wr-int-as-f16"] = [] {
      return writer_error([](SafeTensorsWriter& w) { w.add("j", Tensor<std::int32_t>::zeros(Shape{1}), DType::F16); });
    };
    c["wr-not-utf8"] = [t] { return writer_error([&](SafeTensorsWriter& w) { w.add("\xff", t); }); };
    c["wr-writer-throws"] = [] {
      TempDir dir;
      const std::string path = dir.file("model.safetensors");
      return seen(
          [&] {
            write_file_atomic(path, [](std::ostream& os) {
              os << std::string(200000, 'x');
              throw std::runtime_error("disk on fire");
            });
          },
          path);
    };
    c["wr-no-folder"] = [] {
      TempDir dir;
      const std::string path = dir.file("no/such/folder/x.bin");
      return seen([&] { write_text_file_atomic(path, "x"); }, path);
    };
    c["wr-over-folder"] = [] {
      TempDir dir;
      return seen([&] { write_text_file_atomic(dir.path.string(), "x"); }, dir.path.string());
    };
    // config.json
    const std::vector<std::pair<std::string, std::string>> configs = {
        {"cfg-divisible", R"({"n_layer": 3, "n_head": 5, "n_embd": 96})"},
        {"cfg-int-string", R"({"n_layer": "3"})"},
        {"cfg-activation", R"({"activation_function": "relu"})"},
        {"cfg-model-type", R"({"model_type": "bart"})"},
        {"cfg-not-json", "{not json"},
        {"cfg-missing", ""},
        {"cfg-vocab-range", R"({"vocab_size": 1000000000})"},
        {"cfg-layer-range", R"({"n_layer": 0})"}};
    for (const auto& [id, input] : configs) c[id] = [in = input] { return config_error(in); };
    // Llama-family config.json
    const std::vector<std::pair<std::string, std::string>> llama_configs = {
        {"lc-rope-type", R"({"model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})"},
        {"lc-gqa", R"({"model_type": "llama", "num_attention_heads": 32, "num_key_value_heads": 5})"},
        {"lc-act", R"({"model_type": "qwen2", "hidden_act": "gelu"})"},
        {"lc-window", R"({"model_type": "mistral", "max_position_embeddings": 32768, "sliding_window": 4096})"},
        {"lc-model-type", R"({"model_type": "gemma"})"},
        {"lc-eos", R"({"model_type": "llama", "vocab_size": 10, "eos_token_id": [2, 10]})"}};
    for (const auto& [id, input] : llama_configs) c[id] = [in = input] { return llama_config_error(in); };
    c["cfg-no-weights"] = [] {
      TempDir dir;
      write_text(dir.file("config.json"), R"({"n_layer": 1, "n_head": 1, "n_embd": 4, "vocab_size": 8})");
      return seen([&] { (void)load_gpt2<float>(dir.path.string()); }, dir.file("model.safetensors"), dir.path.string());
    };
    // model folders
    c["mf-missing"] = [] { return model_error(tiny_config(), [](Weights& w) { w.erase("h.1.mlp.c_fc.bias"); }); };
    c["mf-shape"] = [] {
      return model_error(tiny_config(), [](Weights& w) {
        w["h.0.attn.c_attn.weight"] = Tensor<float>::zeros({8, 25});
      });
    };
    c["mf-extra"] = [] {
      return model_error(tiny_config(), [](Weights& w) { w["h.0.adapter.weight"] = Tensor<float>::zeros({2}); });
    };
    c["mf-more-layers"] = [] { return model_error(with_layers(3), [](Weights&) {}); };
    c["mf-fewer-layers"] = [] { return model_error(with_layers(1), [](Weights&) {}); };
    c["mf-vocab"] = [] {
      Gpt2Config b = tiny_config();
      b.vocab_size = 18;
      return model_error(b, [](Weights&) {});
    };
    c["mf-not-gpt2"] = [] {
      return model_error(tiny_config(), [](Weights& w) { w = {{"encoder.weight", Tensor<float>::zeros({2})}}; });
    };
    c["mf-nan"] = [] {
      return model_error(
          tiny_config(),
          [](Weights& w) {
            auto bad = w["h.1.mlp.c_fc.weight"].clone();
            bad.data()[5] = std::numeric_limits<float>::quiet_NaN();
            w["h.1.mlp.c_fc.weight"] = bad;
          },
          true);
    };
    c["mf-truncated"] = [] {
      TempDir dir;
      save_gpt2(dir.path.string(), tiny_gpt2());
      const std::string st = dir.file("model.safetensors");
      fs::resize_file(st, fs::file_size(st) - 7);
      return seen([&] { (void)load_gpt2<float>(dir.path.string()); }, st, dir.path.string());
    };
    c["mf-no-folder"] = [] {
      TempDir dir;
      const std::string d = dir.file("nowhere");
      return seen([&] { (void)load_gpt2<float>(d); }, "", d);
    };
    // forward
    c["fw-token-id"] = [] {
      Tape<float> tape;
      auto ids = Tensor<std::int32_t>::full({1, 4}, 3);
      ids(0, 2) = 17;
      return seen([&] { (void)gpt2_hidden(tape, tiny_gpt2(), ids, Tensor<std::uint8_t>(), PrefixKv<float>(), 0); });
    };
    c["fw-too-long"] = [] {
      Tape<float> tape;
      const auto ids = Tensor<std::int32_t>::full({1, 9}, 1);
      return seen([&] { (void)gpt2_hidden(tape, tiny_gpt2(), ids, Tensor<std::uint8_t>(), PrefixKv<float>(), 4); });
    };
    c["fw-prefix-layers"] = [] {
      Tape<float> tape;
      PrefixKv<float> wrong;
      wrong.k.resize(1);
      wrong.v.resize(1);
      const auto ids = Tensor<std::int32_t>::full({1, 4}, 3);
      return seen([&] { (void)gpt2_hidden(tape, tiny_gpt2(), ids, Tensor<std::uint8_t>(), wrong, 0); });
    };
    // vocab.json / merges.txt
    c["bf-not-json"] = [] { return bpe_error("{\"a\": 1,", kGoodMerges); };
    c["bf-float-id"] = [] { return vocab_error([](nlohmann::json& v) { v["ab"] = 1.5; }); };
    c["bf-string-id"] = [] { return vocab_error([](nlohmann::json& v) { v["ab"] = "256"; }); };
    c["bf-same-id"] = [] { return vocab_error([](nlohmann::json& v) { v["ab"] = 5; }); };
    c["bf-id-range"] = [] { return vocab_error([](nlohmann::json& v) { v["ab"] = 300; }); };
    c["bf-negative-id"] = [] { return vocab_error([](nlohmann::json& v) { v["ab"] = -3; }); };
    c["bf-array"] = [] { return bpe_error("[1, 2]", kGoodMerges); };
    c["bf-byte-missing"] = [] {
      return vocab_error([](nlohmann::json& v) {
        v = mini_vocab({});
        v.erase("a");
        v["ab"] = 'a';
      });
    };
    c["bf-raw-space"] = [] { return vocab_error([](nlohmann::json& v) { v["a b"] = 257; }); };
    c["bf-duplicate-key"] = [] {
      std::string dup = mini_vocab({}).dump();  // "!" twice, with ids 0 and 256
      dup.insert(1, "\"!\": 256, ");
      return bpe_error(dup, kGoodMerges);
    };
    const std::vector<std::pair<std::string, std::string>> merges = {
        {"bf-merge-one", "#version: 0.2\nab\n"},
        {"bf-merge-three", "#version: 0.2\na b c\n"},
        {"bf-merge-empty-line", "#version: 0.2\na b\n\nab a\n"},
        {"bf-merge-unknown", "#version: 0.2\na zz\n"},
        {"bf-merged-unknown", "#version: 0.2\nb a\n"},
        {"bf-merge-twice", "#version: 0.2\na b\nab a\na b\n"},
        {"bf-crlf", "#version: 0.2\r\na b\r\n"},
        {"bf-merges-utf8", "#version: 0.2\na b\n\xC3(\n"}};
    for (const auto& [id, input] : merges) c[id] = [in = input] { return merges_error(in); };
    c["bf-merges-size"] = [] {
      TempDir dir;
      write_text(dir.file("vocab.json"), mini_vocab({"ab", "aba"}).dump());
      write_text(dir.file("merges.txt"), "");
      fs::resize_file(dir.file("merges.txt"), detail::kMaxBpeFileBytes + 1);
      return seen([&] { (void)Gpt2Tokenizer::load(dir.file("vocab.json"), dir.file("merges.txt")); },
                  dir.file("merges.txt"));
    };
    c["bf-no-files"] = [] {
      TempDir dir;
      return seen([&] { (void)Gpt2Tokenizer::load_dir(dir.path.string()); }, "", dir.path.string());
    };
    c["bf-missing"] = [] {
      TempDir dir;
      return seen([&] { (void)Gpt2Tokenizer::load(dir.file("nope.json"), dir.file("nope.txt")); }, "",
                  dir.path.string());
    };
    c["bh-huge-id"] = [] {
      auto v = mini_vocab({});
      v["\xc4\xa0huge"] = 1000000000;
      return bpe_error(v.dump(), "#version: 0.2\n");
    };
    c["bh-one-entry"] = [] { return bpe_error(R"({"a": 0})", ""); };
    // encode / decode
    const std::vector<std::pair<std::string, std::string>> texts = {
        {"bu-continuation",
         "ab\x80"
         "c"},
        {"bu-overlong-2", "x\xC0\xAF"},
        {"bu-overlong-3", "\xE0\x80\xAF"},
        {"bu-surrogate", "abc\xED\xA0\x80"},
        {"bu-truncated", "hello \xE2\x82"},
        {"bu-above-max", "\xF4\x90\x80\x80"},
        {"bu-ff", "ok\xFF"},
        {"bu-lead-ascii", "\xE2\x28\xA1"},
        {"bu-after-emoji", "fine \xF0\x9F\x98\x80 then \xF0\x9F\x98"}};
    for (const auto& [id, input] : texts) c[id] = [in = input] { return encode_error(in); };
    c["bu-after-special"] = [] { return encode_error("<|endoftext|>\x80", true); };
    c["bd-id-range"] = [] { return seen([] { (void)gpt2_tokenizer().decode({0, 50257}); }); };
    c["bd-negative"] = [] { return seen([] { (void)gpt2_tokenizer().decode({-1}); }); };
    c["bg-token-of"] = [] { return seen([] { (void)gpt2_tokenizer().token_of(50257); }); };
    c["bg-token-bytes"] = [] { return seen([] { (void)gpt2_tokenizer().token_bytes(-1); }); };
    c["bt-no-eot"] = [] {
      TempDir dir;
      write_text(dir.file("vocab.json"), mini_vocab({"ab", "aba"}).dump());
      write_text(dir.file("merges.txt"), "#version: 0.2\nab a\na b\n");
      const Gpt2Tokenizer tok = Gpt2Tokenizer::load(dir.file("vocab.json"), dir.file("merges.txt"));
      return Seen{error_of([&] { (void)tok.eot_id(); }) + "\n" + error_of([&] { (void)tok.encode("x", true); }), "",
                  ""};
    };
    // data files
    c["ds-no-separator"] = [] { return data_error("a.txt", "ok||fine\nno separator here\n"); };
    c["ds-two-separators"] = [] { return data_error("b.txt", "x||y||z\n"); };
    c["ds-source-type"] = [] {
      return data_error("c.jsonl", "{\"source\": \"s\", \"target\": \"t\"}\n{\"source\": 1, \"target\": \"t\"}\n");
    };
    c["ds-target-missing"] = [] { return data_error("d.jsonl", "{\"source\": \"s\"}\n"); };
    c["ds-not-json"] = [] { return data_error("e.jsonl", "{\"source\": \"s\", \n"); };
    c["ds-array"] = [] { return data_error("f.jsonl", "[1, 2]\n"); };
    c["ds-missing"] = [] {
      TempDir dir;
      return seen([&] { (void)read_pairs(dir.file("missing.txt")); }, "", dir.path.string());
    };
    c["ds-too-long"] = [] {
      const std::size_t full = encode_example(gpt2_tokenizer(), kLongPair).ids.size();
      return seen([&] { (void)encode_example(gpt2_tokenizer(), kLongPair, full - 1); });
    };
    c["ds-target-too-long"] = [] {
      return seen([] { (void)encode_example(gpt2_tokenizer(), kLongPair, 3, LengthPolicy::TruncateSource); });
    };
    c["ds-empty-range"] = [] {
      const std::vector<Example> ex = {example_from_ids({1}, {2}, 3, 1), example_from_ids({1}, {2}, 3, 2)};
      return seen([&] { (void)make_batch(ex, {0, 1}, 1, 1, 0); });
    };
    c["ds-score-data"] = [] { return data_error("data.txt", "a||b\nno separator\n"); };
    // pre-tokenized data and Llama-family folders
    c["td-labels-length"] = [] { return token_error("{\"input_ids\": [1, 2], \"labels\": [1]}\n"); };
    c["td-id-range"] = [] { return token_error("{\"input_ids\": [1, 2]}\n{\"input_ids\": [1, 40]}\n"); };
    c["td-label-range"] = [] { return token_error("{\"input_ids\": [1, 2], \"labels\": [-100, -7]}\n"); };
    c["td-unknown-field"] = [] { return token_error("{\"input_ids\": [1, 2], \"label\": [1, 2]}\n"); };
    c["td-empty"] = [] { return token_error("{\"input_ids\": []}\n"); };
    c["td-no-labels"] = [] {
      return token_error("{\"input_ids\": [1, 2], \"labels\": [1, -100]}\n{\"input_ids\": [3]}\n");
    };
    c["lf-missing-shard"] = [] {
      return llama_folder_error(
          [](const std::string& d) { std::filesystem::remove(d + "/" + shard_of(d, "model.norm.weight")); });
    };
    c["lf-escaping-shard"] = [] {
      return llama_folder_error([](const std::string& d) {
        edit_index(d, [](nlohmann::json& j) { j["weight_map"]["model.norm.weight"] = "../model.safetensors"; });
      });
    };
    c["lf-unindexed"] = [] {  // a tensor of a shard the index still names for other tensors
      return llama_folder_error([](const std::string& d) {
        edit_index(d, [](nlohmann::json& j) { j["weight_map"].erase("model.layers.0.input_layernorm.weight"); });
      });
    };
    c["lf-no-head"] = [] {
      return llama_folder_error([](const std::string& d) {
        const std::string shard = d + "/" + shard_of(d, "lm_head.weight");
        edit_index(d, [](nlohmann::json& j) { j["weight_map"].erase("lm_head.weight"); });
        const SafeTensorsFile f = SafeTensorsFile::open(shard);
        SafeTensorsWriter w;
        for (const auto& k : f.names())
          if (k != "lm_head.weight") w.add(k, f.load<float>(k));
        w.write(shard + ".new");
        std::filesystem::rename(shard + ".new", shard);
      });
    };
    c["lf-kv-heads"] = [] {
      return llama_folder_error([](const std::string& d) {
        nlohmann::json j = nlohmann::json::parse(read_text_file(d + "/config.json"));
        j["num_key_value_heads"] = 2;  // the file holds one K/V head
        write_text(d + "/config.json", j.dump());
      });
    };
    // PEFT adapters and prefix files
    c["pf-other-model"] = [] { return peft_error([](nlohmann::json&) {}, 3); };
    c["pf-lora"] = [] { return peft_error([](nlohmann::json&) {}, 2, R"({"peft_type": "LORA"})"); };
    c["pf-not-json"] = [] { return peft_error([](nlohmann::json&) {}, 2, "{oops"); };
    c["pf-fuzz-null"] = [] {
      const std::string bytes = read_text_file(kRoot + "/tests/fuzz/regressions/peft/prefix_projection_null");
      const std::size_t cut = bytes.find("\n--8<--\n");
      REQUIRE(cut != std::string::npos);
      TempDir dir;
      write_text(dir.file("adapter_config.json"), bytes.substr(0, cut));
      write_text(dir.file("adapter_model.safetensors"), bytes.substr(cut + 8));
      Gpt2Config c2;
      c2.n_layer = 2, c2.n_embd = 8, c2.n_head = 2, c2.vocab_size = 16, c2.n_positions = 16;
      return seen([&] { (void)import_peft<float>(dir.path.string(), c2); }, "", dir.path.string());
    };
    c["pj-projection-true"] = [] {  // prefix_projection with the MLP's input (P, token_dim) instead of the table
      TempDir dir;
      Rng rng(11);
      const std::string folder = dir.file("peft");
      export_peft(folder, DirectPrefix<float>::random_normal(4, peft_config(2), rng), peft_config(2));
      nlohmann::json j = nlohmann::json::parse(read_text_file(folder + "/adapter_config.json"));
      j["prefix_projection"] = true;
      write_text(folder + "/adapter_config.json", j.dump());
      SafeTensorsWriter w;
      w.add("prompt_embeddings", Tensor<float>::zeros({4, peft_config(2).kv_shape().kv_width()}));
      w.write(folder + "/adapter_model.safetensors");
      return seen([&] { (void)load_prefix<float>(folder, peft_config(2)); }, folder + "/adapter_model.safetensors",
                  folder);
    };
    c["pj-projection-yes"] = [] { return peft_error([](nlohmann::json& j) { j["prefix_projection"] = "yes"; }); };
    c["px-other-model"] = [] {
      TempDir dir;
      Rng rng(11);
      save_prefix(dir.file("p.safetensors"), DirectPrefix<float>::random_normal(4, peft_config(2), rng),
                  peft_config(2));
      return seen([&] { (void)load_prefix<float>(dir.file("p.safetensors"), peft_config(3)); },
                  dir.file("p.safetensors"));
    };
    c["px-not-prefix"] = [] {
      TempDir dir;
      save_gpt2(dir.path.string(), tiny_gpt2());
      return seen([&] { (void)load_prefix<float>(dir.file("model.safetensors"), tiny_config()); },
                  dir.file("model.safetensors"));
    };
    c["px-missing"] = [] {
      TempDir dir;
      return seen([&] { (void)load_prefix<float>(dir.file("user.safetensors"), tiny_config()); },
                  dir.file("user.safetensors"));
    };
    // checkpoints and optimizer state
    c["ck-seed"] = [] { return checkpoint_error({}, true, 7); };
    c["ck-format"] = [] { return checkpoint_error({{"format", "pt"}}); };
    c["ck-step"] = [] { return checkpoint_error({{"step", "12abc"}}); };
    c["ck-weight-missing"] = [] { return checkpoint_error({}, false); };
    c["ck-old"] = [] {
      return checkpoint_error({}, true, 42, {"validated", "best_step", "best_valid_loss", "best_tensors"});
    };
    c["ck-best"] = [] {
      return checkpoint_error({{"validated", "1"}, {"best_step", "6"}, {"best_valid_loss", "1.5"}});
    };
    c["ck-unvalidated"] = [] {
      const test::Setup s;
      TempDir dir;
      TrainConfig cfg;
      cfg.epochs = 1, cfg.batch_size = 4, cfg.checkpoint_path = dir.file("run.ckpt"), cfg.stop_after = 2;
      auto enc = s.fresh_encoder(1);
      (void)train_prefix(s.model, enc, s.train, {}, cfg);
      cfg.stop_after = 0, cfg.resume = true;
      return seen([&] { (void)train_prefix(s.model, enc, s.train, s.valid, cfg); }, cfg.checkpoint_path);
    };
    c["op-count"] = [] {
      const OptState s;
      auto ps = s.params();
      ps.pop_back();
      AdamW<double> o(ps);
      return seen([&] { o.load_state(s.file(), "opt."); });
    };
    c["op-shape"] = [] {
      const OptState s;
      auto ps = s.params();
      ps[1] = Var<double>(Tensor<double>::full({1, 5}, 1), true, "b");
      AdamW<double> o(ps);
      return seen([&] { o.load_state(s.file(), "opt."); });
    };
    c["op-order"] = [] {
      const OptState s;
      auto ps = s.params();
      std::swap(ps[0], ps[2]);
      AdamW<double> o(ps);
      return seen([&] { o.load_state(s.file(), "opt."); });
    };
    c["op-prefix"] = [] {
      const OptState s;
      AdamW<double> o(s.params());
      return seen([&] { o.load_state(s.file(), "optimizer."); });
    };
    // generation
    c["gn-empty-prompt"] = [] { return gen().error({{{1, 2, 3}, 0}, {{}, 0}}, gen_config()); };
    c["gn-prefix"] = [] { return gen().error({{{1}, 3}}, gen_config()); };
    c["gn-token"] = [] { return gen().error({{{1, 50}, kNoPrefix}}, gen_config()); };
    c["gn-too-long"] = [] { return gen().error({{std::vector<std::int32_t>(13, 1), 0}}, gen_config()); };
    c["gn-top-p"] = [] { return gen().error({{{1, 2, 3}, 0}}, gen_config([](GenerateConfig& g) { g.top_p = 0; })); };
    c["gn-beam-sampling"] = [] {
      return gen().error({{{1, 2, 3}, 0}}, gen_config([](GenerateConfig& g) { g.num_beams = 2, g.sample = true; }));
    };
    c["gn-cache-full"] = [] {
      KvCache<float> cache(gen().model.config, 1, 4);
      cache.reset(0, 0);
      return seen([&] { (void)gpt2_extend(gen().model, gen().bank, cache, {0}, {{1, 2, 3, 4, 5}}); });
    };
    c["gn-bank-name"] = [] {
      PrefixBank<float> bank = gen().bank;
      return seen([&] { bank.add(Tensor<float>::zeros({2, 64}), "u"); });
    };
    c["gn-bank-shape"] = [] {
      PrefixBank<float> bank = gen().bank;
      return seen([&] { bank.add(Tensor<float>::zeros({2, 7})); });
    };
    c["gs-settings"] = [] {
      std::vector<Seen> all;
      for (const std::function<void(GenerateConfig&)>& edit : std::vector<std::function<void(GenerateConfig&)>>{
               [](GenerateConfig& g) { g.max_new_tokens = 0; }, [](GenerateConfig& g) { g.min_new_tokens = 9; },
               [](GenerateConfig& g) { g.min_new_tokens = -1; }, [](GenerateConfig& g) { g.temperature = 0; },
               [](GenerateConfig& g) { g.temperature = std::nan(""); }, [](GenerateConfig& g) { g.top_k = -2; },
               [](GenerateConfig& g) { g.top_p = 1.5; }, [](GenerateConfig& g) { g.num_beams = 0; },
               [](GenerateConfig& g) { g.length_penalty = INFINITY; }, [](GenerateConfig& g) { g.eos_id = 50; },
               [](GenerateConfig& g) {
                 g.ban_ids = {3, -1};
               }})
        all.push_back(gen().error({{{1, 2, 3}, kNoPrefix}}, gen_config(edit)));
      return Seen{joined(all), "", ""};
    };
    c["gs-kv-capacity"] = [] { return seen([] { KvCache<float> cache(gen().model.config, 1, 17); }); };
    // `prefixtune generate` stdin lines and arguments (the CLI's code in examples/)
    c["cli-line-not-json"] = [] { return stdin_line("this is not JSON", 2); };
    c["cli-line-no-field"] = [] { return stdin_line(R"({"id": 3})", 3); };
    c["cli-line-too-long"] = [] {
      std::string text = "x";
      for (int i = 1; i < 400; ++i) text += " x";
      return stdin_line(nlohmann::json{{"prompt", text}}.dump(), 5);
    };
    c["cli-line-empty-prompt"] = [] { return stdin_line(R"({"prompt": ""})", 6); };
    c["cli-line-source-number"] = [] { return stdin_line(R"({"source": 42})", 7); };
    c["cli-line-array"] = [] { return stdin_line("[1, 2]", 8); };
    c["cli-model-folder"] = [] {
      TempDir dir;
      const std::string d = dir.file("no-model");
      return seen([&] { (void)prefixtune_cli::with_model<Cpu>(d, [](const auto&) { return 0; }); }, "", d);
    };
    c["cli-no-cuda"] = [] { return seen([] { (void)prefixtune_cli::cmd_score_cuda(); }); };
    c["cli-inspect-1-byte"] = [] { return open_bytes({0x10}); };
    // training settings
    c["tr-batch-size"] = [] {
      const test::Setup s;
      auto enc = s.fresh_encoder(3);
      TrainConfig cfg;
      cfg.batch_size = 0;
      return seen([&] { (void)train_prefix(s.model, enc, s.train, {}, cfg); });
    };
    c["tr-empty"] = [] {
      const test::Setup s;
      auto enc = s.fresh_encoder(3);
      return seen([&] { (void)train_prefix(s.model, enc, {}, {}, TrainConfig{}); });
    };
    c["tr-token-id"] = [] {
      const test::Setup s;
      auto enc = s.fresh_encoder(3);
      auto bad = s.train;
      bad[3].ids[0] = 77;
      TrainConfig one;
      one.epochs = 1, one.batch_size = 40;
      return seen([&] { (void)train_prefix(s.model, enc, bad, {}, one); });
    };
    c["pe-length-0"] = [] {
      Rng rng(4);
      PrefixConfig bad;
      bad.length = 0;
      return seen([&] { (void)PrefixEncoder<float>::create(bad, tiny_config(), rng); });
    };
    c["adamw-lr"] = [] { return adamw_error([](AdamWConfig& a) { a.lr = -1e-3; }); };
    c["adamw-lr-nan"] = [] { return adamw_error([](AdamWConfig& a) { a.lr = std::nan(""); }); };
    c["adamw-beta1"] = [] { return adamw_error([](AdamWConfig& a) { a.beta1 = 1; }); };
    c["adamw-beta2"] = [] { return adamw_error([](AdamWConfig& a) { a.beta2 = 1.5; }); };
    c["adamw-eps"] = [] { return adamw_error([](AdamWConfig& a) { a.eps = -1; }); };
    c["adamw-weight-decay"] = [] { return adamw_error([](AdamWConfig& a) { a.weight_decay = -0.1; }); };
    c["adamw-set-lr"] = [] {
      AdamW<double> opt({Var<double>(Tensor<double>::zeros({2}), true, "w")});
      return seen([&] { opt.set_lr(-1); });
    };
    const Var<double> w1(Tensor<double>::zeros({2}), true, "prefix.w1");
    c["adamw-frozen"] = [w1] {
      return seen([&] { AdamW<double> o({w1, Var<double>(Tensor<double>::zeros({2}), false, "wte")}); });
    };
    c["adamw-twice"] = [w1] { return seen([&] { AdamW<double> o({w1, w1}); }); };
    c["adamw-undefined"] = [w1] { return seen([&] { AdamW<double> o({w1, Var<double>()}); }); };
    c["sched-total"] = [] { return schedule_error(1e-3, 0, 0); };
    c["sched-warmup-long"] = [] { return schedule_error(1e-3, 11, 10); };
    c["sched-warmup-negative"] = [] { return schedule_error(1e-3, -1, 10); };
    c["sched-base-lr"] = [] { return schedule_error(-1e-3, 1, 10); };
    c["sched-step"] = [] { return schedule_error(1e-3, 1, 10, -1); };
    c["clip-max-norm"] = [] {
      return seen(
          [] { (void)clip_grad_norm(std::vector<Var<double>>{Var<double>(Tensor<double>::zeros({2}), true)}, 0.0); });
    };
    // losses and metrics
    c["ls-sample-label"] = [] {
      Rng rng(1);
      return seen([&] { (void)sample_vocabulary({6}, 6, 2, rng); });
    };
    const auto sampled = [](const Tensor<std::int32_t>& labels, std::int64_t negatives) {
      Rng rng(1);
      Var<float> h(Tensor<float>::zeros({1, 2, 4}), true, "h"), e(Tensor<float>::zeros({10, 4}), true, "E");
      Tape<float> tape;
      return seen([&] { (void)sampled_softmax_loss(tape, h, e, labels, negatives, rng); });
    };
    c["ls-label"] = [sampled] { return sampled(Tensor<std::int32_t>::from_vector({1, 2}, {1, 10}), 3); };
    c["ls-negatives"] = [sampled] { return sampled(Tensor<std::int32_t>::from_vector({1, 2}, {1, 2}), 0); };
    c["ls-labels-shape"] = [sampled] { return sampled(Tensor<std::int32_t>::from_vector({2, 1}, {1, 2}), 3); };
    c["bleu-counts"] = [] { return seen([] { (void)corpus_bleu({"a", "b"}, {{"a"}}); }); };
    c["bleu-no-reference"] = [] { return seen([] { (void)corpus_bleu({"a"}, {{}}); }); };
    c["bleu-empty-references"] = [] { return seen([] { (void)corpus_bleu({"a"}, {{"", ""}}); }); };
    // non-finite training
    c["nf-loss"] = [] { return nan_training(); };
    c["nf-gradient"] = [] { return infinite_gradient(); };
    // shapes
    c["sh-rank-5"] = [] { return seen([] { Shape s{1, 2, 3, 4, 5}; }); };
    c["sh-negative"] = [] { return seen([] { Shape s{2, -1}; }); };
    c["sh-overflow"] = [] { return seen([] { Shape s{std::int64_t{1} << 40, std::int64_t{1} << 40}; }); };
    c["sh-index"] = [] { return seen([] { (void)Shape({2, 3})[2]; }); };
    return c;
  }();
  return all;
}

// ---- the document -----------------------------------------------------------------------------------------------

/// One table row: its line, cells, the marker of its Test cell and the `quoted` texts of "What the user sees".
struct Row {
  int line = 0;
  std::string kind, arg;  // check/ID, source/FILE or unchecked/reason; empty when the row has no marker
  std::vector<std::string> quotes;
};

std::vector<std::string> split_cells(const std::string& line) {
  std::vector<std::string> cells;
  std::string cell;
  for (std::size_t i = 1; i < line.size(); ++i) {  // after the leading '|'
    if (line[i] == '|' && line[i - 1] != '\\') {
      cells.push_back(cell);
      cell.clear();
    } else {
      cell += line[i];
    }
  }
  return cells;
}

/// The rows of every table headed `| Input | What is wrong | What the user sees | Test |`.
std::vector<Row> doc_rows(const std::string& path) {
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "cannot read ", path);
  std::vector<Row> rows;
  bool in_table = false;
  int n = 0;
  const std::regex marker(R"(<!-- (check|source|unchecked): *(.*?) *-->)");
  for (std::string line; std::getline(in, line);) {
    ++n;
    if (line == "| Input | What is wrong | What the user sees | Test |") {
      in_table = true;
      continue;
    }
    if (!in_table || line.rfind("|---", 0) == 0) continue;
    if (line.empty() || line[0] != '|') {
      in_table = false;
      continue;
    }
    const std::vector<std::string> cells = split_cells(line);
    INFO("docs/robustness.md:", n, ": ", line);
    REQUIRE(cells.size() == 4);
    Row r;
    r.line = n;
    std::smatch m;
    if (std::regex_search(cells[3], m, marker)) r.kind = m[1], r.arg = m[2];
    const std::string& sees = cells[2];
    for (std::size_t b = sees.find('`'); b != std::string::npos; b = sees.find('`', b + 1)) {
      const std::size_t e = sees.find('`', b + 1);
      REQUIRE_MESSAGE(e != std::string::npos, "unmatched backtick");
      std::string q = sees.substr(b + 1, e - b - 1);
      for (std::size_t p; (p = q.find("\\|")) != std::string::npos;) q.erase(p, 1);
      r.quotes.push_back(q);
      b = e;
    }
    rows.push_back(r);
  }
  return rows;
}

/// The literal pieces of a quote between its wildcards: `…`, `...`, and <path> / <dir> (replaced by the case's
/// paths first when given).
std::vector<std::string> pieces(std::string q, const Seen* s) {
  for (const char* name : {"<path>", "<dir>"}) {
    const std::string value = s == nullptr ? "…" : (std::strcmp(name, "<path>") == 0 ? s->path : s->dir);
    for (std::size_t p; (p = q.find(name)) != std::string::npos;) q.replace(p, std::strlen(name), value);
  }
  for (std::size_t p; (p = q.find("...")) != std::string::npos;) q.replace(p, 3, "…");
  std::vector<std::string> out;
  std::size_t from = 0;
  for (std::size_t p; (p = q.find("…", from)) != std::string::npos; from = p + std::strlen("…"))
    if (p > from) out.push_back(q.substr(from, p - from));
  if (from < q.size()) out.push_back(q.substr(from));
  return out;
}

/// Whether text holds the pieces of quote q in order.
bool matches(const std::string& text, const std::string& q, const Seen& s) {
  std::size_t at = 0;
  for (const std::string& piece : pieces(q, &s)) {
    at = text.find(piece, at);
    if (at == std::string::npos) return false;
    at += piece.size();
  }
  return true;
}

std::string source_text(const std::string& file) {
  std::string text = read_text_file(kRoot + "/" + file);
  for (std::size_t p; (p = text.find("\\\"")) != std::string::npos;) text.erase(p, 1);
  return text;
}

}  // namespace

TEST_CASE("docs/robustness.md: every quoted message is what the code prints for that input") {
  const std::vector<Row> rows = doc_rows(kRoot + "/docs/robustness.md");
  CHECK(rows.size() > 200);
  std::set<std::string> used;
  int checked = 0;
  for (const Row& r : rows) {
    INFO("docs/robustness.md:", r.line, " (", r.kind, ": ", r.arg, ")");
    if (r.kind.empty()) {
      FAIL_CHECK("a row without <!-- check: ID -->, <!-- source: FILE --> or <!-- unchecked: ... -->");
      continue;
    }
    if (r.kind == "unchecked") {
      CHECK_MESSAGE(!r.arg.empty(), "an unchecked row says why");
      continue;
    }
    CHECK_MESSAGE(!r.quotes.empty(), "a checked row quotes a message");
    if (r.kind == "source") {
      const std::string text = source_text(r.arg);
      for (const std::string& q : r.quotes)
        for (const std::string& piece : pieces(q, nullptr)) {
          INFO("quote: ", q);
          CHECK_MESSAGE(text.find(piece) != std::string::npos, "not in ", r.arg, ": ", piece);
        }
      continue;
    }
    used.insert(r.arg);
    const auto it = cases().find(r.arg);
    if (it == cases().end()) {
      FAIL_CHECK("no case '", r.arg, "' in tests/io/test_robustness_doc.cpp");
      continue;
    }
    const Seen s = it->second();
    for (const std::string& q : r.quotes) {
      INFO("quote: ", q);
      INFO("printed: ", s.text.empty() ? std::string("(no error)") : s.text);
      CHECK_MESSAGE((q.find("<path>") == std::string::npos || !s.path.empty()), "the case names no <path>");
      CHECK_MESSAGE((q.find("<dir>") == std::string::npos || !s.dir.empty()), "the case names no <dir>");
      CHECK(matches(s.text, q, s));
      ++checked;
    }
  }
  for (const auto& [id, c] : cases()) CHECK_MESSAGE(used.count(id) == 1, "case '", id, "' is used by no row");
  MESSAGE(checked, " quotes checked against the messages printed");
}

TEST_CASE("docs/robustness.md check: a quote matches in order, with … and the case's paths as the only freedom") {
  const Seen s{"prefixtune: /tmp/x.bin: header length 100 runs past the end [in open]", "/tmp/x.bin", "/tmp"};
  CHECK(matches(s.text, "<path>: header length 100 runs past …", s));
  CHECK(matches(s.text, "<dir>/x.bin: header length ...", s));
  CHECK_FALSE(matches(s.text, "<path>: header length 101", s));
  CHECK_FALSE(matches(s.text, "runs past … header length", s));
  CHECK_FALSE(matches(s.text, "<path>: header", Seen{s.text, "/other/x.bin", ""}));
  CHECK(pieces("a … b ... c", nullptr) == std::vector<std::string>{"a ", " b ", " c"});
}
