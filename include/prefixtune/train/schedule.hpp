// SPDX-License-Identifier: MIT
// Learning-rate schedules: LinearSchedule, transformers' get_linear_schedule_with_warmup (linear warmup from 0,
// then linear decay to 0).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "prefixtune/core/error.hpp"

namespace prefixtune {

/// transformers' get_linear_schedule_with_warmup over a LambdaLR: the lr of update `step` (counted from 0, so the
/// first update uses lr_at(0), which is 0 when warmup_steps > 0) is
///   base_lr * step / max(1, warmup_steps)                                   for step < warmup_steps,
///   base_lr * max(0, (total_steps - step) / max(1, total_steps - warmup_steps))   otherwise,
/// rising linearly to base_lr at step == warmup_steps and reaching 0 at step == total_steps (and after).
/// Typical loop: `opt.set_lr(schedule.lr_at(opt.step_count())); opt.step();`.
struct LinearSchedule {
  double base_lr = 0.0;
  std::int64_t warmup_steps = 0, total_steps = 1;

  /// Throws Error unless base_lr >= 0 (finite), total_steps >= 1 and 0 <= warmup_steps <= total_steps.
  void validate() const {
    PREFIXTUNE_CHECK(std::isfinite(base_lr) && base_lr >= 0.0, "LinearSchedule: base_lr=", base_lr, " must be >= 0");
    PREFIXTUNE_CHECK(total_steps >= 1, "LinearSchedule: total_steps=", total_steps, " must be >= 1");
    PREFIXTUNE_CHECK(warmup_steps >= 0 && warmup_steps <= total_steps, "LinearSchedule: warmup_steps=", warmup_steps,
                     " must lie in [0, total_steps=", total_steps, "]");
  }

  /// The learning rate of update `step` (>= 0); validates the schedule first.
  double lr_at(std::int64_t step) const {
    validate();
    PREFIXTUNE_CHECK(step >= 0, "LinearSchedule: step ", step, " is negative");
    // The same double operations as the Python lambda and LambdaLR (base_lr * factor), so values match exactly.
    double factor;
    if (step < warmup_steps) {
      factor = static_cast<double>(step) / static_cast<double>(std::max<std::int64_t>(1, warmup_steps));
    } else {
      factor = std::max(0.0, static_cast<double>(total_steps - step) /
                                 static_cast<double>(std::max<std::int64_t>(1, total_steps - warmup_steps)));
    }
    return base_lr * factor;
  }
};

}  // namespace prefixtune
