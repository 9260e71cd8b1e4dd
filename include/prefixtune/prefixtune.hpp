// SPDX-License-Identifier: MIT
// Umbrella header for everything CPU-side. Never pulls in CUDA (see prefixtune/cuda.hpp for that).
#pragma once

#include "prefixtune/backend/cpu/gemm.hpp"
#include "prefixtune/backend/cpu/threads.hpp"
#include "prefixtune/backend/gemm.hpp"
#include "prefixtune/core/device.hpp"
#include "prefixtune/core/error.hpp"
#include "prefixtune/core/macros.hpp"
#include "prefixtune/core/rng.hpp"
#include "prefixtune/core/shape.hpp"
#include "prefixtune/core/storage.hpp"
#include "prefixtune/core/tensor.hpp"
