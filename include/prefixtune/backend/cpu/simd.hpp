// SPDX-License-Identifier: MIT
// What the x86 kernels of the CPU backend need: the function target attributes that compile them for AVX2 + FMA
// or AVX-512F without a -march flag, and run-time checks of the CPU that choose them.
#pragma once

#include <cstdlib>
#include <cstring>

// Also compiled in CUDA translation units (nvcc hands host code to the same g++), so every TU of a program has the
// same kernels. nvcc's own front end drops `#pragma GCC unroll`, so the kernels unroll their row and column loops
// as pack expansions instead.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(PREFIXTUNE_NO_X86_KERNELS)
#define PREFIXTUNE_X86_KERNELS 1
#include <immintrin.h>
#define PREFIXTUNE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define PREFIXTUNE_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma")))
#endif

namespace prefixtune::detail {

/// Whether this CPU runs the AVX2 + FMA kernels (checked once).
inline bool cpu_has_avx2_fma() {
#if defined(PREFIXTUNE_X86_KERNELS)
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

/// Whether the AVX-512F kernels run: the CPU has AVX-512F and the environment variable PREFIXTUNE_NO_AVX512 is
/// unset or "0" (for CPUs that lower their clock on 512-bit instructions). Checked once.
inline bool cpu_has_avx512f() {
#if defined(PREFIXTUNE_X86_KERNELS)
  static const bool has = [] {
    __builtin_cpu_init();
    const char* off = std::getenv("PREFIXTUNE_NO_AVX512");
    if (off != nullptr && off[0] != '\0' && std::strcmp(off, "0") != 0) return false;
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma") && cpu_has_avx2_fma();
  }();
  return has;
#else
  return false;
#endif
}

}  // namespace prefixtune::detail
