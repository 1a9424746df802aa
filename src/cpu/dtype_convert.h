// Scalar float <-> float16 / bfloat16 conversions (round to nearest even), written branch-free
// where it matters so that loops over a row vectorize. 16-bit types are stored as their bit
// patterns (uint16_t); the tag structs below only select the overload.
#pragma once

#include <cstdint>
#include <cstring>

#include "flashmin/params.h"

namespace flashmin::cpu {

struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};
static_assert(sizeof(Half) == 2 && sizeof(BFloat16) == 2, "16-bit storage types");

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// ---- bfloat16: the top 16 bits of a float32 -----------------------------------------------------
inline float bf16_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

inline uint16_t float_to_bf16(float f) {
  const uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // qNaN
  // Round to nearest even on the 16 dropped bits; carries into the exponent give inf correctly.
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// ---- float16 (IEEE binary16) --------------------------------------------------------------------
// Branch-free: shift exponent+mantissa into float32 position and re-bias. Subnormal halves go
// through a float subtraction of normal numbers (no denormal arithmetic, so DAZ/FTZ do not matter).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = static_cast<uint32_t>(h & 0x7fffu) << 13;  // exponent + mantissa
  const uint32_t exp = em & 0x0f800000u;
  const uint32_t normal = em + ((127u - 15u) << 23);
  const uint32_t infnan = em + ((255u - 31u) << 23);  // keep the NaN payload
  // Subnormal: 2^-14 * 0.mant = float(1.mant * 2^-14) - 2^-14.
  const float sub = bits_to_float(em + (113u << 23)) - bits_to_float(113u << 23);
  const uint32_t mag = exp == 0x0f800000u ? infnan : (exp == 0 ? float_to_bits(sub) : normal);
  return bits_to_float(sign | mag);
}

inline uint16_t float_to_half(float f) {
  uint32_t u = float_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u >= 0x7f800000u) return sign | (u > 0x7f800000u ? 0x7e00u : 0x7c00u);  // NaN / inf
  if (u >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to inf
  if (u < 0x38800000u) {
    // |f| < 2^-14: result is subnormal (or zero). Adding 0.5 aligns the half's subnormal grid
    // with float32's last mantissa bits, so the FPU performs the round-to-nearest-even.
    const float r = bits_to_float(u) + 0.5f;
    return sign | static_cast<uint16_t>(float_to_bits(r) - float_to_bits(0.5f));
  }
  const uint32_t odd = (u >> 13) & 1u;
  u += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + odd;  // re-bias + round half to even
  return sign | static_cast<uint16_t>(u >> 13);
}

// ---- typed element access ---------------------------------------------------------------------
inline float to_float(float x) { return x; }
inline float to_float(Half x) { return half_to_float(x.bits); }
inline float to_float(BFloat16 x) { return bf16_to_float(x.bits); }

template <typename T>
inline T from_float(float x);
template <>
inline float from_float<float>(float x) {
  return x;
}
template <>
inline Half from_float<Half>(float x) {
  return Half{float_to_half(x)};
}
template <>
inline BFloat16 from_float<BFloat16>(float x) {
  return BFloat16{float_to_bf16(x)};
}

template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kFloat32;
};
template <>
struct DTypeOf<Half> {
  static constexpr DType value = DType::kFloat16;
};
template <>
struct DTypeOf<BFloat16> {
  static constexpr DType value = DType::kBFloat16;
};

}  // namespace flashmin::cpu
