// SPDX-License-Identifier: MIT
// prefixtune::Error, the one exception type, and the PREFIXTUNE_CHECK macro that builds its message.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace prefixtune {

/// Every failure the library detects: the message says what was wrong and where (shapes, names, files).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

/// Streams every argument into one string; the building block of error messages.
template <class... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

[[noreturn]] inline void throw_error(const char* where, const std::string& what) {
  throw Error(std::string("prefixtune: ") + what + " [in " + where + "]");
}

}  // namespace detail
}  // namespace prefixtune

/// Throws prefixtune::Error with the streamed message when `cond` is false; the message names the function.
#define PREFIXTUNE_CHECK(cond, ...)                                                            \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      ::prefixtune::detail::throw_error(__func__, ::prefixtune::detail::str_cat(__VA_ARGS__)); \
    }                                                                                          \
  } while (0)

/// Throws prefixtune::Error unconditionally.
#define PREFIXTUNE_FAIL(...) ::prefixtune::detail::throw_error(__func__, ::prefixtune::detail::str_cat(__VA_ARGS__))
