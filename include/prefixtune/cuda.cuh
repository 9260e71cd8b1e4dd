// SPDX-License-Identifier: MIT
// Umbrella header for the whole library on the GPU: everything of prefixtune.hpp plus the CUDA kernels of every
// op, so Tensor<T, Cuda>, Var<T, Cuda>, Gpt2<T, Cuda> and the trainer run on the GPU through the same templates.
// Include it from .cu files compiled by nvcc with --extended-lambda (link the prefixtune::cuda target, which adds
// that flag). Host-only translation units may include prefixtune/cuda.hpp instead (memory, copies, cuBLAS GEMMs).
#pragma once

#include "prefixtune/backend/cuda/attention.cuh"
#include "prefixtune/backend/cuda/cached_attention.cuh"
#include "prefixtune/backend/cuda/cross_attention.cuh"
#include "prefixtune/backend/cuda/cross_entropy.cuh"
#include "prefixtune/backend/cuda/elementwise.cuh"
#include "prefixtune/backend/cuda/gqa.cuh"
#include "prefixtune/backend/cuda/greedy.cuh"
#include "prefixtune/backend/cuda/launch.cuh"
#include "prefixtune/backend/cuda/rms_norm.cuh"
#include "prefixtune/backend/cuda/rotary.cuh"
#include "prefixtune/backend/cuda/rows.cuh"
#include "prefixtune/backend/cuda/swiglu.cuh"
#include "prefixtune/cuda.hpp"
