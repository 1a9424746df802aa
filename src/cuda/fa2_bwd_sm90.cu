// FA2 backward main kernel (dK_j, dV_j, dQ atomics), sm90 family: Hopper warpgroup MMA (wgmma)
// on 128-byte-swizzled shared-memory tiles. Same algorithm and loop structure as the sm80
// kernel in fa2_bwd.cu (FA2 paper, Algorithm 2); the preprocess (D_i, lse_i in log2 units),
// the dQ conversion and the deterministic dQ kernel are shared with it.
//
// A CTA owns K_j, V_j (B_c = 128 keys); each of its 2 warpgroups owns 64 of them and, per query
// block Q_i (B_r queries), computes
//   S^T  = K_j Q_i^T              SS wgmma, 64 keys x B_r
//   dP^T = V_j dO_i^T             SS wgmma (issued right behind S^T; overlaps the softmax)
//   P^T  = exp2(S^T * scale * log2e - lse_i),  dS^T = P^T ∘ (dP^T - D_i)
//   dV_j += P^T dO_i,  dK_j += dS^T Q_i         register-A wgmma (P^T, dS^T stay in registers)
//   dQ_i += dS_ij K_j                           SS wgmma on the dS^T tile (smem), fp32 atomics
// Q_i / dO_i arrive by TMA (thread 0 issues, one mbarrier per stage), lse_i / D_i by 4-byte
// cp.async, all double-buffered; K_j / V_j by cp.async once. Tiles are 128-byte swizzled.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda/cuda_api.h"
#include "cuda/fa2_bwd_common.cuh"
#include "cuda/fa2_bwd_sm90.h"
#include "cuda/fa2_bwd_traits.h"
#include "cuda/sm90_family.h"
#include "cuda/tensor_map.h"
#include "flashmin/cuda/copy.h"
#include "flashmin/cuda/mma.h"
#include "flashmin/cuda/tma.h"
#include "flashmin/cuda/wgmma.h"
#include "flashmin/dispatch.h"

namespace flashmin::cuda {
namespace {

using namespace bwd_detail;

// kDq: dQ by atomics into dq_accum (false in deterministic mode, where a separate kernel does dQ).
template <typename T, int kD, bool kDq>
__global__ void __launch_bounds__(Fa2BwdSm90Traits<kD>::kThreads, 1)
    fa2_bwd_dkdv_sm90_kernel(const AttnBwdParams p, const __grid_constant__ CUtensorMap tm_q,
                             const __grid_constant__ CUtensorMap tm_do,
                             const float* __restrict__ delta, const float* __restrict__ lse2,
                             float* __restrict__ dq_accum) {
  using Tr = Fa2BwdSm90Traits<kD>;
  constexpr int B_r = Tr::kBlockM, B_c = Tr::kBlockN, kThreads = Tr::kThreads;
  constexpr int kStages = Tr::kStages;
  constexpr int kKvBlock = B_c * 128;  // bytes between 64-column blocks of K_j / V_j / dS^T
  constexpr int kQBlock = B_r * 128;   // ... of Q_i / dO_i
  constexpr bool kSplitD = Tr::kSplitD;
  constexpr int kQCols = Tr::kQCols, kDCols = Tr::kDCols, kDqCols = Tr::kDqCols;
  using WgmmaS = Wgmma<T, kQCols>;   // S^T, dP^T : 64 keys x kQCols queries
  using WgmmaKV = Wgmma<T, kDCols>;  // dK_j, dV_j : 64 keys x kDCols columns
  using WgmmaQ = Wgmma<T, kDqCols>;  // dQ item   : 64 queries x kDqCols columns

  extern __shared__ __align__(16) unsigned char smem_raw[];
  // The swizzle pattern repeats every 1024 bytes: align the tiles to it.
  unsigned char* smem = smem_raw + ((1024 - smem_addr(smem_raw) % 1024) % 1024);
  T* K_s = reinterpret_cast<T*>(smem);                    // [B_c][kD] swizzled
  T* V_s = reinterpret_cast<T*>(smem + Tr::kTileKV);      // [B_c][kD]
  T* Q_s = reinterpret_cast<T*>(smem + 2 * Tr::kTileKV);  // [kStages][B_r][kD]
  T* dO_s = reinterpret_cast<T*>(smem + 2 * Tr::kTileKV + kStages * Tr::kTileQ);
  T* dS_s = reinterpret_cast<T*>(smem + 2 * Tr::kTileKV + 2 * kStages * Tr::kTileQ);   // dS^T
  T* P_s = reinterpret_cast<T*>(reinterpret_cast<unsigned char*>(dS_s) + Tr::kTileS);  // P^T
  float* lse_s =
      reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(P_s) + (kSplitD ? Tr::kTileS : 0));
  float* D_s = lse_s + 2 * B_r;                                   // lse_i, D_i : [2][B_r] each
  uint64_t* full_Q = reinterpret_cast<uint64_t*>(D_s + 2 * B_r);  // [kStages]: Q_i, dO_i landed

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wg = warp / 4, wi = warp % 4;  // warpgroup, warp inside it
  const int j = blockIdx.x;  // heavy (causal) blocks first: K_0 sees every query block
  const int h_k = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int S_q = static_cast<int>(p.seqlen_q), S_k = static_cast<int>(p.seqlen_k);
  const int d = static_cast<int>(p.head_dim);
  const int G = static_cast<int>(p.heads_q / p.heads_kv);
  const int key0 = j * B_c;
  const float scale_log2 = p.scale * kLog2e;
  // This warp's 16 keys (rows of S^T, dK_j, dV_j), its warpgroup's first query of S^T and
  // first column of dK_j / dV_j.
  const int kr0 = (kSplitD ? 0 : wg * 64) + wi * 16;
  const int qc0 = kSplitD ? wg * kQCols : 0;
  const int dc0 = kSplitD ? wg * kDCols : 0;

  // Query blocks that see at least one key of this block: i >= (key0 - offset) / B_r.
  const int T_r = (S_q + B_r - 1) / B_r;
  int i_begin = 0;
  if (p.is_causal) {
    const int64_t first = key0 - p.causal_offset;
    i_begin = first <= 0 ? 0 : static_cast<int>(first / B_r < T_r ? first / B_r : T_r);
  }
  const int n_i = T_r - i_begin;
  const int n_iter = G * n_i;  // (query head of the group, query block) pairs
  // Iteration `it` visits pair (it + rot) % n_iter. d256: CTAs start at different query blocks
  // (rot = j), so the concurrent CTAs of a head add into different dQ rows instead of all into
  // the same ones: +1.6-2.4% at d256 (H200); neutral to -3% at d128, so not there.
  const int rot = kSplitD && n_iter > 0 ? j % n_iter : 0;
  auto pair_of = [&](int it) { return it + rot < n_iter ? it + rot : it + rot - n_iter; };

  // Q_i, dO_i (TMA, thread 0), lse_i (log2 units) and D_i (cp.async) of iteration `it` into
  // stage it % 2. Padding rows: Q = dO = 0 (TMA zero fill), lse = D = 0, so P = 1 there but
  // every product they feed is 0.
  auto load_q_block = [&](int it) {
    const int stage = it % kStages;
    const int h = h_k * G + pair_of(it) / n_i, i = i_begin + pair_of(it) % n_i;
    if (tid == 0) {
      mbar_arrive_expect_tx(&full_Q[stage], 2 * Tr::kTileQ);
#pragma unroll
      for (int c = 0; c < kD / 64; ++c) {  // one box per 64 head-dim columns
        const int elems = stage * B_r * kD + c * B_r * 64;
        tma_load_4d(Q_s + elems, &tm_q, c * 64, i * B_r, h, static_cast<int>(b), &full_Q[stage]);
        tma_load_4d(dO_s + elems, &tm_do, c * 64, i * B_r, h, static_cast<int>(b), &full_Q[stage]);
      }
    }
    for (int r = tid; r < B_r; r += kThreads) {
      const int q = i * B_r + r;
      const int64_t row = (b * p.heads_q + h) * S_q + (q < S_q ? q : 0);
      cp_async_4(lse_s + (it % 2) * B_r + r, lse2 + row, q < S_q);
      cp_async_4(D_s + (it % 2) * B_r + r, delta + row, q < S_q);
    }
  };

  // dK_j, dV_j : (64 keys x kDCols) per warpgroup, fp32 wgmma accumulators
  float dK_acc[kDCols / 2];
  float dV_acc[kDCols / 2];
#pragma unroll
  for (int n = 0; n < kDCols / 2; ++n) dK_acc[n] = dV_acc[n] = 0.f;

  if (tid == 0) {
#pragma unroll
    for (int st = 0; st < kStages; ++st) mbar_init(&full_Q[st], 1);
  }
  __syncthreads();  // barriers initialised before any thread waits on them
  if (n_iter > 0) {
    const T* K = static_cast<const T*>(p.k) + row_offset(p.k_strides, b, h_k, 0);
    const T* V = static_cast<const T*>(p.v) + row_offset(p.v_strides, b, h_k, 0);
    cp_async_tile_sw128<B_c, kD, kThreads>(K_s, K, p.k_strides.seq, key0, S_k, d);
    cp_async_tile_sw128<B_c, kD, kThreads>(V_s, V, p.v_strides.seq, key0, S_k, d);
    load_q_block(0);
  }
  cp_async_commit();

  // Descriptors: this warpgroup's 64 rows of K_j / V_j as K-major A operands; K_j as the
  // MN-major B operand of dQ.
  const uint64_t desc_K = sw128_desc(reinterpret_cast<char*>(K_s) + kr0 / 64 * 64 * 128, 16, 1024);
  const uint64_t desc_V = sw128_desc(reinterpret_cast<char*>(V_s) + kr0 / 64 * 64 * 128, 16, 1024);
  const uint64_t desc_Kt = sw128_desc(K_s, kKvBlock, 1024);
  const uint64_t desc_dSt = sw128_desc(dS_s, kKvBlock, 1024);

  // dQ_i += dS_ij K_j : 64 x kDqCols items (item = row half m0, column block n0), one per
  // warpgroup at a time, contraction over the B_c keys; A = dS^T tile and B = K_j, both
  // MN-major. The first item is issued before dV_j / dK_j so its fp32 atomics overlap them.
  // (A wgmma under a runtime branch would serialise the pipeline, ptxas C7514: hence kDq.)
  constexpr int kColItems = kD / kDqCols;
  constexpr int kItems = (B_r / 64) * kColItems;
  float dQ_acc[kDqCols / 2];
  auto issue_dq = [&](float (&acc)[kDqCols / 2], int item) {
    const int m0 = (item / kColItems) * 64, n0 = (item % kColItems) * kDqCols;
#pragma unroll
    for (int ks = 0; ks < B_c / 16; ++ks) {
      WgmmaQ::template ss<1, 1>(acc, desc_plus(desc_dSt, (m0 / 64) * kKvBlock + ks * 2048),
                                desc_plus(desc_Kt, (n0 / 64) * kKvBlock + ks * 2048), ks > 0);
    }
    wgmma_commit();
  };
  // Adds item `item` of query block q0 (accumulators `acc`) into dQ (this head's rows).
  auto flush_dq = [&](float (&acc)[kDqCols / 2], int item, float* dQ, int q0) {
    pin_registers(acc);
    const int m0 = (item / kColItems) * 64, n0 = (item % kColItems) * kDqCols;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    // Item entirely inside dQ (all but the last query block, and d = kD): no bounds checks,
    // every address is this thread's base plus a constant (fewer integer instructions on a
    // path that has only 2 warps per scheduler to hide latency: +3-6% at d64 / d128, H200).
    if (q0 + m0 + 64 <= S_q && n0 + kDqCols <= d) {
      float* base =
          dQ + static_cast<int64_t>(q0 + m0 + wi * 16 + lane / 4) * kD + n0 + 2 * (lane % 4);
#pragma unroll
      for (int nt = 0; nt < kDqCols / 8; ++nt)
#pragma unroll
        for (int half = 0; half < 2; ++half)
          atomicAdd(reinterpret_cast<float2*>(base + half * 8 * kD + nt * 8),
                    make_float2(acc[nt * 4 + 2 * half], acc[nt * 4 + 2 * half + 1]));
      return;
    }
#endif
#pragma unroll
    for (int nt = 0; nt < kDqCols / 8; ++nt) {
      const int col = n0 + nt * 8 + 2 * (lane % 4);
      if (col >= d) continue;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int q = q0 + m0 + wi * 16 + lane / 4 + 8 * half;
        if (q >= S_q) continue;
        float* dst = dQ + static_cast<int64_t>(q) * kD + col;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        atomicAdd(reinterpret_cast<float2*>(dst),
                  make_float2(acc[nt * 4 + 2 * half], acc[nt * 4 + 2 * half + 1]));
#else  // never launched below sm_90 (the kernel body is a trap there); keeps sm_80 compiling
        atomicAdd(dst, acc[nt * 4 + 2 * half]);
        atomicAdd(dst + 1, acc[nt * 4 + 2 * half + 1]);
#endif
      }
    }
  };

  for (int it = 0; it < n_iter; ++it) {
    const int h = h_k * G + pair_of(it) / n_i, i = i_begin + pair_of(it) % n_i;
    const int q0 = i * B_r;
    const int stage = it % kStages;
    float* dQ = kDq ? dq_accum + (b * p.heads_q + h) * static_cast<int64_t>(S_q) * kD : nullptr;
    cp_async_wait<0>();
    mbar_wait(&full_Q[stage], (it / kStages) & 1);  // Q_i, dO_i landed (TMA)
    fence_proxy_async();  // cp.async writes (K_j, V_j) -> visible to wgmma
    __syncthreads();      // lse_i, D_i ready; every warp is done with iteration it-1
    if (it + 1 < n_iter) load_q_block(it + 1);
    cp_async_commit();

    const uint64_t desc_Q = sw128_desc(Q_s + stage * B_r * kD, kQBlock, 1024);
    const uint64_t desc_dO = sw128_desc(dO_s + stage * B_r * kD, kQBlock, 1024);
    const float* lse_i = lse_s + (it % 2) * B_r;  // (B_r), log2 units
    const float* D_i = D_s + (it % 2) * B_r;      // (B_r)

    // S^T_ij = K_j Q_i^T, then dP^T_ij = V_j dO_i^T : (64 keys x kQCols queries from qc0) per
    // warpgroup. Step ks contracts head-dim columns [16 ks, 16 ks + 16): 32 bytes into a
    // 64-column block.
    float S_acc[kQCols / 2];
    float dP_acc[kQCols / 2];
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      const int off = (ks / 4) * kKvBlock + (ks % 4) * 32;
      const int off_q = (ks / 4) * kQBlock + (ks % 4) * 32 + qc0 * 128;
      WgmmaS::template ss<0, 0>(S_acc, desc_plus(desc_K, off), desc_plus(desc_Q, off_q), ks > 0);
    }
    wgmma_commit();
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      const int off = (ks / 4) * kKvBlock + (ks % 4) * 32;
      const int off_q = (ks / 4) * kQBlock + (ks % 4) * 32 + qc0 * 128;
      WgmmaS::template ss<0, 0>(dP_acc, desc_plus(desc_V, off), desc_plus(desc_dO, off_q), ks > 0);
    }
    wgmma_commit();

    // Only diagonal blocks (causal) and the key tail need a mask. Element e of n8-tile nt is
    // (key kb + 8*(e/2), query qb + nt*8 + e%2); visible iff 8*(e/2) < key_room and
    // 8*(e/2) - nt*8 - e%2 <= diag.
    const bool need_mask =
        key0 + B_c > S_k || (p.is_causal && q0 + p.causal_offset < key0 + B_c - 1);
    const int kb = key0 + kr0 + lane / 4, qb = q0 + qc0 + 2 * (lane % 4);
    const int key_room = S_k - kb;
    const int diag = causal_diag(p, qb, kb);

    // P^T_ij = exp2(S^T * scale * log2(e) - lse_i * log2(e))
    wgmma_wait<1>();
    pin_registers(S_acc);
#pragma unroll
    for (int nt = 0; nt < kQCols / 8; ++nt) {
      const float2 l2 = *reinterpret_cast<const float2*>(lse_i + qc0 + nt * 8 + 2 * (lane % 4));
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool visible =
            !need_mask || (8 * (e / 2) < key_room && 8 * (e / 2) - nt * 8 - e % 2 <= diag);
        float& s = S_acc[nt * 4 + e];
        s = visible ? fast_exp2(fmaf(s, scale_log2, -(e % 2 ? l2.y : l2.x))) : 0.f;
      }
    }

    // dS^T_ij = P^T_ij ∘ (dP^T_ij - D_i), kept in dP_acc and stored (swizzled) for dQ_i.
    wgmma_wait<0>();
    pin_registers(dP_acc);
    char* dS_bytes = reinterpret_cast<char*>(dS_s);
#pragma unroll
    for (int nt = 0; nt < kQCols / 8; ++nt) {
      const int qc = qc0 + nt * 8 + 2 * (lane % 4);
      const float2 D2 = *reinterpret_cast<const float2*>(D_i + qc);
#pragma unroll
      for (int e = 0; e < 4; ++e)
        dP_acc[nt * 4 + e] = S_acc[nt * 4 + e] * (dP_acc[nt * 4 + e] - (e % 2 ? D2.y : D2.x));
      const int r = kr0 + lane / 4;
      *reinterpret_cast<uint32_t*>(dS_bytes + sw128_offset<B_c>(r, qc)) =
          MmaType<T>::pack(dP_acc[nt * 4 + 0], dP_acc[nt * 4 + 1]);
      *reinterpret_cast<uint32_t*>(dS_bytes + sw128_offset<B_c>(r + 8, qc)) =
          MmaType<T>::pack(dP_acc[nt * 4 + 2], dP_acc[nt * 4 + 3]);
      if constexpr (kSplitD) {  // P^T too: the other warpgroup's dV_j needs this query half
        char* P_bytes = reinterpret_cast<char*>(P_s);
        *reinterpret_cast<uint32_t*>(P_bytes + sw128_offset<B_c>(r, qc)) =
            MmaType<T>::pack(S_acc[nt * 4 + 0], S_acc[nt * 4 + 1]);
        *reinterpret_cast<uint32_t*>(P_bytes + sw128_offset<B_c>(r + 8, qc)) =
            MmaType<T>::pack(S_acc[nt * 4 + 2], S_acc[nt * 4 + 3]);
      }
    }

    // Both warpgroups' dS^T (and, split, P^T) slabs must be in smem before dQ_i and (split)
    // dV_j / dK_j read them.
    if (kSplitD || kDq) {
      fence_proxy_async();  // st.shared -> visible to wgmma
      named_barrier_sync(1, kThreads);
    }

    // dV_j += P^T_ij dO_i, dK_j += dS^T_ij Q_i : (64 keys x kDCols from dc0), contraction over
    // B_r queries; B = dO_i / Q_i MN-major (16 query rows = 2048 bytes per step).
    const int off_dc = (dc0 / 64) * kQBlock;
    if constexpr (kSplitD) {
      // A = P^T / dS^T tiles in smem (K-major: 16 queries = 32 bytes per step).
      const uint64_t desc_Pt = sw128_desc(P_s, 16, 1024);
      const uint64_t desc_dSt_k = sw128_desc(dS_s, 16, 1024);
      wgmma_fence();
      if constexpr (kDq) issue_dq(dQ_acc, wg);
#pragma unroll
      for (int ks = 0; ks < B_r / 16; ++ks)
        WgmmaKV::template ss<0, 1>(dV_acc, desc_plus(desc_Pt, ks * 32),
                                   desc_plus(desc_dO, off_dc + ks * 2048), 1);
#pragma unroll
      for (int ks = 0; ks < B_r / 16; ++ks)
        WgmmaKV::template ss<0, 1>(dK_acc, desc_plus(desc_dSt_k, ks * 32),
                                   desc_plus(desc_Q, off_dc + ks * 2048), 1);
      wgmma_commit();
    } else {
      uint32_t a_P[B_r / 16][4], a_dS[B_r / 16][4];
#pragma unroll
      for (int ks = 0; ks < B_r / 16; ++ks) {
        acc_to_a<T>(a_P[ks], &S_acc[8 * ks], &S_acc[8 * ks + 4]);
        acc_to_a<T>(a_dS[ks], &dP_acc[8 * ks], &dP_acc[8 * ks + 4]);
      }
      wgmma_fence();
      if constexpr (kDq) issue_dq(dQ_acc, wg);
#pragma unroll
      for (int ks = 0; ks < B_r / 16; ++ks)
        WgmmaKV::template rs<1>(dV_acc, a_P[ks], desc_plus(desc_dO, ks * 2048), 1);
#pragma unroll
      for (int ks = 0; ks < B_r / 16; ++ks)
        WgmmaKV::template rs<1>(dK_acc, a_dS[ks], desc_plus(desc_Q, ks * 2048), 1);
      wgmma_commit();
    }
    if constexpr (kDq) {
      wgmma_wait<1>();  // the first dQ item is done; dV_j / dK_j may still run
      flush_dq(dQ_acc, wg, dQ, q0);
#pragma unroll
      for (int item = wg + Tr::kWarpGroups; item < kItems; item += Tr::kWarpGroups) {
        wgmma_wait<0>();
        wgmma_fence();
        issue_dq(dQ_acc, item);
        wgmma_wait<0>();
        flush_dq(dQ_acc, item, dQ, q0);
      }
    }
    wgmma_wait<0>();  // dK/dV products done before their A registers and stage are reused
    pin_registers(dK_acc);
    pin_registers(dV_acc);
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
      const float* k2 = &dK_acc[nt * 4 + 2 * half];
      const float* v2 = &dV_acc[nt * 4 + 2 * half];
      *reinterpret_cast<uint32_t*>(dK + key * p.dk_strides.seq + col) =
          MmaType<T>::pack(p.scale * k2[0], p.scale * k2[1]);
      *reinterpret_cast<uint32_t*>(dV + key * p.dv_strides.seq + col) =
          MmaType<T>::pack(v2[0], v2[1]);
    }
  }
}

// False, launching nothing, when Q or dO has no TMA tensor map (boxes of 64 columns x B_r rows).
template <typename T, int kD>
bool launch_dkdv_sm90(const AttnBwdParams& p, const float* delta, const float* lse2,
                      float* dq_accum, cudaStream_t stream) {
  using Tr = Fa2BwdSm90Traits<kD>;
  CUtensorMap tm_q, tm_do;
  if (!make_attention_map(&tm_q, p.dtype, p.q, p.q_strides, p.batch, p.heads_q, p.seqlen_q,
                          p.head_dim, Tr::kBlockM) ||
      !make_attention_map(&tm_do, p.dtype, p.dout, p.dout_strides, p.batch, p.heads_q, p.seqlen_q,
                          p.head_dim, Tr::kBlockM))
    return false;
  const dim3 grid(static_cast<unsigned>((p.seqlen_k + Tr::kBlockN - 1) / Tr::kBlockN),
                  static_cast<unsigned>(p.heads_kv), static_cast<unsigned>(p.batch));
  auto kernel = dq_accum != nullptr ? fa2_bwd_dkdv_sm90_kernel<T, kD, true>
                                    : fa2_bwd_dkdv_sm90_kernel<T, kD, false>;
  FM_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(p, tm_q, tm_do, delta, lse2, dq_accum);
  FM_CUDA_CHECK(cudaGetLastError());
  return true;
}

}  // namespace

bool fa2_bwd_sm90_usable(const AttnBwdParams& p) {
  return FM_DISPATCH_HEAD_DIM(p.head_dim, kD, [] { return Fa2BwdSm90Traits<kD>::kSupported; }) &&
         sm90_family_available();
}

bool fa2_bwd_dkdv_sm90(const AttnBwdParams& p, const float* delta, const float* lse2,
                       float* dq_accum, cudaStream_t stream) {
  return FM_DISPATCH_HEAD_DIM(p.head_dim, kD, [&]() -> bool {
    if constexpr (Fa2BwdSm90Traits<kD>::kSupported) {
      if (p.dtype == DType::kFloat16)
        return launch_dkdv_sm90<__half, kD>(p, delta, lse2, dq_accum, stream);
      return launch_dkdv_sm90<__nv_bfloat16, kD>(p, delta, lse2, dq_accum, stream);
    } else {
      throw std::invalid_argument("fa2_bwd_dkdv_sm90: head-dim bucket " + std::to_string(kD) +
                                  " has no sm90 kernel (see fa2_bwd_sm90_usable)");
    }
  });
}

}  // namespace flashmin::cuda
