// FA2 forward on Hopper warpgroup MMA (wgmma), fp16 / bf16, head-dim buckets 64, 128, 256.
// FlashAttention-2 paper, Algorithm 1, with the register layout of fa2_fwd.cu's sm80 family
// (the wgmma accumulator is the mma.sync layout per 16-row warp slice):
//
//   S_ij = Q_i K_j^T                      SS wgmma, Q_i and K_j K-major in swizzled smem
//   m_i' = max(m_i, rowmax(S_ij))         online softmax in the log2 domain
//   P_ij = exp2(S_ij * scale' - m_i')     packed to fp16/bf16 in registers
//   O_i  = O_i * exp2(m_i - m_i') + P_ij V_j      register-A wgmma, V_j MN-major
//
// Warp-specialised, persistent (the FlashAttention-3 structure): one CTA per SM walks a static
// list of (b, h, i) tiles. Warpgroup 0 is the producer: one thread issues TMA copies of Q_i and
// of K_j, V_j (two buffers each) into 128-byte-swizzled smem, each buffer paced by a "full"
// mbarrier (bytes landed) and an "empty" one (all 8 consumer warps done), and gives its
// registers away (setmaxnreg 24). Warpgroups 1-2 own 64 query rows each (240 registers).
// Software pipeline per block j: issue S_{i,j+1} and then P_ij V_j (both asynchronous), wait for
// S_{i,j+1} only, run its softmax while P_ij V_j is still on the tensor cores, then wait for it
// and rescale O_i. The producer runs ahead into the next tile, so its K/V and Q loads overlap
// the current tile's last blocks and epilogue (O_i is staged in its own smem tile).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/cuda_api.h"
#include "cuda/device_query.h"
#include "cuda/fa2_fwd_common.cuh"
#include "cuda/fa2_fwd_sm90.h"
#include "cuda/fa2_fwd_traits.h"
#include "cuda/sm90_family.h"
#include "cuda/tensor_map.h"
#include "flashmin/cuda/copy.h"
#include "flashmin/cuda/mma.h"
#include "flashmin/cuda/tma.h"
#include "flashmin/cuda/wgmma.h"
#include "flashmin/dispatch.h"

namespace flashmin::cuda {
namespace {

using namespace fa2_fwd_detail;

// A tile of the persistent walk: query block i of head h, batch b.
struct FwdTile {
  int64_t b, h;
  int i;
};

// Work items per (b, h) of the static schedule (see the kernel): T_r query blocks, or causal
// pairs of them.
__host__ __device__ inline int64_t fwd_items_per_head(bool causal, int64_t T_r) {
  return causal ? (T_r + 1) / 2 : T_r;
}

template <typename T, int kD, int kBlockN>
__global__ void __launch_bounds__(Fa2FwdSm90Traits<kD, kBlockN>::kThreads, 1)
    fa2_fwd_sm90_kernel(const AttnParams p, const __grid_constant__ CUtensorMap tm_q,
                        const __grid_constant__ CUtensorMap tm_k,
                        const __grid_constant__ CUtensorMap tm_v, const float scale_log2,
                        const int T_r, const int64_t num_work) {
#if FM_HAS_WGMMA
  using Tr = Fa2FwdSm90Traits<kD, kBlockN>;
  constexpr int B_r = Tr::kBr, B_c = Tr::kBc, kStages = Tr::kStages;
  constexpr int kQBlock = B_r * 128;   // bytes between 64-column blocks of Q_i
  constexpr int kKvBlock = B_c * 128;  // ... of K_j, V_j
  constexpr int kNt = B_c / 8;         // n8 tiles of S_ij per thread
  constexpr int kDt = kD / 8;          // n8 tiles of O_i per thread
  constexpr int kBoxes = kD / 64;      // TMA boxes (64 columns x rows) per tile
  using WgmmaS = Wgmma<T, B_c>;        // S_ij : 64 rows x B_c keys per warpgroup
  using WgmmaO = Wgmma<T, kD>;         // O_i  : 64 rows x kD per warpgroup

  extern __shared__ __align__(16) unsigned char smem_raw[];
  // The swizzle pattern repeats every 1024 bytes: align the tiles to it.
  unsigned char* smem = smem_raw + ((1024 - smem_addr(smem_raw) % 1024) % 1024);
  unsigned char* Q_s = smem;                         // [B_r][kD]
  unsigned char* O_s = Q_s + Tr::kTileQ;             // [B_r][kD] output staging (kStageO)
  unsigned char* K_s = O_s + (Tr::kStageO ? Tr::kTileQ : 0);  // [kStages][B_c][kD]
  unsigned char* V_s = K_s + kStages * Tr::kTileKV;  // [kStages][B_c][kD]
  uint64_t* bars = reinterpret_cast<uint64_t*>(V_s + kStages * Tr::kTileKV);
  uint64_t* full_Q = bars;       // Q_i landed
  uint64_t* empty_Q = bars + 1;  // every consumer warp is done with Q_i
  uint64_t* full_K = bars + 2;   // [kStages]
  uint64_t* empty_K = full_K + kStages;
  uint64_t* full_V = empty_K + kStages;
  uint64_t* empty_V = full_V + kStages;

  if (threadIdx.x == 0) {
    mbar_init(full_Q, 1);
    mbar_init(empty_Q, Tr::kConsumerWarps);
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full_K[s], 1);
      mbar_init(&empty_K[s], Tr::kConsumerWarps);
      mbar_init(&full_V[s], 1);
      mbar_init(&empty_V[s], Tr::kConsumerWarps);
    }
  }
  __syncthreads();

  // The CTA's k-th tile; false past the end; tile.i = -1 for a slot to skip. Static schedule,
  // (b, h) major so that the CTAs running at one time share K/V heads in L2. Non-causal: work
  // item w = tile w (equal tiles), query blocks backwards. Causal: work item w = the pair of
  // query blocks T_r - 1 - u and u of one (b, h) (heavy first), so that every item holds about
  // T_r + 1 key blocks and a round-robin over CTAs stays balanced.
  const bool paired = p.is_causal;
  const int64_t per_bh = fwd_items_per_head(paired, T_r);
  auto cta_tile = [&](int64_t k, FwdTile& tile) -> bool {
    const int64_t w = blockIdx.x + (paired ? k / 2 : k) * int64_t(gridDim.x);
    if (w >= num_work) return false;
    const int64_t bh = w / per_bh;
    const int u = static_cast<int>(w % per_bh);
    tile.b = bh / p.heads_q;
    tile.h = bh % p.heads_q;
    tile.i = T_r - 1 - u;
    if (paired && k % 2 == 1) tile.i = u == T_r - 1 - u ? -1 : u;
    return true;
  };
  const int S_q = static_cast<int>(p.seqlen_q);
  const int heads_per_kv = static_cast<int>(p.heads_q / p.heads_kv);
  // Keys the query block of tile `tile` can see: [0, n_end); blocks ending at or before n_full
  // need no mask.
  auto key_range = [&](const FwdTile& tile, int& n_end, int& n_full) {
    const int m0 = tile.i * B_r;
    causal_key_range(p, m0, min(B_r, S_q - m0), n_end, n_full);
  };

  if (threadIdx.x < 128) {
    // ================= producer warpgroup: one thread issues every copy =====================
    setmaxnreg_dec<Tr::kProducerRegs>();
    if (threadIdx.x != 0) return;
    int it = 0, n = 0;  // K/V blocks and tiles loaded so far
    FwdTile tile;
    for (int64_t k = 0; cta_tile(k, tile); ++k) {
      if (tile.i < 0) continue;
      const int h_kv = static_cast<int>(tile.h / heads_per_kv), b = static_cast<int>(tile.b);
      int n_end, n_full;
      key_range(tile, n_end, n_full);
      const int T_c = (n_end + B_c - 1) / B_c;
      auto load_kv = [&](unsigned char* bufs, uint64_t* full, uint64_t* empty,
                         const CUtensorMap* map, int j) {
        const int s = (it + j) % kStages;
        mbar_wait(&empty[s], (((it + j) / kStages) & 1) ^ 1);
        mbar_arrive_expect_tx(&full[s], Tr::kTileKV);
#pragma unroll
        for (int c = 0; c < kBoxes; ++c)
          tma_load_4d(bufs + s * Tr::kTileKV + c * kKvBlock, map, c * 64, j * B_c, h_kv, b,
                      &full[s]);
      };
      // K_0 first: it only waits for a K buffer, Q_i for the end of the last tile's S blocks.
      if (T_c > 0) load_kv(K_s, full_K, empty_K, &tm_k, 0);
      mbar_wait(empty_Q, (n & 1) ^ 1);
      mbar_arrive_expect_tx(full_Q, Tr::kTileQ);
#pragma unroll
      for (int c = 0; c < kBoxes; ++c)
        tma_load_4d(Q_s + c * kQBlock, &tm_q, c * 64, tile.i * B_r, static_cast<int>(tile.h), b,
                    full_Q);
      for (int j = 0; j < T_c; ++j) {
        if (j > 0) load_kv(K_s, full_K, empty_K, &tm_k, j);
        load_kv(V_s, full_V, empty_V, &tm_v, j);
      }
      it += T_c;
      ++n;
    }
    return;
  }

  // =================== consumer warpgroups: 64 query rows each ================================
  setmaxnreg_inc<Tr::kConsumerRegs>();
  const int tid = threadIdx.x - 128, lane = tid % 32;
  const int wg = tid / 128, wi = (tid / 32) % 4;  // consumer warpgroup, warp inside it
  const int g = lane / 4, t4 = lane % 4;
  const int S_k = static_cast<int>(p.seqlen_k), d = static_cast<int>(p.head_dim);
  const int row0 = wg * 64 + wi * 16 + g;  // this thread's rows of Q_i: row0, row0 + 8

  const uint64_t desc_Q = sw128_desc(Q_s + wg * 64 * 128, 16, 1024);
  const uint64_t desc_K0 = sw128_desc(K_s, 16, 1024);
  const uint64_t desc_V0 = sw128_desc(V_s, kKvBlock, 1024);

  float O[kD / 2];          // O_i : 64 x kD per warpgroup (wgmma accumulator layout)
  float S[B_c / 2];         // S_ij / P_ij (fp32)
  uint32_t P[B_c / 16][4];  // P_ij packed: the A operand of P_ij V_j

  // S = Q_i K_j^T : kD / 16 steps of 16 head-dim columns (32 bytes into a 64-column block).
  auto issue_S = [&](int stage) {
    const uint64_t desc_K = desc_plus(desc_K0, stage * Tr::kTileKV);
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      WgmmaS::template ss<0, 0>(S, desc_plus(desc_Q, (ks / 4) * kQBlock + (ks % 4) * 32),
                                desc_plus(desc_K, (ks / 4) * kKvBlock + (ks % 4) * 32), ks > 0);
    }
    wgmma_commit();
  };
  // O_i += P_ij V_j : B_c / 16 steps of 16 keys (2048 bytes down V_j).
  auto issue_PV = [&](int stage) {
    const uint64_t desc_V = desc_plus(desc_V0, stage * Tr::kTileKV);
#pragma unroll
    for (int ks = 0; ks < B_c / 16; ++ks)
      WgmmaO::template rs<1>(O, P[ks], desc_plus(desc_V, ks * 2048), 1);
    wgmma_commit();
  };
  auto release = [&](uint64_t* bar) {
    if (lane == 0) mbar_arrive(bar);
  };

  int it = 0, n = 0;
  FwdTile tile;
  for (int64_t k = 0; cta_tile(k, tile); ++k) {
    if (tile.i < 0) continue;
    const int m0 = tile.i * B_r;  // first query row of Q_i
    const int rows_q = min(B_r, S_q - m0);
    int n_end, n_full;
    key_range(tile, n_end, n_full);
    const int T_c = (n_end + B_c - 1) / B_c;
    // Key limit (exclusive) of this thread's rows in masked blocks: min(S_k, max(0, diag + 8hh)).
    const int diag = p.is_causal
                         ? clamp_int(int64_t(m0) + row0 + p.causal_offset + 1, -(1 << 30), 1 << 30)
                         : (1 << 30);

    // Online softmax of block `block` in S: mask, m_i' = max(m_i, rowmax S), P = exp2(S scale'
    // - m_i'), rowsum; alpha = exp2(m_i - m_i') rescales O_i and l_i.
    float m_i[2] = {-INFINITY, -INFINITY}, l_i[2] = {0.f, 0.f};
    auto softmax = [&](int block, float (&alpha)[2], float (&rowsum)[2]) {
      if ((block + 1) * B_c > n_full) {
        const int n0 = block * B_c + 2 * t4;
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
    auto stage = [&](int j) { return (it + j) % kStages; };
    auto parity = [&](int j) { return static_cast<uint32_t>(((it + j) / kStages) & 1); };

#pragma unroll
    for (int k = 0; k < kD / 2; ++k) O[k] = 0.f;
    mbar_wait(full_Q, n & 1);
    if (T_c > 0) {
      // ---- block 0: S_i0 and its softmax
      mbar_wait(&full_K[stage(0)], parity(0));
      wgmma_fence();
      issue_S(stage(0));
      wgmma_wait<0>();
      pin_registers(S);
      release(&empty_K[stage(0)]);
      float alpha[2], rowsum[2];
      softmax(0, alpha, rowsum);
      l_i[0] = rowsum[0];
      l_i[1] = rowsum[1];
      pack_P();
      // ---- steady state: S_{i,j+1} and P_ij V_j in flight together
      for (int j = 0; j + 1 < T_c; ++j) {
        mbar_wait(&full_K[stage(j + 1)], parity(j + 1));
        mbar_wait(&full_V[stage(j)], parity(j));
        wgmma_fence();  // O_i rescaled and P_ij packed by ordinary instructions
        issue_S(stage(j + 1));
        issue_PV(stage(j));
        wgmma_wait<1>();  // S_{i,j+1} done; P_ij V_j may still run
        pin_registers(S);
        release(&empty_K[stage(j + 1)]);
        softmax(j + 1, alpha, rowsum);
        wgmma_wait<0>();
        pin_registers(O);
        release(&empty_V[stage(j)]);
#pragma unroll
        for (int nt = 0; nt < kDt; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) O[nt * 4 + e] *= alpha[e >> 1];
        l_i[0] = l_i[0] * alpha[0] + rowsum[0];
        l_i[1] = l_i[1] * alpha[1] + rowsum[1];
        pack_P();
      }
      // ---- last block: P V only (peeled: no S_{i,j+1} to overlap)
      mbar_wait(&full_V[stage(T_c - 1)], parity(T_c - 1));
      wgmma_fence();
      issue_PV(stage(T_c - 1));
      wgmma_wait<0>();
      pin_registers(O);
      release(&empty_V[stage(T_c - 1)]);
      it += T_c;
    }
    release(empty_Q);  // the next Q_i loads during the epilogue

    // ---- epilogue: O_i / l_i through this warpgroup's rows of the staging tile (coalesced
    // stores) or straight from the registers; lse_i = m_i * scale + ln(l_i); rows that saw no
    // key: O = 0, lse = -inf.
    if constexpr (Tr::kStageO)
      named_barrier_sync(1 + wg, 128);  // this warpgroup's reads of the last tile's O are done
    float* lse = p.lse + (tile.b * p.heads_q + tile.h) * p.seqlen_q;
    float inv_l[2];
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const float l = quad_sum(l_i[hh]);
      inv_l[hh] = l > 0.f ? 1.f / l : 0.f;
      const int r = row0 + 8 * hh;
      if (t4 == 0 && r < rows_q)
        lse[m0 + r] = l > 0.f ? m_i[hh] * (scale_log2 * kLn2) + __log2f(l) * kLn2 : -INFINITY;
    }
    T* O_g = static_cast<T*>(p.o) + tile.b * p.o_strides.batch + tile.h * p.o_strides.head +
             int64_t(m0) * p.o_strides.seq;
    if constexpr (!Tr::kStageO) {
      // Two 16-bit columns per n8 tile and row: 4-byte stores, every byte of a 32-byte sector
      // written by the same warp (no staging tile: its 64 KB went to larger K_j / V_j blocks).
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int r = row0 + 8 * hh;
        if (r >= rows_q) continue;
        T* row_g = O_g + r * p.o_strides.seq + 2 * t4;
#pragma unroll
        for (int nt = 0; nt < kDt; ++nt)
          if (nt * 8 + 2 * t4 < d)
            *reinterpret_cast<uint32_t*>(row_g + nt * 8) = MmaType<T>::pack(
                O[nt * 4 + 2 * hh] * inv_l[hh], O[nt * 4 + 2 * hh + 1] * inv_l[hh]);
      }
      ++n;
      continue;
    }
    {
      // Rows row0 and row0 + 8 share row % 8, so one swizzle serves both: n8 tile nt sits in
      // 16-byte chunk (nt % 8) ^ (row0 % 8) of column block nt / 8 (sw128_offset, unrolled).
      unsigned char* row_s = O_s + row0 * 128 + 4 * t4;
      const int swz = (row0 % 8) * 16;
#pragma unroll
      for (int nt = 0; nt < kDt; ++nt) {
        unsigned char* at = row_s + (nt / 8) * (B_r * 128) + (((nt % 8) * 16) ^ swz);
        *reinterpret_cast<uint32_t*>(at) =
            MmaType<T>::pack(O[nt * 4] * inv_l[0], O[nt * 4 + 1] * inv_l[0]);
        *reinterpret_cast<uint32_t*>(at + 8 * 128) =
            MmaType<T>::pack(O[nt * 4 + 2] * inv_l[1], O[nt * 4 + 3] * inv_l[1]);
      }
    }
    named_barrier_sync(1 + wg, 128);
    constexpr int kChunks = kD / 8;
#pragma unroll
    for (int k = 0; k < 64 * kChunks / 128; ++k) {
      const int idx = k * 128 + tid % 128;
      const int r = wg * 64 + idx / kChunks, c = (idx % kChunks) * 8;
      if (r < rows_q && c < d)
        *reinterpret_cast<uint4*>(O_g + r * p.o_strides.seq + c) =
            *reinterpret_cast<const uint4*>(O_s + sw128_offset<B_r>(r, c));
    }
    ++n;
  }
#endif
}

// TMA tensor maps of Q, K, V; boxes of 64 columns x B_r (Q) or B_c (K, V) rows. False when a
// layout cannot be described. (An empty key axis is never read: T_c = 0.)
template <class Tr>
bool make_fwd_maps(const AttnParams& p, CUtensorMap (&maps)[3]) {
  return make_attention_map(&maps[0], p.dtype, p.q, p.q_strides, p.batch, p.heads_q, p.seqlen_q,
                            p.head_dim, Tr::kBr) &&
         make_attention_map(&maps[1], p.dtype, p.k, p.k_strides, p.batch, p.heads_kv, p.seqlen_k,
                            p.head_dim, Tr::kBc) &&
         make_attention_map(&maps[2], p.dtype, p.v, p.v_strides, p.batch, p.heads_kv, p.seqlen_k,
                            p.head_dim, Tr::kBc);
}

// Keys per K/V block. d256: 80-key blocks where every query block sees many keys (S_k >= 1024,
// causal >= 4096: 1.03-1.23x over 48 on the H100), 48 below (S = 512 and short causal shapes
// ran 0.87-0.97x with 80: more padded and diagonal keys, and the epilogue without staging).
template <int kD>
int fwd_sm90_block_n(const AttnParams& p) {
  if constexpr (kD == 256) {
    return p.seqlen_k >= (p.is_causal ? 4096 : 1024) ? kFwdSm90Bc256Long : kFwdSm90Bc256Short;
  } else {
    return Fa2FwdSm90Traits<kD>::kBc;
  }
}

// Persistent launch: one CTA per SM (fewer when there are fewer tiles).
template <typename T, int kD, int kBlockN>
bool launch_fwd_sm90(const AttnParams& p, cudaStream_t stream) {
  using Tr = Fa2FwdSm90Traits<kD, kBlockN>;
  const int64_t T_r = (p.seqlen_q + Tr::kBr - 1) / Tr::kBr;
  const int64_t tiles = T_r * p.batch * p.heads_q;
  if (tiles == 0) return true;
  check_fwd_grid(p, tiles);
  CUtensorMap maps[3];
  if (!make_fwd_maps<Tr>(p, maps)) return false;
  auto kernel = fa2_fwd_sm90_kernel<T, kD, kBlockN>;
  FM_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  // Work items of the static schedule (see the kernel): tiles, or causal pairs of tiles.
  const int64_t work = fwd_items_per_head(p.is_causal, T_r) * p.batch * p.heads_q;
  const int grid = static_cast<int>(std::min<int64_t>(work, sm_count(current_device())));
  kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(
      p, maps[0], maps[1], maps[2], p.scale * kLog2e, static_cast<int>(T_r), work);
  FM_CUDA_CHECK(cudaGetLastError());
  return true;
}

}  // namespace

bool fa2_fwd_sm90(const AttnParams& p, cudaStream_t stream) {
  if (!(p.scale > 0.f)) return false;  // the sm80 family handles scale <= 0
  if (!sm90_family_available()) return false;
  return FM_DISPATCH_HEAD_DIM(p.head_dim, kD, [&]() -> bool {
    if constexpr (Fa2FwdSm90Traits<kD>::kSupported) {
      if constexpr (kD == 256) {
        if (fwd_sm90_block_n<kD>(p) == kFwdSm90Bc256Long) {
          if (p.dtype == DType::kFloat16)
            return launch_fwd_sm90<__half, kD, kFwdSm90Bc256Long>(p, stream);
          return launch_fwd_sm90<__nv_bfloat16, kD, kFwdSm90Bc256Long>(p, stream);
        }
      }
      constexpr int kBc = Fa2FwdSm90Traits<kD>::kBc;
      if (p.dtype == DType::kFloat16) return launch_fwd_sm90<__half, kD, kBc>(p, stream);
      return launch_fwd_sm90<__nv_bfloat16, kD, kBc>(p, stream);
    } else {
      return false;
    }
  });
}

}  // namespace flashmin::cuda
