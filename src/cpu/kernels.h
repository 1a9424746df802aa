// The CPU backend's hot loops, compiled once per instruction set (AVX-512, AVX2+FMA, baseline)
// and picked at run time (the wheel cannot assume -march=native). Everything above this table
// (tiling, masking, loads/stores, threading) is plain portable C++.
//
// All tiles are row-major fp32 with a leading dimension (ld) in elements. Column counts passed
// as `N` must be multiples of kColumnPad (the widest vector, 16 floats); callers pad and zero-fill.
// Scores live in the log2 domain (scaled by scale * log2(e)) so that exp2 does the softmax.
#pragma once

#include <cstdint>

namespace flashmin::cpu {

constexpr int64_t kColumnPad = 16;
inline int64_t pad_columns(int64_t n) { return (n + kColumnPad - 1) / kColumnPad * kColumnPad; }

// C (M x N) (+)= A (M x K) * B (K x N). A is read one scalar at a time, A(r, k) =
// A[r * a_rs + k * a_ks], so a transposed A costs nothing; B and C are row-major.
struct GemmArgs {
  int64_t M, N, K;
  const float* A;
  int64_t a_rs, a_ks;
  const float* B;
  int64_t b_rs;
  float* C;
  int64_t c_rs;
  bool accumulate;
};

struct Kernels {
  const char* name;  // "avx512", "avx2", "default"

  void (*gemm)(const GemmArgs& g);

  // Forward online-softmax step on a transposed score tile S^T (nc keys x N queries, ld = N),
  // column r = query r:  m_new = max(m, colmax S^T);  alpha = exp2(m - m_new);
  // P^T = exp2(S^T - m_new) (in place);  l = alpha * l + colsum P^T;  m = m_new.
  // Masked scores are -inf; a column with no visible key keeps m = -inf, l = 0, alpha = 0.
  void (*softmax_step)(float* st, int64_t nc, int64_t N, float* m, float* l, float* alpha);

  // P = exp2(S * s - bias) in place (M x N, ld); bias per row (bias[r]) or per column (bias[c]).
  void (*exp_bias)(float* s, int64_t M, int64_t N, int64_t ld, float scale, const float* bias,
                   bool bias_per_column);

  // dS = P * (dP - delta) written over dP; delta per row or per column.
  void (*dsoftmax)(const float* p, float* dp, int64_t M, int64_t N, int64_t ld, const float* delta,
                   bool delta_per_column);

  void (*half_to_float_row)(const uint16_t* src, float* dst, int64_t n);
  void (*bf16_to_float_row)(const uint16_t* src, float* dst, int64_t n);
};

// The best table this CPU supports; FLASHMIN_CPU_ISA=default|avx2|avx512 caps it (tests use this
// to exercise every path).
const Kernels& kernels();

}  // namespace flashmin::cpu
