// SPDX-License-Identifier: MIT
// (placeholder, filled by the autograd work)
#include <doctest/doctest.h>
