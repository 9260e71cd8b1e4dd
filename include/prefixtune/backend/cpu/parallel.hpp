// SPDX-License-Identifier: MIT
// When a CPU loop is worth an OpenMP parallel region: the one element-count threshold that every kernel's
// `#pragma omp parallel ... if (...)` compares with (a loop whose per-element work differs uses a multiple of it,
// named next to the loop, with the reason).
#pragma once

#include <cstdint>

namespace prefixtune::detail {

/// Below this many elements a loop of cheap per-element work (an add, a copy, a multiply-add, one AdamW update)
/// runs on one thread: forking the OpenMP team would cost more than it saves.
inline constexpr std::int64_t kParallelMinElements = std::int64_t{1} << 15;

}  // namespace prefixtune::detail
