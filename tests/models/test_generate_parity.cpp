// SPDX-License-Identifier: MIT
// Greedy generation against the PyTorch reference (placeholder, filled in by the generation parity work).
#include <doctest/doctest.h>
