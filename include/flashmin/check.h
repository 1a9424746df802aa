// Argument validation that names the argument: every failure throws std::invalid_argument
// (pybind11 turns it into Python's ValueError) with "<arg>: expected <x>, got <y>".
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace flashmin {

template <typename Expected, typename Actual>
[[noreturn]] inline void fail_arg(const char* arg, const Expected& expected, const Actual& actual) {
  std::ostringstream msg;
  msg << arg << ": expected " << expected << ", got " << actual;
  throw std::invalid_argument(msg.str());
}

// check_arg(ok, "k", "head_dim equal to q's (64)", 80)
template <typename Expected, typename Actual>
inline void check_arg(bool ok, const char* arg, const Expected& expected, const Actual& actual) {
  if (!ok) fail_arg(arg, expected, actual);
}

}  // namespace flashmin
