// SPDX-License-Identifier: MIT
// The Llama family on the Qwen2.5-0.5B configuration (random weights, fp32): the W1 prefix-tuning step
// (train_step_workload.hpp) and the generation workloads (generate_workload.hpp). torch_llama.py runs the same
// workloads in PyTorch; scripts/compare_llama.sh prints the ratios and both sides' peak memory.
#include <nlohmann/json.hpp>

#include "generate_workload.hpp"
#include "prefixtune/generate/llama_generate.hpp"
#include "prefixtune/models/llama_io.hpp"
#include "train_step_workload.hpp"

using namespace prefixtune;
using namespace prefixtune::bench;

namespace {

/// Qwen2.5-0.5B's config.json (the fields the forward pass reads): 24 layers, C=896, 14 query heads over 2 K/V heads
/// of 64, SwiGLU 4864, V=151936, tied head, q/k/v biases, rope_theta 1e6.
LlamaConfig qwen25_05b_config() {
  const nlohmann::json j = {{"model_type", "qwen2"},
                            {"hidden_size", 896},
                            {"intermediate_size", 4864},
                            {"num_hidden_layers", 24},
                            {"num_attention_heads", 14},
                            {"num_key_value_heads", 2},
                            {"max_position_embeddings", 32768},
                            {"vocab_size", 151936},
                            {"rms_norm_eps", 1e-6},
                            {"rope_theta", 1000000.0},
                            {"tie_word_embeddings", true},
                            {"use_sliding_window", false},
                            {"hidden_act", "silu"}};
  return LlamaConfig::from_json(j, "Qwen2.5-0.5B config");
}

/// The model with random weights (seed 1), built once; the process's idle size is taken before it, and its peak
/// resident size restarts after it (the ~2 GB of weights stay resident; drawing them took more for a while).
const Llama<float, Cpu>& qwen25_05b() {
  rss_idle_mb();
  static const Llama<float, Cpu> model = [] {
    Rng r(1);
    auto m = random_llama<float>(qwen25_05b_config(), r);
    reset_peak_rss();
    return m;
  }();
  return model;
}

void BM_llama_train_step(benchmark::State& state) { time_prefix_train_step(state, qwen25_05b(), 1); }

void BM_llama_generate_batch1(benchmark::State& state) {
  generate_batch1(state, qwen25_05b());
  set_memory_counters(state);
}

void BM_llama_generate_prefix_cost(benchmark::State& state) { generate_prefix_cost(state, qwen25_05b()); }

void BM_llama_generate_batching(benchmark::State& state) { generate_batching(state, qwen25_05b()); }

}  // namespace

// Registered in the order compare_llama.sh runs them in one process: decoding first, then the training step (whose
// peak memory then covers both; the training step's is the larger).
// Each iteration decodes 64 tokens, each reading the ~2 GB of weights once: seconds.
BENCHMARK(BM_llama_generate_batch1)
    ->Arg(0)
    ->Arg(1)
    ->ArgName("prefix")
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// One step is ~1 TFLOP (tens of seconds on 2 cores): one warm-up step, then one timed step (compare_llama.sh takes
// the median over its rounds).
BENCHMARK(BM_llama_train_step)
    ->Args({4, 128})
    ->ArgNames({"B", "T"})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// Same-run ratios (both sides in every iteration, alternating which leads; even counts so each leads in half):
// the P=10 prefix's cost at batch 1, and 8 users' prefixes in one batch vs one after another (8 batch-1 calls per
// iteration: the longest benchmark here).
BENCHMARK(BM_llama_generate_prefix_cost)->Iterations(4)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_llama_generate_batching)->Iterations(2)->Unit(benchmark::kMillisecond)->UseRealTime();
