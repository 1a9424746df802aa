// Tile sizes of the Flash-Decoding kernels (src/cuda/decode.cu), in ONE place.
//
// One CTA = 4 warps works on one (split, batch b, KV head h_k, chunk of <= 64 query rows).
// The query rows of a CTA are every (query head of the group, query position) pair that reads
// K/V head h_k: rows = group_size * S_q, so K/V are read once per group (GQA packing).
// Each key/value block K_j, V_j (B_c keys) is one pipeline stage of ~32 KB in shared memory.
// kBulk: the stage is filled by the Hopper copy engine (cp.async.bulk, one copy per K/V row,
// completing on an mbarrier), rows padded by 16 bytes against bank conflicts. Otherwise
// (sm_80 path) by cp.async 16-byte copies into an XOR-swizzled tile.
#pragma once

#include <cstdint>

#include "flashmin/params.h"

namespace flashmin::cuda {

// Decode rounds head dims up to three buckets only (the kernel is memory-bound: padded
// columns are zero-filled in shared memory, never read from global memory).
constexpr int decode_head_dim_bucket(int64_t d) { return d <= 64 ? 64 : d <= 128 ? 128 : 256; }

template <typename T, int kD, bool kBulkCopy>
struct DecodeTraits {
  static constexpr bool kBulk = kBulkCopy;
  static constexpr int kHeadDim = kD;  // padded head dim (bucket)
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kRowTile = 16;                 // query rows of one warp (mma M)
  static constexpr int kMaxRows = kRowTile * kWarps;  // query rows of one CTA
  static constexpr int kKeyChunk = 16;                // keys per warp step (mma K of P V)
  static constexpr int kVec = 16 / int(sizeof(T));    // elements per 16-byte vector
  static constexpr int kVecsPerRow = kD / kVec;       // >= 8: the XOR swizzle needs 8
  static constexpr int kBc = 32 * 1024 / (2 * kD * int(sizeof(T)));  // B_c, keys per block
  static constexpr int kRowStride = kD + (kBulk ? kVec : 0);         // elements between tile rows
  static constexpr int kStageBytes = 2 * kBc * kRowStride * int(sizeof(T));  // K_j + V_j
  static constexpr int kStages = 3;                                    // cp.async pipeline depth
  static constexpr int kVecsPerThread = kBc * kVecsPerRow / kThreads;  // per tile per stage
  static constexpr int kOStride = kD + 4;  // fp32 row stride of the O scratch

  static_assert(kVecsPerRow >= 8, "swizzle needs >= 8 vectors per row");
  static_assert(kBc % kKeyChunk == 0, "B_c must be a multiple of 16 keys");
  static_assert(kBc * kVecsPerRow % kThreads == 0, "tile must split evenly over threads");
  static_assert(kWarps * kRowTile * kOStride * 4 <= kStages * kStageBytes,
                "epilogue O scratch must fit in the pipeline buffers");

  // Shared memory: Q_i (rows rounded up to 16) | K_j,V_j stages (reused for the O merge) |
  // per-warp m, l | per-warp P tile (fp32 path only).
  static constexpr int64_t q_bytes(int64_t rows_cta) {
    return ((rows_cta + kRowTile - 1) / kRowTile) * kRowTile * kRowStride * int64_t(sizeof(T));
  }
  static constexpr int64_t ml_bytes() { return 2 * kWarps * kRowTile * 4; }
  static constexpr int64_t p_bytes() { return kWarps * kRowTile * kKeyChunk * 4; }
  static constexpr int64_t barrier_bytes() { return 8 * kStages; }
  static constexpr int64_t smem_bytes(int64_t rows_cta) {
    return q_bytes(rows_cta) + int64_t(kStages) * kStageBytes + ml_bytes() + p_bytes() +
           barrier_bytes();
  }
};

// Splits never get fewer keys than this (the heuristic), so each split amortises its
// prologue and its partial-output write.
constexpr int64_t kDecodeMinKeysPerSplit = 256;
constexpr int64_t kDecodeMaxSplits = 256;

// Tuning / test hook (not part of the public API): how K/V reach shared memory and whether
// the combine kernel uses programmatic dependent launch. Defaults: the Hopper copy engine and
// PDL on sm_90+, cp.async elsewhere.
enum class DecodeCopyMode : int { kAuto = 0, kCpAsync = 1, kBulk = 2 };
void decode_set_tuning(DecodeCopyMode mode, bool allow_pdl);

}  // namespace flashmin::cuda
