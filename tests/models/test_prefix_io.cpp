// SPDX-License-Identifier: MIT
// Prefix files: save -> load -> same loss; PEFT export -> import -> same loss; mismatches and corrupt files.
#include <doctest/doctest.h>

#include <fstream>

#include "prefixtune/models/gpt2_io.hpp"
#include "prefixtune/prefix/prefix_io.hpp"
#include "test_util.hpp"

using namespace prefixtune;
using test::error_of;
using test::TempDir;

namespace {

double loss_with(const Gpt2<float>& m, const DirectPrefix<float>& prefix, const Tensor<std::int32_t>& ids) {
  NoGradGuard ng;
  Tape<float> tape;
  auto kv = prefix_kv_from_table(tape, prefix.table, m.config.kv_shape());
  auto h = gpt2_hidden(tape, m, ids, Tensor<std::uint8_t>(), kv, prefix.length());
  return gpt2_loss(tape, m, h, ids, Reduction::SumPerSequenceMeanBatch).value().item();
}

}  // namespace

TEST_CASE("merged prefixes round-trip through our file and through a PEFT adapter folder") {
  Rng rng(11);
  Gpt2Config c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 8, c.n_positions = 16, c.vocab_size = 23;
  const auto m = random_gpt2<float>(c, rng);
  const auto prefix = DirectPrefix<float>::random_normal(4, c, rng);
  auto ids = Tensor<std::int32_t>::full({2, 5}, 3);
  const double ref = loss_with(m, prefix, ids);
  TempDir dir;
  save_prefix(dir.file("p.safetensors"), prefix, c);
  const auto loaded = load_prefix<float>(dir.file("p.safetensors"), c);
  CHECK(loaded.table.value().to_vector() == prefix.table.value().to_vector());
  CHECK(loss_with(m, loaded, ids) == ref);
  export_peft(dir.file("peft"), prefix, c, "tiny-gpt2");
  const auto imported = load_prefix<float>(dir.file("peft"), c);  // a folder: PEFT
  CHECK(imported.table.value().to_vector() == prefix.table.value().to_vector());
  CHECK(loss_with(m, imported, ids) == ref);
  const std::string cfg = read_text_file(dir.file("peft") + "/adapter_config.json");
  for (const char* field :
       {"\"peft_type\": \"PREFIX_TUNING\"", "\"task_type\": \"CAUSAL_LM\"", "\"num_virtual_tokens\": 4",
        "\"num_transformer_submodules\": 1", "\"prefix_projection\": false", "\"inference_mode\": true"})
    CHECK(cfg.find(field) != std::string::npos);
  CHECK(SafeTensorsFile::open(dir.file("peft") + "/adapter_model.safetensors").info("prompt_embeddings").shape ==
        std::vector<std::int64_t>{4, 2 * 2 * 8});

  // Wrong model, wrong type of file, corrupt JSON.
  Gpt2Config other = c;
  other.n_layer = 3;
  CHECK(error_of([&] { (void)load_prefix<float>(dir.file("p.safetensors"), other); }).find("does not fit the model") !=
        std::string::npos);
  CHECK(error_of([&] { (void)load_prefix<float>(dir.file("peft"), other); }).find("num_layers=2") != std::string::npos);
  save_gpt2(dir.file("model"), m);
  CHECK(error_of([&] {
          (void)load_prefix<float>(dir.file("model") + "/model.safetensors", c);
        }).find("no 'prefix.table'") != std::string::npos);
  write_text_file_atomic(dir.file("peft") + "/adapter_config.json", "{\"peft_type\": \"LORA\"}");
  CHECK(error_of([&] { (void)load_prefix<float>(dir.file("peft"), c); }).find("not a PEFT prefix-tuning adapter") !=
        std::string::npos);
  write_text_file_atomic(dir.file("peft") + "/adapter_config.json", "{oops");
  CHECK(error_of([&] { (void)load_prefix<float>(dir.file("peft"), c); }).find("invalid JSON") != std::string::npos);
  // prefix_projection: true is how PEFT saves a prefix trained through its MLP (the MLP's output table): it loads
  // as the same table; a value that is not a boolean is refused (found by fuzz_peft).
  nlohmann::json j = nlohmann::json::parse(cfg);
  j["prefix_projection"] = true;
  write_text_file_atomic(dir.file("peft") + "/adapter_config.json", j.dump());
  CHECK(load_prefix<float>(dir.file("peft"), c).table.value().to_vector() == prefix.table.value().to_vector());
  for (const char* bad : {"null", "\"yes\"", "1"}) {
    j["prefix_projection"] = nlohmann::json::parse(bad);
    write_text_file_atomic(dir.file("peft") + "/adapter_config.json", j.dump());
    const std::string e = error_of([&] { (void)load_prefix<float>(dir.file("peft"), c); });
    if (j["prefix_projection"].is_null()) {
      CHECK(e.empty());  // null: PEFT's default, false
    } else {
      CHECK(e.find("'prefix_projection' must be true or false, got " + j["prefix_projection"].dump()) !=
            std::string::npos);
    }
  }
}
