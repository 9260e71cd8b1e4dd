// SPDX-License-Identifier: MIT
// Compiles and runs the README's code example (readme_snippet.inc is the README's ```cpp block, verbatim; the
// readme_in_sync test keeps the two identical).
#define main readme_main
#include "readme_snippet.inc"
#undef main

#include <doctest/doctest.h>

TEST_CASE("the README example runs") { CHECK_NOTHROW(readme_main()); }
