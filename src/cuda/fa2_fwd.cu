// FA2 forward on tensor cores (fp16 / bf16), FlashAttention-2 paper, Algorithm 1.
//
// One CTA owns a query block Q_i (B_r rows) of one (batch, head); its warps split the rows
// (16 * kMt each). The CTA walks the key/value blocks K_j, V_j (B_c rows) that Q_i can see:
//
//   S_ij = Q_i K_j^T                       mma.sync m16n8k16, fp32 accumulators in registers
//   m_i' = max(m_i, rowmax(S_ij))          online softmax, log2 domain (scale * log2(e) folded)
//   P_ij = exp2(S_ij * scale' - m_i')      fp32, then packed to fp16/bf16 in registers and
//   l_i  = l_i * exp2(m_i - m_i') + rowsum(P_ij)     reused as the A operand of P V
//   O_i  = O_i * exp2(m_i - m_i') + P_ij V_j
//
// and at the end writes O_i / l_i and lse_i = ln(sum exp(scores)) once.
//
// Memory path: cp.async (zero-filling rows/cols outside the tensor) into padded smem tiles;
// ldmatrix for Q/K fragments, ldmatrix.trans for V. K_j and V_j are separate cp.async groups
// in a kStages-deep ring, so K_{j+1}, V_{j+1} stream in while block j is computed, and V_j
// only has to land by the time P_ij V_j starts.
//
// Family: "sm80" = mma.sync/ldmatrix/cp.async (runs on sm_80 .. sm_90). It is chosen at launch
// from the device's compute capability, so an sm90 family (wgmma + TMA) can sit beside it.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/cuda_api.h"
#include "cuda/fa2_fwd_traits.h"
#include "flashmin/cuda/copy.h"
#include "flashmin/cuda/mma.h"
#include "flashmin/dispatch.h"

namespace flashmin::cuda {

namespace fa2_fwd_detail {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Copy a (kRows x kD) tile from global memory (row stride `row_stride` elements, last dim
// contiguous) into padded smem. Rows >= rows_valid and 16-byte chunks >= chunks_valid (the real
// head dim) are zero-filled by cp.async without reading global memory.
// Thread layout: 8 threads per row (128 contiguous bytes per 8 lanes), kThreads / 8 rows per
// pass; a thread walks its rows with one 64-bit pointer increment per pass.
template <class Tr, int kRows, typename T>
__device__ __forceinline__ void load_tile_async(T* smem, const T* gmem, int64_t row_stride,
                                                int rows_valid, int chunks_valid, int tid) {
  constexpr int kChunks = Tr::kD / 8;  // 16-byte chunks per row
  constexpr int kRowsPerPass = Tr::kThreads / 8;
  constexpr int kChunkPasses = (kChunks + 7) / 8;
  static_assert(kRows % kRowsPerPass == 0, "tile rows must be a multiple of threads / 8");
  const int r0 = tid / 8, c0 = tid % 8;
  const T* src_row = gmem + r0 * row_stride;
  T* dst_row = smem + r0 * Tr::kSmemStride;
#pragma unroll
  for (int pass = 0; pass < kRows / kRowsPerPass; ++pass) {
    const int r = r0 + pass * kRowsPerPass;
#pragma unroll
    for (int q = 0; q < kChunkPasses; ++q) {
      const int c = c0 + 8 * q;
      if (kChunks % 8 == 0 || c < kChunks) {
        const bool valid = r < rows_valid && c < chunks_valid;
        cp_async_16(dst_row + c * 8, valid ? src_row + c * 8 : gmem, valid);
      }
    }
    src_row += kRowsPerPass * row_stride;
    dst_row += kRowsPerPass * Tr::kSmemStride;
  }
}

// Clamp a 64-bit bound into [lo, hi].
__device__ __forceinline__ int clamp_int(int64_t x, int lo, int hi) {
  return static_cast<int>(x < lo ? lo : (x > hi ? hi : x));
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Kernel arguments derived once on the host.
struct Fa2FwdArgs {
  float scale_log2;  // |scale| * log2(e), clamped away from 0 so that -inf * scale stays -inf
  bool negate;       // scale < 0: negate S_ij so that "max" is still the max of scaled scores
  float scale_nat;   // |scale| (lse = m * scale_nat + ln l)
  int T_r;           // query blocks per (batch, head)
};

}  // namespace fa2_fwd_detail

// ------------------------------------------------------------------------------------------
// The kernel. Register tiles of one warp (g = lane / 4, t = lane % 4, mma C layout):
//   S_ij : [kMt][B_c / 8][4] fp32  element (16 mt + g + 8 (e / 2), 8 nt + 2 t + e % 2)
//   O_i  : [kMt][kD / 8][4]  fp32  same layout over head-dim columns
//   m_i, l_i : [kMt][2]            rows 16 mt + g and 16 mt + g + 8 (l_i: this thread's partial
//                                  sum over its columns; the quad is summed once at the end)
// ------------------------------------------------------------------------------------------
template <typename T, class Tr>
__global__ void __launch_bounds__(Tr::kThreads, Tr::kMinCtas)
    fa2_fwd_sm80_kernel(const AttnParams p, const fa2_fwd_detail::Fa2FwdArgs args) {
  using namespace fa2_fwd_detail;
  using Mma = MmaType<T>;
  constexpr int kD = Tr::kD, B_r = Tr::kBr, B_c = Tr::kBc, kStages = Tr::kStages;
  constexpr int kMt = Tr::kMt;
  constexpr int kLd = Tr::kSmemStride;
  constexpr int kNt = B_c / 8;  // n8 tiles of S_ij
  constexpr int kDt = kD / 8;   // n8 tiles of O_i
  constexpr int kKs = kD / 16;  // k16 steps of Q K^T

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);  // Q_i : (B_r, kD); reused to stage O_i at the end
  T* sK = sQ + B_r * kLd;                  // K_j : kStages x (B_c, kD)
  T* sV = sK + kStages * B_c * kLd;        // V_j : kStages x (B_c, kD)

  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;

  // Grid: one CTA per (b, h, i), i running backwards inside each (b, h): the long causal blocks
  // start first and the last wave is made of short ones; CTAs of one head stay adjacent (L2).
  const int T_r = args.T_r;
  const int i = T_r - 1 - static_cast<int>(blockIdx.x % T_r);
  const int64_t bh = blockIdx.x / T_r;
  const int64_t h = bh % p.heads_q;
  const int64_t b = bh / p.heads_q;
  const int64_t h_kv = h / (p.heads_q / p.heads_kv);  // GQA: read the shared K/V head directly

  const int S_q = static_cast<int>(p.seqlen_q);
  const int S_k = static_cast<int>(p.seqlen_k);
  const int chunks_valid = static_cast<int>(p.head_dim / 8);
  const int m0 = i * B_r;  // first query row of Q_i
  const int rows_q = min(B_r, S_q - m0);

  const T* Q = static_cast<const T*>(p.q) + b * p.q_strides.batch + h * p.q_strides.head +
               int64_t(m0) * p.q_strides.seq;
  const T* K = static_cast<const T*>(p.k) + b * p.k_strides.batch + h_kv * p.k_strides.head;
  const T* V = static_cast<const T*>(p.v) + b * p.v_strides.batch + h_kv * p.v_strides.head;

  // Keys this CTA can see: [0, n_end). Causal: key j visible to row r iff j <= r + offset.
  // Blocks past n_end are fully masked and never loaded; blocks ending at or before n_full are
  // visible to every row of Q_i and skip masking.
  int n_end = S_k, n_full = S_k;
  if (p.is_causal) {
    const int64_t last_row = m0 + rows_q - 1;
    n_end = clamp_int(last_row + p.causal_offset + 1, 0, S_k);
    n_full = clamp_int(m0 + p.causal_offset + 1, 0, S_k);
  }
  const int T_c = (n_end + B_c - 1) / B_c;

  const int warp_row = warp * 16 * kMt;  // first row of this warp inside Q_i

  // Key limit (exclusive) of row warp_row + 16 mt + g + 8 hh in the masked blocks:
  // min(S_k, max(0, diag + 16 mt + 8 hh)). Non-causal: diag large, so the limit is S_k.
  const int diag =
      p.is_causal ? clamp_int(int64_t(m0) + warp_row + g + p.causal_offset + 1, -(1 << 30), 1 << 30)
                  : (1 << 30);

  float O[kMt][kDt][4];
  float m_i[kMt][2], l_i[kMt][2];
#pragma unroll
  for (int mt = 0; mt < kMt; ++mt) {
#pragma unroll
    for (int dt = 0; dt < kDt; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) O[mt][dt][e] = 0.f;
    m_i[mt][0] = m_i[mt][1] = -INFINITY;
    l_i[mt][0] = l_i[mt][1] = 0.f;
  }

  if (T_c > 0) {
    // ---- prologue: Q_i, then K_0..K_{kStages-2} / V_0.. (one cp.async group per tile) ----
    load_tile_async<Tr, B_r>(sQ, Q, p.q_strides.seq, rows_q, chunks_valid, tid);
    cp_async_commit();
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < T_c) {
        const int rows = min(B_c, S_k - s * B_c);
        load_tile_async<Tr, B_c>(sK + s * B_c * kLd, K + int64_t(s) * B_c * p.k_strides.seq,
                                 p.k_strides.seq, rows, chunks_valid, tid);
        cp_async_commit();
        load_tile_async<Tr, B_c>(sV + s * B_c * kLd, V + int64_t(s) * B_c * p.v_strides.seq,
                                 p.v_strides.seq, rows, chunks_valid, tid);
        cp_async_commit();
      } else {
        cp_async_commit();  // keep the group count fixed: waits below count groups
        cp_async_commit();
      }
    }

    // Q_i fragments (A operand, 16 x 16 per k-step): lane l addresses row l % 16, column
    // block l / 16 of the 16x16 tile (ldmatrix.x4 matrices: rows 0-7|8-15 x cols 0-7|8-15).
    const T* sQ_lane = sQ + (warp_row + (lane & 15)) * kLd + 8 * (lane >> 4);
    uint32_t Qf[Tr::kQInRegs ? kMt : 1][Tr::kQInRegs ? kKs : 1][4];
    if constexpr (Tr::kQInRegs) {
      cp_async_wait<2 * (kStages - 1)>();  // Q_i landed
      __syncthreads();
#pragma unroll
      for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
        for (int ks = 0; ks < kKs; ++ks) ldmatrix_x4(Qf[mt][ks], sQ_lane + 16 * mt * kLd + 16 * ks);
    }

    // K_j fragments (B operand of Q K^T, "col" = K rows): ldmatrix.x4 gives two n8 tiles;
    // lane l addresses key row 8 * (l / 16) + l % 8, column block (l / 8) % 2.
    const int k_lane_off = ((lane & 7) + ((lane >> 4) << 3)) * kLd + ((lane >> 3) & 1) * 8;
    // V_j fragments (B operand of P V, k = key): ldmatrix.x4.trans; lane l addresses key row
    // l % 16, head-dim column block l / 16 (two n8 tiles of O per instruction).
    const int v_lane_off = (lane & 15) * kLd + 8 * (lane >> 4);

    for (int j = 0; j < T_c; ++j) {
      const T* sKj = sK + (j % kStages) * B_c * kLd;  // K_j : (B_c, kD)
      const T* sVj = sV + (j % kStages) * B_c * kLd;  // V_j : (B_c, kD)

      // K_j landed (V_j and later may still be in flight). The barrier also tells every warp
      // that all warps are done with iteration j-1, whose buffer the prefetch below refills.
      cp_async_wait<2 * kStages - 3>();
      __syncthreads();

      // ---- prefetch K_{j+kStages-1}, V_{j+kStages-1} into the buffer of iteration j-1
      {
        const int jn = j + kStages - 1;
        const int buf = jn % kStages;
        if (jn < T_c) {
          const int rows = min(B_c, S_k - jn * B_c);
          load_tile_async<Tr, B_c>(sK + buf * B_c * kLd, K + int64_t(jn) * B_c * p.k_strides.seq,
                                   p.k_strides.seq, rows, chunks_valid, tid);
          cp_async_commit();
          load_tile_async<Tr, B_c>(sV + buf * B_c * kLd, V + int64_t(jn) * B_c * p.v_strides.seq,
                                   p.v_strides.seq, rows, chunks_valid, tid);
          cp_async_commit();
        } else {
          cp_async_commit();
          cp_async_commit();
        }
      }

      // ---- S_ij = Q_i K_j^T : (16 kMt, B_c) per warp ----
      float S[kMt][kNt][4];
#pragma unroll
      for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) S[mt][nt][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < kKs; ++ks) {
        uint32_t Qs[kMt][4];  // Q_i[:, 16 ks : 16 ks + 16]
#pragma unroll
        for (int mt = 0; mt < kMt; ++mt) {
          if constexpr (Tr::kQInRegs) {
#pragma unroll
            for (int e = 0; e < 4; ++e) Qs[mt][e] = Qf[mt][ks][e];
          } else {
            ldmatrix_x4(Qs[mt], sQ_lane + 16 * mt * kLd + 16 * ks);
          }
        }
#pragma unroll
        for (int np = 0; np < kNt / 2; ++np) {
          uint32_t Kf[4];  // K_j[16 np : 16 np + 16, 16 ks : 16 ks + 16] as two B fragments
          ldmatrix_x4(Kf, sKj + 16 * np * kLd + 16 * ks + k_lane_off);
          const uint32_t b0[2] = {Kf[0], Kf[1]};
          const uint32_t b1[2] = {Kf[2], Kf[3]};
#pragma unroll
          for (int mt = 0; mt < kMt; ++mt) {
            Mma::mma(S[mt][2 * np], Qs[mt], b0);
            Mma::mma(S[mt][2 * np + 1], Qs[mt], b1);
          }
        }
      }

      // ---- mask: only the tail block of S_k and the causal diagonal blocks ----
      if (args.negate) {
#pragma unroll
        for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
          for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) S[mt][nt][e] = -S[mt][nt][e];
      }
      if ((j + 1) * B_c > n_full) {
        const int n0 = j * B_c;
#pragma unroll
        for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
          for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int col = n0 + 8 * nt + 2 * t + (e & 1);
              const int lim = min(S_k, max(0, diag + 16 * mt + 8 * (e >> 1)));
              if (col >= lim) S[mt][nt][e] = -INFINITY;
            }
      }

      // ---- online softmax: m_i, l_i, P_ij = exp2(S_ij * scale' - m_i') ----
#pragma unroll
      for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          float mx = m_i[mt][hh];
#pragma unroll
          for (int nt = 0; nt < kNt; ++nt)
            mx = fmaxf(mx, fmaxf(S[mt][nt][2 * hh], S[mt][nt][2 * hh + 1]));
          mx = quad_max(mx);
          // A row that has seen no key yet keeps m = -inf; subtract 0 instead so exp2 gives 0.
          const float m_scaled = mx == -INFINITY ? 0.f : mx * args.scale_log2;
          const float alpha = fast_exp2(m_i[mt][hh] * args.scale_log2 - m_scaled);
          m_i[mt][hh] = mx;
          float rowsum = 0.f;
#pragma unroll
          for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
            for (int e = 2 * hh; e < 2 * hh + 2; ++e) {
              S[mt][nt][e] = fast_exp2(fmaf(S[mt][nt][e], args.scale_log2, -m_scaled));
              rowsum += S[mt][nt][e];
            }
          l_i[mt][hh] = l_i[mt][hh] * alpha + rowsum;
#pragma unroll
          for (int dt = 0; dt < kDt; ++dt) {
            O[mt][dt][2 * hh] *= alpha;
            O[mt][dt][2 * hh + 1] *= alpha;
          }
        }

      cp_async_wait<2 * (kStages - 1)>();  // V_j landed
      __syncthreads();

      // ---- O_i += P_ij V_j : P_ij (16 kMt, B_c) from registers, V_j (B_c, kD) ----
#pragma unroll
      for (int kk = 0; kk < B_c / 16; ++kk) {
        // The C fragments of S tiles 2kk, 2kk+1 are exactly the A fragment of keys 16kk..+16.
        uint32_t Pf[kMt][4];
#pragma unroll
        for (int mt = 0; mt < kMt; ++mt) {
          Pf[mt][0] = Mma::pack(S[mt][2 * kk][0], S[mt][2 * kk][1]);
          Pf[mt][1] = Mma::pack(S[mt][2 * kk][2], S[mt][2 * kk][3]);
          Pf[mt][2] = Mma::pack(S[mt][2 * kk + 1][0], S[mt][2 * kk + 1][1]);
          Pf[mt][3] = Mma::pack(S[mt][2 * kk + 1][2], S[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int dp = 0; dp < kDt / 2; ++dp) {
          uint32_t Vf[4];  // V_j[16 kk : 16 kk + 16, 16 dp : 16 dp + 16] as two B fragments
          ldmatrix_x4_trans(Vf, sVj + 16 * kk * kLd + 16 * dp + v_lane_off);
          const uint32_t b0[2] = {Vf[0], Vf[1]};
          const uint32_t b1[2] = {Vf[2], Vf[3]};
#pragma unroll
          for (int mt = 0; mt < kMt; ++mt) {
            Mma::mma(O[mt][2 * dp], Pf[mt], b0);
            Mma::mma(O[mt][2 * dp + 1], Pf[mt], b1);
          }
        }
      }
    }
  }
  cp_async_wait<0>();  // nothing may still be writing smem (e.g. Q_i when T_c == 0)
  __syncwarp();

  // ---- epilogue: O_i = O_i / l_i, lse_i = m_i * scale + ln(l_i); rows with no key: 0, -inf --
  T* sO = sQ;  // O_i : (B_r, kD), this warp's rows only (it alone read them as Q_i)
  float* lse = p.lse + (b * p.heads_q + h) * p.seqlen_q;
#pragma unroll
  for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const float l = quad_sum(l_i[mt][hh]);
      const float inv_l = l > 0.f ? 1.f / l : 0.f;
      const int r = warp_row + 16 * mt + g + 8 * hh;
#pragma unroll
      for (int dt = 0; dt < kDt; ++dt) {
        *reinterpret_cast<uint32_t*>(sO + r * kLd + 8 * dt + 2 * t) =
            Mma::pack(O[mt][dt][2 * hh] * inv_l, O[mt][dt][2 * hh + 1] * inv_l);
      }
      if (t == 0 && r < rows_q) {
        lse[m0 + r] = l > 0.f ? m_i[mt][hh] * args.scale_nat + __log2f(l) * kLn2 : -INFINITY;
      }
    }
  __syncthreads();

  // Coalesced 16-byte stores of the real rows / head-dim columns only.
  T* O_g = static_cast<T*>(p.o) + b * p.o_strides.batch + h * p.o_strides.head +
           int64_t(m0) * p.o_strides.seq;
  constexpr int kChunks = kD / 8;
  constexpr int kTotal = B_r * kChunks;
#pragma unroll
  for (int it = 0; it < (kTotal + Tr::kThreads - 1) / Tr::kThreads; ++it) {
    const int idx = it * Tr::kThreads + tid;
    const int r = idx / kChunks, c = idx % kChunks;
    if ((kTotal % Tr::kThreads == 0 || idx < kTotal) && r < rows_q && c < chunks_valid) {
      *reinterpret_cast<uint4*>(O_g + r * p.o_strides.seq + c * 8) =
          *reinterpret_cast<const uint4*>(sO + r * kLd + c * 8);
    }
  }
}

// ------------------------------------------------------------------------------------------
// Host side
// ------------------------------------------------------------------------------------------

// Launch one configuration of the sm80 family (exposed for the tuning harness).
template <typename T, class Tr>
void fa2_fwd_sm80_launch(const AttnParams& p, cudaStream_t stream) {
  using fa2_fwd_detail::Fa2FwdArgs;
  const int64_t T_r = (p.seqlen_q + Tr::kBr - 1) / Tr::kBr;
  const int64_t blocks = T_r * p.batch * p.heads_q;
  if (blocks == 0) return;
  if (blocks > 0x7fffffffLL || p.seqlen_q > 0x7fffffffLL || p.seqlen_k >= (1LL << 30))
    throw std::invalid_argument(
        "query: expected batch * heads * query blocks < 2^31 and sequence lengths < 2^30, got " +
        std::to_string(blocks) + " blocks");
  Fa2FwdArgs args;
  const float abs_scale = std::fabs(p.scale);
  args.scale_log2 = std::fmax(abs_scale * fa2_fwd_detail::kLog2e, 1e-30f);
  args.negate = p.scale < 0.f;
  args.scale_nat = abs_scale;
  args.T_r = static_cast<int>(T_r);

  const size_t smem = Tr::template smem_bytes<T>();
  int device = 0, smem_optin = 0;
  FM_CUDA_CHECK(cudaGetDevice(&device));
  FM_CUDA_CHECK(
      cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (static_cast<int64_t>(smem) > smem_optin)
    throw std::runtime_error("device: the FA2 forward tile for head_dim " +
                             std::to_string(p.head_dim) + " needs " + std::to_string(smem) +
                             " bytes of shared memory per block, the device allows " +
                             std::to_string(smem_optin));
  auto kernel = fa2_fwd_sm80_kernel<T, Tr>;
  FM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(smem)));
  kernel<<<static_cast<unsigned>(blocks), Tr::kThreads, smem, stream>>>(p, args);
  FM_CUDA_CHECK(cudaGetLastError());
}

namespace {

template <typename T>
void fa2_fwd_sm80(const AttnParams& p, cudaStream_t stream) {
  FM_DISPATCH_HEAD_DIM(p.head_dim, kD,
                       [&] { fa2_fwd_sm80_launch<T, Fa2FwdSm80Traits<kD>>(p, stream); });
}

}  // namespace

void fa2_fwd_mma(const AttnParams& p, cudaStream_t stream) {
  if (p.batch == 0 || p.heads_q == 0 || p.seqlen_q == 0) return;
  int device = 0, major = 0;
  FM_CUDA_CHECK(cudaGetDevice(&device));
  FM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (major < 8)
    throw std::runtime_error("device: the fp16/bf16 FA2 kernels need compute capability >= 8.0");
  // sm80 family for sm_80 .. sm_90 (and newer, through PTX). An sm90 (wgmma/TMA) family would
  // be chosen here for major == 9.
  switch (p.dtype) {
    case DType::kFloat16:
      return fa2_fwd_sm80<__half>(p, stream);
    case DType::kBFloat16:
      return fa2_fwd_sm80<__nv_bfloat16>(p, stream);
    default:
      throw std::invalid_argument(std::string("dtype: expected float16 or bfloat16, got ") +
                                  dtype_name(p.dtype));
  }
}

}  // namespace flashmin::cuda
