// SPDX-License-Identifier: MIT
// The GEMM front for the layers above ops/: the tensor-level gemm(a, ta, b, tb, c, alpha, beta) with its shape
// checks, and the pointer-level gemm / gemm_strided_batched(Device{}, ta, tb, m, n, k, ...) of each device with
// the Trans flag. The CPU kernels come with this header; the CUDA ones with prefixtune/cuda.hpp (the tensor-level
// gemm finds a device's kernels by argument-dependent lookup on the device tag, whatever the include order).
#pragma once

#include "prefixtune/backend/cpu/gemm.hpp"
#include "prefixtune/backend/gemm.hpp"
