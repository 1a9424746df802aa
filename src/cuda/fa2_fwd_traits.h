// Tile configuration of the FA2 forward kernels, per head-dim bucket: the ONE place that says
// B_r, B_c, warps and pipeline stages. The launcher (fa2_fwd.cu) reads these; nothing else
// mirrors them.
#pragma once

#include <cstddef>

namespace flashmin::cuda {

// One tile configuration of the sm80 family (mma.sync m16n8k16 + ldmatrix + cp.async).
//   kD       head dim bucket (multiple of 32; the real head dim is zero-padded up to it)
//   kBr      B_r: query rows per CTA (Q_i)
//   kBc      B_c: key/value rows per inner step (K_j, V_j)
//   kWarps   warps per CTA; (kSplit = 1) warp w owns rows [w * kBr / kWarps, (w + 1) * kBr /
//            kWarps) of Q_i, i.e. kMt = kBr / (16 * kWarps) m16 row tiles (one 16-row tile in the
//            FA2 paper; two tiles let every K/V fragment loaded from smem feed two MMAs)
//   kStages  K_j/V_j smem buffers. >= 2: a ring, K_{j+s}, V_{j+s} are in flight while j is
//            computed. 1: one K and one V buffer (FA2's order): V_j streams in during
//            S_ij = Q_i K_j^T, K_{j+1} during softmax and P_ij V_j (half the smem of 2 stages)
//   kQInRegs Q_i fragments are loaded once into registers (else re-read from smem each step)
//   kMinCtas minimum CTAs per SM for __launch_bounds__ (caps registers per thread)
//   kSplit   warps sharing one row group (1 or 2). With 2, a warp pair owns 16 * kMt rows: warp
//            h of the pair computes S_ij for keys [h B_c / 2, (h + 1) B_c / 2) of K_j and O_i
//            for head-dim columns [h kD / 2, (h + 1) kD / 2); the pair swaps row maxima and
//            P_ij halves through smem. O_i per warp halves, so kMt = 2 fits at kD = 256 and
//            every K/V fragment feeds two MMAs.
template <int kD_, int kBr_, int kBc_, int kWarps_, int kStages_, bool kQInRegs_, int kMinCtas_,
          int kSplit_ = 1>
struct Fa2FwdSm80Config {
  static constexpr int kD = kD_;
  static constexpr int kBr = kBr_;
  static constexpr int kBc = kBc_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kStages = kStages_;
  static constexpr bool kQInRegs = kQInRegs_;
  static constexpr int kMinCtas = kMinCtas_;
  static constexpr int kSplit = kSplit_;

  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kMt = kBr * kSplit / (16 * kWarps);
  static constexpr int kBcW = kBc / kSplit;  // keys of S_ij per warp
  static constexpr int kDW = kD / kSplit;    // head-dim columns of O_i per warp
  // Padded smem row (elements): +8 elements = +16 bytes moves each row by 4 banks, so the 8 row
  // addresses of one ldmatrix phase land in 8 distinct 16-byte bank groups (kD / 8 is even).
  static constexpr int kSmemStride = kD + 8;

  static_assert(kD % 32 == 0 && kD <= 256, "head-dim buckets are multiples of 32 up to 256");
  static_assert(kSplit == 1 || kSplit == 2, "row groups of one or two warps");
  static_assert(kMt >= 1 && kBr * kSplit == 16 * kWarps * kMt,
                "B_r must be a multiple of 16 * warps / split");
  static_assert(kBcW % 16 == 0, "B_c / split must be a multiple of 16 (k of the P V mma)");
  static_assert(kDW % 16 == 0, "kD / split must be a multiple of 16");
  static_assert(kStages >= 1, "at least one K/V buffer");

  // Pair exchange (kSplit == 2), per warp: row maxima (2 kMt floats per lane) and this warp's
  // P_ij fragments (kBcW / 16 k-steps x kMt x 16 bytes per lane).
  static constexpr size_t kXchgMaxFloats = 2 * kMt * 32;
  static constexpr size_t kXchgPVec = (kBcW / 16) * kMt * 32;  // uint4 per warp
  static constexpr size_t xchg_bytes() {
    return kSplit == 1 ? 0 : size_t(kWarps) * (kXchgMaxFloats * 4 + kXchgPVec * 16);
  }

  // Q_i (B_r x kD) + kStages x (K_j, V_j) (B_c x kD each), padded rows; + the pair exchange.
  template <typename T>
  static constexpr size_t smem_bytes() {
    return sizeof(T) * size_t(kBr + 2 * kStages * kBc) * kSmemStride + xchg_bytes();
  }
};

// Per-bucket choice (measured on an H200, see docs/kernels_fa2_fwd.md).
//                                                 D   B_r  B_c  warps stages QinRegs minCTAs split
template <int kD>
struct Fa2FwdSm80Traits;
template <>
struct Fa2FwdSm80Traits<32> : Fa2FwdSm80Config<32, 128, 64, 4, 2, true, 2> {};
template <>
struct Fa2FwdSm80Traits<64> : Fa2FwdSm80Config<64, 128, 64, 4, 2, true, 2> {};
template <>
struct Fa2FwdSm80Traits<96> : Fa2FwdSm80Config<96, 128, 64, 4, 2, false, 2> {};
template <>
struct Fa2FwdSm80Traits<128> : Fa2FwdSm80Config<128, 128, 48, 4, 2, false, 2> {};
// d160 / d192: one K/V stage (64.5 / 76.8 KB), so two CTAs share an SM on sm_80 and sm_90 and the
// tile fits the 99 KB of sm_86/89; two stages (107.5 / 128 KB) ran 1.02x / 1.41x slower (H200,
// sm80 family forced, bf16 B 2 H 16 S 2k; tests/cuda/compact_tiles_bench.py).
template <>
struct Fa2FwdSm80Traits<160> : Fa2FwdSm80Config<160, 64, 64, 4, 1, false, 1> {};
template <>
struct Fa2FwdSm80Traits<192> : Fa2FwdSm80Config<192, 64, 64, 4, 1, false, 1> {};
template <>
struct Fa2FwdSm80Traits<224> : Fa2FwdSm80Config<224, 64, 32, 4, 2, false, 2> {};
template <>
struct Fa2FwdSm80Traits<256> : Fa2FwdSm80Config<256, 128, 64, 8, 1, false, 1, 2> {};

// Compact tiles for 99 KB parts (sm_86 / sm_89: RTX 30 / 40, A10, L4, L40) where a bucket's
// regular tile needs more shared memory per block (only d256: one K/V stage, B_r 64, B_c 32).
// The launcher takes them by the device's limit (FLASHMIN_FORCE_COMPACT=1 forces them, for tests).
template <int kD>
struct Fa2FwdSm80CompactTraits {
  using type = Fa2FwdSm80Traits<kD>;  // the regular tile fits 99 KB
};
template <>
struct Fa2FwdSm80CompactTraits<256> {
  using type = Fa2FwdSm80Config<256, 64, 32, 8, 1, false, 1, 2>;
};

// ---- sm90 family (wgmma + TMA, sm_90a only; src/cuda/fa2_fwd_sm90.cu) ----------------------
// Warp-specialised and persistent: warpgroup 0 is the producer (one thread issues TMA copies of
// Q_i, K_j, V_j into 128-byte-swizzled smem, paced by full / empty mbarriers), warpgroups 1..2
// are consumers of 64 query rows each (B_r = 128). Per K/V block: S_ij = Q_i K_j^T as an SS
// wgmma (64 x B_c per warpgroup), O_i += P_ij V_j as a register-A wgmma (64 x kD); S_{i,j+1} is
// issued before P_ij V_j so the softmax of block j+1 overlaps it. A CTA per SM walks the
// (b, h, i) tiles; the producer loads the next tile's K/V (and Q) during the current epilogue.
// Registers per consumer thread: O_i kD/2 + S_ij B_c/2 + P_ij B_c/4.
// d256 has two block widths: kFwdSm90Bc256Short keys (the O staging tile fits) and
// kFwdSm90Bc256Long (it does not; O_i is written from the registers), chosen per call by
// fwd_sm90_block_n (fa2_fwd_sm90.cu).
inline constexpr int kFwdSm90Bc256Short = 48;
inline constexpr int kFwdSm90Bc256Long = 80;

template <int kD, int kBlockN = kD == 256 ? kFwdSm90Bc256Short : 128>
struct Fa2FwdSm90Traits {
  static constexpr bool kSupported = kD == 64 || kD == 128 || kD == 256;
  static constexpr int kConsumerWGs = 2;
  static constexpr int kThreads = 128 * (1 + kConsumerWGs);  // + the producer warpgroup
  static constexpr int kConsumerWarps = 4 * kConsumerWGs;
  // setmaxnreg split of the 64K registers: 128 x 24 + 256 x 240 = 64512.
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = 240;
  static constexpr int kBr = 64 * kConsumerWGs;
  // d256: O_i's 128 accumulators, S_ij and P_ij share the consumers' 240 registers; B_c = 48
  // leaves room for the O staging tile (227 KB), 80 does not and writes O_i from registers.
  static constexpr int kBc = kBlockN;
  static constexpr int kStages = 2;             // K_j and V_j buffers each
  static constexpr int kTileQ = kBr * kD * 2;   // bytes (16-bit elements)
  static constexpr int kTileKV = kBc * kD * 2;  // one K_j or V_j buffer
  static constexpr int kBarrierBytes = 8 * (2 + 4 * kStages);
  static constexpr int kSmemMax = 227 * 1024;
  // O_i goes through its own staging tile (16-byte coalesced stores; its own, so the next
  // tile's Q_i loads during the epilogue) where that fits, else straight from the registers.
  static constexpr bool kStageO =
      1024 + 2 * kTileQ + 2 * kStages * kTileKV + kBarrierBytes <= kSmemMax;
  // Q_i, the O_i staging tile (kStageO), K_j and V_j buffers, mbarriers.
  static constexpr int kSmemBytes =
      1024 /* alignment */ + (kStageO ? 2 : 1) * kTileQ + 2 * kStages * kTileKV + kBarrierBytes;
  static_assert(!kSupported || kSmemBytes <= kSmemMax, "smem");
  static_assert(128 * kProducerRegs + 128 * kConsumerWGs * kConsumerRegs <= 65536, "register file");
};

}  // namespace flashmin::cuda
