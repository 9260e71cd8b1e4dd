// SPDX-License-Identifier: MIT
// Umbrella header for the CUDA side (needs PREFIXTUNE_WITH_CUDA, i.e. the prefixtune::cuda target).
#pragma once

#include "prefixtune/backend/cuda/check.hpp"
#include "prefixtune/backend/cuda/context.hpp"
#include "prefixtune/backend/cuda/device.hpp"
#include "prefixtune/backend/cuda/gemm.hpp"
#include "prefixtune/prefixtune.hpp"
