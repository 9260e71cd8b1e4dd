// SPDX-License-Identifier: MIT
// Autograd-lite in one include: Var, Tape, NoGradGuard, the differentiable ops, gradcheck.
#pragma once

#include "prefixtune/autograd/functions.hpp"
#include "prefixtune/autograd/gradcheck.hpp"
#include "prefixtune/autograd/tape.hpp"
#include "prefixtune/autograd/var.hpp"
