// FA2 backward on tensor cores (fp16 / bf16), sm80 family: mma.sync m16n8k16, ldmatrix, cp.async.
// Follows Algorithm 2 of the FA2 paper (backward pass):
//
//   preprocess : D_i = rowsum(dO_i ∘ O_i)  (fp32, workspace); zero the fp32 dQ accumulator
//   main       : one CTA per (K_j, V_j) block of B_c keys and K/V head; dK_j, dV_j in registers;
//                for every query head of the GQA group, for every query block i:
//                  S_ij  = Q_i K_j^T                    P_ij = exp(S_ij * scale - lse_i)
//                  dV_j += P_ij^T dO_i                  dP_ij = dO_i V_j^T
//                  dS_ij = P_ij ∘ (dP_ij - D_i)         dK_j += scale * dS_ij^T Q_i
//                  dQ_i += scale * dS_ij K_j            (fp32 atomics into the workspace)
//   convert    : dq = dQ accumulator, in dq's dtype and strides
//
// Deterministic mode (p.deterministic): the main kernel skips dQ; a separate kernel, one CTA per
// query block, recomputes S_ij, P_ij, dS_ij and accumulates dQ_i in registers over the K/V blocks
// in a fixed order. No float atomics anywhere, so gradients are bitwise reproducible. Cost: 7
// matmuls per (i, j) tile instead of 5 (S and dP are recomputed), i.e. about 1.4x the MMA work.
//
// GQA: the CTA of K/V head h_k loops over the query heads of its group itself, so dK_j / dV_j
// are summed in registers without races (and in a fixed order).
//
// The kernels compute S^T = K_j Q_i^T (keys on the mma M axis) so that P^T and dS^T come out of
// the accumulators already in the A-operand layout of dV_j += P^T dO_i and dK_j += dS^T Q_i.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "cuda/cuda_api.h"
#include "cuda/device_query.h"
#include "cuda/fa2_bwd_common.cuh"
#include "cuda/fa2_bwd_sm90.h"
#include "cuda/fa2_bwd_traits.h"
#include "flashmin/cuda/copy.h"
#include "flashmin/cuda/mma.h"
#include "flashmin/dispatch.h"

namespace flashmin::cuda {
namespace {

using namespace bwd_detail;

__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// cp.async a (kRows x kD) tile, rows [row0, row0 + kRows) of a (n_rows x d) matrix, into smem
// with row pitch kD + 8. Rows >= n_rows and columns >= d are zero-filled.
template <int kRows, int kD, int kThreads, typename T>
__device__ __forceinline__ void load_tile(T* smem, const T* gmem, int64_t seq_stride, int row0,
                                          int n_rows, int d) {
  constexpr int kVecs = kD / 8;  // 16-byte vectors per row
  constexpr int kTotal = kRows * kVecs;
#pragma unroll
  for (int n = 0; n < (kTotal + kThreads - 1) / kThreads; ++n) {
    const int idx = n * kThreads + threadIdx.x;
    if (kTotal % kThreads != 0 && idx >= kTotal) break;  // small tiles (compact dQ kernel)
    const int r = idx / kVecs, c = (idx % kVecs) * 8;
    const bool valid = row0 + r < n_rows && c < d;
    const T* src = valid ? gmem + (row0 + r) * seq_stride + c : gmem;
    cp_async_16(smem + r * (kD + 8) + c, src, valid);
  }
}

// ldmatrix lane addressing (l = lane). "rowmajor": the 16x16 tile is stored [m][k] (A operand)
// or [k][n] with .trans (B operand); "colmajor": stored [n][k] (B operand) or [k][m] with .trans
// (A operand). Returns the (row, col) offset inside the 16x16 tile this lane points at.
__device__ __forceinline__ int lm_row_a(int l) { return l % 16; }
__device__ __forceinline__ int lm_col_a(int l) { return (l / 16) * 8; }
__device__ __forceinline__ int lm_row_b(int l) { return l % 8 + (l / 16) * 8; }
__device__ __forceinline__ int lm_col_b(int l) { return ((l / 8) % 2) * 8; }

template <typename T>
__device__ __forceinline__ void mma_pair(float (&c0)[4], float (&c1)[4], const uint32_t (&a)[4],
                                         const uint32_t (&b)[4]) {
  const uint32_t b0[2] = {b[0], b[1]};
  const uint32_t b1[2] = {b[2], b[3]};
  MmaType<T>::mma(c0, a, b0);
  MmaType<T>::mma(c1, a, b1);
}

// ------------------------------------------------------------------------------------------------
// Preprocess: D_i = rowsum(dO_i ∘ O_i) in fp32; zero the dQ accumulator rows (non-deterministic).
// 8 threads per row, 32 rows per 256-thread block.
template <typename T>
__global__ void __launch_bounds__(256)
    fa2_bwd_preprocess_kernel(const AttnBwdParams p, float* __restrict__ delta,
                              float* __restrict__ lse2, float* __restrict__ dq_accum,
                              int dq_pitch) {
  const int64_t rows = p.batch * p.heads_q * p.seqlen_q;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x / 8;
  const int sub = threadIdx.x % 8;
  const bool valid = row < rows;
  float acc = 0.f;
  if (valid) {
    const int64_t s = row % p.seqlen_q, bh = row / p.seqlen_q;
    const int64_t h = bh % p.heads_q, b = bh / p.heads_q;
    const T* O = static_cast<const T*>(p.o) + row_offset(p.o_strides, b, h, s);
    const T* dO = static_cast<const T*>(p.dout) + row_offset(p.dout_strides, b, h, s);
    for (int c = sub * 8; c < p.head_dim; c += 64) {
      const uint4 ov = *reinterpret_cast<const uint4*>(O + c);
      const uint4 gv = *reinterpret_cast<const uint4*>(dO + c);
      const T* o8 = reinterpret_cast<const T*>(&ov);
      const T* g8 = reinterpret_cast<const T*>(&gv);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc += to_float(o8[e]) * to_float(g8[e]);
    }
  }
  acc += __shfl_xor_sync(0xffffffffu, acc, 4);
  acc += __shfl_xor_sync(0xffffffffu, acc, 2);
  acc += __shfl_xor_sync(0xffffffffu, acc, 1);
  if (!valid) return;
  if (sub == 0) {
    delta[row] = acc;
    if (lse2 != nullptr) {
      // lse in log2 units for the main kernel; +inf for rows that saw no key (lse = -inf), so
      // that P = exp2(s - inf) = 0 there.
      const float x = p.lse[row];
      lse2[row] = x == -INFINITY ? INFINITY : x * kLog2e;
    }
  }
  if (dq_accum != nullptr) {
    float4* dst = reinterpret_cast<float4*>(dq_accum + row * dq_pitch);
    for (int c = sub; c < dq_pitch / 4; c += 8) dst[c] = make_float4(0.f, 0.f, 0.f, 0.f);
  }
}

// dq = scale * dQ accumulator (fp32, row pitch dq_pitch) in dq's dtype and strides.
template <typename T>
__global__ void __launch_bounds__(256)
    fa2_bwd_convert_dq_kernel(const AttnBwdParams p, const float* __restrict__ dq_accum,
                              int dq_pitch) {
  const int64_t rows = p.batch * p.heads_q * p.seqlen_q;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x / 8;
  if (row >= rows) return;
  const int sub = threadIdx.x % 8;
  const int64_t s = row % p.seqlen_q, bh = row / p.seqlen_q;
  const int64_t h = bh % p.heads_q, b = bh / p.heads_q;
  T* dQ = static_cast<T*>(p.dq) + row_offset(p.dq_strides, b, h, s);
  const float* src = dq_accum + row * dq_pitch;
  for (int c = sub * 8; c < p.head_dim; c += 64) {
    const float4 x = *reinterpret_cast<const float4*>(src + c);
    const float4 y = *reinterpret_cast<const float4*>(src + c + 4);
    uint4 out;
    out.x = MmaType<T>::pack(x.x * p.scale, x.y * p.scale);
    out.y = MmaType<T>::pack(x.z * p.scale, x.w * p.scale);
    out.z = MmaType<T>::pack(y.x * p.scale, y.y * p.scale);
    out.w = MmaType<T>::pack(y.z * p.scale, y.w * p.scale);
    *reinterpret_cast<uint4*>(dQ + c) = out;
  }
}

// ------------------------------------------------------------------------------------------------
// Main kernel: one CTA per (K_j, V_j) block. grid = (T_c, H_k, B).
template <typename T, int kD, bool kCompact>
__global__ void __launch_bounds__(Fa2BwdSm80Traits<kD, kCompact>::kWarps * 32, 1)
    fa2_bwd_dkdv_sm80_kernel(const AttnBwdParams p, const float* __restrict__ delta,
                             const float* __restrict__ lse2, float* __restrict__ dq_accum) {
  using Tr = Fa2BwdSm80Traits<kD, kCompact>;
  constexpr int B_r = Tr::kBlockM, B_c = Tr::kBlockN;
  constexpr int kWarps = Tr::kWarps, kThreads = kWarps * 32, kSplit = Tr::kSplit;
  constexpr int kStages = Tr::kStages;
  constexpr int kPitch = Tr::kPitch, kPitchS = Tr::kPitchS;
  constexpr int kGroups = kWarps / kSplit;  // 16-key slabs
  constexpr int kQCols = B_r / kSplit;      // queries of S^T / dP^T per warp
  constexpr int kDCols = kD / kSplit;       // dK / dV columns per warp
  static_assert(kGroups * 16 == B_c && kQCols % 16 == 0 && kDCols % 16 == 0, "warp layout");

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* K_s = reinterpret_cast<T*>(smem_raw);  // [B_c][kPitch]
  T* V_s = K_s + B_c * kPitch;              // [B_c][kPitch]
  T* Q_s = V_s + B_c * kPitch;              // [kStages][B_r][kPitch]
  T* dO_s = Q_s + kStages * B_r * kPitch;   // [kStages][B_r][kPitch]
  T* dS_s = dO_s + kStages * B_r * kPitch;  // dS^T [B_c][kPitchS] (key-major)
  T* P_s = dS_s + B_c * kPitchS;            // P^T  [B_c][kPitchS] (kSplit > 1 only)
  float* lse_s = reinterpret_cast<float*>(P_s + (kSplit > 1 ? B_c * kPitchS : 0));  // [2][B_r]
  float* D_s = lse_s + 2 * B_r;                                                     // [2][B_r]

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int j = blockIdx.x;  // heavy (causal) blocks first: K_0 sees every query block
  const int h_k = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int S_q = static_cast<int>(p.seqlen_q), S_k = static_cast<int>(p.seqlen_k);
  const int d = static_cast<int>(p.head_dim);
  const int G = static_cast<int>(p.heads_q / p.heads_kv);
  const int key0 = j * B_c;
  const float scale_log2 = p.scale * kLog2e;

  // This warp's slab of keys and its share of queries (S^T) and of head-dim columns (dK, dV).
  const int kr0 = (warp % kGroups) * 16;
  const int qc0 = (warp / kGroups) * kQCols;
  const int dc0 = (warp / kGroups) * kDCols;

  // Query blocks that see at least one key of this block: i >= (key0 - offset) / B_r.
  const int T_r = (S_q + B_r - 1) / B_r;
  int i_begin = 0;
  if (p.is_causal) {
    const int64_t first = key0 - p.causal_offset;
    i_begin = first <= 0 ? 0 : static_cast<int>(first / B_r < T_r ? first / B_r : T_r);
  }
  const int n_i = T_r - i_begin;
  const int n_iter = G * n_i;  // (query head of the group, query block) pairs

  // Issue the cp.async loads of Q_i, dO_i (and plain loads of lse_i, D_i) of iteration `it`.
  auto load_q_block = [&](int it, int stage) {
    const int h = h_k * G + it / n_i, i = i_begin + it % n_i;
    const T* Q = static_cast<const T*>(p.q) + row_offset(p.q_strides, b, h, 0);
    const T* dO = static_cast<const T*>(p.dout) + row_offset(p.dout_strides, b, h, 0);
    load_tile<B_r, kD, kThreads>(Q_s + stage * B_r * kPitch, Q, p.q_strides.seq, i * B_r, S_q, d);
    load_tile<B_r, kD, kThreads>(dO_s + stage * B_r * kPitch, dO, p.dout_strides.seq, i * B_r, S_q,
                                 d);
    if constexpr (Tr::kLseAsync) {
      // lse (log2 units, from the preprocess kernel) and D by cp.async: no stall on a global
      // load here. Padding rows get lse = 0, D = 0: their Q and dO rows are zero, so P = 1
      // there but dV, dP^T, dS^T and dK receive exactly zero from them.
      for (int r = tid; r < B_r; r += kThreads) {
        const int q = i * B_r + r;
        const int64_t row = (b * p.heads_q + h) * S_q + (q < S_q ? q : 0);
        cp_async_4(lse_s + (it % 2) * B_r + r, lse2 + row, q < S_q);
        cp_async_4(D_s + (it % 2) * B_r + r, delta + row, q < S_q);
      }
      return;
    }
    for (int r = tid; r < B_r; r += kThreads) {
      const int q = i * B_r + r;
      // lse in log2 units; +inf for rows that saw no key (lse = -inf) and for padding rows, so
      // that P = exp2(s - inf) = 0 there.
      float l = INFINITY, dd = 0.f;
      if (q < S_q) {
        const int64_t row = (b * p.heads_q + h) * S_q + q;
        const float x = p.lse[row];
        l = x == -INFINITY ? INFINITY : x * kLog2e;
        dd = delta[row];
      }
      lse_s[(it % 2) * B_r + r] = l;
      D_s[(it % 2) * B_r + r] = dd;
    }
  };

  // dK_j, dV_j : (16 keys x kDCols) per warp, fp32
  float dK_acc[kDCols / 8][4] = {};
  float dV_acc[kDCols / 8][4] = {};

  if (n_iter > 0) {
    const T* K = static_cast<const T*>(p.k) + row_offset(p.k_strides, b, h_k, 0);
    const T* V = static_cast<const T*>(p.v) + row_offset(p.v_strides, b, h_k, 0);
    load_tile<B_c, kD, kThreads>(K_s, K, p.k_strides.seq, key0, S_k, d);
    load_tile<B_c, kD, kThreads>(V_s, V, p.v_strides.seq, key0, S_k, d);
    load_q_block(0, 0);
  }
  cp_async_commit();

  for (int it = 0; it < n_iter; ++it) {
    const int h = h_k * G + it / n_i, i = i_begin + it % n_i;
    const int q0 = i * B_r;
    const int stage = kStages == 2 ? it % 2 : 0;
    cp_async_wait<0>();
    __syncthreads();  // Q_i, dO_i, lse_i, D_i visible; every warp is done with iteration it-1
    if (kStages == 2 && it + 1 < n_iter) load_q_block(it + 1, (it + 1) % 2);
    cp_async_commit();

    const T* Q_i = Q_s + stage * B_r * kPitch;    // (B_r x kD)
    const T* dO_i = dO_s + stage * B_r * kPitch;  // (B_r x kD)
    const float* lse_i = lse_s + (it % 2) * B_r;  // (B_r), log2 units
    const float* D_i = D_s + (it % 2) * B_r;      // (B_r)
    // Only diagonal blocks (causal) and the key tail need a mask.
    const bool need_mask =
        key0 + B_c > S_k || (p.is_causal && q0 + p.causal_offset < key0 + B_c - 1);
    // This thread's element (key kb + 8*(e/2), query qb + nt*8 + e%2) is visible iff
    // 8*(e/2) < key_room and 8*(e/2) - nt*8 - e%2 <= diag.
    const int kb = key0 + kr0 + lane / 4, qb = q0 + qc0 + 2 * (lane % 4);
    const int key_room = S_k - kb;
    const int diag = causal_diag(p, qb, kb);

    // S^T_ij = K_j Q_i^T : (16 keys x kQCols queries) per warp
    float S_acc[kQCols / 8][4] = {};
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      uint32_t a_k[4];
      ldmatrix_x4(a_k, K_s + (kr0 + lm_row_a(lane)) * kPitch + ks * 16 + lm_col_a(lane));
#pragma unroll
      for (int np = 0; np < kQCols / 16; ++np) {
        uint32_t b_q[4];
        ldmatrix_x4(b_q,
                    Q_i + (qc0 + np * 16 + lm_row_b(lane)) * kPitch + ks * 16 + lm_col_b(lane));
        mma_pair<T>(S_acc[2 * np], S_acc[2 * np + 1], a_k, b_q);
      }
    }

    // P^T_ij = exp2(S^T * scale * log2(e) - lse_i * log2(e)) : (16 keys x kQCols queries)
    // Accumulator element e of tile nt: key kr0 + lane/4 + 8*(e/2), query qc0 + nt*8 + 2*(lane%4) +
    // e%2.
#pragma unroll
    for (int nt = 0; nt < kQCols / 8; ++nt) {
      const int qc = qc0 + nt * 8 + 2 * (lane % 4);
      const float2 lse2 = *reinterpret_cast<const float2*>(lse_i + qc);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool visible =
            !need_mask || (8 * (e / 2) < key_room && 8 * (e / 2) - nt * 8 - e % 2 <= diag);
        S_acc[nt][e] =
            visible ? fast_exp2(fmaf(S_acc[nt][e], scale_log2, -(e % 2 ? lse2.y : lse2.x))) : 0.f;
      }
      if constexpr (kSplit > 1) {  // P^T to smem (key-major) for the warps of the other query half
        const int r = kr0 + lane / 4;
        *reinterpret_cast<uint32_t*>(P_s + r * kPitchS + qc) =
            MmaType<T>::pack(S_acc[nt][0], S_acc[nt][1]);
        *reinterpret_cast<uint32_t*>(P_s + (r + 8) * kPitchS + qc) =
            MmaType<T>::pack(S_acc[nt][2], S_acc[nt][3]);
      }
    }
    if constexpr (kSplit > 1) __syncthreads();

    // dV_j += P^T_ij dO_i : (16 keys x kDCols), contraction over the B_r queries
#pragma unroll
    for (int ks = 0; ks < B_r / 16; ++ks) {
      uint32_t a_p[4];
      if constexpr (kSplit == 1) {
        acc_to_a<T>(a_p, S_acc[2 * ks], S_acc[2 * ks + 1]);
      } else {
        ldmatrix_x4(a_p, P_s + (kr0 + lm_row_a(lane)) * kPitchS + ks * 16 + lm_col_a(lane));
      }
#pragma unroll
      for (int np = 0; np < kDCols / 16; ++np) {
        uint32_t b_o[4];
        ldmatrix_x4_trans(
            b_o, dO_i + (ks * 16 + lm_row_a(lane)) * kPitch + dc0 + np * 16 + lm_col_a(lane));
        mma_pair<T>(dV_acc[2 * np], dV_acc[2 * np + 1], a_p, b_o);
      }
    }

    // dP^T_ij = V_j dO_i^T : (16 keys x kQCols queries) per warp
    float dP_acc[kQCols / 8][4] = {};
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      uint32_t a_v[4];
      ldmatrix_x4(a_v, V_s + (kr0 + lm_row_a(lane)) * kPitch + ks * 16 + lm_col_a(lane));
#pragma unroll
      for (int np = 0; np < kQCols / 16; ++np) {
        uint32_t b_o[4];
        ldmatrix_x4(b_o,
                    dO_i + (qc0 + np * 16 + lm_row_b(lane)) * kPitch + ks * 16 + lm_col_b(lane));
        mma_pair<T>(dP_acc[2 * np], dP_acc[2 * np + 1], a_v, b_o);
      }
    }

    // dS^T_ij = P^T_ij ∘ (dP^T_ij - D_i) : (16 keys x kQCols queries), kept in dP_acc;
    // also to smem (key-major) for dQ_i and, when split, for the other query half.
#pragma unroll
    for (int nt = 0; nt < kQCols / 8; ++nt) {
      const int qc = qc0 + nt * 8 + 2 * (lane % 4);
      const float2 D2 = *reinterpret_cast<const float2*>(D_i + qc);
#pragma unroll
      for (int e = 0; e < 4; ++e)
        dP_acc[nt][e] = S_acc[nt][e] * (dP_acc[nt][e] - (e % 2 ? D2.y : D2.x));
      const int r = kr0 + lane / 4;
      *reinterpret_cast<uint32_t*>(dS_s + r * kPitchS + qc) =
          MmaType<T>::pack(dP_acc[nt][0], dP_acc[nt][1]);
      *reinterpret_cast<uint32_t*>(dS_s + (r + 8) * kPitchS + qc) =
          MmaType<T>::pack(dP_acc[nt][2], dP_acc[nt][3]);
    }
    if constexpr (kSplit > 1) __syncthreads();

    // dK_j += dS^T_ij Q_i : (16 keys x kDCols), contraction over the B_r queries
#pragma unroll
    for (int ks = 0; ks < B_r / 16; ++ks) {
      uint32_t a_ds[4];
      if constexpr (kSplit == 1) {
        acc_to_a<T>(a_ds, dP_acc[2 * ks], dP_acc[2 * ks + 1]);
      } else {
        ldmatrix_x4(a_ds, dS_s + (kr0 + lm_row_a(lane)) * kPitchS + ks * 16 + lm_col_a(lane));
      }
#pragma unroll
      for (int np = 0; np < kDCols / 16; ++np) {
        uint32_t b_q[4];
        ldmatrix_x4_trans(
            b_q, Q_i + (ks * 16 + lm_row_a(lane)) * kPitch + dc0 + np * 16 + lm_col_a(lane));
        mma_pair<T>(dK_acc[2 * np], dK_acc[2 * np + 1], a_ds, b_q);
      }
    }

    __syncthreads();  // dS^T complete; Q_i / dO_i no longer read
    if (kStages == 1 && it + 1 < n_iter) load_q_block(it + 1, 0);
    cp_async_commit();

    // dQ_i += dS_ij K_j : (B_r x kD), split in (16 x kDqCols) items over the warps;
    // accumulated in fp32 by atomics (scale applied by the convert kernel).
    if (dq_accum != nullptr) {
      constexpr int kDqCols = Tr::kDqCols, kChunks = kD / kDqCols;
      constexpr int kItems = (B_r / 16) * kChunks;
      float* dQ = dq_accum + (b * p.heads_q + h) * static_cast<int64_t>(S_q) * kD;
#pragma unroll
      for (int item = warp; item < kItems; item += kWarps) {
        const int m0 = (item / kChunks) * 16, n0 = (item % kChunks) * kDqCols;
        if (q0 + m0 >= S_q || n0 >= d) continue;  // warp-uniform
        float acc[kDqCols / 8][4] = {};
#pragma unroll
        for (int ks = 0; ks < B_c / 16; ++ks) {
          uint32_t a_ds[4];  // dS (queries x keys) from dS^T stored key-major
          ldmatrix_x4_trans(a_ds,
                            dS_s + (ks * 16 + lm_row_b(lane)) * kPitchS + m0 + lm_col_b(lane));
#pragma unroll
          for (int np = 0; np < kDqCols / 16; ++np) {
            uint32_t b_k[4];
            ldmatrix_x4_trans(
                b_k, K_s + (ks * 16 + lm_row_a(lane)) * kPitch + n0 + np * 16 + lm_col_a(lane));
            mma_pair<T>(acc[2 * np], acc[2 * np + 1], a_ds, b_k);
          }
        }
#pragma unroll
        for (int nt = 0; nt < kDqCols / 8; ++nt) {
          const int col = n0 + nt * 8 + 2 * (lane % 4);
          if (col >= d) continue;
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            const int q = q0 + m0 + lane / 4 + 8 * half;
            if (q >= S_q) continue;
            float* dst = dQ + static_cast<int64_t>(q) * kD + col;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
            atomicAdd(reinterpret_cast<float2*>(dst),
                      make_float2(acc[nt][2 * half], acc[nt][2 * half + 1]));
#else
            atomicAdd(dst, acc[nt][2 * half]);
            atomicAdd(dst + 1, acc[nt][2 * half + 1]);
#endif
          }
        }
      }
    }
  }
  cp_async_wait<0>();

  // Epilogue: dK_j = scale * acc, dV_j = acc, rows < S_k, columns < d.
  T* dK = static_cast<T*>(p.dk) + row_offset(p.dk_strides, b, h_k, 0);
  T* dV = static_cast<T*>(p.dv) + row_offset(p.dv_strides, b, h_k, 0);
#pragma unroll
  for (int nt = 0; nt < kDCols / 8; ++nt) {
    const int col = dc0 + nt * 8 + 2 * (lane % 4);
    if (col >= d) continue;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int key = key0 + kr0 + lane / 4 + 8 * half;
      if (key >= S_k) continue;
      *reinterpret_cast<uint32_t*>(dK + key * p.dk_strides.seq + col) =
          MmaType<T>::pack(p.scale * dK_acc[nt][2 * half], p.scale * dK_acc[nt][2 * half + 1]);
      *reinterpret_cast<uint32_t*>(dV + key * p.dv_strides.seq + col) =
          MmaType<T>::pack(dV_acc[nt][2 * half], dV_acc[nt][2 * half + 1]);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Deterministic dQ kernel: one CTA per query block Q_i (16 rows per warp). grid = (T_r, H_q, B).
template <typename T, int kD, bool kCompact>
__global__ void __launch_bounds__(Fa2BwdSm80Traits<kD, kCompact>::kDqWarps * 32)
    fa2_bwd_dq_sm80_kernel(const AttnBwdParams p, const float* __restrict__ delta) {
  using Tr = Fa2BwdSm80Traits<kD, kCompact>;
  constexpr int B_r = Tr::kDqBlockM, B_c = Tr::kDqBlockN;
  constexpr int kThreads = Tr::kDqWarps * 32, kPitch = Tr::kPitch;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Q_s = reinterpret_cast<T*>(smem_raw);  // [B_r][kPitch]
  T* dO_s = Q_s + B_r * kPitch;             // [B_r][kPitch]
  T* K_s = dO_s + B_r * kPitch;             // [2][B_c][kPitch]
  T* V_s = K_s + 2 * B_c * kPitch;          // [2][B_c][kPitch]

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int i = gridDim.x - 1 - blockIdx.x;  // heavy (causal) blocks first
  const int h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int S_q = static_cast<int>(p.seqlen_q), S_k = static_cast<int>(p.seqlen_k);
  const int d = static_cast<int>(p.head_dim);
  const int h_k = static_cast<int>(h / (p.heads_q / p.heads_kv));
  const int q0 = i * B_r;
  const float scale_log2 = p.scale * kLog2e;

  // Key blocks seen by some row of this block: j * B_c <= last_row + offset.
  const int T_c = (S_k + B_c - 1) / B_c;
  int j_end = T_c;
  if (p.is_causal) {
    const int64_t last = static_cast<int64_t>(min(q0 + B_r, S_q) - 1) + p.causal_offset;
    j_end = last < 0 ? 0 : static_cast<int>(last / B_c + 1 < T_c ? last / B_c + 1 : T_c);
  }

  const T* Q = static_cast<const T*>(p.q) + row_offset(p.q_strides, b, h, 0);
  const T* dO = static_cast<const T*>(p.dout) + row_offset(p.dout_strides, b, h, 0);
  const T* K = static_cast<const T*>(p.k) + row_offset(p.k_strides, b, h_k, 0);
  const T* V = static_cast<const T*>(p.v) + row_offset(p.v_strides, b, h_k, 0);
  load_tile<B_r, kD, kThreads>(Q_s, Q, p.q_strides.seq, q0, S_q, d);
  load_tile<B_r, kD, kThreads>(dO_s, dO, p.dout_strides.seq, q0, S_q, d);
  if (j_end > 0) {
    load_tile<B_c, kD, kThreads>(K_s, K, p.k_strides.seq, 0, S_k, d);
    load_tile<B_c, kD, kThreads>(V_s, V, p.v_strides.seq, 0, S_k, d);
  }
  cp_async_commit();

  // This thread's two rows (lane/4 and lane/4 + 8 of the warp's 16): lse (log2 units, +inf for
  // empty / padding rows) and D.
  const int r_lo = warp * 16 + lane / 4;
  float lse_r[2], D_r[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int q = q0 + r_lo + 8 * half;
    lse_r[half] = INFINITY;
    D_r[half] = 0.f;
    if (q < S_q) {
      const int64_t row = (b * p.heads_q + h) * S_q + q;
      const float x = p.lse[row];
      lse_r[half] = x == -INFINITY ? INFINITY : x * kLog2e;
      D_r[half] = delta[row];
    }
  }

  // dQ_i : (16 rows x kD) per warp, fp32
  float dQ_acc[kD / 8][4] = {};

  for (int j = 0; j < j_end; ++j) {
    const int key0 = j * B_c;
    cp_async_wait<0>();
    __syncthreads();  // K_j, V_j visible; every warp is done with block j-1
    if (j + 1 < j_end) {
      load_tile<B_c, kD, kThreads>(K_s + ((j + 1) % 2) * B_c * kPitch, K, p.k_strides.seq,
                                   key0 + B_c, S_k, d);
      load_tile<B_c, kD, kThreads>(V_s + ((j + 1) % 2) * B_c * kPitch, V, p.v_strides.seq,
                                   key0 + B_c, S_k, d);
    }
    cp_async_commit();
    const T* K_j = K_s + (j % 2) * B_c * kPitch;  // (B_c x kD)
    const T* V_j = V_s + (j % 2) * B_c * kPitch;  // (B_c x kD)
    const bool need_mask =
        key0 + B_c > S_k || (p.is_causal && q0 + p.causal_offset < key0 + B_c - 1);
    // This thread's element (query qb + 8*(e/2), key kb + nt*8 + e%2) is visible iff
    // nt*8 + e%2 < key_room and nt*8 + e%2 - 8*(e/2) <= diag.
    const int kb = key0 + 2 * (lane % 4), qb = q0 + r_lo;
    const int key_room = S_k - kb;
    const int diag = causal_diag(p, qb, kb);

    // S_ij = Q_i K_j^T, dP_ij = dO_i V_j^T : (16 rows x B_c) per warp
    float S_acc[B_c / 8][4] = {};
    float dP_acc[B_c / 8][4] = {};
#pragma unroll 2
    for (int ks = 0; ks < kD / 16; ++ks) {
      uint32_t a_q[4], a_o[4];
      const int off_a = (warp * 16 + lm_row_a(lane)) * kPitch + ks * 16 + lm_col_a(lane);
      ldmatrix_x4(a_q, Q_s + off_a);
      ldmatrix_x4(a_o, dO_s + off_a);
#pragma unroll
      for (int np = 0; np < B_c / 16; ++np) {
        const int off = (np * 16 + lm_row_b(lane)) * kPitch + ks * 16 + lm_col_b(lane);
        uint32_t b_k[4], b_v[4];
        ldmatrix_x4(b_k, K_j + off);
        ldmatrix_x4(b_v, V_j + off);
        mma_pair<T>(S_acc[2 * np], S_acc[2 * np + 1], a_q, b_k);
        mma_pair<T>(dP_acc[2 * np], dP_acc[2 * np + 1], a_o, b_v);
      }
    }

    // P_ij = exp2(S * scale * log2(e) - lse_i) ; dS_ij = P_ij ∘ (dP_ij - D_i)
#pragma unroll
    for (int nt = 0; nt < B_c / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool visible =
            !need_mask || (nt * 8 + e % 2 < key_room && nt * 8 + e % 2 - 8 * (e / 2) <= diag);
        const float P = visible ? fast_exp2(fmaf(S_acc[nt][e], scale_log2, -lse_r[e / 2])) : 0.f;
        dP_acc[nt][e] = P * (dP_acc[nt][e] - D_r[e / 2]);
      }
    }

    // dQ_i += dS_ij K_j : (16 rows x kD), contraction over B_c keys
#pragma unroll
    for (int ks = 0; ks < B_c / 16; ++ks) {
      uint32_t a_ds[4];
      acc_to_a<T>(a_ds, dP_acc[2 * ks], dP_acc[2 * ks + 1]);
#pragma unroll
      for (int np = 0; np < kD / 16; ++np) {
        uint32_t b_k[4];
        ldmatrix_x4_trans(b_k,
                          K_j + (ks * 16 + lm_row_a(lane)) * kPitch + np * 16 + lm_col_a(lane));
        mma_pair<T>(dQ_acc[2 * np], dQ_acc[2 * np + 1], a_ds, b_k);
      }
    }
  }
  cp_async_wait<0>();

  // dq = scale * dQ_i, rows < S_q, columns < d
  T* dQ = static_cast<T*>(p.dq) + row_offset(p.dq_strides, b, h, 0);
#pragma unroll
  for (int nt = 0; nt < kD / 8; ++nt) {
    const int col = nt * 8 + 2 * (lane % 4);
    if (col >= d) continue;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int q = q0 + r_lo + 8 * half;
      if (q >= S_q) continue;
      *reinterpret_cast<uint32_t*>(dQ + q * p.dq_strides.seq + col) =
          MmaType<T>::pack(p.scale * dQ_acc[nt][2 * half], p.scale * dQ_acc[nt][2 * half + 1]);
    }
  }
}

// ------------------------------------------------------------------------------------------------
int64_t align256(int64_t x) { return (x + 255) / 256 * 256; }

int64_t delta_bytes(const AttnBwdParams& p) {
  return align256(p.batch * p.heads_q * p.seqlen_q * static_cast<int64_t>(sizeof(float)));
}

template <typename Kernel>
void set_smem(Kernel kernel, int bytes) {
  if (bytes > 48 * 1024)
    FM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

// The main and dQ kernels of one tile configuration (regular or compact).
template <typename T, int kD, bool kCompact>
void launch_fa2_bwd_sm80_tiles(const AttnBwdParams& p, bool sm90, const float* delta,
                               const float* lse2, float* dq_accum, cudaStream_t stream) {
  using Tr = Fa2BwdSm80Traits<kD, kCompact>;
  if (p.seqlen_k > 0 && !(sm90 && fa2_bwd_dkdv_sm90(p, delta, lse2, dq_accum, stream))) {
    const dim3 grid(static_cast<unsigned>((p.seqlen_k + Tr::kBlockN - 1) / Tr::kBlockN),
                    static_cast<unsigned>(p.heads_kv), static_cast<unsigned>(p.batch));
    auto kernel = fa2_bwd_dkdv_sm80_kernel<T, kD, kCompact>;
    set_smem(kernel, Tr::kSmemBytes);
    kernel<<<grid, Tr::kWarps * 32, Tr::kSmemBytes, stream>>>(p, delta, lse2, dq_accum);
    FM_CUDA_CHECK(cudaGetLastError());
  }
  if (p.deterministic && p.batch * p.heads_q * p.seqlen_q > 0) {
    const dim3 grid(static_cast<unsigned>((p.seqlen_q + Tr::kDqBlockM - 1) / Tr::kDqBlockM),
                    static_cast<unsigned>(p.heads_q), static_cast<unsigned>(p.batch));
    auto kernel = fa2_bwd_dq_sm80_kernel<T, kD, kCompact>;
    set_smem(kernel, Tr::kDqSmemBytes);
    kernel<<<grid, Tr::kDqWarps * 32, Tr::kDqSmemBytes, stream>>>(p, delta);
    FM_CUDA_CHECK(cudaGetLastError());
  }
}

template <typename T, int kD>
void run_fa2_bwd_sm80(const AttnBwdParams& p, cudaStream_t stream) {
  using Tr = Fa2BwdSm80Traits<kD>;
  const int64_t rows = p.batch * p.heads_q * p.seqlen_q;
  // Workspace: D (fp32 per row) | lse in log2 units (fp32 per row) | dQ accumulator.
  float* delta = static_cast<float*>(p.workspace);
  // The sm90 (wgmma) family replaces the main kernel for the buckets it covers.
  const bool sm90 = fa2_bwd_sm90_usable(p);
  // (The compact tiles have the same kSplit, so kLseAsync and the workspace are the same.)
  float* lse2 = Tr::kLseAsync || sm90
                    ? reinterpret_cast<float*>(static_cast<char*>(p.workspace) + delta_bytes(p))
                    : nullptr;
  float* dq_accum =
      p.deterministic
          ? nullptr
          : reinterpret_cast<float*>(static_cast<char*>(p.workspace) + 2 * delta_bytes(p));
  if (p.heads_kv > 65535 || p.heads_q > 65535 || p.batch > 65535)
    throw std::invalid_argument("fa2_bwd_mma: batch and heads must be <= 65535");

  if (rows > 0) {
    const int64_t blocks = (rows + 31) / 32;
    fa2_bwd_preprocess_kernel<T>
        <<<static_cast<unsigned>(blocks), 256, 0, stream>>>(p, delta, lse2, dq_accum, kD);
    FM_CUDA_CHECK(cudaGetLastError());
  }
  // (lse2 is unused by the sm80 kernel of buckets without kLseAsync, so a refused sm90 launch
  // may fall back to it.) The regular tiles where they fit the device's shared memory per
  // block, else (sm_86 / sm_89, 99 KB) the compact ones.
  if constexpr (kBwdHasCompact<kD>) {
    if (take_compact_tiles(std::max(Tr::kSmemBytes, Tr::kDqSmemBytes)))
      launch_fa2_bwd_sm80_tiles<T, kD, true>(p, sm90, delta, lse2, dq_accum, stream);
    else
      launch_fa2_bwd_sm80_tiles<T, kD, false>(p, sm90, delta, lse2, dq_accum, stream);
  } else {
    launch_fa2_bwd_sm80_tiles<T, kD, false>(p, sm90, delta, lse2, dq_accum, stream);
  }
  if (rows > 0 && !p.deterministic) {
    const int64_t blocks = (rows + 31) / 32;
    fa2_bwd_convert_dq_kernel<T>
        <<<static_cast<unsigned>(blocks), 256, 0, stream>>>(p, dq_accum, kD);
    FM_CUDA_CHECK(cudaGetLastError());
  }
}

template <typename T>
void run_fa2_bwd(const AttnBwdParams& p, cudaStream_t stream) {
  const int major = compute_capability_major(current_device());
  if (major < 8)
    throw std::runtime_error("fa2_bwd_mma: needs compute capability >= 8.0, got " +
                             std::to_string(major) + ".x");
  // sm80 family (mma.sync); run_fa2_bwd_sm80 hands the main kernel to the sm90 family (wgmma)
  // on compute capability 9.0 for the head dims it covers.
  FM_DISPATCH_HEAD_DIM(p.head_dim, kD, [&] { run_fa2_bwd_sm80<T, kD>(p, stream); });
}

}  // namespace

int64_t fa2_bwd_mma_workspace_bytes(const AttnBwdParams& p) {
  const int64_t rows = p.batch * p.heads_q * p.seqlen_q;
  int64_t bytes = 2 * delta_bytes(p);                                     // D_i, lse_i (log2)
  if (!p.deterministic) bytes += rows * head_dim_bucket(p.head_dim) * 4;  // dQ accumulator
  return bytes;
}

void fa2_bwd_mma(const AttnBwdParams& p, cudaStream_t stream) {
  if (p.batch == 0 || p.heads_q == 0 || (p.seqlen_q == 0 && p.seqlen_k == 0)) return;
  switch (p.dtype) {
    case DType::kFloat16:
      return run_fa2_bwd<__half>(p, stream);
    case DType::kBFloat16:
      return run_fa2_bwd<__nv_bfloat16>(p, stream);
    default:
      throw std::invalid_argument(std::string("dtype: expected float16 or bfloat16 for the FA2 "
                                              "tensor-core backward, got ") +
                                  dtype_name(p.dtype));
  }
}

}  // namespace flashmin::cuda
