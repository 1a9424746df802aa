// Tile sizes of the Flash-Decoding kernels (src/cuda/decode.cu), in ONE place.
//
// One CTA = 4 compute warps (+ 1 producer warp on sm_90; the wide CTA: 8 compute warps, one CTA
// per SM) works on one (split, batch b, KV head h_k, chunk of <= 64 query rows). The query rows of
// a CTA are every (query head of the group, query position) pair that reads K/V head h_k: rows =
// group_size * S_q, so K/V are read once per group (GQA packing). Each key/value block K_j, V_j
// (B_c keys) is one pipeline stage of 32 KB (wide CTA: 64 KB) in shared memory. kBulk (sm_90): the
// stage is filled by the Tensor Memory Accelerator: a few tiled tensor copies
// (cp.async.bulk.tensor, boxes of 128 bytes x B_c rows with the 128-byte swizzle) issued by the
// producer warp and completing on a "full" mbarrier; warps release a stage on an "empty" mbarrier,
// so there is no CTA-wide barrier per block. Otherwise (sm_80 path) every thread issues 16-byte
// cp.async copies into an XOR-swizzled tile.
#pragma once

#include <cstdint>

#include "flashmin/params.h"

namespace flashmin::cuda {

// Decode rounds head dims up to three buckets only (the kernel is memory-bound: padded
// columns are zero-filled in shared memory, never read from global memory).
constexpr int decode_head_dim_bucket(int64_t d) { return d <= 64 ? 64 : d <= 128 ? 128 : 256; }

// Tensor-copy (sm_90) pipeline shape for rows of <= 256 bytes (16-bit D <= 128, fp32 D <= 64):
// consumer warps, bytes per K_j + V_j stage and per pipeline (overridable for experiments).
#ifndef FM_DECODE_BULK_WARPS
#define FM_DECODE_BULK_WARPS 4
#endif
#ifndef FM_DECODE_BULK_STAGE_KB
#define FM_DECODE_BULK_STAGE_KB 32
#endif
#ifndef FM_DECODE_PRODUCER_WARP
#define FM_DECODE_PRODUCER_WARP 1
#endif
#ifndef FM_DECODE_BULK_PIPE_KB
#define FM_DECODE_BULK_PIPE_KB 96
#endif
// The wide CTA's bytes in flight, and the fewest stages a tensor-copy pipeline may have.
#ifndef FM_DECODE_WIDE_PIPE_KB
#define FM_DECODE_WIDE_PIPE_KB 128
#endif
#ifndef FM_DECODE_BULK_MIN_STAGES
#define FM_DECODE_BULK_MIN_STAGES 3
#endif

// Experiments: a lower register cap for the tensor-copy kernels with rows <= 256 bytes (0 = 168).
#ifndef FM_DECODE_MAXNREG
#define FM_DECODE_MAXNREG 0
#endif
// A/B switch (session 8): every copy mode takes the cp.async path on sm_90 too.
#ifndef FM_DECODE_FORCE_CPASYNC
#define FM_DECODE_FORCE_CPASYNC 0
#endif
// Diagnostics (session 8; wrong results): 1 = consumers skip the math (the copy pipeline
// alone), 2 = the producer copies nothing (the math alone, on stale shared memory), 3 = the
// producer refills a stage as soon as its last copy landed and nobody consumes (the copies
// alone, no consumer round trip; split kernel only).
#ifndef FM_DECODE_DIAG
#define FM_DECODE_DIAG 0
#endif
// Diagnostic (wrong results): the split kernel returns after its loop (no merge, no output).
#ifndef FM_DECODE_DIAG_NO_EPILOGUE
#define FM_DECODE_DIAG_NO_EPILOGUE 0
#endif
// A/B switches of session 14 (defaults = the measured best): 0 skips the TMA boxes entirely past
// D (so the 256 bucket's loops keep a run-time exit); 0 keeps the key-major step to rows of
// <= 256 bytes.
#ifndef FM_DECODE_ALL_BOXES
#define FM_DECODE_ALL_BOXES 1
#endif
#ifndef FM_DECODE_KEY_MAJOR_WIDE_ROWS
#define FM_DECODE_KEY_MAJOR_WIDE_ROWS 1
#endif
// A/B switch of session 15: 0 never takes the dense CTA (DecodeTraits::kDense) for 512-byte rows.
#ifndef FM_DECODE_DENSE_WIDE_ROWS
#define FM_DECODE_DENSE_WIDE_ROWS 1
#endif

// kAltCtaShape: the heuristic's alternative CTA for the row width (DecodeParams::wide_ctas): the
// wide CTA for rows of <= 256 bytes, the dense CTA for 512-byte rows (both: kWide, kDense).
template <typename T, int kD, bool kBulkCopy, bool kCompactTile = false, bool kAltCtaShape = false,
          bool kKeyMajorStep = false>
struct DecodeTraits {
  static constexpr bool kBulk = kBulkCopy;
  // Compact tile (cp.async path; head dims <= 128, and the 256 bucket of fp16/bf16 since session
  // 14): 2 stages and <= 32 query rows per CTA, so a CTA fits the 99 KB of shared memory of
  // sm_86/89 parts (bf16 D128: 72.6 KB with <= 16 rows, the regular tile 107 KB; bf16 D256:
  // 84.6 KB with <= 32 rows). Chosen at run time only where the regular tile does not fit.
  static constexpr bool kCompact = kCompactTile && !kBulkCopy;
  static constexpr int kHeadDim = kD;  // padded head dim (bucket)
  // Narrow rows take the large-block tensor-copy configuration above; wider rows (and the
  // cp.async path) keep 4 consumer warps with 32 KB stages, 96 KB in flight.
  static constexpr bool kNarrow = kBulk && kD * int(sizeof(T)) <= 256;
  // Wide CTA (narrow rows only): 8 consumer warps, 64 KB stages, 128 KB in flight, one CTA
  // per SM. Chosen by the heuristic where one wave of such CTAs covers the work with <= 8
  // splits merged in a cluster: the SMs then progress evenly, and no combine kernel runs.
  static constexpr bool kAltCta = kAltCtaShape;  // as given (it may select nothing)
  static constexpr bool kWide = kAltCtaShape && kNarrow;
  // Key-major step (fp16/bf16, narrow rows, <= 8 query rows per CTA): S^T = K_j Q_i^T and
  // O^T += V_j^T P^T, keys on the mma's M side and the query rows on its N = 8 side, so no
  // tensor-core work goes to padding rows (the row-major step pads 1-8 rows to 16): half the
  // mma.sync and a third fewer ldmatrix per key, Q_i^T in registers.
  // Rows of 512 bytes (the 256 bucket of fp16/bf16) on the tensor-copy path too (session 14).
  static constexpr bool kKeyMajor =
      kKeyMajorStep && !kCompactTile && sizeof(T) == 2 &&
      (kD * int(sizeof(T)) <= 256 || (kBulk && FM_DECODE_KEY_MAJOR_WIDE_ROWS));
  static constexpr int kKeyMajorRows = 8;
  // Dense CTA (key-major tensor-copy CTAs with 512-byte rows): capped at 168 registers so two
  // share an SM (at 210 registers one does). Chosen by the heuristic where the CTAs outnumber
  // the SMs: more CTAs in flight hide each CTA's start and end (D192/D256 1.03-1.21x on several
  // waves, H200, session 15); a single wave keeps the uncapped CTA (the cap spills 58 bytes and
  // cost 7-9% there).
  static constexpr bool kDense =
      kAltCtaShape && kBulk && !kNarrow && kKeyMajor && FM_DECODE_DENSE_WIDE_ROWS;
  static constexpr int kWarps = kWide ? 8 : kNarrow ? FM_DECODE_BULK_WARPS : 4;  // consumer warps
  // Tensor-copy path: one extra warp is the producer (issues the TMA copies, never computes).
  // (FM_DECODE_PRODUCER_WARP=0: thread 0 refills stages between its own blocks instead.)
  static constexpr bool kProducerWarp = kBulk && FM_DECODE_PRODUCER_WARP;
  static constexpr int kThreads = 32 * (kWarps + (kProducerWarp ? 1 : 0));
  // Register cap: 2 CTAs of 5 warps (or one wide CTA of 9) put 3 warps on some SM
  // sub-partition (16K registers), so more than 168 registers means 1 CTA/SM (or no launch).
  // Stated for the tensor-copy kernels with rows <= 256 bytes and the dense CTA; the others may
  // use 255.
  static constexpr int kMaxRegs = kNarrow  ? (FM_DECODE_MAXNREG > 0 ? FM_DECODE_MAXNREG : 168)
                                  : kDense ? 168
                                           : 255;
  static constexpr int kRowTile = 16;                  // query rows of one warp (mma M)
  static constexpr int kMaxRows = kCompact ? 32 : 64;  // query rows of one CTA (<= 4 row tiles)
  static constexpr int kKeyChunk = 16;                 // keys per warp step (mma K of P V)
  static constexpr int kVec = 16 / int(sizeof(T));     // elements per 16-byte vector
  static constexpr int kVecsPerRow = kD / kVec;        // >= 8: the XOR swizzle needs 8
  static constexpr int kStageTarget = kWide     ? 64 * 1024
                                      : kNarrow ? FM_DECODE_BULK_STAGE_KB * 1024
                                                : 32 * 1024;
  static constexpr int kBcRaw = kStageTarget / (2 * kD * int(sizeof(T)));
  static constexpr int kBc = kBcRaw < 16 ? 16 : kBcRaw;              // B_c, keys per block
  static constexpr int kRowStride = kD;                              // elements between Q_i rows
  static constexpr int kStageBytes = 2 * kBc * kD * int(sizeof(T));  // K_j + V_j
  static constexpr int kPipeTarget = kWide     ? FM_DECODE_WIDE_PIPE_KB * 1024
                                     : kNarrow ? FM_DECODE_BULK_PIPE_KB * 1024
                                               : 96 * 1024;
  static constexpr int kStagesRaw = kPipeTarget / kStageBytes;
  // The wide CTA keeps 2 x 64 KB in flight (session 7, H200: 1-2% faster than 3 x 64 KB).
  static constexpr int kMinStages = kWide ? 2 : FM_DECODE_BULK_MIN_STAGES;
  static constexpr int kStages = kBulk ? (kStagesRaw < kMinStages ? kMinStages : kStagesRaw)
                                       : (kCompact ? 2 : 3);  // pipeline depth
  // Tensor-copy path: a K_j (or V_j) tile is B_c rows of kDBoxes 128-byte pieces (128/sizeof(T)
  // head-dim columns each), copied as one box of whole rows (head_dim == kD) or one box per
  // piece column; 128-byte swizzled either way (kv_off in decode.cu).
  static constexpr int kBoxCols = 128 / int(sizeof(T));
  static constexpr int kDBoxes = kD / kBoxCols;
  // Whether the head-dim columns past D always read as zero in shared memory, for every head dim
  // of the bucket: cp.async zero-fills them, and the TMA path issues every box of the bucket
  // (a box entirely past D is zero-filled without a memory read; since session 14: before, such
  // boxes were skipped and the 256 bucket's loops kept a run-time exit). Where they are zero, the
  // tensor-core loops run over the whole bucket without a run-time exit, so every ldmatrix of a
  // step can be in flight at once (session 9: with the exit, ptxas issued each ldmatrix only
  // after the previous mma, ~2000 clocks per 16-key chunk).
  static constexpr int kMinHeadDim = kD == 64 ? 1 : kD / 2 + 1;
  static constexpr bool kPadColsZero =
      !kBulk || FM_DECODE_ALL_BOXES || (kMinHeadDim + kBoxCols - 1) / kBoxCols == kDBoxes;
  static constexpr int kSmemAlign = kBulk ? 1024 : 0;  // the swizzle repeats every 1024 bytes
  static constexpr int kVecsPerThread = kBc * kVecsPerRow / kThreads;  // cp.async, per tile
  static constexpr int kOStride = kD + 4;  // fp32 row stride of the O scratch

  // Cluster merge (tensor-copy path with rows <= 256 bytes): the CTA's normalised O_s and lse_s
  // sit after the epilogue's O scratch, inside the pipeline buffers.
  static constexpr int64_t kOScratchBytes = int64_t(kWarps) * kRowTile * kOStride * 4;
  static constexpr int64_t kPartialBytes = int64_t(kMaxRows) * (kD + 1) * 4;
  static constexpr bool kClusterMerge =
      kNarrow && kOScratchBytes + kPartialBytes <= int64_t(kStages) * kStageBytes;

  static_assert(kVecsPerRow >= 8, "swizzle needs >= 8 vectors per row");
  static_assert(!kNarrow || kClusterMerge || FM_DECODE_BULK_PIPE_KB < 96,
                "the cluster merge fits the narrow configurations");
  static_assert(kD % kBoxCols == 0, "a row is a whole number of 128-byte boxes");
  static_assert(kBc <= 256 && kBc % 16 == 0, "tensor-copy box rows");
  static_assert(kBc % kKeyChunk == 0, "B_c must be a multiple of 16 keys");
  static_assert(kBulk || kBc * kVecsPerRow % kThreads == 0, "tile must split evenly over threads");
  static_assert(kMaxRows <= kRowTile * kWarps, "every row tile needs a warp");
  static_assert((kWarps & (kWarps - 1)) == 0, "warps are split between row tiles in powers of 2");
  // The epilogue's O scratch reuses the stages and, past them, Q_i (at least one row tile; dead
  // after the loop): the compact 256 tile needs 66.5 KB against its 64 KB of stages.
  static_assert(kWarps * kRowTile * kOStride * 4 <=
                    kStages * kStageBytes + kRowTile * kRowStride * int(sizeof(T)),
                "epilogue O scratch must fit in the pipeline buffers and Q_i");

  // Shared memory: K_j,V_j stages (reused for the O merge; 1024-byte aligned) | Q_i (rows
  // rounded up to 16) | per-warp m, l | per-warp P tile (fp32 path only) | mbarriers.
  static constexpr int64_t q_bytes(int64_t rows_cta) {
    return ((rows_cta + kRowTile - 1) / kRowTile) * kRowTile * kRowStride * int64_t(sizeof(T));
  }
  static constexpr int64_t ml_bytes() { return 2 * kWarps * kRowTile * 4; }
  static constexpr int64_t p_bytes() { return kWarps * kRowTile * kKeyChunk * 4; }
  static constexpr int64_t barrier_bytes() { return 2 * 8 * kStages; }  // full + empty
  static constexpr int64_t smem_bytes(int64_t rows_cta) {
    return kSmemAlign + q_bytes(rows_cta) + int64_t(kStages) * kStageBytes + ml_bytes() +
           p_bytes() + barrier_bytes();
  }
};

// Splits never get fewer keys than this (the heuristic), so each split amortises its
// prologue and its partial-output write.
constexpr int64_t kDecodeMinKeysPerSplit = 256;
constexpr int64_t kDecodeMaxSplits = 256;
// At most this many splits are merged inside a thread-block cluster (sm_90; 8 is the portable
// cluster size); more go through partials in global memory and the combine kernel.
constexpr int kDecodeMaxClusterSplits = 8;

// Tuning / test hook (not part of the public API): how K/V reach shared memory and whether
// the combine kernel uses programmatic dependent launch. Defaults: tensor copies (TMA) and PDL
// on sm_90+, cp.async elsewhere (and on sm_90 when a tensor map cannot describe the cache).
// kBulk = the TMA tensor-copy path.
// kCompact: the cp.async path with the compact tile (what sm_86/89 parts run), for tests on
// larger GPUs; head dims > 128 keep the regular tile there.
// kBulkWide: the tensor-copy path with the alternative CTA wherever it exists (the wide CTA for
// narrow rows, the dense CTA for 512-byte key-major rows), whatever the heuristic would choose.
enum class DecodeCopyMode : int { kAuto = 0, kCpAsync = 1, kBulk = 2, kCompact = 3, kBulkWide = 4 };
void decode_set_tuning(DecodeCopyMode mode, bool allow_pdl);
// Tuning / test hook: L2 promotion of the K/V tensor maps, in bytes (0, 64, 128 or 256; default
// 128, the box row width: promoting to 256 B also fetched the other half of each 256-byte row
// ahead of its own box, a quarter of the L2 lookups became hits on those lines, and the 1 GB
// shapes ran 3-6% slower (H200, session 7)).
void decode_set_tma_l2_promotion(int bytes);
// Tuning / test hook: whether the K/V tiles of a head dim that fills its bucket are copied by one
// TMA box of whole rows (default) or by one box per 128-byte column (as other head dims are).
void decode_set_full_row_boxes(bool allow);
// Tuning / test hook: whether CTAs with <= 8 query rows (fp16/bf16, tensor-copy path) take the
// key-major step (default) or the row-major one.
void decode_set_key_major(bool allow);
// Tuning / test hook: whether a few splits may merge inside a thread-block cluster (default on;
// off: every split count goes through the combine kernel).
void decode_set_cluster_merge(bool allow);
// Tuning / test hook: the persistent split kernel (sm_90, key-major rows, one split).
// 0 (default): where the (b, h_k) units outnumber the resident CTA slots, one CTA per slot;
// n > 0: wherever it applies, with at most n CTAs; < 0: never. blocked_units: how units go to
// CTAs, -1 (default) the launcher's rule, 0 strided (c, c + G, ...), 1 in runs of neighbours.
void decode_set_persistent(int max_ctas, int blocked_units = -1);
// Diagnostic hook: copies kTimelineFields values (TimelineField) of up to max_ctas CTAs of the last
// split-kernel launch into out and returns how many; 0 unless decode.cu was built with
// FM_DECODE_TIMELINE=1. ns = %globaltimer; cycles = clock64() sums over the CTA's key blocks.
enum TimelineField {
  kTlStart,       // ns, CTA start
  kTlEnd,         // ns, CTA end
  kTlSm,          // SM id
  kTlFirstBlock,  // ns, compute warp 0 sees its first block land
  kTlLoopEnd,     // ns, compute warp 0 leaves the key-block loop
  kTlWaitFull,    // cycles compute warp 0 waits for blocks to land
  kTlMath,        // cycles compute warp 0 spends in the math of its chunks
  kTlWaitEmpty,   // cycles the producer waits for stages to be released
  kTlBlocks,      // key blocks of the CTA
  kTlEpiSync,     // ns, thread 0 past the epilogue's first barrier
  kTlEpiMerged,   // ns, thread 0 past the barrier after the O, m, l stash
  kTlEpiWritten,  // ns, thread 0 done merging the warps and writing its outputs
  kTimelineFields
};
int64_t decode_timeline(unsigned long long* out, int64_t max_ctas);

}  // namespace flashmin::cuda
