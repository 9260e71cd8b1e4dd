// SPDX-License-Identifier: MIT
// Placeholder: generation benchmarks (being written).
#include <benchmark/benchmark.h>
