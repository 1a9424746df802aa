// FA2 forward on Hopper warpgroup MMA (wgmma), fp16 / bf16, head-dim buckets 64, 128, 256.
// FlashAttention-2 paper, Algorithm 1, with the register layout of fa2_fwd.cu's sm80 family
// (the wgmma accumulator is the mma.sync layout per 16-row warp slice):
//
//   S_ij = Q_i K_j^T                      SS wgmma, Q_i and K_j K-major in swizzled smem
//   m_i' = max(m_i, rowmax(S_ij))         online softmax in the log2 domain
//   P_ij = exp2(S_ij * scale' - m_i')     packed to fp16/bf16 in registers
//   O_i  = O_i * exp2(m_i - m_i') + P_ij V_j      register-A wgmma, V_j MN-major
//
// A CTA owns B_r = 128 query rows, 64 per warpgroup. Software pipeline per block j: issue
// S_{i,j+1} and then P_ij V_j (both asynchronous), wait for S_{i,j+1} only, run its softmax
// while P_ij V_j is still on the tensor cores, then wait for it and rescale O_i. K_j and V_j have
// two buffers each, refilled by cp.async one block ahead (K_{j+2}, V_{j+1} land during block j).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/cuda_api.h"
#include "cuda/fa2_fwd_common.cuh"
#include "cuda/fa2_fwd_sm90.h"
#include "cuda/fa2_fwd_traits.h"
#include "cuda/sm90_family.h"
#include "flashmin/cuda/copy.h"
#include "flashmin/cuda/mma.h"
#include "flashmin/cuda/wgmma.h"
#include "flashmin/dispatch.h"

namespace flashmin::cuda {
namespace {

using namespace fa2_fwd_detail;

template <typename T, int kD>
__global__ void __launch_bounds__(Fa2FwdSm90Traits<kD>::kThreads, 1)
    fa2_fwd_sm90_kernel(const AttnParams p, const float scale_log2, const int T_r) {
  using Tr = Fa2FwdSm90Traits<kD>;
  constexpr int B_r = Tr::kBr, B_c = Tr::kBc, kThreads = Tr::kThreads;
  constexpr int kQBlock = B_r * 128;   // bytes between 64-column blocks of Q_i
  constexpr int kKvBlock = B_c * 128;  // ... of K_j, V_j
  constexpr int kNt = B_c / 8;         // n8 tiles of S_ij per thread
  constexpr int kDt = kD / 8;          // n8 tiles of O_i per thread
  using WgmmaS = Wgmma<T, B_c>;        // S_ij : 64 rows x B_c keys per warpgroup
  using WgmmaO = Wgmma<T, kD>;         // O_i  : 64 rows x kD per warpgroup

  extern __shared__ __align__(16) unsigned char smem_raw[];
  // The swizzle pattern repeats every 1024 bytes: align the tiles to it.
  unsigned char* smem = smem_raw + ((1024 - smem_addr(smem_raw) % 1024) % 1024);
  T* Q_s = reinterpret_cast<T*>(smem);                                 // [B_r][kD]; O_i at the end
  T* K_s = reinterpret_cast<T*>(smem + Tr::kTileQ);                    // [2][B_c][kD]
  T* V_s = reinterpret_cast<T*>(smem + Tr::kTileQ + 2 * Tr::kTileKV);  // [2][B_c][kD]

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wg = warp / 4, wi = warp % 4;  // warpgroup, warp inside it
  const int g = lane / 4, t = lane % 4;

  // One CTA per (b, h, i), i running backwards inside each (b, h): long causal blocks first.
  const int i = T_r - 1 - static_cast<int>(blockIdx.x % T_r);
  const int64_t bh = blockIdx.x / T_r;
  const int64_t h = bh % p.heads_q, b = bh / p.heads_q;
  const int64_t h_kv = h / (p.heads_q / p.heads_kv);  // GQA: read the shared K/V head directly
  const int S_q = static_cast<int>(p.seqlen_q), S_k = static_cast<int>(p.seqlen_k);
  const int d = static_cast<int>(p.head_dim);
  const int m0 = i * B_r;  // first query row of Q_i
  const int rows_q = min(B_r, S_q - m0);

  const T* Q = static_cast<const T*>(p.q) + b * p.q_strides.batch + h * p.q_strides.head;
  const T* K = static_cast<const T*>(p.k) + b * p.k_strides.batch + h_kv * p.k_strides.head;
  const T* V = static_cast<const T*>(p.v) + b * p.v_strides.batch + h_kv * p.v_strides.head;

  // Keys this CTA can see: [0, n_end); blocks ending at or before n_full need no mask.
  int n_end, n_full;
  causal_key_range(p, m0, rows_q, n_end, n_full);
  const int T_c = (n_end + B_c - 1) / B_c;

  // This thread's rows: row0 and row0 + 8 of Q_i. Their key limit (exclusive) in masked
  // blocks: min(S_k, max(0, diag + 8 hh)).
  const int row0 = wg * 64 + wi * 16 + g;
  const int diag = p.is_causal
                       ? clamp_int(int64_t(m0) + row0 + p.causal_offset + 1, -(1 << 30), 1 << 30)
                       : (1 << 30);

  float O[kD / 2];          // O_i : 64 x kD per warpgroup (wgmma accumulator layout)
  float S[B_c / 2];         // S_ij / P_ij (fp32)
  uint32_t P[B_c / 16][4];  // P_ij packed: the A operand of P_ij V_j
  float m_i[2] = {-INFINITY, -INFINITY}, l_i[2] = {0.f, 0.f};
#pragma unroll
  for (int n = 0; n < kD / 2; ++n) O[n] = 0.f;

  const uint64_t desc_Q = sw128_desc(reinterpret_cast<char*>(Q_s) + wg * 64 * 128, 16, 1024);
  const uint64_t desc_K0 = sw128_desc(K_s, 16, 1024);
  const uint64_t desc_V0 = sw128_desc(V_s, kKvBlock, 1024);

  auto load_kv = [&](T* buffers, const T* src, int64_t seq_stride, int block) {
    cp_async_tile_sw128<B_c, kD, kThreads>(buffers + (block % 2) * B_c * kD, src, seq_stride,
                                           block * B_c, S_k, d);
  };
  // S = Q_i K_j^T : kD / 16 steps of 16 head-dim columns (32 bytes into a 64-column block).
  auto issue_S = [&](int block) {
    const uint64_t desc_K = desc_plus(desc_K0, (block % 2) * Tr::kTileKV);
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      WgmmaS::template ss<0, 0>(S, desc_plus(desc_Q, (ks / 4) * kQBlock + (ks % 4) * 32),
                                desc_plus(desc_K, (ks / 4) * kKvBlock + (ks % 4) * 32), ks > 0);
    }
    wgmma_commit();
  };
  // O_i += P_ij V_j : B_c / 16 steps of 16 keys (2048 bytes down V_j).
  auto issue_PV = [&](int block) {
    const uint64_t desc_V = desc_plus(desc_V0, (block % 2) * Tr::kTileKV);
#pragma unroll
    for (int ks = 0; ks < B_c / 16; ++ks)
      WgmmaO::template rs<1>(O, P[ks], desc_plus(desc_V, ks * 2048), 1);
    wgmma_commit();
  };
  // Online softmax of block `block` in S: mask, m_i' = max(m_i, rowmax S), P = exp2(S scale' -
  // m_i'), rowsum; alpha = exp2(m_i - m_i') rescales O_i and l_i.
  auto softmax = [&](int block, float (&alpha)[2], float (&rowsum)[2]) {
    if ((block + 1) * B_c > n_full) {
      const int n0 = block * B_c + 2 * t;
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int lim = min(S_k, max(0, diag + 8 * (e >> 1)));
          if (n0 + 8 * nt + (e & 1) >= lim) S[nt * 4 + e] = -INFINITY;
        }
    }
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float mx = m_i[hh];
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt)
        mx = fmaxf(mx, fmaxf(S[nt * 4 + 2 * hh], S[nt * 4 + 2 * hh + 1]));
      mx = quad_max(mx);
      // A row that has seen no key yet keeps m = -inf; subtract 0 instead so exp2 gives 0.
      const float m_scaled = mx == -INFINITY ? 0.f : mx * scale_log2;
      alpha[hh] = fast_exp2(m_i[hh] * scale_log2 - m_scaled);
      m_i[hh] = mx;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
        for (int e = 2 * hh; e < 2 * hh + 2; ++e) {
          S[nt * 4 + e] = fast_exp2(fmaf(S[nt * 4 + e], scale_log2, -m_scaled));
          sum += S[nt * 4 + e];
        }
      rowsum[hh] = sum;
    }
  };
  auto pack_P = [&] {
#pragma unroll
    for (int ks = 0; ks < B_c / 16; ++ks) acc_to_a<T>(P[ks], &S[8 * ks], &S[8 * ks + 4]);
  };

  if (T_c > 0) {
    // ---- prologue: Q_i and K_0 (group 0), then K_1 and V_0 (group 1); S_i0 and its softmax
    cp_async_tile_sw128<B_r, kD, kThreads>(Q_s, Q, p.q_strides.seq, m0, S_q, d);
    load_kv(K_s, K, p.k_strides.seq, 0);
    cp_async_commit();
    if (T_c > 1) load_kv(K_s, K, p.k_strides.seq, 1);
    load_kv(V_s, V, p.v_strides.seq, 0);
    cp_async_commit();
    cp_async_wait<1>();
    fence_proxy_async();  // cp.async writes -> visible to wgmma
    __syncthreads();
    wgmma_fence();
    issue_S(0);
    wgmma_wait<0>();
    pin_registers(S);
    float alpha[2], rowsum[2];
    softmax(0, alpha, rowsum);
    l_i[0] = rowsum[0];
    l_i[1] = rowsum[1];
    pack_P();

    // Steady state: blocks 0 .. T_c - 2 (the last block, with no S_{i,j+1} to overlap, below).
    auto wait_and_refill = [&](int j) {
      // K_{j+1}, V_j landed; every warp is done with block j-1, whose buffers are refilled.
      cp_async_wait<0>();
      fence_proxy_async();
      __syncthreads();
      if (j + 2 < T_c) load_kv(K_s, K, p.k_strides.seq, j + 2);
      if (j + 1 < T_c) load_kv(V_s, V, p.v_strides.seq, j + 1);
      cp_async_commit();
    };
    for (int j = 0; j + 1 < T_c; ++j) {
      wait_and_refill(j);
      wgmma_fence();  // O_i rescaled and P_ij packed by ordinary instructions
      issue_S(j + 1);
      issue_PV(j);
      wgmma_wait<1>();  // S_{i,j+1} done; P_ij V_j may still run
      pin_registers(S);
      softmax(j + 1, alpha, rowsum);
      wgmma_wait<0>();
      pin_registers(O);
#pragma unroll
      for (int nt = 0; nt < kDt; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) O[nt * 4 + e] *= alpha[e >> 1];
      l_i[0] = l_i[0] * alpha[0] + rowsum[0];
      l_i[1] = l_i[1] * alpha[1] + rowsum[1];
      pack_P();
    }
    wait_and_refill(T_c - 1);
    wgmma_fence();
    issue_PV(T_c - 1);
    wgmma_wait<0>();
    pin_registers(O);
  }
  cp_async_wait<0>();

  // ---- epilogue: O_i / l_i through this warpgroup's rows of the Q_i tile (coalesced stores);
  // lse_i = m_i * scale + ln(l_i); rows that saw no key: O = 0, lse = -inf.
  char* O_s = reinterpret_cast<char*>(Q_s);
  float* lse = p.lse + (b * p.heads_q + h) * p.seqlen_q;
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const float l = quad_sum(l_i[hh]);
    const float inv_l = l > 0.f ? 1.f / l : 0.f;
    const int r = row0 + 8 * hh;
#pragma unroll
    for (int nt = 0; nt < kDt; ++nt) {
      *reinterpret_cast<uint32_t*>(O_s + sw128_offset<B_r>(r, nt * 8 + 2 * t)) =
          MmaType<T>::pack(O[nt * 4 + 2 * hh] * inv_l, O[nt * 4 + 2 * hh + 1] * inv_l);
    }
    if (t == 0 && r < rows_q)
      lse[m0 + r] = l > 0.f ? m_i[hh] * (scale_log2 * kLn2) + __log2f(l) * kLn2 : -INFINITY;
  }
  named_barrier_sync(1 + wg, 128);
  T* O_g = static_cast<T*>(p.o) + b * p.o_strides.batch + h * p.o_strides.head +
           int64_t(m0) * p.o_strides.seq;
  constexpr int kChunks = kD / 8;
#pragma unroll
  for (int n = 0; n < 64 * kChunks / 128; ++n) {
    const int idx = n * 128 + tid % 128;
    const int r = wg * 64 + idx / kChunks, c = (idx % kChunks) * 8;
    if (r < rows_q && c < d)
      *reinterpret_cast<uint4*>(O_g + r * p.o_strides.seq + c) =
          *reinterpret_cast<const uint4*>(O_s + sw128_offset<B_r>(r, c));
  }
}

template <typename T, int kD>
void launch_fwd_sm90(const AttnParams& p, cudaStream_t stream) {
  using Tr = Fa2FwdSm90Traits<kD>;
  const int64_t T_r = (p.seqlen_q + Tr::kBr - 1) / Tr::kBr;
  const int64_t blocks = T_r * p.batch * p.heads_q;
  if (blocks == 0) return;
  check_fwd_grid(p, blocks);
  auto kernel = fa2_fwd_sm90_kernel<T, kD>;
  FM_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  kernel<<<static_cast<unsigned>(blocks), Tr::kThreads, Tr::kSmemBytes, stream>>>(
      p, p.scale * kLog2e, static_cast<int>(T_r));
  FM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

bool fa2_fwd_sm90_usable(const AttnParams& p) {
  if (!(p.scale > 0.f)) return false;  // the sm80 family handles scale <= 0
  return FM_DISPATCH_HEAD_DIM(p.head_dim, kD, [] { return Fa2FwdSm90Traits<kD>::kSupported; }) &&
         sm90_family_available();
}

void fa2_fwd_sm90(const AttnParams& p, cudaStream_t stream) {
  FM_DISPATCH_HEAD_DIM(p.head_dim, kD, [&] {
    if constexpr (Fa2FwdSm90Traits<kD>::kSupported) {
      if (p.dtype == DType::kFloat16) return launch_fwd_sm90<__half, kD>(p, stream);
      return launch_fwd_sm90<__nv_bfloat16, kD>(p, stream);
    } else {
      throw std::invalid_argument("fa2_fwd_sm90: head-dim bucket " + std::to_string(kD) +
                                  " has no sm90 kernel (see fa2_fwd_sm90_usable)");
    }
  });
}

}  // namespace flashmin::cuda
