// SPDX-License-Identifier: MIT
// The CPU thread pool for the layers above ops/: num_threads(), set_num_threads(n) (OpenMP loops, Eigen and
// OpenBLAS at once) and cpu_gemm_backend() ("openblas" or "eigen"), and detail::kParallelMinElements, the element
// count below which a CPU loop stays on one thread.
#pragma once

#include "prefixtune/backend/cpu/threads.hpp"
#include "prefixtune/ops/parallel.hpp"
