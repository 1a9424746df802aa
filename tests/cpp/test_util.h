// Tiny test helpers for the C++ tests: an assertion macro that counts failures, host tensors in
// any dtype and (strided) layout, random fill, and error metrics against float64 references.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu/dtype_convert.h"
#include "flashmin/params.h"

namespace fmtest {

inline int& failures() {
  static int n = 0;
  return n;
}
inline int& checks() {
  static int n = 0;
  return n;
}

#define FM_EXPECT(cond, ...)                                        \
  do {                                                              \
    ++::fmtest::checks();                                           \
    if (!(cond)) {                                                  \
      ++::fmtest::failures();                                       \
      std::printf("  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::printf(__VA_ARGS__);                                     \
      std::printf("\n");                                            \
    }                                                               \
  } while (0)

inline int finish(const char* name) {
  std::printf("%s: %d checks, %d failures -> %s\n", name, checks(), failures(),
              failures() ? "FAIL" : "PASS");
  return failures() ? 1 : 0;
}

using flashmin::DType;
using flashmin::Strides;

inline int64_t elem_size(DType t) { return t == DType::kFloat32 ? 4 : 2; }
inline const char* dtype_str(DType t) {
  return t == DType::kFloat32 ? "f32" : t == DType::kFloat16 ? "f16" : "bf16";
}

// A (N0, N1, N2, D) tensor. Layouts: contiguous, or "strided": stored as (N0, N2, N1, D + 8),
// i.e. the (batch, seq, head, dim) memory order of many models plus a padded row.
struct Tensor {
  DType dt = DType::kFloat32;
  int64_t n0 = 0, n1 = 0, n2 = 0, D = 0;
  Strides st;
  std::vector<float> mem;  // raw storage (16-byte aligned), reinterpreted per dtype

  Tensor() = default;
  Tensor(DType t, int64_t a, int64_t b, int64_t c, int64_t d, bool strided = false)
      : dt(t), n0(a), n1(b), n2(c), D(d) {
    if (strided) {
      const int64_t row = d + 8;
      st = {c * b * row, row, b * row};
    } else {
      st = {b * c * d, c * d, d};
    }
    const int64_t elems = std::max<int64_t>(a * (strided ? c * b * (d + 8) : b * c * d), 1);
    mem.assign(static_cast<size_t>((elems * elem_size(t) + 3) / 4 + 4), 0.0f);
  }
  void* data() { return mem.data(); }
  int64_t off(int64_t a, int64_t b, int64_t c, int64_t d) const {
    return a * st.batch + b * st.head + c * st.seq + d;
  }
  float get(int64_t a, int64_t b, int64_t c, int64_t d) const {
    const int64_t o = off(a, b, c, d);
    if (dt == DType::kFloat32) return mem[o];
    uint16_t h;
    std::memcpy(&h, reinterpret_cast<const unsigned char*>(mem.data()) + 2 * o, 2);
    return dt == DType::kFloat16 ? flashmin::cpu::half_to_float(h)
                                 : flashmin::cpu::bf16_to_float(h);
  }
  void set(int64_t a, int64_t b, int64_t c, int64_t d, float x) {
    const int64_t o = off(a, b, c, d);
    if (dt == DType::kFloat32) {
      mem[o] = x;
      return;
    }
    const uint16_t h =
        dt == DType::kFloat16 ? flashmin::cpu::float_to_half(x) : flashmin::cpu::float_to_bf16(x);
    std::memcpy(reinterpret_cast<unsigned char*>(mem.data()) + 2 * o, &h, 2);
  }
  template <typename F>
  void for_each(F f) const {
    for (int64_t a = 0; a < n0; ++a)
      for (int64_t b = 0; b < n1; ++b)
        for (int64_t c = 0; c < n2; ++c)
          for (int64_t d = 0; d < D; ++d) f(a, b, c, d);
  }
  void fill_random(std::mt19937& rng, float sigma = 1.0f) {
    std::normal_distribution<float> nd(0.0f, sigma);
    for_each([&](int64_t a, int64_t b, int64_t c, int64_t d) { set(a, b, c, d, nd(rng)); });
  }
  void fill(float x) {
    for_each([&](int64_t a, int64_t b, int64_t c, int64_t d) { set(a, b, c, d, x); });
  }
};

// A float64 reference tensor, contiguous (n0, n1, n2, D).
struct Ref {
  int64_t n0, n1, n2, D;
  std::vector<double> v;
  Ref(int64_t a, int64_t b, int64_t c, int64_t d)
      : n0(a), n1(b), n2(c), D(d), v(static_cast<size_t>(std::max<int64_t>(a * b * c * d, 1))) {}
  double& operator()(int64_t a, int64_t b, int64_t c, int64_t d) {
    return v[((a * n1 + b) * n2 + c) * D + d];
  }
  double operator()(int64_t a, int64_t b, int64_t c, int64_t d) const {
    return v[((a * n1 + b) * n2 + c) * D + d];
  }
};

struct Err {
  double max_abs = 0.0, ref_max = 0.0;
  bool nan = false;
  double floor = 1e-3;  // denominator floor: errors of values that are ~0 in exact arithmetic
  double rel() const { return max_abs / std::max(ref_max, floor); }
};
inline Err compare(const Tensor& t, const Ref& r) {
  Err e;
  t.for_each([&](int64_t a, int64_t b, int64_t c, int64_t d) {
    const double x = t.get(a, b, c, d), y = r(a, b, c, d);
    if (std::isnan(x)) e.nan = true;
    e.max_abs = std::max(e.max_abs, std::fabs(x - y));
    e.ref_max = std::max(e.ref_max, std::fabs(y));
  });
  return e;
}

}  // namespace fmtest
