// Shared pieces of the CUDA-core (SIMT) attention kernels: the tile sizes (one place), the
// global <-> shared copies with dtype conversion, and the two fp32 register-tiled products that
// every kernel is built from. FA2 (simt_fa2.cu) and FA1 (simt_fa1.cu) call the same helpers, so
// the two files differ only in loop order and in what goes through global memory.
//
// Thread layout (every kernel: 256 threads = a 16 x 16 grid).
//   thread t -> (mg, ng) = (t / 16, t % 16); the 16 threads of one row group are one half-warp,
//   so a row reduction over a score tile is 4 shuffles (xor 1, 2, 4, 8).
// Score tiles   S (rows x cols) : thread owns rows mg*TM + i (i < TM), cols ng + 16*j (j < TN).
// Output tiles  O (rows x kD)   : thread owns rows mg*TM + i, cols 4*ng + 64*t + e (t < kD/64).
// Shared-memory tiles hold fp32 (converted once on load), row length kD + 4 floats: the pad
// makes the 16 rows read by a half-warp in tile_mma_nt fall in distinct 16-byte bank groups.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda/cuda_api.h"
#include "cuda/device_query.h"
#include "flashmin/online_softmax.h"
#include "flashmin/params.h"

namespace flashmin::cuda::simt {

constexpr int kThreads = 256;  // 16 x 16 thread grid

// ---- tile sizes per head-dim bucket (the only place they are chosen) ------------------------
// kD is the head dim rounded up to a multiple of 64 (registers and smem are sized for it; loops
// run over the real head dim, so padded columns are neither read nor computed).
template <int kD>
struct SimtTile {
  static_assert(kD % 64 == 0 && kD <= 256, "kD: multiple of 64 up to 256");
  static constexpr int kLd = kD + 4;  // padded smem row (floats)
  // Forward (FA2 fwd, FA1 fwd): query block rows / key block rows.
  static constexpr int kFwdBr = 64;
  static constexpr int kFwdBc = kD <= 64 ? 64 : 32;
  // Backward (FA2 dK/dV + dQ, FA1 bwd).
  static constexpr int kBwdBr = kD <= 64 ? 64 : 32;
  static constexpr int kBwdBc = kD <= 128 ? 64 : 32;
  // 2 CTAs/SM where the forward's smem allows it on an H100 (caps registers at 128/thread).
  static constexpr int fwd_min_blocks() { return 2 * fwd_smem() <= 220 * 1024 ? 2 : 1; }

  // Shared memory of each kernel family (bytes).
  static constexpr int fwd_smem() {  // Q_i, K_j, V_j, P_ij^T
    return 4 * (kFwdBr * kLd + 2 * kFwdBc * kLd + kFwdBc * (kFwdBr + 4));
  }
  // K_j, V_j, Q_i, dO_i, P_ij, dS_ij, lse_i, D_i (+ dS_ij^T for FA1, which also updates dQ_i).
  static constexpr int bwd_kv_smem(bool with_dSt) {
    return 4 * (2 * kBwdBc * kLd + 2 * kBwdBr * kLd + 2 * kBwdBr * (kBwdBc + 4) +
                (with_dSt ? kBwdBc * (kBwdBr + 4) : 0) + 2 * kBwdBr);
  }
  static constexpr int dq_smem() {  // Q_i, dO_i, K_j, V_j, dS_ij^T, lse_i, D_i
    return 4 * (2 * kBwdBr * kLd + 2 * kBwdBc * kLd + kBwdBc * (kBwdBr + 4) + 2 * kBwdBr);
  }
};

inline int simt_head_dim_bucket(int64_t d) {
  if (d <= 64) return 64;
  if (d <= 128) return 128;
  if (d <= 192) return 192;
  if (d <= 256) return 256;
  throw std::invalid_argument("head_dim: expected a multiple of 8 up to 256, got " +
                              std::to_string(d));
}

// f(std::integral_constant<int, kD>{}) for the bucket of d.
template <typename F>
void dispatch_head_dim(int64_t d, F&& f) {
  switch (simt_head_dim_bucket(d)) {
    case 64:
      return f(std::integral_constant<int, 64>{});
    case 128:
      return f(std::integral_constant<int, 128>{});
    case 192:
      return f(std::integral_constant<int, 192>{});
    default:
      return f(std::integral_constant<int, 256>{});
  }
}

template <typename T>
struct TypeTag {
  using type = T;
};

// f(TypeTag<T>{}) for the element type of `t`.
template <typename F>
void dispatch_dtype(DType t, F&& f) {
  switch (t) {
    case DType::kFloat32:
      return f(TypeTag<float>{});
    case DType::kFloat16:
      return f(TypeTag<__half>{});
    case DType::kBFloat16:
      return f(TypeTag<__nv_bfloat16>{});
  }
  throw std::invalid_argument("dtype: expected float32, float16 or bfloat16, got code " +
                              std::to_string(static_cast<int>(t)));
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t align256(int64_t bytes) { return (bytes + 255) / 256 * 256; }

// Launch `kernel` with `smem` dynamic shared bytes (opting in above 48 KB) on `stream`.
template <typename Kernel, typename Arg>
void launch(Kernel kernel, int64_t blocks, int smem, cudaStream_t stream, const Arg& arg) {
  if (blocks <= 0) return;
  if (smem > 48 * 1024) {
    // 99 KB parts (sm_86 / sm_89) have less than some fp32 tiles need: say so plainly.
    require_smem_per_block(smem, "this CUDA-core (fp32 / FA1) attention tile",
                           " (use fp16 / bf16, or a smaller head dim)");
    FM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  }
  kernel<<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(arg);
  FM_CUDA_CHECK(cudaGetLastError());
}

// ---- element access: 4 consecutive elements <-> float4 --------------------------------------
template <typename T>
__device__ __forceinline__ float4 load4(const T* p);

template <>
__device__ __forceinline__ float4 load4<float>(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}
template <>
__device__ __forceinline__ float4 load4<__half>(const __half* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
  const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
  return make_float4(a.x, a.y, b.x, b.y);
}
template <>
__device__ __forceinline__ float4 load4<__nv_bfloat16>(const __nv_bfloat16* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  return make_float4(a.x, a.y, b.x, b.y);
}

template <typename T>
__device__ __forceinline__ void store4(T* p, float4 v);

template <>
__device__ __forceinline__ void store4<float>(float* p, float4 v) {
  *reinterpret_cast<float4*>(p) = v;
}
template <>
__device__ __forceinline__ void store4<__half>(__half* p, float4 v) {
  __half2 a = __floats2half2_rn(v.x, v.y), b = __floats2half2_rn(v.z, v.w);
  uint2 raw;
  raw.x = *reinterpret_cast<uint32_t*>(&a);
  raw.y = *reinterpret_cast<uint32_t*>(&b);
  *reinterpret_cast<uint2*>(p) = raw;
}
template <>
__device__ __forceinline__ void store4<__nv_bfloat16>(__nv_bfloat16* p, float4 v) {
  __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
  uint2 raw;
  raw.x = *reinterpret_cast<uint32_t*>(&a);
  raw.y = *reinterpret_cast<uint32_t*>(&b);
  *reinterpret_cast<uint2*>(p) = raw;
}

// Pointer to row `row` of head (b, h) of a (B, H, S, D) tensor: 64-bit offsets throughout.
template <typename T>
__device__ __forceinline__ T* head_ptr(T* base, const Strides& s, int64_t b, int64_t h) {
  return base + b * s.batch + h * s.head;
}

// ---- global -> shared: a (rows x d) tile, fp32, row length ld --------------------------------
// Rows at or past rows_valid are zero-filled (their scores are masked, and zero V rows keep
// 0 * garbage out of P V). Columns >= d are never read by the products, so they are left alone.
template <typename T>
__device__ __forceinline__ void load_tile(float* dst, int ld, const T* src, int64_t row_stride,
                                          int rows, int rows_valid, int d) {
  const int chunks = d / 4;  // 4 elements per thread-step
  for (int idx = threadIdx.x; idx < rows * chunks; idx += kThreads) {
    const int r = idx / chunks, c = 4 * (idx % chunks);
    const float4 v =
        r < rows_valid ? load4(src + static_cast<int64_t>(r) * row_stride + c) : float4{0, 0, 0, 0};
    *reinterpret_cast<float4*>(dst + r * ld + c) = v;
  }
}

// ---- the two register-tiled products -------------------------------------------------------
// "NT" (both operands row-major over the reduction dim, as Q K^T and dO V^T):
//   acc[i][j] += sum_{k < d} A[(mg*TM + i) * ld + k] * B[(ng + 16 j) * ld + k]
template <int TM, int TN>
__device__ __forceinline__ void tile_mma_nt(float (&acc)[TM][TN], const float* A, const float* B,
                                            int ld, int d) {
  const int mg = threadIdx.x / 16, ng = threadIdx.x % 16;
  const float* a_row = A + mg * TM * ld;
  const float* b_row = B + ng * ld;
#pragma unroll 2
  for (int k = 0; k < d; k += 4) {
    float4 a[TM], b[TN];
#pragma unroll
    for (int i = 0; i < TM; ++i) a[i] = *reinterpret_cast<const float4*>(a_row + i * ld + k);
#pragma unroll
    for (int j = 0; j < TN; ++j) b[j] = *reinterpret_cast<const float4*>(b_row + 16 * j * ld + k);
#pragma unroll
    for (int i = 0; i < TM; ++i) {
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        acc[i][j] = fmaf(a[i].x, b[j].x, acc[i][j]);
        acc[i][j] = fmaf(a[i].y, b[j].y, acc[i][j]);
        acc[i][j] = fmaf(a[i].z, b[j].z, acc[i][j]);
        acc[i][j] = fmaf(a[i].w, b[j].w, acc[i][j]);
      }
    }
  }
}

// "TN" (sum of outer products over the leading dim, as P V, P^T dO, dS^T Q, dS K):
//   acc[i][4t + e] += sum_{k < K} A[k * lda + mg*TM + i] * B[k * ldb + 4 ng + 64 t + e]
// Column groups at or past d are skipped (never written out).
template <int K, int TM, int N>
__device__ __forceinline__ void tile_mma_tn(float (&acc)[TM][N], const float* A, int lda,
                                            const float* B, int ldb, int d) {
  static_assert(TM == 2 || TM == 4, "TM: 2 or 4 rows per thread");
  constexpr int TN4 = N / 4;
  const int mg = threadIdx.x / 16, ng = threadIdx.x % 16;
  bool col_ok[TN4];
#pragma unroll
  for (int t = 0; t < TN4; ++t) col_ok[t] = 4 * ng + 64 * t < d;
#pragma unroll 4
  for (int k = 0; k < K; ++k) {
    float a[TM];
    if constexpr (TM == 4) {
      const float4 v = *reinterpret_cast<const float4*>(A + k * lda + mg * TM);
      a[0] = v.x, a[1] = v.y, a[2] = v.z, a[3] = v.w;
    } else {
      const float2 v = *reinterpret_cast<const float2*>(A + k * lda + mg * TM);
      a[0] = v.x, a[1] = v.y;
    }
#pragma unroll
    for (int t = 0; t < TN4; ++t) {
      if (!col_ok[t]) continue;
      const float4 b = *reinterpret_cast<const float4*>(B + k * ldb + 4 * ng + 64 * t);
#pragma unroll
      for (int i = 0; i < TM; ++i) {
        acc[i][4 * t + 0] = fmaf(a[i], b.x, acc[i][4 * t + 0]);
        acc[i][4 * t + 1] = fmaf(a[i], b.y, acc[i][4 * t + 1]);
        acc[i][4 * t + 2] = fmaf(a[i], b.z, acc[i][4 * t + 2]);
        acc[i][4 * t + 3] = fmaf(a[i], b.w, acc[i][4 * t + 3]);
      }
    }
  }
}

template <int TM, int N>
__device__ __forceinline__ void zero(float (&acc)[TM][N]) {
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int n = 0; n < N; ++n) acc[i][n] = 0.0f;
}

// Reductions over the 16 threads (one half-warp) that share a score row.
__device__ __forceinline__ float row_max16(float v) {
#pragma unroll
  for (int o = 1; o < 16; o <<= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float row_sum16(float v) {
#pragma unroll
  for (int o = 1; o < 16; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Rows of a tile of `tile` rows that lie inside the tensor (`left` = rows from the tile start).
__device__ __forceinline__ int tile_rows(int tile, int64_t left) {
  return left < tile ? static_cast<int>(left) : tile;
}

// Is key `col` visible to query `row`? (tails and the causal rule in one place)
__device__ __forceinline__ bool visible(int64_t row, int64_t col, const AttnParams& p) {
  return col < p.seqlen_k && (!p.is_causal || col <= row + p.causal_offset);
}

// Number of keys query block [row0, row0 + rows) can see: keys [0, kv_len).
__device__ __forceinline__ int64_t visible_keys(int64_t row0, int rows, const AttnParams& p) {
  if (!p.is_causal) return p.seqlen_k;
  const int64_t last = row0 + rows - 1 + p.causal_offset;  // last visible key of the block
  return last < 0 ? 0 : (last + 1 < p.seqlen_k ? last + 1 : p.seqlen_k);
}

// First query row that sees key `col0` (the start of the causal inner loop of the backward).
__device__ __forceinline__ int64_t first_query(int64_t col0, const AttnParams& p) {
  if (!p.is_causal) return 0;
  const int64_t r = col0 - p.causal_offset;
  return r < 0 ? 0 : r;
}

// ---- tile math shared by FA1 and FA2 -------------------------------------------------------

// S_ij = scale * Q_i K_j^T with invisible entries set to -inf.   S: (B_r x B_c), thread part.
template <int TM, int TN>
__device__ __forceinline__ void scores(float (&S)[TM][TN], const float* Q_s, const float* K_s,
                                       int ld, int64_t row0, int64_t col0, const AttnParams& p) {
  const int mg = threadIdx.x / 16, ng = threadIdx.x % 16;
  zero(S);
  tile_mma_nt(S, Q_s, K_s, ld, static_cast<int>(p.head_dim));
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j)
      S[i][j] = visible(row0 + mg * TM + i, col0 + ng + 16 * j, p) ? S[i][j] * p.scale : -INFINITY;
}

// Backward tile, shared by FA2's dK/dV kernel, FA2's dQ kernel and FA1's backward:
//   P_ij  = exp(S_ij - lse_i)             (recomputed; 0 where masked)
//   dP_ij = dO_i V_j^T
//   dS_ij = P_ij o (dP_ij - D_i)
// Returns P_ij and dS_ij in the score-tile layout.
template <int TM, int TN>
__device__ __forceinline__ void bwd_probs(float (&P)[TM][TN], float (&dS)[TM][TN], const float* Q_s,
                                          const float* dO_s, const float* K_s, const float* V_s,
                                          const float* lse_s, const float* D_s, int ld,
                                          int64_t row0, int64_t col0, const AttnParams& p) {
  const int mg = threadIdx.x / 16;
  // S_ij = scale * Q_i K_j^T (masked)
  scores(P, Q_s, K_s, ld, row0, col0, p);
  // dP_ij = dO_i V_j^T
  zero(dS);
  tile_mma_nt(dS, dO_s, V_s, ld, static_cast<int>(p.head_dim));
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const float lse = lse_s[mg * TM + i], D = D_s[mg * TM + i];
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      // A masked score is -inf; a row with lse = -inf has only masked scores.
      P[i][j] = P[i][j] == -INFINITY ? 0.0f : expf(P[i][j] - lse);
      dS[i][j] = P[i][j] * (dS[i][j] - D);
    }
  }
}

// Store a score-layout tile into smem as X[r][c] (ld_rc) and/or X^T[c][r] (ld_cr).
template <int TM, int TN>
__device__ __forceinline__ void store_scores(float* X_rc, int ld_rc, float* X_cr, int ld_cr,
                                             const float (&X)[TM][TN]) {
  const int mg = threadIdx.x / 16, ng = threadIdx.x % 16;
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int r = mg * TM + i, c = ng + 16 * j;
      if (X_rc) X_rc[r * ld_rc + c] = X[i][j];
      if (X_cr) X_cr[c * ld_cr + r] = X[i][j];
    }
}

// Warp-reduced dot product of two length-d rows (D_i = rowsum(dO_i o O_i)); every lane gets it.
template <typename T>
__device__ __forceinline__ float row_dot(const T* a, const T* b, int d) {
  const int lane = threadIdx.x % 32;
  float s = 0.0f;
  for (int c = 4 * lane; c < d; c += 128) {
    const float4 x = load4(a + c), y = load4(b + c);
    s += x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}

// Write an output-layout tile (rows row0 + mg*TM + i, cols 4 ng + 64 t) times `mul` to a
// (rows x d) tensor; rows >= rows_valid and columns >= d are skipped.
template <typename T, int TM, int N>
__device__ __forceinline__ void store_out(T* dst, int64_t row_stride, int64_t row0,
                                          int64_t rows_valid, int d, const float (&acc)[TM][N],
                                          const float (&mul)[TM]) {
  constexpr int TN4 = N / 4;
  const int mg = threadIdx.x / 16, ng = threadIdx.x % 16;
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int64_t r = row0 + mg * TM + i;
    if (r >= rows_valid) continue;
#pragma unroll
    for (int t = 0; t < TN4; ++t) {
      const int c = 4 * ng + 64 * t;
      if (c >= d) continue;
      const float4 v = make_float4(acc[i][4 * t] * mul[i], acc[i][4 * t + 1] * mul[i],
                                   acc[i][4 * t + 2] * mul[i], acc[i][4 * t + 3] * mul[i]);
      store4(dst + r * row_stride + c, v);
    }
  }
}

// Read an output-layout tile back from an fp32 (rows x d) array with row stride d (FA1's O_i and
// dQ_i round trips); rows >= rows_valid read as 0.
template <int TM, int N>
__device__ __forceinline__ void load_acc(float (&acc)[TM][N], const float* src, int64_t row0,
                                         int64_t rows_valid, int d) {
  constexpr int TN4 = N / 4;
  const int mg = threadIdx.x / 16, ng = threadIdx.x % 16;
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int64_t r = row0 + mg * TM + i;
#pragma unroll
    for (int t = 0; t < TN4; ++t) {
      const int c = 4 * ng + 64 * t;
      const float4 v = (r < rows_valid && c < d) ? load4(src + r * d + c) : float4{0, 0, 0, 0};
      acc[i][4 * t] = v.x, acc[i][4 * t + 1] = v.y, acc[i][4 * t + 2] = v.z,
                 acc[i][4 * t + 3] = v.w;
    }
  }
}

}  // namespace flashmin::cuda::simt

// Internal launchers (simt_fa2.cu, simt_fa1.cu); simt_attn.cu picks one per call.
namespace flashmin::cuda {
void simt_fa2_fwd(const AttnParams& p, cudaStream_t stream);
void simt_fa2_bwd(const AttnBwdParams& p, cudaStream_t stream);  // workspace: D (B, H_q, S_q)
void simt_fa1_fwd(const AttnParams& p, cudaStream_t stream);     // workspace: O, m, l
void simt_fa1_bwd(const AttnBwdParams& p, cudaStream_t stream);  // workspace: dQ (fp32)
}  // namespace flashmin::cuda
