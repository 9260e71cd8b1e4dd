// SPDX-License-Identifier: MIT
// The fuzz targets without libFuzzer: replays every target over its seed corpus (tests/fuzz/corpus/<target>/) and
// its regression corpus (tests/fuzz/regressions/<target>/: inputs that once failed) in any build, so CTest checks
// them under Release and ASan/UBSan alike (test_fuzz_replay). `--write-seeds DIR` regenerates the seed corpora with
// the library's own writers.
//
//   test_fuzz_replay [--corpus-root tests/fuzz] [--write-seeds DIR]
#include <prefixtune/prefixtune.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_target.hpp"

// Every target in this one translation unit (the headers are parsed once); each registers itself by name.
#include "fuzz_bpe_decode.cpp"        // NOLINT(bugprone-suspicious-include)
#include "fuzz_bpe_encode.cpp"        // NOLINT(bugprone-suspicious-include)
#include "fuzz_bpe_files.cpp"         // NOLINT(bugprone-suspicious-include)
#include "fuzz_checkpoint_index.cpp"  // NOLINT(bugprone-suspicious-include)
#include "fuzz_dataset.cpp"           // NOLINT(bugprone-suspicious-include)
#include "fuzz_gpt2_config.cpp"       // NOLINT(bugprone-suspicious-include)
#include "fuzz_llama_config.cpp"      // NOLINT(bugprone-suspicious-include)
#include "fuzz_peft.cpp"              // NOLINT(bugprone-suspicious-include)
#include "fuzz_prefix_files.cpp"      // NOLINT(bugprone-suspicious-include)
#include "fuzz_safetensors.cpp"       // NOLINT(bugprone-suspicious-include)
#include "fuzz_token_data.cpp"        // NOLINT(bugprone-suspicious-include)

namespace fs = std::filesystem;
using namespace prefixtune;

namespace {

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void put(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  write_text_file_atomic((dir / name).string(), bytes);
}

std::string safetensors_bytes(const SafeTensorsWriter& w) {
  const auto b = w.to_bytes();
  return std::string(b.begin(), b.end());
}

/// Valid inputs of every target, made with the library's writers.
void write_seeds(const fs::path& root) {
  Rng rng(5);
  {  // safetensors: every dtype, metadata, an empty tensor, a scalar
    SafeTensorsWriter w;
    auto a = Tensor<float>::empty({2, 3});
    fill_normal(a, rng);
    w.add("a.f32", a, DType::F32);
    w.add("a.f16", a, DType::F16);
    w.add("a.bf16", a, DType::BF16);
    w.add("a.f64", a, DType::F64);
    w.add("ids.i64", Tensor<std::int64_t>::from_vector({4}, {0, 1, -5, 1 << 20}), DType::I64);
    w.add("ids.i32", Tensor<std::int64_t>::from_vector({2, 2}, {3, 1, 4, 1}), DType::I32);
    w.add("mask.u8", Tensor<std::int64_t>::from_vector({3}, {0, 1, 255}), DType::U8);
    w.add("empty", Tensor<float>::empty({0, 4}), DType::F32);
    w.add("scalar", Tensor<float>::from_vector(Shape{}, {1.5f}), DType::F32);
    w.add_metadata("format", "pt");
    put(root / "corpus/safetensors", "all_dtypes.safetensors", safetensors_bytes(w));
    SafeTensorsWriter one;
    one.add("x", Tensor<float>::from_vector({2}, {1.0f, -2.0f}), DType::F32);
    put(root / "corpus/safetensors", "one.safetensors", safetensors_bytes(one));
  }
  {  // checkpoint_index: an index and its shard, as save_llama writes them
    SafeTensorsWriter w;
    w.add("model.embed_tokens.weight", Tensor<float>::zeros({3, 2}), DType::BF16);
    w.add("model.norm.weight", Tensor<float>::full({2}, 1.0f), DType::F32);
    const nlohmann::json index = {{"metadata", {{"total_size", 20}}},
                                  {"weight_map",
                                   {{"model.embed_tokens.weight", "model-00001-of-00001.safetensors"},
                                    {"model.norm.weight", "model-00001-of-00001.safetensors"}}}};
    put(root / "corpus/checkpoint_index", "two_tensors.txt", index.dump(2) + "\n--8<--\n" + safetensors_bytes(w));
    put(root / "corpus/checkpoint_index", "default_shard.json",
        R"({"weight_map": {"model.norm.weight": "model-00001-of-00001.safetensors"}})");
  }
  // token_data
  put(root / "corpus/token_data", "labels.jsonl",
      "{\"input_ids\": [1, 2, 3, 4], \"labels\": [-100, -100, 3, 4]}\n\n{\"input_ids\": [5, 6]}\n");
  // gpt2_config
  put(root / "corpus/gpt2_config", "gpt2_small.json",
      R"({"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257,
  "n_positions": 1024, "n_ctx": 1024, "layer_norm_epsilon": 1e-05, "activation_function": "gelu_new",
  "bos_token_id": 50256, "eos_token_id": 50256, "architectures": ["GPT2LMHeadModel"]})");
  put(root / "corpus/gpt2_config", "tiny.json",
      R"({"n_layer": 2, "n_embd": 8, "n_head": 2, "vocab_size": 16, "n_positions": 16, "n_inner": null})");
  // llama_config: both transformers layouts, every family
  put(root / "corpus/llama_config", "llama31.json",
      R"({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 160,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
  "max_position_embeddings": 64, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "hidden_act": "silu",
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
  "original_max_position_embeddings": 32, "rope_type": "llama3"}, "bos_token_id": 1, "eos_token_id": [2, 3],
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "mlp_bias": false, "attention_bias": false})");
  put(root / "corpus/llama_config", "qwen3_v5.json",
      R"({"model_type": "qwen3", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 50,
  "max_position_embeddings": 128, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
  "use_sliding_window": false, "sliding_window": null, "tie_word_embeddings": true, "dtype": "float32"})");
  put(root / "corpus/llama_config", "qwen2.json",
      R"({"model_type": "qwen2", "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 1,
  "num_attention_heads": 6, "num_key_value_heads": 2, "vocab_size": 60, "max_position_embeddings": 32,
  "rope_theta": 1000000.0, "use_sliding_window": false, "sliding_window": 32, "max_window_layers": 1})");
  put(root / "corpus/llama_config", "mistral.json",
      R"({"model_type": "mistral", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
  "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": null, "vocab_size": 40,
  "max_position_embeddings": 64, "sliding_window": null, "rope_theta": 1000000.0})");
  {  // bpe_files: byte-level vocabulary of the 256 byte symbols, a few merges, <|endoftext|>
    nlohmann::json vocab = nlohmann::json::object();
    for (int b = 0; b < 256; ++b) vocab[detail::bytes_to_token_text(std::string(1, static_cast<char>(b)))] = b;
    const std::vector<std::pair<std::string, std::string>> merges = {
        {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"\xc4\xa0", "w"}, {"o", "r"}, {"\xc4\xa0w", "or"}};
    std::string m = "#version: 0.2\n";
    int id = 256;
    for (const auto& [a, b] : merges) {
      m += a + " " + b + "\n";
      vocab[a + b] = id++;
    }
    vocab["<|endoftext|>"] = id;
    put(root / "corpus/bpe_files", "mini.txt", vocab.dump() + "\n--8<--\n" + m);
  }
  // bpe_encode / bpe_decode / dataset
  const std::vector<std::string> texts = {"Hello world", "It's 5 o'clock, isn't it?  Yes!\n\n",
                                          "caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80",
                                          " name : Aromi | food : Chinese <|endoftext|> Aromi serves food ."};
  for (std::size_t i = 0; i < texts.size(); ++i)
    put(root / "corpus/bpe_encode", "text" + std::to_string(i) + ".txt", texts[i]);
  {
    const std::vector<std::int32_t> ids = {15496, 995, 11, 220, 50256, 198, 628, 0, 1, 31373};
    put(root / "corpus/bpe_decode", "ids.bin",
        std::string(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(std::int32_t)));
  }
  put(root / "corpus/dataset", "e2e.txt",
      std::string(1, '\0') +
          "name : Aromi | Type : coffee shop | area : city centre||Aromi is a coffee shop in the city centre .\n"
          "name : The Eagle | food : French||The Eagle serves French food .\r\n\n");
  put(root / "corpus/dataset", "jsonl.txt",
      std::string(1, '\1') + R"({"source": "name : Aromi", "target": "Aromi is a pub ."})" + "\n" +
          R"({"source": "caf\u00e9", "target": "\ud83d\ude00 ok"})" + "\n");
  {  // peft and prefix_files, for the fuzz targets' tiny model
    Gpt2Config c;
    c.n_layer = 2, c.n_embd = 8, c.n_head = 2, c.vocab_size = 16, c.n_positions = 16;
    auto prefix = DirectPrefix<float>::random_normal(3, c, rng);
    const fs::path tmp = fs::temp_directory_path() / "prefixtune_fuzz_seeds";
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    export_peft((tmp / "adapter").string(), prefix, c);
    put(root / "corpus/peft", "adapter.txt",
        read_bytes(tmp / "adapter/adapter_config.json") + "\n--8<--\n" +
            read_bytes(tmp / "adapter/adapter_model.safetensors"));
    save_prefix((tmp / "prefix.safetensors").string(), prefix, c);
    put(root / "corpus/prefix_files", "prefix.bin", std::string(1, '\0') + read_bytes(tmp / "prefix.safetensors"));
    PrefixConfig pc;
    pc.length = 3, pc.mid = 4;
    auto enc = PrefixEncoder<float>::create(pc, c, rng);
    AdamW<float> opt(enc.parameters());
    detail::save_checkpoint((tmp / "ckpt.safetensors").string(), enc.parameters(), opt, 12, 7);
    put(root / "corpus/prefix_files", "checkpoint.bin", std::string(1, '\1') + read_bytes(tmp / "ckpt.safetensors"));
    fs::remove_all(tmp);
  }
}

}  // namespace

int main(int argc, char** argv) {
  fs::path root = PREFIXTUNE_FUZZ_DIR;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--corpus-root") {
      root = argv[i + 1];
    } else if (a == "--write-seeds") {
      write_seeds(argv[i + 1]);
      std::printf("wrote the seed corpora under %s\n", argv[i + 1]);
      return 0;
    } else {
      std::fprintf(stderr, "usage: %s [--corpus-root DIR] [--write-seeds DIR]\n", argv[0]);
      return 2;
    }
  }
  int failures = 0;
  for (const auto& [name, fn] : prefixtune_fuzz::registry()) {
    std::size_t seeds = 0, regressions = 0;
    for (const char* kind : {"corpus", "regressions"}) {
      const fs::path dir = root / kind / name;
      if (!fs::is_directory(dir)) continue;
      std::vector<fs::path> files;
      for (const auto& e : fs::directory_iterator(dir))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const auto& p : files) {
        const std::string bytes = read_bytes(p);
        fn(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());  // aborts on a finding
        ++(std::string(kind) == "corpus" ? seeds : regressions);
      }
    }
    std::printf("%-14s %3zu seed inputs, %3zu regression inputs: ok\n", name.c_str(), seeds, regressions);
    if (seeds == 0) {
      std::fprintf(stderr, "%s: no seed corpus under %s\n", name.c_str(), (root / "corpus" / name).string().c_str());
      ++failures;
    }
  }
  return failures == 0 ? 0 : 1;
}
