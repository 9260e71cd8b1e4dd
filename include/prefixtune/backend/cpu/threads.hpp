// SPDX-License-Identifier: MIT
// One thread pool for everything on the CPU: OpenMP drives our loops, Eigen's GEMM and (OpenMP-built)
// OpenBLAS, so no two pools busy-wait against each other.
#pragma once

#include <string>

#if defined(_OPENMP)
#include <omp.h>
#endif
#include <Eigen/Core>

#if defined(PREFIXTUNE_WITH_BLAS)
#include <cblas.h>
#endif

#include "prefixtune/core/error.hpp"

namespace prefixtune {

/// Threads used by CPU kernels and GEMMs (1 without OpenMP).
inline int num_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Sets the thread count of OpenMP loops, Eigen and OpenBLAS at once.
inline void set_num_threads(int n) {
  PREFIXTUNE_CHECK(n >= 1, "thread count must be >= 1, got ", n);
#if defined(_OPENMP)
  omp_set_num_threads(n);
#endif
  Eigen::setNbThreads(n);
#if defined(PREFIXTUNE_WITH_BLAS)
  openblas_set_num_threads(n);
#endif
}

/// "openblas" when GEMMs go to OpenBLAS, else "eigen".
inline std::string cpu_gemm_backend() {
#if defined(PREFIXTUNE_WITH_BLAS)
  return "openblas";
#else
  return "eigen";
#endif
}

}  // namespace prefixtune
