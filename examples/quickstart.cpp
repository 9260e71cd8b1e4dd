// SPDX-License-Identifier: MIT
// Quickstart (foundation stage): the GEMMs of one GPT-2 small layer fed with a prefix, timed on this machine.
// The full demo (pretrained tiny GPT-2, prefix-tuning, BLEU before/after) replaces this when it lands.
#include <prefixtune/prefixtune.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

using namespace prefixtune;

int main(int argc, char** argv) {
  std::int64_t T = 128;  // real tokens per sequence
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--tokens") == 0 && i + 1 < argc) {
      T = std::atoll(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--tokens N]\n", argv[0]);
      return 2;
    }
  }
  try {
    PREFIXTUNE_CHECK(T >= 1 && T <= 1024, "--tokens must be in [1, 1024], got ", T);
    const std::int64_t B = 4, C = 768, NH = 12, HS = C / NH, P = 10;
    Rng rng(0);
    auto x = Tensor<float>::empty({B, T, C});
    auto w_qkv = Tensor<float>::empty({C, 3 * C});
    auto prefix_k = Tensor<float>::empty({B * NH, P + T, HS});  // keys: P prefix slots, then the real tokens
    fill_normal(x, rng);
    fill_normal(w_qkv, rng, 0.0, 0.02);
    fill_normal(prefix_k, rng);
    auto qkv = Tensor<float>::empty({B, T, 3 * C});
    auto q = Tensor<float>::empty({B * NH, T, HS});
    auto scores = Tensor<float>::empty({B * NH, T, P + T});
    fill_normal(q, rng);

    const auto t0 = std::chrono::steady_clock::now();
    gemm(x, Trans::N, w_qkv, Trans::N, qkv);                                     // QKV projection
    gemm(q, Trans::N, prefix_k, Trans::T, scores, 1.0f / std::sqrt(float(HS)));  // q [prefix; k]^T
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double flops = 2.0 * B * T * C * 3 * C + 2.0 * B * NH * T * (P + T) * HS;

    std::printf("prefixtune %d.%d.%d | cpu gemm: %s | threads: %d\n", PREFIXTUNE_VERSION_MAJOR,
                PREFIXTUNE_VERSION_MINOR, PREFIXTUNE_VERSION_PATCH, cpu_gemm_backend().c_str(), num_threads());
    std::printf("GPT-2 small layer, B=%lld T=%lld P=%lld: qkv %s, scores over prefix+tokens %s\n", (long long)B,
                (long long)T, (long long)P, qkv.shape().to_string().c_str(), scores.shape().to_string().c_str());
    std::printf("%.2f GFLOP in %.1f ms = %.1f GFLOP/s\n", flops * 1e-9, s * 1e3, flops * 1e-9 / s);
    std::printf("(foundation stage: prefix-tuning, training and generation arrive with the next issues)\n");
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
