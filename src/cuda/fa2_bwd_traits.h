// Tile configuration of the FA2 backward, sm80 family (mma.sync m16n8k16, ldmatrix, cp.async;
// runs on sm_80 and newer). The ONE place where tile sizes per head-dim bucket live.
//
// Main kernel (fa2_bwd_dkdv): a CTA owns K_j, V_j (B_c rows) and loops over query blocks Q_i
// (B_r rows). Warps are laid out as kGroups slabs of 16 keys x kSplit column splits:
//   S^T_ij, dP^T_ij : each warp computes 16 keys x (B_r / kSplit) queries
//   dK_j, dV_j      : each warp accumulates 16 keys x (kD / kSplit) columns in fp32 registers
// kSplit = 2 halves the dK/dV registers per thread for the large head dims (d > 128), at the
// price of a trip of P^T through shared memory.
// Deterministic dQ kernel (fa2_bwd_dq): a CTA owns Q_i (kDqBlockM rows, 16 per warp) and loops
// over K_j, V_j blocks of kDqBlockN keys in a fixed order.
#pragma once

#include "cuda/device_query.h"  // kSm86MaxSmemBytes

namespace flashmin::cuda {

// Opt-in dynamic shared memory per block on sm_80 (A100): 163 KB; on sm_86 / sm_89 (RTX 30 / 40,
// A10, L4, L40): 99 KB.
constexpr int kSm80MaxSmemBytes = 163 * 1024;

// kCompact: the tiles for 99 KB parts (4 warps, B_c = 64 or 32, fewer stages), taken where the
// regular tiles do not fit the device (run_fa2_bwd_sm80; FLASHMIN_FORCE_COMPACT=1 forces them).
template <int kD, bool kCompact = false>
struct Fa2BwdSm80Traits {
  static_assert(kD % 32 == 0 && kD <= 256, "head-dim bucket");
  static constexpr int kHeadDim = kD;
  static constexpr int kMaxSmemBytes = kCompact ? kSm86MaxSmemBytes : kSm80MaxSmemBytes;

  // ---- main kernel: dK_j, dV_j (and dQ by fp32 atomics)
  // B_r: 128 for d64 halves the per-query-block fixed costs (barriers, lse/D loads, the
  // loop and mask set-up) per unit of MMA work; measured 1.11-1.13x on d64 (H200). Larger d has
  // no registers left for the 16 x 128 S^T / dP^T warp tiles.
  // Compact d256: B_r 32, so that one stage of Q_i, dO_i fits next to K_j, V_j in 99 KB.
  static constexpr int kBlockM = kCompact ? (kD == 256 ? 32 : 64) : kD == 64 ? 128 : 64;
  static constexpr int kWarps = kCompact ? 4 : 8;
  static constexpr int kSplit = kD <= 128 ? 1 : 2;  // warps per 16-key slab
  // lse_i (log2 units, precomputed) and D_i by cp.async instead of plain loads + smem stores,
  // which stalled the loading warps for a global-memory latency each query block. Measured
  // +1.5-4% for d <= 128; -2% for d256 (ptxas spills appear there), so only for kSplit == 1.
  static constexpr bool kLseAsync = kSplit == 1;
  static constexpr int kBlockN = 16 * kWarps / kSplit;  // B_c (128, or 64 when kSplit = 2)
  static constexpr int kPitch = kD + 8;                 // smem row pitch (elements), +16 B pad
  static constexpr int kPitchS = kBlockM + 8;           // pitch of the P^T / dS^T tiles
  // Columns of one dQ work item (16 query rows x kDqCols), a multiple of 16 dividing kD.
  // (B_r / 16) * (kD / kDqCols) items are spread over the warps: 8 or 16 items for 8 warps.
  static constexpr int kDqCols = kD == 32       ? 16
                                 : kD == 128    ? 64
                                 : kD == 256    ? 64
                                 : kD % 48 == 0 ? 48
                                                : 32;
  static_assert(kD % kDqCols == 0 && kDqCols % 16 == 0, "dQ work item");

  static constexpr int smem_bytes_for(int stages) {
    return 2 * (2 * kBlockN * kPitch + 2 * stages * kBlockM * kPitch +
                (kSplit > 1 ? 2 : 1) * kBlockN * kPitchS) +
           4 * 2 * 2 * kBlockM;  // + lse_i, D_i (fp32, double-buffered)
  }
  // Q_i / dO_i double-buffered (prefetch of block i+1 overlaps block i) when it fits sm_80.
  static constexpr int kStages = smem_bytes_for(2) <= kMaxSmemBytes ? 2 : 1;
  static constexpr int kSmemBytes = smem_bytes_for(kStages);

  // ---- deterministic dQ kernel (compact: 32-key blocks for d128, 16-key blocks above)
  static constexpr int kDqWarps = 4;
  static constexpr int kDqBlockM = 16 * kDqWarps;  // B_r = 64
  static constexpr int kDqBlockN = !kCompact   ? (kD <= 128 ? 64 : 32)
                                   : kD < 128  ? 64
                                   : kD == 128 ? 32
                                               : 16;
  static constexpr int kDqSmemBytes = 2 * (2 * kDqBlockM * kPitch + 2 * 2 * kDqBlockN * kPitch);

  static_assert(kSmemBytes <= kMaxSmemBytes && kDqSmemBytes <= kMaxSmemBytes, "smem");
};

// Whether a bucket's regular tiles need more than a 99 KB part gives (then the launcher has a
// compact instantiation to fall back on; d32's regular tiles fit everywhere).
template <int kD>
constexpr bool kBwdHasCompact = Fa2BwdSm80Traits<kD>::kSmemBytes > kSm86MaxSmemBytes ||
                                Fa2BwdSm80Traits<kD>::kDqSmemBytes > kSm86MaxSmemBytes;

// ---- sm90 family (wgmma, sm_90a only; src/cuda/fa2_bwd_sm90.cu) ------------------------------
// Main kernel: 2 warpgroups. wgmma's M is 64, so a warpgroup's dK_j / dV_j slice is 64 keys x
// kDCols columns (fp32: kDCols registers per thread for both).
//   d64, d128 : each warpgroup owns 64 keys (B_c = 128) and all kD columns.
//     S^T_ij, dP^T_ij : 64 keys x B_r queries (SS wgmma, K-major K_j / Q_i)
//     dV_j, dK_j      : register-A wgmma: P^T / dS^T never leave registers
//   d256 (kSplitD)   : 64 x 256 would need 256 registers, so both warpgroups share 64 keys
//     (B_c = 64): each computes S^T / dP^T for half of the B_r queries, P^T and dS^T meet in
//     smem, and each accumulates dK_j / dV_j for half of the columns (SS wgmma).
//   dQ_i : 64 x 64 items (one per warpgroup; d256: two each, in turn) (SS wgmma on the dS^T
//     tile and K_j, both MN-major), fp32 atomics. B_r = 128 for d64 (two row halves), 64 otherwise.
// Head dims 32 / 96 / 160 / 192 / 224 stay on the sm80 family.
template <int kD>
struct Fa2BwdSm90Traits {
  static constexpr bool kSupported = kD == 64 || kD == 128 || kD == 256;
  static constexpr bool kSplitD = kD == 256;
  static constexpr int kWarpGroups = 2;
  static constexpr int kThreads = 128 * kWarpGroups;
  static constexpr int kBlockN = kSplitD ? 64 : 64 * kWarpGroups;  // B_c
  static constexpr int kBlockM = kD == 64 ? 128 : 64;              // B_r
  static constexpr int kQCols = kSplitD ? kBlockM / 2 : kBlockM;   // queries of S^T per WG
  static constexpr int kDCols = kSplitD ? kD / 2 : kD;             // dK/dV columns per WG
  static constexpr int kDqCols = 64;  // dQ item: 64 x 64 (d256: two per warpgroup, in turn)
  static constexpr int kStages = 2;   // Q_i / dO_i double buffer
  static_assert(!kSupported || (kBlockM / 64) * (kD / kDqCols) % kWarpGroups == 0,
                "dQ items spread evenly over the warpgroups");
  // Tiles in bytes (16-bit elements), each a multiple of 1024 (the swizzle period).
  static constexpr int kTileKV = kBlockN * kD * 2;
  static constexpr int kTileQ = kBlockM * kD * 2;
  static constexpr int kTileS = kBlockN * kBlockM * 2;  // dS^T (and P^T when kSplitD)
  static constexpr int kSmemBytes =
      1024 /* alignment */ + 2 * kTileKV + 2 * kStages * kTileQ + (kSplitD ? 2 : 1) * kTileS +
      2 * 2 * kBlockM * 4 /* lse_i, D_i x 2 */ + 8 * kStages /* mbarriers */;
};

}  // namespace flashmin::cuda
