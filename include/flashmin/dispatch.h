// Compile-time dispatch over the small, explicit set of instantiations. Every switch ends in a
// clear error instead of a silent fallback.
#pragma once

#include <stdexcept>
#include <string>

#include "flashmin/params.h"

namespace flashmin {

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
  }
  return "unknown";
}

// Head dims are rounded up to a bucket; kernels zero-fill the padded columns.
inline int head_dim_bucket(int64_t d) {
  if (d <= 32) return 32;
  if (d <= 64) return 64;
  if (d <= 96) return 96;
  if (d <= 128) return 128;
  if (d <= 160) return 160;
  if (d <= 192) return 192;
  if (d <= 224) return 224;
  if (d <= 256) return 256;
  throw std::invalid_argument("head_dim: expected a multiple of 8 up to 256, got " +
                              std::to_string(d));
}

}  // namespace flashmin

// FM_DISPATCH_BOOL(flag, kName, ...) : body sees `constexpr bool kName`.
#define FM_DISPATCH_BOOL(flag, kName, ...) \
  [&] {                                    \
    if (flag) {                            \
      constexpr bool kName = true;         \
      return __VA_ARGS__();                \
    } else {                               \
      constexpr bool kName = false;        \
      return __VA_ARGS__();                \
    }                                      \
  }()

// FM_DISPATCH_HEAD_DIM(d, kD, ...) : body sees `constexpr int kD`, the bucket of d.
#define FM_DISPATCH_HEAD_DIM(d, kD, ...)      \
  [&] {                                       \
    switch (::flashmin::head_dim_bucket(d)) { \
      case 32: {                              \
        constexpr int kD = 32;                \
        return __VA_ARGS__();                 \
      }                                       \
      case 64: {                              \
        constexpr int kD = 64;                \
        return __VA_ARGS__();                 \
      }                                       \
      case 96: {                              \
        constexpr int kD = 96;                \
        return __VA_ARGS__();                 \
      }                                       \
      case 128: {                             \
        constexpr int kD = 128;               \
        return __VA_ARGS__();                 \
      }                                       \
      case 160: {                             \
        constexpr int kD = 160;               \
        return __VA_ARGS__();                 \
      }                                       \
      case 192: {                             \
        constexpr int kD = 192;               \
        return __VA_ARGS__();                 \
      }                                       \
      case 224: {                             \
        constexpr int kD = 224;               \
        return __VA_ARGS__();                 \
      }                                       \
      default: {                              \
        constexpr int kD = 256;               \
        return __VA_ARGS__();                 \
      }                                       \
    }                                         \
  }()
