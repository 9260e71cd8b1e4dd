# SPDX-License-Identifier: MIT
# Time limits for every CTest test: a hung test fails at its own limit instead of eating CI's time.
#
#   prefixtune_test_timeout(<seconds> <test> ...)   TIMEOUT for the named tests of this directory: <seconds> is the
#                                                   limit of an optimized build (at least 60 s and about 20x the
#                                                   time measured on the quiet 2-core VM, see tests/CMakeLists.txt),
#                                                   multiplied by
#                                                   PREFIXTUNE_TEST_TIMEOUT_SCALE in sanitizer and unoptimized builds
#   prefixtune_require_timeouts()                   at the end of a CMakeLists.txt that adds tests: a test of that
#                                                   directory without a TIMEOUT stops the configuration
#
# scripts/run_tests.sh also passes `ctest --timeout`, the limit of any test that has none.
if(PREFIXTUNE_SANITIZE OR PREFIXTUNE_SANITIZE_THREAD)
  set(_prefixtune_timeout_scale 5)  # ASan + UBSan at -O0 (CI's sanitizer stage) runs the library tests 3-5x slower
elseif(CMAKE_BUILD_TYPE STREQUAL "Release" OR CMAKE_BUILD_TYPE STREQUAL "RelWithDebInfo")
  set(_prefixtune_timeout_scale 1)
else()
  set(_prefixtune_timeout_scale 4)  # Debug, CompileCheck (no optimization)
endif()
set(PREFIXTUNE_TEST_TIMEOUT_SCALE ${_prefixtune_timeout_scale} CACHE STRING
    "Factor on every test's time limit (default: 5 with sanitizers, 4 without optimization, else 1)")

function(prefixtune_test_timeout seconds)
  math(EXPR limit "${seconds} * ${PREFIXTUNE_TEST_TIMEOUT_SCALE}")
  set_tests_properties(${ARGN} PROPERTIES TIMEOUT ${limit})
endfunction()

function(prefixtune_require_timeouts)
  get_property(tests DIRECTORY PROPERTY TESTS)
  foreach(t IN LISTS tests)
    get_test_property(${t} TIMEOUT limit)
    if(NOT limit)
      message(FATAL_ERROR "test '${t}' (${CMAKE_CURRENT_SOURCE_DIR}) has no TIMEOUT: give it one with "
                          "prefixtune_test_timeout(<seconds> ${t}) (cmake/test_timeouts.cmake)")
    endif()
  endforeach()
endfunction()
