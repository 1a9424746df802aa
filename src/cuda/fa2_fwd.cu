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
// ldmatrix for Q/K fragments, ldmatrix.trans for V. K_j and V_j are separate cp.async groups,
// either in a kStages-deep ring (K_{j+1}, V_{j+1} stream in while block j is computed, and V_j
// only has to land by the time P_ij V_j starts) or, with kStages = 1, in one buffer each (FA2's
// order: V_j lands during S_ij = Q_i K_j^T, K_{j+1} during the softmax and P_ij V_j).
//
// Warp pairs (kSplit = 2, used at d256): two warps share 16 kMt rows; each computes S_ij for half
// of the keys of K_j and O_i for half of the head dim, swapping row maxima and P_ij fragments
// through smem, so that O_i fits in registers with two row tiles per warp.
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
#include <type_traits>

#include "cuda/cuda_api.h"
#include "cuda/device_query.h"
#include "cuda/fa2_fwd_common.cuh"
#include "cuda/fa2_fwd_sm90.h"
#include "cuda/fa2_fwd_traits.h"
#include "flashmin/cuda/copy.h"
#include "flashmin/cuda/mma.h"
#include "flashmin/dispatch.h"

namespace flashmin::cuda {

namespace fa2_fwd_detail {

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

// Named barrier of the warps of one row group (id 0 is __syncthreads); also orders their smem
// accesses around it.
template <int kThreadsInGroup>
__device__ __forceinline__ void group_barrier(int id) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "n"(kThreadsInGroup) : "memory");
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
// The kernel. Warp w belongs to row group w / kSplit (16 * kMt rows of Q_i) and is half
// h = w % kSplit of it: it computes S_ij for keys [h kBcW, (h + 1) kBcW) of each K_j and O_i for
// head-dim columns [h kDW, (h + 1) kDW) (kSplit = 1: all keys, all columns).
// Register tiles of one warp (g = lane / 4, t = lane % 4, mma C layout):
//   S_ij : [kMt][kBcW / 8][4] fp32  element (16 mt + g + 8 (e / 2), 8 nt + 2 t + e % 2)
//   O_i  : [kMt][kDW / 8][4]  fp32  same layout over this warp's head-dim columns
//   m_i, l_i : [kMt][2]             rows 16 mt + g and 16 mt + g + 8 (m_i: identical in both
//                                   warps of a pair; l_i: this thread's partial sum over its
//                                   keys, summed over the quad and the pair once at the end)
// ------------------------------------------------------------------------------------------
template <typename T, class Tr>
__global__ void __launch_bounds__(Tr::kThreads, Tr::kMinCtas)
    fa2_fwd_sm80_kernel(const AttnParams p, const fa2_fwd_detail::Fa2FwdArgs args) {
  using namespace fa2_fwd_detail;
  using Mma = MmaType<T>;
  constexpr int kD = Tr::kD, B_r = Tr::kBr, B_c = Tr::kBc, kStages = Tr::kStages;
  constexpr int kMt = Tr::kMt, kSplit = Tr::kSplit;
  constexpr int kLd = Tr::kSmemStride;
  constexpr int kBcW = Tr::kBcW;  // keys of S_ij per warp
  constexpr int kDW = Tr::kDW;    // head-dim columns of O_i per warp
  constexpr int kNt = kBcW / 8;   // n8 tiles of the warp's S_ij
  constexpr int kDt = kDW / 8;    // n8 tiles of the warp's O_i
  constexpr int kKs = kD / 16;    // k16 steps of Q K^T
  constexpr int kKw = kBcW / 16;  // k16 steps of P V over the warp's own keys
  // Unrolling all 16 k-steps at kD = 256 lets ptxas hoist so many fragment loads that it spills;
  // 8 at a time keeps them in registers.
  constexpr int kKsUnroll = (kKs > 8 && kKs % 8 == 0) ? 8 : kKs;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);  // Q_i : (B_r, kD); reused to stage O_i at the end
  T* sK = sQ + B_r * kLd;                  // K_j : kStages x (B_c, kD)
  T* sV = sK + kStages * B_c * kLd;        // V_j : kStages x (B_c, kD)
  // Pair exchange (kSplit == 2), per warp: row maxima / row sums [2 kMt][32 lanes] fp32, then
  // its P_ij fragments [kKw * kMt][32 lanes] uint4 (lane-contiguous: conflict-free).
  float* xM = reinterpret_cast<float*>(sV + kStages * B_c * kLd);
  uint4* xP = reinterpret_cast<uint4*>(xM + Tr::kWarps * Tr::kXchgMaxFloats);

  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int group = warp / kSplit, half = warp % kSplit;
  const int partner = warp ^ 1;  // the other warp of the pair (kSplit == 2 only)

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

  // Keys this CTA can see: [0, n_end); blocks ending at or before n_full skip masking.
  int n_end, n_full;
  causal_key_range(p, m0, rows_q, n_end, n_full);
  const int T_c = (n_end + B_c - 1) / B_c;

  const int warp_row = group * 16 * kMt;  // first row of this warp's row group inside Q_i
  const int key0 = half * kBcW;           // first key of this warp's S_ij inside K_j
  const int col0 = half * kDW;            // first head-dim column of this warp's O_i

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
    // ---- prologue: Q_i, then the first K (and V) tiles, one cp.async group per tile ----
    load_tile_async<Tr, B_r>(sQ, Q, p.q_strides.seq, rows_q, chunks_valid, tid);
    cp_async_commit();
    if constexpr (kStages == 1) {
      load_tile_async<Tr, B_c>(sK, K, p.k_strides.seq, min(B_c, S_k), chunks_valid, tid);
      cp_async_commit();
    } else {
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
    }

    // Q_i fragments (A operand, 16 x 16 per k-step): lane l addresses row l % 16, column
    // block l / 16 of the 16x16 tile (ldmatrix.x4 matrices: rows 0-7|8-15 x cols 0-7|8-15).
    const T* sQ_lane = sQ + (warp_row + (lane & 15)) * kLd + 8 * (lane >> 4);
    uint32_t Qf[Tr::kQInRegs ? kMt : 1][Tr::kQInRegs ? kKs : 1][4];
    if constexpr (Tr::kQInRegs) {
      cp_async_wait<kStages == 1 ? 1 : 2 * (kStages - 1)>();  // Q_i landed
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
      const int buf = kStages == 1 ? 0 : j % kStages;
      const T* sKj = sK + buf * B_c * kLd;  // K_j : (B_c, kD)
      const T* sVj = sV + buf * B_c * kLd;  // V_j : (B_c, kD)

      if constexpr (kStages == 1) {
        // K_j landed. The barrier also tells every warp that all warps are done with
        // P_{i,j-1} V_{j-1} (and with the pair exchange of j-1): V_j may overwrite its buffer.
        cp_async_wait<0>();
        __syncthreads();
        const int rows = min(B_c, S_k - j * B_c);
        load_tile_async<Tr, B_c>(sV, V + int64_t(j) * B_c * p.v_strides.seq, p.v_strides.seq, rows,
                                 chunks_valid, tid);
        cp_async_commit();
      } else {
        // K_j landed (V_j and later may still be in flight). The barrier also tells every warp
        // that all warps are done with iteration j-1, whose buffer the prefetch below refills.
        cp_async_wait<2 * kStages - 3>();
        __syncthreads();

        // ---- prefetch K_{j+kStages-1}, V_{j+kStages-1} into the buffer of iteration j-1
        const int jn = j + kStages - 1;
        const int bn = jn % kStages;
        if (jn < T_c) {
          const int rows = min(B_c, S_k - jn * B_c);
          load_tile_async<Tr, B_c>(sK + bn * B_c * kLd, K + int64_t(jn) * B_c * p.k_strides.seq,
                                   p.k_strides.seq, rows, chunks_valid, tid);
          cp_async_commit();
          load_tile_async<Tr, B_c>(sV + bn * B_c * kLd, V + int64_t(jn) * B_c * p.v_strides.seq,
                                   p.v_strides.seq, rows, chunks_valid, tid);
          cp_async_commit();
        } else {
          cp_async_commit();
          cp_async_commit();
        }
      }

      // ---- S_ij = Q_i K_j^T : (16 kMt, kBcW) per warp, keys key0 .. key0 + kBcW of K_j ----
      float S[kMt][kNt][4];
#pragma unroll
      for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) S[mt][nt][e] = 0.f;
      const T* sKw = sKj + key0 * kLd + k_lane_off;
#pragma unroll(kKsUnroll)
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
          ldmatrix_x4(Kf, sKw + 16 * np * kLd + 16 * ks);
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
        const int n0 = j * B_c + key0;
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

      if constexpr (kStages == 1) {
        // V_j landed; every warp is done reading K_j, so K_{j+1} may overwrite its buffer and
        // stream in during the softmax and P_ij V_j.
        cp_async_wait<0>();
        __syncthreads();
        if (j + 1 < T_c) {
          const int rows = min(B_c, S_k - (j + 1) * B_c);
          load_tile_async<Tr, B_c>(sK, K + int64_t(j + 1) * B_c * p.k_strides.seq, p.k_strides.seq,
                                   rows, chunks_valid, tid);
          cp_async_commit();
        }
      }

      // ---- online softmax: m_i, l_i, P_ij = exp2(S_ij * scale' - m_i') ----
      float mx[kMt][2];  // m_i' = max(m_i, rowmax(S_ij))
#pragma unroll
      for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          float x = m_i[mt][hh];
#pragma unroll
          for (int nt = 0; nt < kNt; ++nt)
            x = fmaxf(x, fmaxf(S[mt][nt][2 * hh], S[mt][nt][2 * hh + 1]));
          mx[mt][hh] = quad_max(x);
        }
      if constexpr (kSplit == 2) {
        // The pair's other half of the keys: both warps end with the same m_i'.
#pragma unroll
        for (int r = 0; r < 2 * kMt; ++r) xM[(warp * 2 * kMt + r) * 32 + lane] = mx[r / 2][r % 2];
        group_barrier<64>(1 + group);
#pragma unroll
        for (int r = 0; r < 2 * kMt; ++r)
          mx[r / 2][r % 2] = fmaxf(mx[r / 2][r % 2], xM[(partner * 2 * kMt + r) * 32 + lane]);
      }
#pragma unroll
      for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const float m_new = mx[mt][hh];
          // A row that has seen no key yet keeps m = -inf; subtract 0 instead so exp2 gives 0.
          const float m_scaled = m_new == -INFINITY ? 0.f : m_new * args.scale_log2;
          const float alpha = fast_exp2(m_i[mt][hh] * args.scale_log2 - m_scaled);
          m_i[mt][hh] = m_new;
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

      if constexpr (kStages >= 2) {
        cp_async_wait<2 * (kStages - 1)>();  // V_j landed
        __syncthreads();
      }

      // ---- O_i += P_ij V_j : P (16 kMt, 16) k-step times V_j (16, kDW) at key row kr ----
      auto pv_step = [&](const uint32_t (&P)[kMt][4], int kr) {
        const T* sVk = sVj + kr * kLd + col0 + v_lane_off;
#pragma unroll
        for (int dp = 0; dp < kDt / 2; ++dp) {
          uint32_t Vf[4];  // V_j[kr : kr + 16, col0 + 16 dp : col0 + 16 dp + 16], two B fragments
          ldmatrix_x4_trans(Vf, sVk + 16 * dp);
          const uint32_t b0[2] = {Vf[0], Vf[1]};
          const uint32_t b1[2] = {Vf[2], Vf[3]};
#pragma unroll
          for (int mt = 0; mt < kMt; ++mt) {
            Mma::mma(O[mt][2 * dp], P[mt], b0);
            Mma::mma(O[mt][2 * dp + 1], P[mt], b1);
          }
        }
      };
      // P_ij as A fragments: the C fragments of S tiles 2kk, 2kk+1 are exactly the A fragment
      // of keys 16kk .. 16kk+16 (no smem round trip). kSplit == 2: all of them are packed first
      // and published to the partner, which needs them for its half of O_i.
      auto pack_p = [&](uint32_t (&P)[kMt][4], int kk) {
#pragma unroll
        for (int mt = 0; mt < kMt; ++mt) {
          P[mt][0] = Mma::pack(S[mt][2 * kk][0], S[mt][2 * kk][1]);
          P[mt][1] = Mma::pack(S[mt][2 * kk][2], S[mt][2 * kk][3]);
          P[mt][2] = Mma::pack(S[mt][2 * kk + 1][0], S[mt][2 * kk + 1][1]);
          P[mt][3] = Mma::pack(S[mt][2 * kk + 1][2], S[mt][2 * kk + 1][3]);
        }
      };
      uint32_t Pown[kSplit == 2 ? kKw : 1][kMt][4];
      if constexpr (kSplit == 2) {
#pragma unroll
        for (int kk = 0; kk < kKw; ++kk) {
          pack_p(Pown[kk], kk);
#pragma unroll
          for (int mt = 0; mt < kMt; ++mt)
            xP[(warp * kKw * kMt + kk * kMt + mt) * 32 + lane] =
                make_uint4(Pown[kk][mt][0], Pown[kk][mt][1], Pown[kk][mt][2], Pown[kk][mt][3]);
        }
      }
      // This warp's own keys first (no wait), then (kSplit == 2) the partner's.
#pragma unroll
      for (int kk = 0; kk < kKw; ++kk) {
        if constexpr (kSplit == 2) {
          pv_step(Pown[kk], key0 + 16 * kk);
        } else {
          uint32_t Pf[kMt][4];
          pack_p(Pf, kk);
          pv_step(Pf, key0 + 16 * kk);
        }
      }
      if constexpr (kSplit == 2) {
        group_barrier<64>(1 + group);  // the partner's P_ij fragments are in smem
        const int pkey0 = (half ^ 1) * kBcW;
#pragma unroll
        for (int kk = 0; kk < kKw; ++kk) {
          uint32_t Pp[kMt][4];
#pragma unroll
          for (int mt = 0; mt < kMt; ++mt) {
            const uint4 v = xP[(partner * kKw * kMt + kk * kMt + mt) * 32 + lane];
            Pp[mt][0] = v.x;
            Pp[mt][1] = v.y;
            Pp[mt][2] = v.z;
            Pp[mt][3] = v.w;
          }
          pv_step(Pp, pkey0 + 16 * kk);
        }
      }
    }
  }
  cp_async_wait<0>();  // nothing may still be writing smem (e.g. Q_i when T_c == 0)
  __syncwarp();

  // ---- epilogue: O_i = O_i / l_i, lse_i = m_i * scale + ln(l_i); rows with no key: 0, -inf --
  float l_row[kMt][2];
#pragma unroll
  for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) l_row[mt][hh] = quad_sum(l_i[mt][hh]);
  if constexpr (kSplit == 2) {
    // m_i is identical in both warps of the pair, so their row sums simply add. (The partner
    // read this warp's xM slot before the last P exchange barrier: it is free.)
#pragma unroll
    for (int r = 0; r < 2 * kMt; ++r) xM[(warp * 2 * kMt + r) * 32 + lane] = l_row[r / 2][r % 2];
    group_barrier<64>(1 + group);
#pragma unroll
    for (int r = 0; r < 2 * kMt; ++r)
      l_row[r / 2][r % 2] += xM[(partner * 2 * kMt + r) * 32 + lane];
  }
  // sO: this row group's rows only (only its warps read them as Q_i, and they are past that).
  T* sO = sQ;
  float* lse = p.lse + (b * p.heads_q + h) * p.seqlen_q;
#pragma unroll
  for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const float l = l_row[mt][hh];
      const float inv_l = l > 0.f ? 1.f / l : 0.f;
      const int r = warp_row + 16 * mt + g + 8 * hh;
#pragma unroll
      for (int dt = 0; dt < kDt; ++dt) {
        *reinterpret_cast<uint32_t*>(sO + r * kLd + col0 + 8 * dt + 2 * t) =
            Mma::pack(O[mt][dt][2 * hh] * inv_l, O[mt][dt][2 * hh + 1] * inv_l);
      }
      if (t == 0 && half == 0 && r < rows_q) {
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
  fa2_fwd_detail::check_fwd_grid(p, blocks);
  Fa2FwdArgs args;
  const float abs_scale = std::fabs(p.scale);
  args.scale_log2 = std::fmax(abs_scale * fa2_fwd_detail::kLog2e, 1e-30f);
  args.negate = p.scale < 0.f;
  args.scale_nat = abs_scale;
  args.T_r = static_cast<int>(T_r);

  const size_t smem = Tr::template smem_bytes<T>();
  require_smem_per_block(static_cast<int64_t>(smem),
                         "the FA2 forward tile for head_dim " + std::to_string(p.head_dim));
  auto kernel = fa2_fwd_sm80_kernel<T, Tr>;
  FM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(smem)));
  kernel<<<static_cast<unsigned>(blocks), Tr::kThreads, smem, stream>>>(p, args);
  FM_CUDA_CHECK(cudaGetLastError());
}

namespace {

// The bucket's regular tile, or its compact one where the regular tile does not fit the
// device's shared memory per block (sm_86 / sm_89) or FLASHMIN_FORCE_COMPACT=1.
template <typename T>
void fa2_fwd_sm80(const AttnParams& p, cudaStream_t stream) {
  FM_DISPATCH_HEAD_DIM(p.head_dim, kD, [&] {
    using Regular = Fa2FwdSm80Traits<kD>;
    using Compact = typename Fa2FwdSm80CompactTraits<kD>::type;
    if constexpr (!std::is_same_v<Regular, Compact>) {
      static_assert(Compact::template smem_bytes<T>() <= kSm86MaxSmemBytes, "compact tile");
      if (take_compact_tiles(static_cast<int64_t>(Regular::template smem_bytes<T>())))
        return fa2_fwd_sm80_launch<T, Compact>(p, stream);
    }
    fa2_fwd_sm80_launch<T, Regular>(p, stream);
  });
}

}  // namespace

void fa2_fwd_mma(const AttnParams& p, cudaStream_t stream) {
  if (p.batch == 0 || p.heads_q == 0 || p.seqlen_q == 0) return;
  if (compute_capability_major(current_device()) < 8)
    throw std::runtime_error("device: the fp16/bf16 FA2 kernels need compute capability >= 8.0");
  // sm90 family (wgmma) on compute capability 9.0 for the buckets it covers; sm80 family
  // (mma.sync) everywhere else (sm_80 .. sm_90, and newer through PTX).
  if (fa2_fwd_sm90(p, stream)) return;
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
