// float16 / bfloat16 conversions: exhaustive over all 65536 bit patterns (decode, and
// encode(decode(x)) == x for non-NaN), random float32 rounding against independent references,
// and the vectorized row converters of the selected ISA against the scalar ones.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cpu/dtype_convert.h"
#include "cpu/kernels.h"
#include "test_util.h"

using namespace flashmin::cpu;

namespace {

// Reference half -> float from the definition.
double half_value(uint16_t h) {
  const int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 0)
    v = std::ldexp(m, -24);
  else if (e == 31)
    v = m ? NAN : INFINITY;
  else
    v = std::ldexp(1024 + m, e - 25);
  return sign ? -v : v;
}

// Reference float -> bf16 round-to-nearest-even on the bit pattern.
uint16_t bf16_reference(float f) {
  const uint32_t u = float_to_bits(f);
  if (std::isnan(f)) return 0x7fc0;
  const uint32_t lower = u >> 16, rem = u & 0xffffu;
  const bool up = rem > 0x8000u || (rem == 0x8000u && (lower & 1u));
  return static_cast<uint16_t>(lower + (up ? 1 : 0));
}

// Reference float -> half: nearest of the two neighbouring halves by exact arithmetic.
uint16_t half_reference(float f) {
  if (std::isnan(f)) return 0x7e00;
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  const double a = std::fabs(double(f));
  if (a >= 65520.0) return sign | 0x7c00;
  uint16_t best = 0;  // magnitudes are monotonic in the bit pattern
  uint16_t lo = 0, hi = 0x7bff;
  while (lo < hi) {  // largest magnitude <= a
    const uint16_t mid = static_cast<uint16_t>((lo + hi + 1) / 2);
    if (half_value(mid) <= a)
      lo = mid;
    else
      hi = static_cast<uint16_t>(mid - 1);
  }
  best = lo;
  if (best < 0x7bff || a > 65504.0) {
    const double d0 = a - half_value(best), d1 = half_value(best + 1) - a;
    if (d1 < d0 || (d1 == d0 && (best & 1))) best = static_cast<uint16_t>(best + 1);
  }
  return sign | best;
}

}  // namespace

int main() {
  int bad_decode = 0, bad_roundtrip = 0, bad_bf16 = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = half_to_float(static_cast<uint16_t>(h));
    const double ref = half_value(static_cast<uint16_t>(h));
    if (std::isnan(ref) ? !std::isnan(f) : double(f) != ref) ++bad_decode;
    if (!std::isnan(ref) && float_to_half(f) != h) ++bad_roundtrip;
    const float g = bf16_to_float(static_cast<uint16_t>(h));
    if (!std::isnan(g) && float_to_bf16(g) != h) ++bad_bf16;
  }
  FM_EXPECT(bad_decode == 0, "half_to_float wrong for %d patterns", bad_decode);
  FM_EXPECT(bad_roundtrip == 0, "float_to_half(half_to_float(x)) != x for %d patterns",
            bad_roundtrip);
  FM_EXPECT(bad_bf16 == 0, "bf16 round trip wrong for %d patterns", bad_bf16);

  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  int bad_h = 0, bad_b = 0;
  for (int i = 0; i < 200000; ++i) {
    // Random bit patterns (all exponents) and values near the half range (subnormals, ties).
    uint32_t u = bits(rng);
    if (i % 2) u = (u & 0x807fffffu) | ((102u + bits(rng) % 40u) << 23);
    if (i % 7 == 0) u &= 0xffffe000u | 0x1000u;  // exact ties for half
    const float f = bits_to_float(u);
    const uint16_t h = float_to_half(f), hr = half_reference(f);
    if (h != hr && !(std::isnan(f) && (h & 0x7c00) == 0x7c00 && (h & 0x3ff))) ++bad_h;
    const uint16_t b = float_to_bf16(f), br = bf16_reference(f);
    if (b != br && !(std::isnan(f) && (b & 0x7f80) == 0x7f80 && (b & 0x7f))) ++bad_b;
  }
  FM_EXPECT(bad_h == 0, "float_to_half differs from the reference for %d values", bad_h);
  FM_EXPECT(bad_b == 0, "float_to_bf16 differs from the reference for %d values", bad_b);

  // Row converters of the active ISA (vectorized) against the scalar functions.
  std::vector<uint16_t> all(65536 + 13);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i * 40503u);
  std::vector<float> out(all.size());
  const Kernels& k = kernels();
  k.half_to_float_row(all.data(), out.data(), static_cast<int64_t>(all.size()));
  int bad_row = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    const float r = half_to_float(all[i]);
    if (std::isnan(r) ? !std::isnan(out[i]) : float_to_bits(r) != float_to_bits(out[i])) ++bad_row;
  }
  k.bf16_to_float_row(all.data(), out.data(), static_cast<int64_t>(all.size()));
  for (size_t i = 0; i < all.size(); ++i)
    if (float_to_bits(bf16_to_float(all[i])) != float_to_bits(out[i])) ++bad_row;
  FM_EXPECT(bad_row == 0, "%s row converters differ for %d elements", k.name, bad_row);
  return fmtest::finish("test_dtype_convert");
}
