// One source, three instruction sets: the templates below are force-inlined into thin wrappers
// carrying __attribute__((target(...))), so each wrapper is compiled for its ISA while the rest of
// the library stays baseline x86-64. GCC vector extensions give the register tiles.
#include "cpu/kernels.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cpu/dtype_convert.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"  // vectors wider than the baseline ABI stay inside
#endif

#define FM_INLINE inline __attribute__((always_inline))

#if defined(__x86_64__) || defined(__i386__)
#define FM_X86 1
#define FM_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,avx,fma,f16c,bmi,bmi2")))
#define FM_TARGET_AVX2 __attribute__((target("avx2,avx,fma,f16c,bmi,bmi2")))
#endif

namespace flashmin::cpu {
namespace {

template <int W>
struct Vec {
  typedef float f __attribute__((vector_size(4 * W)));
  typedef int32_t i __attribute__((vector_size(4 * W)));
};

template <int W>
FM_INLINE typename Vec<W>::f load(const float* p) {
  typename Vec<W>::f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <int W>
FM_INLINE void store(float* p, const typename Vec<W>::f& v) {
  std::memcpy(p, &v, sizeof(v));
}
template <int W>
FM_INLINE typename Vec<W>::f splat(float x) {
  return typename Vec<W>::f{} + x;
}

// 2^x for x <= 0 (softmax arguments), vectorized: x = n + f with n = round(x), f in [-1/2, 1/2];
// 2^f by its degree-6 Taylor polynomial (relative error ~1e-7), 2^n through the exponent bits.
// x = -inf (a masked score) clamps to -127, whose exponent field is 0: the result is exactly 0.
template <int W>
FM_INLINE typename Vec<W>::f exp2v(const typename Vec<W>::f& arg) {
  using V = typename Vec<W>::f;
  using I = typename Vec<W>::i;
  V x = arg;
  const V lo = splat<W>(-127.0f), hi = splat<W>(127.0f);
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const V round = splat<W>(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const V n = (x + round) - round;
  const V f = x - n;
  V p = splat<W>(1.5403530393381606e-4f);
  p = p * f + 1.3333558146428443e-3f;
  p = p * f + 9.6181291076284772e-3f;
  p = p * f + 5.5504108664821580e-2f;
  p = p * f + 2.4022650695910071e-1f;
  p = p * f + 6.9314718055994531e-1f;
  p = p * f + 1.0f;
  const I e = (__builtin_convertvector(n, I) + 127) << 23;
  V two_n;
  std::memcpy(&two_n, &e, sizeof(two_n));
  return p * two_n;
}

// ---- GEMM: register tile of MR rows x NV vectors, A broadcast one scalar at a time ------------
template <int W, int MR, int NV>
FM_INLINE void gemm_tile(const GemmArgs& g, int64_t r0, int64_t n0) {
  using V = typename Vec<W>::f;
  V acc[MR][NV];
  float* C = g.C + r0 * g.c_rs + n0;
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = g.accumulate ? load<W>(C + r * g.c_rs + v * W) : V{};
  const float* A = g.A + r0 * g.a_rs;
  const float* B = g.B + n0;
  for (int64_t k = 0; k < g.K; ++k) {
    V b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = load<W>(B + k * g.b_rs + v * W);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const float a = A[r * g.a_rs + k * g.a_ks];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) store<W>(C + r * g.c_rs + v * W, acc[r][v]);
}

// Leftover vectors of a row panel: NV - 1, NV - 2, ... 1.
template <int W, int MR, int NV>
FM_INLINE void gemm_tile_cols(const GemmArgs& g, int64_t r0, int64_t n0, int64_t nv) {
  if constexpr (NV >= 1) {
    if (nv == NV) return gemm_tile<W, MR, NV>(g, r0, n0);
    gemm_tile_cols<W, MR, NV - 1>(g, r0, n0, nv);
  }
}

template <int W, int MR, int NV>
FM_INLINE void gemm_panel(const GemmArgs& g, int64_t r0) {
  int64_t n = 0;
  for (; n + NV * W <= g.N; n += NV * W) gemm_tile<W, MR, NV>(g, r0, n);
  if (n < g.N) gemm_tile_cols<W, MR, NV - 1>(g, r0, n, (g.N - n) / W);
}

template <int W, int MR, int NV>
FM_INLINE void gemm_rows_left(const GemmArgs& g, int64_t r0, int64_t mr) {
  if constexpr (MR >= 1) {
    if (mr == MR) return gemm_panel<W, MR, NV>(g, r0);
    gemm_rows_left<W, MR - 1, NV>(g, r0, mr);
  }
}

template <int W, int MR, int NV>
FM_INLINE void gemm_impl(const GemmArgs& g) {
  int64_t r = 0;
  for (; r + MR <= g.M; r += MR) gemm_panel<W, MR, NV>(g, r);
  if (r < g.M) gemm_rows_left<W, MR - 1, NV>(g, r, g.M - r);
}

// ---- softmax pieces ----------------------------------------------------------------------------
template <int W>
FM_INLINE void softmax_step_impl(float* st, int64_t nc, int64_t N, float* m, float* l,
                                 float* alpha) {
  using V = typename Vec<W>::f;
  const V neg_inf = splat<W>(-INFINITY), zero = V{};
  for (int64_t r = 0; r < N; r += W) {
    const V m_old = load<W>(m + r);
    V m_new = m_old;
    for (int64_t c = 0; c < nc; ++c) {
      const V s = load<W>(st + c * N + r);
      m_new = s > m_new ? s : m_new;
    }
    // A column that has seen no key keeps m = -inf; subtract 0 there instead (no inf - inf).
    const V m_use = m_new == neg_inf ? zero : m_new;
    const V a = exp2v<W>(m_old - m_use);
    V sum = zero;
    for (int64_t c = 0; c < nc; ++c) {
      const V p = exp2v<W>(load<W>(st + c * N + r) - m_use);
      store<W>(st + c * N + r, p);
      sum += p;
    }
    store<W>(l + r, a * load<W>(l + r) + sum);
    store<W>(m + r, m_new);
    store<W>(alpha + r, a);
  }
}

template <int W>
FM_INLINE void exp_bias_impl(float* s, int64_t M, int64_t N, int64_t ld, float scale,
                             const float* bias, bool per_column) {
  using V = typename Vec<W>::f;
  for (int64_t r = 0; r < M; ++r) {
    float* row = s + r * ld;
    if (per_column) {
      for (int64_t c = 0; c < N; c += W)
        store<W>(row + c, exp2v<W>(load<W>(row + c) * scale - load<W>(bias + c)));
    } else {
      const V b = splat<W>(bias[r]);
      for (int64_t c = 0; c < N; c += W) store<W>(row + c, exp2v<W>(load<W>(row + c) * scale - b));
    }
  }
}

template <int W>
FM_INLINE void dsoftmax_impl(const float* p, float* dp, int64_t M, int64_t N, int64_t ld,
                             const float* delta, bool per_column) {
  using V = typename Vec<W>::f;
  for (int64_t r = 0; r < M; ++r) {
    const float* pr = p + r * ld;
    float* dr = dp + r * ld;
    if (per_column) {
      for (int64_t c = 0; c < N; c += W)
        store<W>(dr + c, load<W>(pr + c) * (load<W>(dr + c) - load<W>(delta + c)));
    } else {
      const V d = splat<W>(delta[r]);
      for (int64_t c = 0; c < N; c += W) store<W>(dr + c, load<W>(pr + c) * (load<W>(dr + c) - d));
    }
  }
}

FM_INLINE void half_row_impl(const uint16_t* __restrict src, float* __restrict dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(src[i]);
}
FM_INLINE void bf16_row_impl(const uint16_t* __restrict src, float* __restrict dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(src[i]);
}

// ---- one table per ISA -----------------------------------------------------------------------
// MR x NV register tiles: AVX-512 has 32 vector registers (6 x 4 accumulators + 4 + 1),
// AVX2 16 (4 x 3 + 3 + 1), baseline SSE2 16 (4 x 2 + 2 + 1).
#define FM_DEFINE_KERNELS(NAME, TARGET, W, MR, NV)                                                \
  TARGET void NAME##_gemm(const GemmArgs& g) { gemm_impl<W, MR, NV>(g); }                         \
  TARGET void NAME##_softmax_step(float* st, int64_t nc, int64_t N, float* m, float* l,           \
                                  float* alpha) {                                                 \
    softmax_step_impl<W>(st, nc, N, m, l, alpha);                                                 \
  }                                                                                               \
  TARGET void NAME##_exp_bias(float* s, int64_t M, int64_t N, int64_t ld, float scale,            \
                              const float* bias, bool per_column) {                               \
    exp_bias_impl<W>(s, M, N, ld, scale, bias, per_column);                                       \
  }                                                                                               \
  TARGET void NAME##_dsoftmax(const float* p, float* dp, int64_t M, int64_t N, int64_t ld,        \
                              const float* delta, bool per_column) {                              \
    dsoftmax_impl<W>(p, dp, M, N, ld, delta, per_column);                                         \
  }                                                                                               \
  TARGET void NAME##_half_row(const uint16_t* s, float* d, int64_t n) { half_row_impl(s, d, n); } \
  TARGET void NAME##_bf16_row(const uint16_t* s, float* d, int64_t n) { bf16_row_impl(s, d, n); } \
  const Kernels NAME##_kernels = {#NAME,           NAME##_gemm,     NAME##_softmax_step,          \
                                  NAME##_exp_bias, NAME##_dsoftmax, NAME##_half_row,              \
                                  NAME##_bf16_row};

#define FM_NO_TARGET
FM_DEFINE_KERNELS(baseline, FM_NO_TARGET, 4, 4, 2)
#ifdef FM_X86
FM_DEFINE_KERNELS(avx2, FM_TARGET_AVX2, 8, 4, 3)
FM_DEFINE_KERNELS(avx512, FM_TARGET_AVX512, 16, 6, 4)
#endif

const Kernels& select_kernels() {
  int cap = 2;  // 0 baseline, 1 avx2, 2 avx512
  if (const char* env = std::getenv("FLASHMIN_CPU_ISA")) {
    const std::string s(env);
    if (s == "default" || s == "baseline") cap = 0;
    if (s == "avx2") cap = 1;
  }
#ifdef FM_X86
  __builtin_cpu_init();
  if (cap >= 2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("fma"))
    return avx512_kernels;
  if (cap >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2"))
    return avx2_kernels;
#endif
  (void)cap;
  return baseline_kernels;
}

}  // namespace

const Kernels& kernels() {
  static const Kernels& k = select_kernels();
  return k;
}

}  // namespace flashmin::cpu
