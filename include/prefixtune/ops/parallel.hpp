// SPDX-License-Identifier: MIT
// detail::kParallelMinElements for the layers above ops/ that run their own OpenMP loops (e.g. the dtype
// conversion of io/safetensors.hpp): the element count below which a CPU loop stays on one thread. Light: no
// thread-pool or BLAS headers (prefixtune/ops/threads.hpp has those).
#pragma once

#include "prefixtune/backend/cpu/parallel.hpp"
