// Argument validation that names the argument: every failure throws std::invalid_argument
// (pybind11 turns it into Python's ValueError) with "<arg>: expected <x>, got <y>".
//
// Messages are built with std::string and snprintf, not iostreams: a module loaded into a
// process whose libstdc++ differs from the one it was compiled against (seen with torch's
// Python on Ubuntu 24.04) crashed inside std::ostream's locale machinery.
#pragma once

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace flashmin {

inline std::string to_text(const char* s) { return s; }
inline std::string to_text(const std::string& s) { return s; }
inline std::string to_text(bool b) { return b ? "true" : "false"; }
inline std::string to_text(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%p", p);
  return buf;
}
template <typename T, typename = std::enable_if_t<std::is_arithmetic_v<T>>>
std::string to_text(T v) {
  if constexpr (std::is_floating_point_v<T>) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%g", static_cast<double>(v));
    return buf;
  } else {
    return std::to_string(v);
  }
}

template <typename Expected, typename Actual>
[[noreturn]] void fail_arg(const char* arg, const Expected& expected, const Actual& actual) {
  throw std::invalid_argument(std::string(arg) + ": expected " + to_text(expected) + ", got " +
                              to_text(actual));
}

// check_arg(ok, "k", "head_dim equal to q's (64)", 80)
template <typename Expected, typename Actual>
void check_arg(bool ok, const char* arg, const Expected& expected, const Actual& actual) {
  if (!ok) fail_arg(arg, expected, actual);
}

}  // namespace flashmin
