// Flash-Decoding: split-KV attention over a (contiguous or paged) KV cache, then a combine.
//
// Decoding is memory-bound: each query row (S_q <= 16 per sequence) is tiny next to the cache,
// so the work is spread over the KEYS. Two kernels run on the stream, in order:
//   1. (only with k_new/v_new) the attention kernels below first write the new keys into the
//      cache at [seqlens[b], seqlens[b] + S_new): each CTA the keys of its own range (fused
//      append), before its copies read them.
//   2. decode_split_kernel   one CTA per (batch b, KV head h_k, <= 64 query rows, split s).
//      Its query rows are ALL (query head of the group, query position) pairs that read h_k
//      (GQA packing): K_j, V_j are read from global memory once per group. Split s covers a
//      contiguous range of key blocks computed on the device from L_b. The CTA streams
//      K_j, V_j (B_c keys, 32 KB per stage) through a 3-stage pipeline (sm_90: TMA tensor
//      copies issued by a dedicated producer warp, full/empty mbarriers; sm_80: cp.async);
//      each compute warp runs the FA2 inner loop (online softmax) on 16 query rows x 16 keys at a
//      time, on tensor cores (mma.sync m16n8k16) for fp16/bf16 or on CUDA cores for fp32; a
//      CTA with <= 8 fp16/bf16 rows runs it key-major instead (S^T = K Q^T, keys on the mma's
//      M side: no work on padding rows). Warps
//      that share a row tile split the keys of a block and merge at the end. With one split it
//      writes O and lse directly; otherwise a normalised partial O_s and its lse_s (fp32, in the
//      workspace).
//   3. decode_combine_kernel merges the splits through their lse (SoftmaxState):
//      O = sum_s exp(lse_s - lse) O_s,  lse = log sum_s exp(lse_s).
//
// Lengths are read on the device only (CUDA graphs). Invalid device data (seqlens[b] < 0,
// seqlens[b] + S_new beyond the cache, a page index outside [0, num_pages)) is never used to
// address memory; that sequence's O and lse become NaN instead.
#include <cuda.h>  // CUtensorMap (types only: the encoder is fetched through the runtime)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>

#include "cuda/cuda_api.h"
#include "cuda/decode_traits.h"
#include "cuda/device_query.h"
#include "cuda/tensor_map.h"
#include "flashmin/cuda/cluster.h"
#include "flashmin/cuda/copy.h"
#include "flashmin/cuda/mma.h"
#include "flashmin/cuda/tma.h"
#include "flashmin/online_softmax.h"

namespace flashmin::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---------------------------------------------------------------------------------------------
// Small device helpers
// ---------------------------------------------------------------------------------------------

// Element offset of 16-byte vector `vec` of row `row` in a shared-memory tile, laid out so that
// ldmatrix (8 rows, same column) and the fp32 path's per-lane row reads hit 8 different bank
// groups.
// Q_i (and K_j, V_j on the cp.async path): [rows][kD], vector index XORed with row % 8.
template <class Tr>
__device__ __forceinline__ int q_off(int row, int vec) {
  return row * Tr::kHeadDim + ((vec ^ (row & 7)) * Tr::kVec);
}
// K_j, V_j on the tensor-copy path: 128-byte lines, TMA's 128-byte swizzle puts 16-byte chunk c
// of line i at chunk c ^ (i % 8) (the tile starts 1024-byte aligned). Row r's 128-byte piece h
// is line r * per_row + h * per_piece: {kDBoxes, 1} when one box copies whole rows in memory
// order (head_dim fills the bucket), {1, B_c} when each 128-byte column is its own box.
struct KvLines {
  int per_row, per_piece;
};
template <class Tr>
__device__ __forceinline__ int kv_off(int row, int vec, KvLines kl) {
  if constexpr (Tr::kBulk) {
    const int line = row * kl.per_row + (vec / 8) * kl.per_piece;
    return line * Tr::kBoxCols + (((vec % 8) ^ (line & 7)) * Tr::kVec);
  }
  return q_off<Tr>(row, vec);
}

// ---- Hopper (sm_90): mbarriers and TMA copies come from flashmin/cuda/tma.h (FM_HAS_TMA: sm_90
// and newer device code); PDL here, under the same condition.

// Programmatic dependent launch (sm_90): a kernel launched with it may start while the previous
// kernel on the stream finishes; it must wait before touching global memory. The split kernels
// wait for the append (or whatever the caller ran before); the combine waits for the splits.
// Without a programmatic dependency the wait returns at once.
__device__ __forceinline__ void pdl_launch_dependents() {
#if FM_HAS_TMA
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait_primary() {
#if FM_HAS_TMA
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Tokens of sequence b after the append (L_b), and whether its device-side length is valid.
struct SeqLen {
  int64_t L;
  bool valid;
};

// ceil(a / b) for 0 <= a, 1 <= b, in 32 bits wherever a fits (a key-block count always does
// for a cache that fits in memory).
__device__ __forceinline__ int64_t ceil_div_small(int64_t a, int b) {
  if (a <= int64_t(INT_MAX) - b) return (unsigned(a) + unsigned(b) - 1) / unsigned(b);
  return (a + b - 1) / b;
}

__device__ __forceinline__ SeqLen seq_len(const DecodeParams& p, int64_t b) {
  const int64_t cached = p.cache_seqlens ? int64_t(p.cache_seqlens[b]) : p.max_seqlen_k;
  const bool valid = cached >= 0 && cached + p.seqlen_new <= p.max_seqlen_k;
  return {valid ? cached + p.seqlen_new : 0, valid};
}

// Diagnostic, FM_DECODE_TIMELINE=1 builds only: kTimelineFields values per CTA of the last
// split-kernel launch (TimelineField), read back with decode_timeline() (decode_check:
// FM_TIMELINE=1). The phase sums are clock64() cycles of compute warp 0 and the producer.
#ifndef FM_DECODE_TIMELINE
#define FM_DECODE_TIMELINE 0
#endif
#if FM_DECODE_TIMELINE
constexpr int64_t kTimelineMaxCtas = int64_t(1) << 16;
__device__ unsigned long long g_timeline[kTimelineFields * kTimelineMaxCtas];
__device__ long long g_timeline_ctas;
__device__ __forceinline__ unsigned long long global_timer_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
  return t;
}
#endif

// Where key `key` of sequence b lives: (index on the cache's first axis, index on its seq
// axis). Contiguous: (b, key). Paged: (block_table[b][key / page_size], key % page_size).
// Returns false (and touches nothing) when the page index is out of range.
__device__ __forceinline__ bool locate_key(const DecodeParams& p, int64_t b, int64_t key,
                                           int log2_page, int64_t* slot, int64_t* pos) {
  if (p.block_table == nullptr) {
    *slot = b;
    *pos = key;
    return true;
  }
  const int64_t page = p.block_table[b * p.block_table_stride + (key >> log2_page)];
  *slot = page;
  *pos = key & (p.page_size - 1);
  return page >= 0 && page < p.num_pages;
}

__device__ __forceinline__ int64_t offset(const Strides& s, int64_t slot, int64_t head,
                                          int64_t pos) {
  return slot * s.batch + head * s.head + pos * s.seq;
}

__device__ __forceinline__ float4 ld4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}

__device__ __forceinline__ float dot4(float4 a, float4 b) {
  return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

// Store 4 consecutive fp32 values as T (8 or 16 bytes, aligned by construction).
template <typename T>
__device__ __forceinline__ void store4(T* dst, float4 v) {
  if constexpr (std::is_same_v<T, float>) {
    *reinterpret_cast<float4*>(dst) = v;
  } else {
    uint2 packed;
    packed.x = MmaType<T>::pack(v.x, v.y);
    packed.y = MmaType<T>::pack(v.z, v.w);
    *reinterpret_cast<uint2*>(dst) = packed;
  }
}

// ---------------------------------------------------------------------------------------------
// Warp-level tile math. Both paths keep S (16 x 16) and O (16 x D) in the mma.sync C-fragment
// layout: lane holds rows lane/4 and lane/4 + 8, columns 2*(lane%4) + {0, 1} of every 8-wide
// column tile. The softmax code is therefore shared.
// ---------------------------------------------------------------------------------------------

// Online softmax, one row (log2 units): m moves to max(m, chunk_max); returns the factor that
// rescales what was accumulated under the old m (0 while the row was empty) and sets m_ref, the
// value the chunk's scores are exponentiated against (0 for a fully masked row: P = 0).
__device__ __forceinline__ float advance_row_max(float& m, float chunk_max, float& m_ref) {
  const float m_new = fmaxf(m, chunk_max);
  const float alpha = m == -INFINITY ? 0.0f : fast_exp2(m - m_new);
  m_ref = m_new == -INFINITY ? 0.0f : m_new;
  m = m_new;
  return alpha;
}

// Masks for the packed 16-bit V values of a 16-key chunk that a lane holds in both steps' V
// fragments: keys 2*(lane%4) + {0, 1} (keep_lo) and those + 8 (keep_hi), low half first. Keys
// >= kv_valid are past the sequence's end and may hold NaN (P = 0 does not cancel it).
__device__ __forceinline__ void v_key_masks(int lane, int kv_valid, uint32_t& keep_lo,
                                            uint32_t& keep_hi) {
  const int k2 = 2 * (lane % 4);
  keep_lo = (k2 < kv_valid ? 0x0000ffffu : 0u) | (k2 + 1 < kv_valid ? 0xffff0000u : 0u);
  keep_hi = (k2 + 8 < kv_valid ? 0x0000ffffu : 0u) | (k2 + 9 < kv_valid ? 0xffff0000u : 0u);
}

// S (16 x 16) = Q_i (16 x D) K_c^T; Q_i = rows r0.. of Qs, K_c = keys c0.. of Ks.
template <class Tr, typename T>
__device__ __forceinline__ void warp_qk(float (&S)[2][4], const T* Qs, int r0, const T* Ks, int c0,
                                        int lane, int head_dim, KvLines kl) {
  if constexpr (std::is_same_v<T, float>) {
    // CUDA cores: each lane computes its 8 entries as dot products over float4 vectors.
    const int g = lane / 4, q = lane % 4;
#pragma unroll
    for (int v = 0; v < Tr::kVecsPerRow; ++v) {
      if (v * Tr::kVec >= head_dim) break;  // padded columns are zero anyway
      const float4 qa = ld4(Qs + q_off<Tr>(r0 + g, v));
      const float4 qb = ld4(Qs + q_off<Tr>(r0 + g + 8, v));
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float4 k = ld4(Ks + kv_off<Tr>(c0 + nt * 8 + 2 * q + e, v, kl));
          S[nt][e] += dot4(qa, k);
          S[nt][2 + e] += dot4(qb, k);
        }
      }
    }
  } else {
    // Tensor cores: A = Q_i (16 x 16 slice of D), B = K_c^T (16 x 16): ldmatrix (non-trans)
    // of K rows gives the "col" B fragment directly; matrices 0,1 are keys 0-7, 2,3 keys 8-15.
    // Where the padded columns are zero (kPadColsZero) the loop has no run-time exit.
#pragma unroll
    for (int ks = 0; ks < Tr::kHeadDim / 16; ++ks) {
      if (!Tr::kPadColsZero && ks * 16 >= head_dim) break;
      uint32_t a[4], bk[4];
      ldmatrix_x4(a, Qs + q_off<Tr>(r0 + ((lane / 8) & 1) * 8 + lane % 8, ks * 2 + lane / 16));
      ldmatrix_x4(bk,
                  Ks + kv_off<Tr>(c0 + (lane / 16) * 8 + lane % 8, ks * 2 + ((lane / 8) & 1), kl));
      const uint32_t b0[2] = {bk[0], bk[1]}, b1[2] = {bk[2], bk[3]};
      MmaType<T>::mma(S[0], a, b0);
      MmaType<T>::mma(S[1], a, b1);
    }
  }
}

// O (16 x D) += P (16 x 16) V_c (16 x D); V_c = keys c0.. of Vs. Pw: this warp's 16x16 fp32
// scratch (fp32 path only). Only the first `kv_valid` keys of V_c are real: the rows past the
// sequence's end may hold anything (NaN), and P = 0 there does not cancel NaN, so those V values
// are replaced by zeros in registers.
template <class Tr, typename T>
__device__ __forceinline__ void warp_pv(float (&O)[Tr::kHeadDim / 8][4], const float (&P)[2][4],
                                        const T* Vs, int c0, int lane, int head_dim, float* Pw,
                                        int kv_valid, KvLines kl) {
  if constexpr (std::is_same_v<T, float>) {
    // Exact fp32: P goes through shared memory so each lane can read its two rows whole.
    const int g = lane / 4, q = lane % 4;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) Pw[(g + 8 * (e >> 1)) * 16 + nt * 8 + 2 * q + (e & 1)] = P[nt][e];
    }
    __syncwarp();
#pragma unroll 4
    for (int k = 0; k < 16; ++k) {
      const float pa = Pw[g * 16 + k], pb = Pw[(g + 8) * 16 + k];
#pragma unroll
      for (int nd = 0; nd < Tr::kHeadDim / 8; ++nd) {
        if (nd * 8 >= head_dim) break;
        float2 v = *reinterpret_cast<const float2*>(Vs + kv_off<Tr>(c0 + k, nd * 2 + q / 2, kl) +
                                                    (q & 1) * 2);
        if (k >= kv_valid) v = make_float2(0.0f, 0.0f);
        O[nd][0] += pa * v.x;
        O[nd][1] += pa * v.y;
        O[nd][2] += pb * v.x;
        O[nd][3] += pb * v.y;
      }
    }
    __syncwarp();
  } else {
    // The S accumulator layout of two 8-key tiles is exactly the A fragment of P (16 x 16).
    const uint32_t a[4] = {MmaType<T>::pack(P[0][0], P[0][1]), MmaType<T>::pack(P[0][2], P[0][3]),
                           MmaType<T>::pack(P[1][0], P[1][1]), MmaType<T>::pack(P[1][2], P[1][3])};
    // B = V_c (16 keys x 16 cols): ldmatrix.trans; matrices 0,1 = keys 0-7 / 8-15 of cols 0-7,
    // 2,3 the same keys of cols 8-15. Lane holds keys 2q, 2q+1 (bv[0], bv[2]) and 8+2q, 9+2q
    // (bv[1], bv[3]), low half first: mask the halves of keys >= kv_valid.
    uint32_t keep_lo, keep_hi;
    v_key_masks(lane, kv_valid, keep_lo, keep_hi);
#pragma unroll
    for (int nd = 0; nd < Tr::kHeadDim / 16; ++nd) {
      if (!Tr::kPadColsZero && nd * 16 >= head_dim) break;
      uint32_t bv[4];
      ldmatrix_x4_trans(
          bv, Vs + kv_off<Tr>(c0 + ((lane / 8) & 1) * 8 + lane % 8, nd * 2 + lane / 16, kl));
      bv[0] &= keep_lo;
      bv[2] &= keep_lo;
      bv[1] &= keep_hi;
      bv[3] &= keep_hi;
      const uint32_t b0[2] = {bv[0], bv[1]}, b1[2] = {bv[2], bv[3]};
      MmaType<T>::mma(O[2 * nd], a, b0);
      MmaType<T>::mma(O[2 * nd + 1], a, b1);
    }
  }
}

// Row-major step (every other case): one warp, query rows r0..r0+15 of Q_i, keys c0..c0+15 of
// K_j, V_j (key0 = their index in the sequence); O, m, l in the C layout of rows lane/4 and
// lane/4 + 8 (m in log2 units; l the lane's partial row sum, completed over the quad at the end).
template <class Tr, typename T>
__device__ __forceinline__ void warp_step_row_major(float (&O)[Tr::kHeadDim / 8][4],
                                                    float (&m_i)[2], float (&l_i)[2], const T* Qs,
                                                    int r0, const T* Ks, const T* Vs, int c0,
                                                    int lane, int head_dim, KvLines kl, float* Pw,
                                                    int64_t key0, bool need_mask,
                                                    int64_t causal_limit, const int64_t (&t_row)[2],
                                                    float scale_log2, int kv_valid) {
  // S_ij = Q_i K_j^T   (16 rows x 16 keys)
  float S[2][4] = {};
  warp_qk<Tr>(S, Qs, r0, Ks, c0, lane, head_dim, kl);

  // Scale into the log2 domain; mask keys past each row's causal limit (and past L).
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      S[nt][e] *= scale_log2;
      const int64_t key = key0 + nt * 8 + 2 * (lane % 4) + (e & 1);
      if (need_mask && key > causal_limit + t_row[e >> 1]) S[nt][e] = -INFINITY;
    }
  }

  // m_i = max(m_i, rowmax(S_ij)),  P_ij = exp2(S_ij - m_i),  l_i = e^(..) l_i + rowsum(P);
  // O_i is rescaled once for both row halves, and not at all when no row maximum moved.
  float alpha[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float mx = fmaxf(fmaxf(S[0][2 * h], S[0][2 * h + 1]), fmaxf(S[1][2 * h], S[1][2 * h + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    float m_ref;
    alpha[h] = advance_row_max(m_i[h], mx, m_ref);
    float row_sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        S[nt][2 * h + e] = fast_exp2(S[nt][2 * h + e] - m_ref);
        row_sum += S[nt][2 * h + e];
      }
    }
    l_i[h] = l_i[h] * alpha[h] + row_sum;
  }
  if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
    for (int nd = 0; nd < Tr::kHeadDim / 8; ++nd) {
      O[nd][0] *= alpha[0];
      O[nd][1] *= alpha[0];
      O[nd][2] *= alpha[1];
      O[nd][3] *= alpha[1];
    }
  }

  // O_i += P_ij V_j
  warp_pv<Tr>(O, S, Vs, c0, lane, head_dim, Pw, kv_valid, kl);
}

// Key-major step (DecodeTraits::kKeyMajor: fp16/bf16, <= 8 query rows). One warp, keys
// c0..c0+15 of K_j, V_j (key0 = their index in the sequence):
//   S^T (16 keys x 8 rows) = K_c Q_i^T     A = K_c (ldmatrix), B = Q_i^T (qf, registers)
//   O^T (D x 8 rows)      += V_c^T P^T     A = V_c^T (ldmatrix.trans), B = P^T (movmatrix)
// C layout: lane holds keys (or head-dim columns) lane/4 and lane/4 + 8 of query rows
// 2*(lane%4) + {0, 1}; m, l are those two rows' running max (log2 units) and partial sum (the
// lanes with the same lane%4 hold the rest of the sum).
template <class Tr, typename T>
__device__ __forceinline__ void warp_step_key_major(float (&Ot)[Tr::kHeadDim / 16][4],
                                                    float (&m)[2], float (&l)[2],
                                                    const uint32_t (&qf)[Tr::kHeadDim / 16][2],
                                                    const T* Ks, const T* Vs, int c0, int lane,
                                                    KvLines kl, int64_t key0, bool need_mask,
                                                    int64_t causal_limit, const int64_t (&t_row)[2],
                                                    float scale_log2, int kv_valid) {
  constexpr int kSteps = Tr::kHeadDim / 16;
  static_assert(Tr::kPadColsZero, "the key-major loops run over the whole bucket");
  // S^T, as two accumulators over the even / odd head-dim steps (two short mma chains). All
  // K_c fragments are loaded before the first mma (no run-time exit: padded columns are zero).
  uint32_t a[kSteps][4];  // keys 0-7 / 8-15 x columns 0-7, then the same keys x columns 8-15
#pragma unroll
  for (int ks = 0; ks < kSteps; ++ks)
    ldmatrix_x4(a[ks],
                Ks + kv_off<Tr>(c0 + ((lane / 8) & 1) * 8 + lane % 8, ks * 2 + lane / 16, kl));
  float acc[2][4] = {};
#pragma unroll
  for (int ks = 0; ks < kSteps; ++ks) MmaType<T>::mma(acc[ks & 1], a[ks], qf[ks]);
  // s[e]: key lane/4 + 8*(e/2) of row 2*(lane%4) + e%2. Scale; mask past the causal limit.
  float s[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    s[e] = (acc[0][e] + acc[1][e]) * scale_log2;
    const int64_t key = key0 + lane / 4 + 8 * (e >> 1);
    if (need_mask && key > causal_limit + t_row[e & 1]) s[e] = -INFINITY;
  }
  // Online softmax per row: the maximum over the 16 keys is over the lanes with the same lane%4.
  float alpha[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float mx = fmaxf(s[h], s[2 + h]);
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
    float m_ref;
    alpha[h] = advance_row_max(m[h], mx, m_ref);
    s[h] = fast_exp2(s[h] - m_ref);
    s[2 + h] = fast_exp2(s[2 + h] - m_ref);
    l[h] = l[h] * alpha[h] + s[h] + s[2 + h];
  }
  if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
    for (int nd = 0; nd < kSteps; ++nd) {
      Ot[nd][0] *= alpha[0];
      Ot[nd][1] *= alpha[1];
      Ot[nd][2] *= alpha[0];
      Ot[nd][3] *= alpha[1];
    }
  }
  // P^T as the B operand (keys x rows): the transposes of P's two 8x8 key halves.
  const uint32_t b[2] = {movmatrix_trans(MmaType<T>::pack(s[0], s[1])),
                         movmatrix_trans(MmaType<T>::pack(s[2], s[3]))};
  // V_c^T fragments: a[0], a[1] hold keys 2*(lane%4) + {0, 1}, a[2], a[3] those + 8; V rows past
  // the sequence's end may hold NaN (P = 0 does not cancel it): zero them in registers.
  uint32_t keep_lo, keep_hi;
  v_key_masks(lane, kv_valid, keep_lo, keep_hi);
  // (keys 0-7, columns 0-7), (keys 0-7, 8-15), (keys 8-15, 0-7), (8-15, 8-15) of each step;
  // padded columns only feed O^T rows that are never written out.
#pragma unroll
  for (int nd = 0; nd < kSteps; ++nd)
    ldmatrix_x4_trans(
        a[nd], Vs + kv_off<Tr>(c0 + (lane / 16) * 8 + lane % 8, nd * 2 + ((lane / 8) & 1), kl));
#pragma unroll
  for (int nd = 0; nd < kSteps; ++nd) {
    a[nd][0] &= keep_lo;
    a[nd][1] &= keep_lo;
    a[nd][2] &= keep_hi;
    a[nd][3] &= keep_hi;
    MmaType<T>::mma(Ot[nd], a[nd], b);
  }
}

// Q_i rows [row_begin, row_begin + n_rows) of sequence b, KV head hk -> Qs (q_off layout), one
// 16-byte cp.async per vector from threads t, t + n_threads, ...; rows >= `rows` and columns past
// the head dim are zero-filled. The caller commits the group.
template <class Tr, typename T>
__device__ __forceinline__ void copy_q_rows(T* Qs, const DecodeParams& p, int64_t b, int64_t hk,
                                            int row_begin, int n_rows, int rows, int t,
                                            int n_threads) {
  const int group = int(p.heads_q) / int(p.heads_kv), S_q = int(p.seqlen_q);
  const T* q = static_cast<const T*>(p.q);
  for (int i = t; i < n_rows * Tr::kVecsPerRow; i += n_threads) {
    const int r = i / Tr::kVecsPerRow, v = i % Tr::kVecsPerRow;
    const int R = row_begin + r;
    const bool ok = r < rows && v * Tr::kVec < p.head_dim;
    const T* src = q;
    if (ok) src = q + offset(p.q_strides, b, hk * group + R / S_q, R % S_q) + v * Tr::kVec;
    cp_async_16(Qs + q_off<Tr>(r, v), src, ok);
  }
}

// Key-major step: Q_i^T (rows 0-7 of Qs) as the mma B fragments, qf[ks] for head-dim step ks.
template <class Tr, typename T>
__device__ __forceinline__ void load_q_fragments(uint32_t (&qf)[Tr::kHeadDim / 16][2], const T* Qs,
                                                 int lane) {
#pragma unroll
  for (int kp = 0; kp < Tr::kHeadDim / 32; ++kp) {  // rows 0-7 x columns 32 kp + 8 (lane / 8) ..
    uint32_t r[4];
    ldmatrix_x4(r, Qs + q_off<Tr>(lane % 8, kp * 4 + lane / 8));
    qf[2 * kp][0] = r[0];
    qf[2 * kp][1] = r[1];
    qf[2 * kp + 1][0] = r[2];
    qf[2 * kp + 1][1] = r[3];
  }
}

// Key-major step: this warp's O^T fragments into its fp32 scratch Ow ([rows][kOStride]): columns
// nd*16 + lane/4 (+8) of rows 2*(lane%4) + {0, 1}.
template <class Tr>
__device__ __forceinline__ void stash_key_major_o(float* Ow,
                                                  const float (&Ot)[Tr::kHeadDim / 16][4],
                                                  int lane) {
  const int r0 = 2 * (lane % 4);
#pragma unroll
  for (int nd = 0; nd < Tr::kHeadDim / 16; ++nd) {
#pragma unroll
    for (int e = 0; e < 4; ++e)
      Ow[(r0 + (e & 1)) * Tr::kOStride + nd * 16 + lane / 4 + 8 * (e >> 1)] = Ot[nd][e];
  }
}

// Final O of query row R of sequence b, KV head hk (R = (head in the group) * S_q + position),
// columns [d, d + 4), and its lse (column 0 only).
template <typename T>
__device__ __forceinline__ void write_out_row(const DecodeParams& p, int64_t b, int64_t hk, int R,
                                              int d, float4 acc, float lse, int group, int S_q) {
  const int64_t h = hk * group + (S_q == 1 ? R : R / S_q);
  const int t = S_q == 1 ? 0 : R % S_q;
  store4(static_cast<T*>(p.o) + offset(p.o_strides, b, h, t) + d, acc);
  if (p.lse != nullptr && d == 0) p.lse[(b * p.heads_q + h) * S_q + t] = lse;
}

// Tensor-copy path (one thread): issue the TMA copies of K_j, V_j (key block blk of sequence b,
// KV head hk) into one stage (Ks, Vs), completing on `full`. The block is cut into sub-blocks of
// `sub_rows` keys (B_c, or the page size when pages are smaller) that each lie in one page; a
// sub-block starting at or past L is skipped (its keys are masked), so only pages the sequence
// uses are looked up. Keys in [L, sub-block end) are loaded as whatever the cache holds and
// neutralised by the score mask (K) and the V key masks. An invalid page sets `bad`, and
// *bad_flag (when given) says whether this block had one, published by the arrival on `full`.
template <class Tr, typename T>
__device__ __forceinline__ void issue_kv_block(const DecodeParams& p, const CUtensorMap* tm_k,
                                               const CUtensorMap* tm_v, bool full_row_boxes,
                                               int64_t b, int64_t hk, int64_t L, int64_t blk,
                                               int log2_page, T* Ks, T* Vs, uint64_t* full,
                                               bool& bad, uint32_t* bad_flag) {
  constexpr int kBc = Tr::kBc, kD = Tr::kHeadDim;
  constexpr int kMaxSub = kBc / 16;  // page_size >= 16
  const int head_dim = int(p.head_dim);
  const int sub_rows = p.block_table ? int(min(int64_t(kBc), p.page_size)) : kBc;
  const int n_sub = kBc / sub_rows;
  // Boxes entirely past D are issued too (they read nothing and land as zeros), so the padded
  // columns read as zero (kPadColsZero). Rows of <= 256 bytes keep the run-time count: for 16-bit
  // types it is every box of the bucket at any head dim (a constant changed ptxas' registers
  // there), and fp32 steps stop at D themselves.
  const int d_boxes = Tr::kNarrow || !FM_DECODE_ALL_BOXES
                          ? (head_dim + Tr::kBoxCols - 1) / Tr::kBoxCols
                          : Tr::kDBoxes;
  int slot[kMaxSub], pos[kMaxSub];
  uint32_t bytes = 0;
  bool block_bad = false;
#pragma unroll
  for (int i = 0; i < kMaxSub; ++i) {
    slot[i] = -1;
    const int64_t key = blk * kBc + int64_t(i) * sub_rows;
    if (i >= n_sub || key >= L) continue;
    int64_t sl, ps;
    if (locate_key(p, b, key, log2_page, &sl, &ps)) {
      slot[i] = int(sl);
      pos[i] = int(ps);
      bytes += 2u * uint32_t(d_boxes) * uint32_t(sub_rows) * 128u;
    } else {
      block_bad = true;
    }
  }
  bad |= block_bad;
  if (bad_flag != nullptr) *bad_flag = block_bad ? 1u : 0u;
  if constexpr (FM_DECODE_DIAG == 2) {
    mbar_arrive_expect_tx(full, 0);  // diagnostic: no copies
    return;
  }
  mbar_arrive_expect_tx(full, bytes);
#pragma unroll
  for (int i = 0; i < kMaxSub; ++i) {
    if (slot[i] < 0) continue;
    if (full_row_boxes) {  // head_dim == kD: one box of whole rows
      const int off = i * sub_rows * kD;
      tma_load_5d(Ks + off, tm_k, 0, 0, pos[i], int(hk), slot[i], full);
      tma_load_5d(Vs + off, tm_v, 0, 0, pos[i], int(hk), slot[i], full);
    } else {
      for (int db = 0; db < d_boxes; ++db) {
        const int off = db * kBc * Tr::kBoxCols + i * sub_rows * Tr::kBoxCols;
        tma_load_4d(Ks + off, tm_k, db * Tr::kBoxCols, pos[i], int(hk), slot[i], full);
        tma_load_4d(Vs + off, tm_v, db * Tr::kBoxCols, pos[i], int(hk), slot[i], full);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 1. Append k_new / v_new into the cache (one thread per 16-byte vector): a kernel of its own
//    before the row-major and cp.async split kernels; fused into the key-major TMA kernels (below).
// ---------------------------------------------------------------------------------------------
template <typename T>
__global__ void __launch_bounds__(256) decode_append_kernel(const DecodeParams p) {
  constexpr int kVec = 16 / int(sizeof(T));
  const int vecs = int(p.head_dim / kVec);
  const int64_t total = p.batch * p.heads_kv * p.seqlen_new * vecs;
  const int log2_page = p.block_table ? __ffsll(p.page_size) - 1 : 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int v = int(i % vecs);
    const int64_t j = (i / vecs) % p.seqlen_new;
    const int64_t hk = (i / vecs / p.seqlen_new) % p.heads_kv;
    const int64_t b = i / vecs / p.seqlen_new / p.heads_kv;
    const int64_t cached = p.cache_seqlens ? int64_t(p.cache_seqlens[b]) : p.max_seqlen_k;
    if (cached < 0 || cached + p.seqlen_new > p.max_seqlen_k) continue;  // NaN'd by attention
    int64_t slot, pos;
    if (!locate_key(p, b, cached + j, log2_page, &slot, &pos)) continue;
    const auto* k_src = static_cast<const T*>(p.k_new) + offset(p.k_new_strides, b, hk, j);
    const auto* v_src = static_cast<const T*>(p.v_new) + offset(p.v_new_strides, b, hk, j);
    auto* k_dst = static_cast<T*>(p.k_cache) + offset(p.k_cache_strides, slot, hk, pos);
    auto* v_dst = static_cast<T*>(p.v_cache) + offset(p.v_cache_strides, slot, hk, pos);
    reinterpret_cast<uint4*>(k_dst)[v] = reinterpret_cast<const uint4*>(k_src)[v];
    reinterpret_cast<uint4*>(v_dst)[v] = reinterpret_cast<const uint4*>(v_src)[v];
  }
}

// ---------------------------------------------------------------------------------------------
// 1b. Fused append (key-major TMA split kernels and the persistent kernel, decode's usual path,
//    for a few new keys): the producer warp of a CTA writes the new keys and values that fall in
//    its own key range [key_lo, key_hi) into the cache before any of its copies reads them. Every
//    new key lies in exactly one split of each (b, h_k, row chunk); CTAs of other row chunks write
//    the same bytes (same values). A separate append kernel costs 3.8 us per call at 268 MB (2.6
//    us with PDL; H200, round 13). Each lane loads all its 16-byte pieces before storing any (one
//    memory round trip: a load-store chain per piece cost ~6 us for 16 keys while the streams
//    run), so the fusion is limited to kAppendPieces pieces per lane; more new keys go through the
//    append kernel. Not fused into the row-major and cp.async kernels: there the extra prologue
//    code made ptxas spill 20-230 bytes in the loop.
// ---------------------------------------------------------------------------------------------
constexpr int kAppendPieces = 4;  // 16-byte pieces of K (and of V) per producer lane

// The split kernels that can append themselves.
template <class Tr>
constexpr bool kFusedAppend = Tr::kBulk && Tr::kKeyMajor && Tr::kProducerWarp;

// Whether the call appends and its new keys of one (b, h_k) fit one round of the producer warp,
// so that a kernel with kFusedAppend writes them itself (the host and the kernels decide alike).
__host__ __device__ inline bool append_in_kernel(const DecodeParams& p, int elem_bytes) {
  return p.k_new != nullptr && p.seqlen_new > 0 &&
         p.seqlen_new * (p.head_dim * elem_bytes / 16) <= 32 * kAppendPieces;
}

// Whether key blocks [blk_begin, blk_end) of a valid sequence hold new keys (CTA-uniform).
__device__ __forceinline__ bool range_has_new_keys(const DecodeParams& p, const SeqLen& seq,
                                                   int64_t blk_begin, int64_t blk_end, int bc) {
  return seq.valid && blk_begin < blk_end && blk_end * bc > seq.L - p.seqlen_new;
}

// The new keys in [key_lo, key_hi) of (b, hk), by the 32 lanes of a warp; then a proxy fence, so
// that TMA reads issued after the warp's next barrier see them. A valid length only (seq_len); a
// key whose page index is invalid is skipped (its load marks the sequence bad).
template <typename T>
__device__ __forceinline__ void append_new_keys(const DecodeParams& p, int64_t b, int64_t hk,
                                                int64_t L, int64_t key_lo, int64_t key_hi,
                                                int log2_page, int lane) {
  constexpr int kVec = 16 / int(sizeof(T));
  const int vecs = int(p.head_dim) / kVec;
  const int64_t cached = L - p.seqlen_new;  // the first new key
  const int64_t first = max(cached, key_lo), last = min(L, key_hi);
  const int count = first < last ? int(last - first) * vecs : 0;  // <= 32 * kAppendPieces
  uint4 k_val[kAppendPieces], v_val[kAppendPieces];
  T* k_dst[kAppendPieces];
  T* v_dst[kAppendPieces];
#pragma unroll
  for (int j = 0; j < kAppendPieces; ++j) {  // every load first
    const int i = lane + 32 * j;
    k_dst[j] = v_dst[j] = nullptr;
    if (i >= count) continue;
    const int64_t key = first + i / vecs;
    const int v = i % vecs;
    int64_t slot, pos;
    if (!locate_key(p, b, key, log2_page, &slot, &pos)) continue;
    k_val[j] = reinterpret_cast<const uint4*>(static_cast<const T*>(p.k_new) +
                                              offset(p.k_new_strides, b, hk, key - cached))[v];
    v_val[j] = reinterpret_cast<const uint4*>(static_cast<const T*>(p.v_new) +
                                              offset(p.v_new_strides, b, hk, key - cached))[v];
    k_dst[j] = static_cast<T*>(p.k_cache) + offset(p.k_cache_strides, slot, hk, pos) + v * kVec;
    v_dst[j] = static_cast<T*>(p.v_cache) + offset(p.v_cache_strides, slot, hk, pos) + v * kVec;
  }
#pragma unroll
  for (int j = 0; j < kAppendPieces; ++j) {
    if (k_dst[j] == nullptr) continue;
    *reinterpret_cast<uint4*>(k_dst[j]) = k_val[j];
    *reinterpret_cast<uint4*>(v_dst[j]) = v_val[j];
  }
  fence_proxy_async_global();
}

// ---------------------------------------------------------------------------------------------
// 2. Split-KV attention. Grid: x = (b, h_k, row chunk), y = split.
//    o_part == nullptr: write O, lse directly (one split). Otherwise o_part (splits, B*H_q*S_q, D)
//    and lse_part (splits, B*H_q*S_q) receive this split's normalised O_s and lse_s.
// ---------------------------------------------------------------------------------------------
// Split partials loaded per batch before merge_partials uses them (the combine's global loads,
// the cluster merge's distributed shared-memory loads): one memory round trip per batch.
constexpr int kMergeBatch = 8;

// Epilogue: n_warps warps each hold (m_w, l_w, O_w) for one query row, at m[w * kWarpRows],
// l[w * kWarpRows] and columns [d, d + 4) of O at o[w * kWarpRows * kOStride] (m in log2
// units, O unnormalised). Returns their merged, normalised O and sets lse (natural log); an
// empty row gives O = 0, lse = -inf.
template <int kWarpRows, int kOStride, int kMaxWarps>
__device__ __forceinline__ float4 merge_warp_rows(const float* m, const float* l, const float* o,
                                                  int n_warps, float& lse) {
  // One thread's serial chain at the end of the CTA, on the kernel's critical path: every load
  // first (four warps at a time), then the hardware exp2, log2 and reciprocal (a loop over
  // n_warps with libm's exp2f, logf and division took ~0.9 us with the output write; round
  // 12). Slots past n_warps reload slot 0 and are skipped.
  constexpr int kBatch = kMaxWarps < 4 ? kMaxWarps : 4;  // loads in flight (registers)
  float m_w[kMaxWarps];
  float m_max = -INFINITY;
#pragma unroll
  for (int w = 0; w < kMaxWarps; ++w) {
    m_w[w] = m[(w < n_warps ? w : 0) * kWarpRows];
    if (w < n_warps) m_max = fmaxf(m_max, m_w[w]);
  }
  float l_sum = 0.0f;
  float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
  for (int w0 = 0; w0 < kMaxWarps; w0 += kBatch) {
    float l_w[kBatch];
    float4 o_w[kBatch];
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int w = w0 + k < n_warps ? w0 + k : 0;  // a slot of this row's warps
      l_w[k] = l[w * kWarpRows];
      o_w[k] = ld4(o + w * kWarpRows * kOStride);
    }
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int w = w0 + k;
      if (w >= n_warps || m_w[w] == -INFINITY) continue;  // no keys: O_w may be anything
      const float sc = fast_exp2(m_w[w] - m_max);
      l_sum = fmaf(sc, l_w[k], l_sum);
      acc = make_float4(fmaf(sc, o_w[k].x, acc.x), fmaf(sc, o_w[k].y, acc.y),
                        fmaf(sc, o_w[k].z, acc.z), fmaf(sc, o_w[k].w, acc.w));
    }
  }
  const float inv_l = l_sum > 0.0f ? __fdividef(1.0f, l_sum) : 0.0f;
  lse = l_sum > 0.0f ? (m_max + __log2f(l_sum)) * kLn2 : -INFINITY;
  return make_float4(acc.x * inv_l, acc.y * inv_l, acc.z * inv_l, acc.w * inv_l);
}

// Merge kN split partials (O_s normalised, lse_s in natural-log units) into a running state:
// st.m = max lse_s so far, st.l = sum exp(lse_s - st.m), acc = sum exp(lse_s - st.m) O_s. Empty
// splits (lse_s = -inf) add nothing; a NaN lse_s (invalid sequence) sets `bad`. Used by the
// combine kernel and by the cluster merge at the end of the split kernel; exp through the
// hardware exp2 (1.004-1.013x on the split shapes, H200 round 13).
template <int kN>
__device__ __forceinline__ void merge_partials(const float (&x)[kN], const float4 (&o)[kN],
                                               SoftmaxState& st, float4& acc, bool& bad) {
  float m_new = st.m;
#pragma unroll
  for (int k = 0; k < kN; ++k) {
    bad |= isnan(x[k]);
    if (x[k] > m_new) m_new = x[k];
  }
  if (m_new == -INFINITY) return;  // only empty splits so far
  const float sc = st.m == -INFINITY ? 0.0f : fast_exp2((st.m - m_new) * kLog2e);
  st = {m_new, st.l * sc};
  acc = make_float4(acc.x * sc, acc.y * sc, acc.z * sc, acc.w * sc);
#pragma unroll
  for (int k = 0; k < kN; ++k) {
    if (!(x[k] > -INFINITY)) continue;  // empty split (or NaN): weight 0, O_s unused
    const float w = fast_exp2((x[k] - m_new) * kLog2e);
    st.l += w;
    acc.x += w * o[k].x;
    acc.y += w * o[k].y;
    acc.z += w * o[k].z;
    acc.w += w * o[k].w;
  }
}

template <typename T, int kD, bool kBulk, bool kCompact, bool kAlt, bool kKeyMajor>
__global__ void __launch_bounds__(DecodeTraits<T, kD, kBulk, kCompact, kAlt, kKeyMajor>::kThreads)
    __maxnreg__((DecodeTraits<T, kD, kBulk, kCompact, kAlt, kKeyMajor>::kMaxRegs))
        decode_split_kernel(const DecodeParams p, const int row_chunks, float* o_part,
                            float* lse_part, const __grid_constant__ CUtensorMap tm_k,
                            const __grid_constant__ CUtensorMap tm_v, const bool full_row_boxes) {
  using Tr = DecodeTraits<T, kD, kBulk, kCompact, kAlt, kKeyMajor>;
  constexpr int kBc = Tr::kBc;
  constexpr int kStages = Tr::kStages;
  extern __shared__ __align__(128) unsigned char smem_raw[];

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  if (o_part != nullptr) pdl_launch_dependents();  // the combine may start its prologue
#if FM_DECODE_TIMELINE
  const unsigned long long t_start = global_timer_ns();
#endif

  // ---- Which (b, h_k, query rows, split) this CTA owns. 32-bit index math (every value is
  //      bounded by the grid or the head counts): 64-bit divisions cost hundreds of cycles on the
  //      way to the first copy and in the epilogue.
  const int group = int(p.heads_q) / int(p.heads_kv);
  const int S_q = int(p.seqlen_q);
  const int chunk = int(blockIdx.x % unsigned(row_chunks));
  const int column = int(blockIdx.x / unsigned(row_chunks));
  const int64_t hk = column % int(p.heads_kv);
  const int64_t b = column / int(p.heads_kv);
  const int split = blockIdx.y, num_splits = gridDim.y;
  // Row R of the group = (query head hk*group + R / S_q, query position R % S_q).
  const int row_begin = chunk * Tr::kMaxRows;
  const int rows = min(Tr::kMaxRows, group * S_q - row_begin);
  const int row_tiles = (rows + Tr::kRowTile - 1) / Tr::kRowTile;
  // Tensor-copy path: warp kWarps only issues the copies (producer); warps 0..kWarps-1 compute.
  const bool is_producer = Tr::kProducerWarp && warp == Tr::kWarps;
  // Warps that share a row tile split each K_j, V_j block between them (16-key chunks):
  // warps_n = the largest power of 2 with row_tiles * warps_n <= kWarps.
  int warps_n = 1;
  while (warps_n * 2 * row_tiles <= Tr::kWarps) warps_n *= 2;
  const int rt = warp / warps_n, wn = warp % warps_n;
  const bool warp_has_rows = !is_producer && rt < row_tiles;

  // ---- Shared memory (base 1024-byte aligned on the tensor-copy path, for the swizzle):
  //      stages x (K_j [B_c][kD], V_j [B_c][kD]) | Q_i [rows_pad][kD] | m, l | P | mbarriers.
  unsigned char* smem = smem_raw;
  if constexpr (Tr::kSmemAlign > 0)
    smem += (Tr::kSmemAlign - (smem_addr(smem_raw) & (Tr::kSmemAlign - 1))) & (Tr::kSmemAlign - 1);
  T* KVs = reinterpret_cast<T*>(smem);
  T* Qs = KVs + kStages * 2 * kBc * kD;
  float* Ms = reinterpret_cast<float*>(Qs + row_tiles * Tr::kRowTile * kD);          // [warps][16]
  float* Ls = Ms + Tr::kWarps * Tr::kRowTile;                                        // [warps][16]
  float* Pw = Ls + Tr::kWarps * Tr::kRowTile + warp * Tr::kRowTile * Tr::kKeyChunk;  // [16][16]
  uint64_t* full_bar = reinterpret_cast<uint64_t*>(Ls + Tr::kWarps * Tr::kRowTile +
                                                   Tr::kWarps * Tr::kRowTile * Tr::kKeyChunk);
  uint64_t* empty_bar = full_bar + kStages;
  float* Os = reinterpret_cast<float*>(KVs);  // epilogue: [warps][16][kOStride], reuses stages

  // ---- This sequence's length and this split's key blocks [blk_begin, blk_end).
  pdl_wait_primary();  // launched early (PDL): the previous kernel's writes are visible after this
  const SeqLen seq = seq_len(p, b);
  const int64_t L = seq.L;
  bool bad = !seq.valid;  // invalid length or page: the sequence's output becomes NaN
  const int64_t n_blocks = (L + kBc - 1) / kBc;
  const int64_t blocks_per_split = ceil_div_small(n_blocks, num_splits);
  const int64_t blk_begin = min(n_blocks, split * blocks_per_split);
  const int64_t blk_end = min(n_blocks, blk_begin + blocks_per_split);
  const int64_t causal_limit = L - S_q;  // query t sees key j iff j <= causal_limit + t
  const int log2_page = p.block_table ? __ffsll(p.page_size) - 1 : 0;
  const int head_dim = int(p.head_dim);
  // Tensor-copy path: how the rows of a K_j, V_j tile lie in shared memory (kv_off).
  const KvLines kl = full_row_boxes ? KvLines{Tr::kDBoxes, 1} : KvLines{1, kBc};
  // The warps of a row tile take the 16-key chunks of each block in turn (global chunk index
  // modulo warps_n), so blocks with fewer chunks than warps still keep all busy. (warps_n is a
  // power of 2; when kWarps divides the chunk count, every warp simply takes chunks wn + k
  // warps_n.) first_chunk(blk): this warp's first chunk of block blk.
  auto first_chunk = [&](int64_t blk) {
    constexpr int kChunks = kBc / Tr::kKeyChunk;
    if constexpr (kChunks % Tr::kWarps != 0)
      return (wn - int((uint32_t(blk) * kChunks) & uint32_t(warps_n - 1))) & (warps_n - 1);
    return wn;
  };

  const T* k_cache = static_cast<const T*>(p.k_cache);
  const T* v_cache = static_cast<const T*>(p.v_cache);

  // K_j, V_j (B_c x kD each) of key block blk -> stage. Tensor-copy path: issue_kv_block (the
  // producer warp's lane 0 only). cp.async path (every thread): keys >= L are zero-filled, not
  // read.
  auto load_kv = [&](int64_t blk, int stage) {
    T* Ks = KVs + stage * 2 * kBc * kD;
    T* Vs = Ks + kBc * kD;
    if constexpr (kBulk) {
      issue_kv_block<Tr>(p, &tm_k, &tm_v, full_row_boxes, b, hk, L, blk, log2_page, Ks, Vs,
                         &full_bar[stage], bad, nullptr);
    } else {
#pragma unroll
      for (int it = 0; it < Tr::kVecsPerThread; ++it) {
        const int i = tid + it * Tr::kThreads;
        const int r = i / Tr::kVecsPerRow, v = i % Tr::kVecsPerRow;
        const int64_t key = blk * kBc + r;
        bool ok = key < L && v * Tr::kVec < head_dim;
        const T* k_src = k_cache;
        const T* v_src = v_cache;
        if (ok) {
          int64_t sl, ps;
          ok = locate_key(p, b, key, log2_page, &sl, &ps);
          bad |= !ok;
          if (ok) {
            k_src = k_cache + offset(p.k_cache_strides, sl, hk, ps) + v * Tr::kVec;
            v_src = v_cache + offset(p.v_cache_strides, sl, hk, ps) + v * Tr::kVec;
          }
        }
        cp_async_16(Ks + kv_off<Tr>(r, v, kl), k_src, ok);
        cp_async_16(Vs + kv_off<Tr>(r, v, kl), v_src, ok);
      }
    }
  };

  // ---- Pipeline prologue. Tensor-copy path: the producer sets up the mbarriers (full: 1
  //      arrival + bytes; empty: one arrival per consumer warp) and fills every stage before
  //      anyone waits.
  if constexpr (kFusedAppend<Tr>) {
    // Fused append by the producer warp; its global writes come before the TMA reads them (async
    // proxy): a proxy fence by each writer, then a barrier with the issuing lane.
    if (is_producer && append_in_kernel(p, sizeof(T)) &&
        range_has_new_keys(p, seq, blk_begin, blk_end, kBc)) {
      append_new_keys<T>(p, b, hk, L, blk_begin * kBc, blk_end * kBc, log2_page, lane);
      __syncwarp();
    }
  }
  if constexpr (kBulk) {
    if (Tr::kProducerWarp ? (is_producer && lane == 0) : tid == 0) {
      for (int s = 0; s < kStages; ++s) {
        mbar_init(&full_bar[s], 1);
        mbar_init(&empty_bar[s], Tr::kWarps);
      }
      for (int s = 0; s < kStages; ++s) {
        if (blk_begin + s < blk_end) load_kv(blk_begin + s, s);
      }
    }
  }

  // ---- Q_i -> shared memory (zero-filled padding rows and columns).
  copy_q_rows<Tr>(Qs, p, b, hk, row_begin, row_tiles * Tr::kRowTile, rows, tid, Tr::kThreads);
  cp_async_commit();
  if constexpr (kBulk) {
    cp_async_wait<0>();
    __syncthreads();  // Q_i and the mbarrier initialisation are visible to every thread
  } else {
    // Q_i is the first cp.async group, then kStages - 1 blocks in flight; Q_i is visible to
    // every warp before the loop (the key-major step keeps Q_i^T in registers).
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (blk_begin + s < blk_end) load_kv(blk_begin + s, s);
      cp_async_commit();
    }
    cp_async_wait<kStages - 1>();
    __syncthreads();
  }

  // ---- Per-warp running state for the lane's two query rows (row-major step: rows lane/4 and
  //      lane/4 + 8 of the warp's row tile; key-major: rows 2*(lane%4) + {0, 1}): O_i (16 x D,
  //      or O_i^T D x 8), m_i (log2 units), l_i (partial row sums, completed at the end).
  float O[kD / 8][4];
  float Ot[kD / 16][4];
  uint32_t qf[kD / 16][2];  // key-major: Q_i^T as mma B fragments
#pragma unroll
  for (int nd = 0; nd < kD / 8; ++nd) O[nd][0] = O[nd][1] = O[nd][2] = O[nd][3] = 0.0f;
#pragma unroll
  for (int nd = 0; nd < kD / 16; ++nd) Ot[nd][0] = Ot[nd][1] = Ot[nd][2] = Ot[nd][3] = 0.0f;
  if constexpr (Tr::kKeyMajor) load_q_fragments<Tr>(qf, Qs, lane);
  float m_i[2] = {-INFINITY, -INFINITY};
  float l_i[2] = {0.0f, 0.0f};
  const int lr_lo = Tr::kKeyMajor ? 2 * (lane % 4) : lane / 4;  // rows within the row tile
  const int lr_hi = Tr::kKeyMajor ? lr_lo + 1 : lr_lo + 8;
  const int64_t t_row[2] = {(row_begin + rt * Tr::kRowTile + lr_lo) % S_q,
                            (row_begin + rt * Tr::kRowTile + lr_hi) % S_q};
  const float scale_log2 = p.scale * kLog2e;

#if FM_DECODE_TIMELINE
  unsigned long long tl[kTimelineFields] = {};
  const int64_t tl_slot = (int64_t(blockIdx.y) * gridDim.x + blockIdx.x) * kTimelineFields;
#define FM_TL_TIME(field, ...)                            \
  {                                                       \
    const long long tl_c0 = clock64();                    \
    __VA_ARGS__;                                          \
    tl[field] += (unsigned long long)(clock64() - tl_c0); \
  }
#else
#define FM_TL_TIME(field, ...) __VA_ARGS__;
#endif
  if (is_producer) {
    // Producer (tensor-copy path): as soon as every consumer warp has released the stage of
    // block blk - kStages, refill it with block blk. Never waits on a consumer otherwise.
    if (lane == 0) {
      for (int64_t blk = blk_begin + kStages; blk < blk_end; ++blk) {
        const int it = int(blk - blk_begin), stage = it % kStages;
        if constexpr (FM_DECODE_DIAG == 3)
          mbar_wait(&full_bar[stage], ((it / kStages) - 1) & 1);  // its last copy landed
        else
          FM_TL_TIME(kTlWaitEmpty, mbar_wait(&empty_bar[stage], ((it / kStages) - 1) & 1));
        load_kv(blk, stage);
      }
      if constexpr (FM_DECODE_DIAG == 3) {  // nothing may be in flight when the CTA exits
        for (int64_t blk = max(blk_begin, blk_end - kStages); blk < blk_end; ++blk) {
          const int it = int(blk - blk_begin);
          mbar_wait(&full_bar[it % kStages], (it / kStages) & 1);
        }
      }
#if FM_DECODE_TIMELINE
      if (tl_slot < kTimelineMaxCtas * kTimelineFields)
        g_timeline[tl_slot + kTlWaitEmpty] = tl[kTlWaitEmpty];
#endif
    }
    __syncwarp();
  }
  // Consumers: the FA2 inner loop over this split's key blocks.
  const int64_t consume_end = is_producer || FM_DECODE_DIAG == 3 ? blk_begin : blk_end;
  for (int64_t blk = blk_begin; blk < consume_end; ++blk) {
    const int it = int(blk - blk_begin);
    const int stage = it % kStages;
    if constexpr (kBulk) {
      if constexpr (!Tr::kProducerWarp) {
        // Thread 0 produces: once every warp has released block blk - 1, refill its stage.
        if (tid == 0 && it >= 1 && blk + kStages - 1 < blk_end) {
          const int prev = (it - 1) % kStages;
          mbar_wait(&empty_bar[prev], ((it - 1) / kStages) & 1);
          load_kv(blk + kStages - 1, prev);
        }
      }
      __syncwarp();
      FM_TL_TIME(kTlWaitFull, mbar_wait(&full_bar[stage], (it / kStages) & 1));  // block landed
      __syncwarp();
#if FM_DECODE_TIMELINE
      if (it == 0) tl[kTlFirstBlock] = global_timer_ns();
#endif
    } else {
      // Issue block blk + kStages - 1 into the stage freed at the end of the last iteration.
      if (blk + kStages - 1 < blk_end) load_kv(blk + kStages - 1, (it + kStages - 1) % kStages);
      cp_async_commit();
      cp_async_wait<kStages - 1>();  // block blk has landed
      __syncthreads();
    }

    const T* Ks = KVs + stage * 2 * kBc * kD;  // K_j: [B_c][kD]
    const T* Vs = Ks + kBc * kD;               // V_j: [B_c][kD]
    if (warp_has_rows && FM_DECODE_DIAG != 1)
      FM_TL_TIME(kTlMath, {
        constexpr int kChunks = kBc / Tr::kKeyChunk;
        for (int c = first_chunk(blk); c < kChunks; c += warps_n) {
          const int64_t key0 = blk * kBc + c * Tr::kKeyChunk;
          if (key0 >= L) break;
          const bool need_mask = key0 + Tr::kKeyChunk - 1 > causal_limit;
          const int kv_valid = int(min(int64_t(Tr::kKeyChunk), L - key0));
          if constexpr (Tr::kKeyMajor) {
            warp_step_key_major<Tr>(Ot, m_i, l_i, qf, Ks, Vs, c * Tr::kKeyChunk, lane, kl, key0,
                                    need_mask, causal_limit, t_row, scale_log2, kv_valid);
          } else {
            warp_step_row_major<Tr>(O, m_i, l_i, Qs, rt * Tr::kRowTile, Ks, Vs, c * Tr::kKeyChunk,
                                    lane, head_dim, kl, Pw, key0, need_mask, causal_limit, t_row,
                                    scale_log2, kv_valid);
          }
        }
      });
    if constexpr (kBulk) {
      __syncwarp();  // the whole warp is done reading this stage: release it to the producer
      if (lane == 0) mbar_arrive(&empty_bar[stage]);
    } else {
      __syncthreads();  // everyone is done with this stage before it is refilled
    }
  }

#if FM_DECODE_TIMELINE
  if (warp == 0 && lane == 0 && tl_slot < kTimelineMaxCtas * kTimelineFields) {
    tl[kTlLoopEnd] = global_timer_ns();
    tl[kTlBlocks] = (unsigned long long)(blk_end - blk_begin);
    for (int f : {kTlFirstBlock, kTlLoopEnd, kTlWaitFull, kTlMath, kTlBlocks})
      g_timeline[tl_slot + f] = tl[f];
  }
#endif
#undef FM_TL_TIME
  if constexpr (FM_DECODE_DIAG_NO_EPILOGUE) return;
  // ---- Epilogue: merge the warps of each row tile, normalise, write.
  cp_async_wait<0>();
  __syncthreads();  // pipeline buffers are free: reuse them as the O scratch
#if FM_DECODE_TIMELINE
  if (tid == 0) tl[kTlEpiSync] = global_timer_ns();
#endif
  // Complete the row sums over the lanes that hold the other keys of the same rows.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int x = Tr::kKeyMajor ? 4 : 1; x < (Tr::kKeyMajor ? 32 : 4); x *= 2)
      l_i[h] += __shfl_xor_sync(0xffffffffu, l_i[h], x);
  }
  if (warp_has_rows) {
    float* Ow = Os + warp * Tr::kRowTile * Tr::kOStride;  // [16][kOStride]
    const int g = lane / 4, col = 2 * (lane % 4);
    if constexpr (Tr::kKeyMajor) {
      stash_key_major_o<Tr>(Ow, Ot, lane);
    } else {
#pragma unroll
      for (int nd = 0; nd < kD / 8; ++nd) {
        *reinterpret_cast<float2*>(Ow + g * Tr::kOStride + nd * 8 + col) =
            make_float2(O[nd][0], O[nd][1]);
        *reinterpret_cast<float2*>(Ow + (g + 8) * Tr::kOStride + nd * 8 + col) =
            make_float2(O[nd][2], O[nd][3]);
      }
    }
    // One lane per row writes its m and l: lanes 0-3 (key-major), lanes 4k (row-major).
    if (Tr::kKeyMajor ? g == 0 : lane % 4 == 0) {
      Ms[warp * Tr::kRowTile + lr_lo] = m_i[0];
      Ms[warp * Tr::kRowTile + lr_hi] = m_i[1];
      Ls[warp * Tr::kRowTile + lr_lo] = l_i[0];
      Ls[warp * Tr::kRowTile + lr_hi] = l_i[1];
    }
  }
  bad = __syncthreads_or(bad);
#if FM_DECODE_TIMELINE
  if (tid == 0) tl[kTlEpiMerged] = global_timer_ns();
#endif

  // Cluster merge (sm_90; the host launches the splits of a (b, h_k, row chunk) as one cluster
  // when they are few): each CTA leaves its normalised O_s and lse_s in its own shared memory,
  // after the O scratch; after a cluster barrier every CTA merges a slice of the rows from all of
  // them and writes the output. No partials in global memory and no combine kernel, whose
  // memory round trips after the grid boundary cost ~4 us (H200).
  const int n_cluster = Tr::kClusterMerge ? cluster_size() : 1;
  float* Opart = Os + Tr::kWarps * Tr::kRowTile * Tr::kOStride;  // [kMaxRows][kD]
  float* Lpart = Opart + Tr::kMaxRows * kD;                      // [kMaxRows]
  const int vec4 = head_dim / 4;
  const int64_t total_rows = p.batch * p.heads_q * S_q;
  // Final O row r, columns [d, d + 4), and its lse.
  auto write_out = [&](int r, int d, float4 acc, float lse) {
    write_out_row<T>(p, b, hk, row_begin + r, d, acc, lse, group, S_q);
  };
  for (int i = tid; i < rows * vec4; i += Tr::kThreads) {
    // (row, column) of this float4; a compile-time divisor where the head dim fills the bucket.
    const int r = head_dim == kD ? i / (kD / 4) : i / vec4;
    const int d = (head_dim == kD ? i % (kD / 4) : i % vec4) * 4;
    const int tile = r / Tr::kRowTile, lr = r % Tr::kRowTile;
    const int row0 = tile * warps_n * Tr::kRowTile + lr;  // the row in the tile's first warp
    float lse;
    float4 acc = merge_warp_rows<Tr::kRowTile, Tr::kOStride, Tr::kWarps>(
        Ms + row0, Ls + row0, Os + row0 * Tr::kOStride + d, warps_n, lse);
    if (bad) {
      acc = make_float4(NAN, NAN, NAN, NAN);
      lse = NAN;
    }
    if (n_cluster > 1) {
      *reinterpret_cast<float4*>(Opart + r * kD + d) = acc;
      if (d == 0) Lpart[r] = lse;
    } else if (o_part == nullptr) {
      write_out(r, d, acc, lse);
    } else {
      const int R = row_begin + r;
      const int64_t row_id = (b * p.heads_q + hk * group + R / S_q) * S_q + R % S_q;
      *reinterpret_cast<float4*>(o_part + (split * total_rows + row_id) * p.head_dim + d) = acc;
      if (d == 0) lse_part[split * total_rows + row_id] = lse;
    }
  }
#if FM_DECODE_TIMELINE
  if (tid == 0) tl[kTlEpiWritten] = global_timer_ns();
#endif
  if constexpr (Tr::kClusterMerge) {
    if (n_cluster > 1) {
      cluster_sync();  // every CTA's O_s, lse_s are in its shared memory
      constexpr int kBatch = kMergeBatch;
      for (int i = cluster_rank() * Tr::kThreads + tid; i < rows * vec4;
           i += n_cluster * Tr::kThreads) {
        const int r = i / vec4, d = (i % vec4) * 4;
        SoftmaxState st = SoftmaxState::empty();
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        bool row_bad = false;
        for (int q0 = 0; q0 < n_cluster; q0 += kBatch) {
          float x[kBatch];
          float4 o[kBatch];
#pragma unroll
          for (int k = 0; k < kBatch; ++k) {
            x[k] = -INFINITY;
            o[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (q0 + k < n_cluster) {
              x[k] = ld_peer_f32(peer_smem(Lpart + r, q0 + k));
              o[k] = ld_peer_f32x4(peer_smem(Opart + r * kD + d, q0 + k));
            }
          }
          merge_partials(x, o, st, acc, row_bad);
        }
        const float inv_l = st.inv_l();
        acc = make_float4(acc.x * inv_l, acc.y * inv_l, acc.z * inv_l, acc.w * inv_l);
        if (row_bad) acc = make_float4(NAN, NAN, NAN, NAN);
        write_out(r, d, acc, row_bad ? NAN : st.lse());
      }
      cluster_sync_relaxed();  // the peers have finished reading this CTA's shared memory
    }
  }
#if FM_DECODE_TIMELINE
  if (tid == 0) {
    const int64_t cta = int64_t(blockIdx.y) * gridDim.x + blockIdx.x;
    unsigned sm;
    asm volatile("mov.u32 %0, %%smid;\n" : "=r"(sm));
    if (cta < kTimelineMaxCtas) {
      g_timeline[kTimelineFields * cta + kTlStart] = t_start;
      g_timeline[kTimelineFields * cta + kTlEnd] = global_timer_ns();
      g_timeline[kTimelineFields * cta + kTlSm] = sm;
      for (int f : {kTlEpiSync, kTlEpiMerged, kTlEpiWritten})
        g_timeline[kTimelineFields * cta + f] = tl[f];
    }
    if (cta == 0) g_timeline_ctas = (long long)gridDim.x * gridDim.y;
  }
#endif
}

// ---------------------------------------------------------------------------------------------
// 2b. Persistent split kernel (sm_90 tensor copies, key-major step, one split, any cache;
//     the launcher takes it where the (b, h_k) units outnumber the resident CTA slots). CTA c
//     works through units u = c, c + gridDim.x, ...; its producer runs on into the next unit's
//     key blocks while the compute warps finish the current one, so the pipeline never drains
//     between units. With one CTA per unit, every unit ends by draining its stages, merging and
//     exiting before the next CTA issues a copy (~3 us per wave at 1 GB, H200, session 9).
//     The compute warps merge a unit in the stage of its last block, which they release only
//     afterwards; Q_i of the next unit is copied into a second buffer while this one runs.
// ---------------------------------------------------------------------------------------------
template <typename T, class Tr>
constexpr int64_t persistent_smem_bytes() {
  return Tr::kSmemAlign + int64_t(Tr::kStages) * Tr::kStageBytes +
         2 * Tr::kKeyMajorRows * Tr::kHeadDim * int64_t(sizeof(T)) +
         2 * Tr::kWarps * Tr::kKeyMajorRows * 4 + Tr::barrier_bytes() + 4 * Tr::kStages;
}

template <typename T, int kD>
__global__ void __launch_bounds__(DecodeTraits<T, kD, true, false, false, true>::kThreads)
    __maxnreg__((DecodeTraits<T, kD, true, false, false, true>::kMaxRegs))
        decode_persistent_kernel(const DecodeParams p, const __grid_constant__ CUtensorMap tm_k,
                                 const __grid_constant__ CUtensorMap tm_v,
                                 const bool full_row_boxes, const bool blocked_units) {
  using Tr = DecodeTraits<T, kD, true, false, false, true>;
  constexpr int kBc = Tr::kBc, kStages = Tr::kStages, kRows = Tr::kKeyMajorRows;
  constexpr int kWarps = Tr::kWarps, kConsumers = 32 * kWarps, kChunks = kBc / Tr::kKeyChunk;
  static_assert(Tr::kKeyMajor && Tr::kProducerWarp && !Tr::kWide, "key-major TMA tile");
  static_assert(kWarps * kRows * Tr::kOStride * 4 <= Tr::kStageBytes, "merge scratch > stage");
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  // 32-bit index math (units <= INT_MAX: launcher): no 64-bit division at a unit switch.
  const int group = int(p.heads_q) / int(p.heads_kv), S_q = int(p.seqlen_q);
  const int heads_kv = int(p.heads_kv);
  const int rows = group * S_q;  // <= kRows (launcher)
  const int64_t units = p.batch * p.heads_kv;
  // This CTA's units: c, c + G, c + 2 G, ... or, blocked, a run of neighbours [c U / G,
  // (c + 1) U / G) (the launcher's choice; ctas <= units, so every CTA has at least one).
  const int64_t u_first = blocked_units ? blockIdx.x * units / gridDim.x : blockIdx.x;
  const int64_t u_end = blocked_units ? (blockIdx.x + 1) * units / gridDim.x : units;
  const int64_t u_step = blocked_units ? 1 : gridDim.x;

  // Shared memory: stages (1024-byte aligned) | Q_i [2][kRows][kD] | m, l [warps][kRows] |
  // full, empty mbarriers | invalid-page flag per stage.
  unsigned char* smem =
      smem_raw +
      ((Tr::kSmemAlign - (smem_addr(smem_raw) & (Tr::kSmemAlign - 1))) & (Tr::kSmemAlign - 1));
  T* KVs = reinterpret_cast<T*>(smem);
  T* Qs = KVs + kStages * 2 * kBc * kD;
  float* Ms = reinterpret_cast<float*>(Qs + 2 * kRows * kD);
  float* Ls = Ms + kWarps * kRows;
  uint64_t* full_bar = reinterpret_cast<uint64_t*>(Ls + kWarps * kRows);
  uint64_t* empty_bar = full_bar + kStages;
  uint32_t* bad_flags = reinterpret_cast<uint32_t*>(empty_bar + kStages);  // per stage
  auto stage_k = [&](int stage) { return KVs + stage * 2 * kBc * kD; };
  auto consumers_sync = [] { named_barrier_sync(1, kConsumers); };

  // Q_i of unit u -> buffer buf (compute warps; one cp.async group; zero-filled padding).
  auto load_q = [&](int64_t u, int buf) {
    copy_q_rows<Tr>(Qs + buf * kRows * kD, p, int(u) / heads_kv, int(u) % heads_kv, 0, kRows, rows,
                    tid, kConsumers);
    cp_async_commit();
  };

  if (warp == kWarps) {
    if (lane == 0) {
      for (int s = 0; s < kStages; ++s) {
        mbar_init(&full_bar[s], 1);
        mbar_init(&empty_bar[s], kWarps);
      }
    }
    pdl_wait_primary();
  } else {
    pdl_wait_primary();  // launched early (PDL): the previous kernel's writes are visible
    load_q(u_first, 0);
  }
  __syncthreads();  // the mbarrier initialisation is visible to every thread

  if (warp == kWarps) {
    // Producer: the key blocks of all this CTA's units in order; block number g (over the units)
    // goes to stage g % kStages once every compute warp has released block g - kStages. Lane 0
    // issues; with a fused append the other lanes stay to write a unit's new keys with it first.
    const bool appending = append_in_kernel(p, sizeof(T));
    if (lane != 0 && !appending) return;
    const int log2_page = p.block_table ? __ffsll(p.page_size) - 1 : 0;
    int g = 0;
    bool bad = false;  // per block: bad_flags
    for (int64_t u = u_first; u < u_end; u += u_step) {
      const int64_t b = int(u) / heads_kv, hk = int(u) % heads_kv;
      const SeqLen seq = seq_len(p, b);
      const int64_t L = seq.L, n_blocks = (L + kBc - 1) / kBc;
      if (appending && range_has_new_keys(p, seq, 0, n_blocks, kBc)) {
        append_new_keys<T>(p, b, hk, L, 0, L, log2_page, lane);
        __syncwarp();
      }
      if (lane != 0) continue;
      for (int64_t blk = 0; blk < n_blocks; ++blk, ++g) {
        const int stage = g % kStages;
        if (g >= kStages) mbar_wait(&empty_bar[stage], ((g / kStages) - 1) & 1);
        issue_kv_block<Tr>(p, &tm_k, &tm_v, full_row_boxes, b, hk, L, blk, log2_page,
                           stage_k(stage), stage_k(stage) + kBc * kD, &full_bar[stage], bad,
                           &bad_flags[stage]);
      }
    }
    return;  // the compute warps synchronise among themselves only from here on
  }

  // Compute warps: lane rows 2*(lane%4) + {0, 1} of the key-major step; warp w takes chunks
  // w, w + kWarps, ... of every block.
  const int lr_lo = 2 * (lane % 4), lr_hi = lr_lo + 1;
  const int64_t t_row[2] = {lr_lo % S_q, lr_hi % S_q};
  const float scale_log2 = p.scale * kLog2e;
  const KvLines kl = full_row_boxes ? KvLines{Tr::kDBoxes, 1} : KvLines{1, kBc};
  const int vec4 = int(p.head_dim) / 4;
  int g = 0, k = 0;
  for (int64_t u = u_first; u < u_end; u += u_step, ++k) {
    const int buf = k & 1;
    cp_async_wait<0>();
    consumers_sync();  // Q_i of u has landed; every warp is past the previous unit's merge
    uint32_t qf[kD / 16][2];
    load_q_fragments<Tr>(qf, Qs + buf * kRows * kD, lane);
    if (u + u_step < u_end) load_q(u + u_step, buf ^ 1);

    const int64_t b = int(u) / heads_kv, hk = int(u) % heads_kv;
    const SeqLen seq = seq_len(p, b);
    const int64_t L = seq.L, causal_limit = L - S_q;
    const int64_t n_blocks = (L + kBc - 1) / kBc;
    bool bad = !seq.valid;  // or a block with an invalid page index: the rows become NaN
    float Ot[kD / 16][4];
#pragma unroll
    for (int nd = 0; nd < kD / 16; ++nd) Ot[nd][0] = Ot[nd][1] = Ot[nd][2] = Ot[nd][3] = 0.0f;
    float m_i[2] = {-INFINITY, -INFINITY}, l_i[2] = {0.0f, 0.0f};
    for (int64_t blk = 0; blk < n_blocks; ++blk, ++g) {
      const int stage = g % kStages;
      mbar_wait(&full_bar[stage], (g / kStages) & 1);  // block blk has landed
      __syncwarp();
      bad |= bad_flags[stage] != 0;
      const T* Ks = stage_k(stage);
      for (int c = warp; c < kChunks; c += kWarps) {
        const int64_t key0 = blk * kBc + c * Tr::kKeyChunk;
        if (key0 >= L) break;
        warp_step_key_major<Tr>(Ot, m_i, l_i, qf, Ks, Ks + kBc * kD, c * Tr::kKeyChunk, lane, kl,
                                key0, key0 + Tr::kKeyChunk - 1 > causal_limit, causal_limit, t_row,
                                scale_log2, int(min(int64_t(Tr::kKeyChunk), L - key0)));
      }
      __syncwarp();
      if (blk + 1 < n_blocks && lane == 0) mbar_arrive(&empty_bar[stage]);  // the last: below
    }

    // Merge the warps' (m, l, O) in the stage of the unit's last block (still held), write.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int x = 4; x < 32; x *= 2) l_i[h] += __shfl_xor_sync(0xffffffffu, l_i[h], x);
    }
    const int last = (g + kStages - 1) % kStages;
    float* Os = reinterpret_cast<float*>(stage_k(last));  // [warps][kRows][kOStride]
    consumers_sync();  // every warp is done reading the last block: it becomes the scratch
    if (n_blocks > 0) {
      stash_key_major_o<Tr>(Os + warp * kRows * Tr::kOStride, Ot, lane);
      if (lane < 4) {
        Ms[warp * kRows + lr_lo] = m_i[0];
        Ms[warp * kRows + lr_hi] = m_i[1];
        Ls[warp * kRows + lr_lo] = l_i[0];
        Ls[warp * kRows + lr_hi] = l_i[1];
      }
    }
    consumers_sync();
    for (int i = tid; i < rows * vec4; i += kConsumers) {
      const int r = i / vec4, d = (i % vec4) * 4;
      float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      float lse = -INFINITY;  // empty sequence: O = 0
      if (n_blocks > 0)
        acc = merge_warp_rows<kRows, Tr::kOStride, kWarps>(Ms + r, Ls + r,
                                                           Os + r * Tr::kOStride + d, kWarps, lse);
      if (bad) {
        acc = make_float4(NAN, NAN, NAN, NAN);
        lse = NAN;
      }
      write_out_row<T>(p, b, hk, r, d, acc, lse, group, S_q);
    }
    // The scratch and m, l are read: release the last block's stage, after ordering this
    // thread's scratch accesses before the TMA's writes into it (another proxy).
    fence_proxy_async();
    consumers_sync();
    if (n_blocks > 0 && lane == 0) mbar_arrive(&empty_bar[last]);
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Combine: one CTA per query row (b, h, t). O = sum_s w_s O_s with w_s = exp(lse_s - lse).
//    Threads = (split group) x (float4 column). Each thread issues the loads of lse_s and O_s for
//    up to kMergeBatch of its splits before using any of them, so a row costs one memory round
//    trip per batch: after the split kernel each dependent round trip cost ~2-3 us (H200), which
//    was most of the combine's time. A thread keeps a running (m, l, O) state over its batches;
//    the groups are merged through shared memory. A NaN lse_s (invalid sequence) poisons the row.
// ---------------------------------------------------------------------------------------------
constexpr int kCombineThreads = 128;

template <typename T>
__global__ void __launch_bounds__(kCombineThreads)
    decode_combine_kernel(const DecodeParams p, const float* o_part, const float* lse_part,
                          const int num_splits) {
  __shared__ float red_m[kCombineThreads], red_l[kCombineThreads];
  __shared__ float4 red_o[kCombineThreads];

  const int tid = threadIdx.x;
  const int64_t row_id = blockIdx.x;
  const int64_t total_rows = p.batch * p.heads_q * p.seqlen_q;
  const int vec4 = int(p.head_dim / 4);
  const int groups = kCombineThreads / vec4;  // splits handled side by side
  const int grp = tid / vec4, d4 = tid % vec4;
  // Where the row goes, worked out before the wait (32-bit: row_id is a grid index).
  const int S_q = int(p.seqlen_q), H_q = int(p.heads_q), r = int(blockIdx.x);
  T* const out =
      static_cast<T*>(p.o) + offset(p.o_strides, r / S_q / H_q, (r / S_q) % H_q, r % S_q) + d4 * 4;
  pdl_wait_primary();  // launched early (PDL): the split kernel's results are visible after this

  // Running state of this thread's splits s = grp, grp + groups, ... (natural-log units).
  SoftmaxState st = SoftmaxState::empty();
  float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  bool bad = false;
  if (grp < groups) {
    for (int s0 = grp; s0 < num_splits; s0 += groups * kMergeBatch) {
      float x[kMergeBatch];
      float4 o[kMergeBatch];
#pragma unroll
      for (int k = 0; k < kMergeBatch; ++k) {
        const int s = s0 + k * groups;
        x[k] = -INFINITY;
        o[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (s < num_splits) {  // every split CTA writes all its rows (zeros when empty)
          x[k] = lse_part[s * total_rows + row_id];
          o[k] = ld4(o_part + (s * total_rows + row_id) * p.head_dim + d4 * 4);
        }
      }
      merge_partials(x, o, st, acc, bad);
    }
  }
  red_m[tid] = st.m;
  red_l[tid] = st.l;
  red_o[tid] = acc;
  bad = __syncthreads_or(bad);
  if (grp != 0) return;

  // Merge the groups of this column: lse = log sum_g exp(m_g) l_g, O = sum_g exp(m_g) O_g / ...
  // Every group's max first, then one pass with the hardware exp2, log2 and reciprocal (this
  // chain runs after the split kernel's grid boundary, on the critical path).
  float m_all = -INFINITY, l_all = 0.0f;
  for (int g = 0; g < groups; ++g) m_all = fmaxf(m_all, red_m[g * vec4 + d4]);
  acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  for (int g = 0; g < groups; ++g) {
    const int i = g * vec4 + d4;
    if (red_m[i] == -INFINITY) continue;  // no keys in this group's splits
    const float c = fast_exp2((red_m[i] - m_all) * kLog2e);
    const float4 o = red_o[i];
    l_all = fmaf(red_l[i], c, l_all);
    acc = make_float4(fmaf(o.x, c, acc.x), fmaf(o.y, c, acc.y), fmaf(o.z, c, acc.z),
                      fmaf(o.w, c, acc.w));
  }
  const float inv_l = l_all > 0.0f ? __fdividef(1.0f, l_all) : 0.0f;
  const float lse = l_all > 0.0f ? m_all + __log2f(l_all) * kLn2 : -INFINITY;
  acc = make_float4(acc.x * inv_l, acc.y * inv_l, acc.z * inv_l, acc.w * inv_l);
  if (bad) acc = make_float4(NAN, NAN, NAN, NAN);
  store4(out, acc);
  if (p.lse != nullptr && d4 == 0) p.lse[row_id] = bad ? NAN : lse;
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------
template <typename T, int kD, bool kBulk, bool kCompact = false, bool kAlt = false,
          bool kKeyMajor = false>
struct Config {
  using Type = T;
  using Traits = DecodeTraits<T, kD, kBulk, kCompact, kAlt, kKeyMajor>;
};

DecodeCopyMode g_copy_mode = DecodeCopyMode::kAuto;
bool g_allow_pdl = true;
bool g_allow_cluster = true;
#ifndef FM_DECODE_L2_PROMO  // default L2 promotion of the K/V maps (decode_traits.h)
#define FM_DECODE_L2_PROMO 128
#endif
int g_l2_promotion = FM_DECODE_L2_PROMO;
#ifndef FM_DECODE_FULL_ROW_BOXES  // default of decode_set_full_row_boxes (decode_traits.h)
#define FM_DECODE_FULL_ROW_BOXES 1
#endif
bool g_full_row_boxes = FM_DECODE_FULL_ROW_BOXES;
#ifndef FM_DECODE_KEY_MAJOR  // default of decode_set_key_major (decode_traits.h)
#define FM_DECODE_KEY_MAJOR 1
#endif
bool g_key_major = FM_DECODE_KEY_MAJOR;
#ifndef FM_DECODE_ONE_PER_SM  // 0: the choices before rounds 11-12 (wide or two CTAs/SM), A/B
#define FM_DECODE_ONE_PER_SM 1
#endif
#ifndef FM_DECODE_PERSISTENT  // default of decode_set_persistent (decode_traits.h)
#define FM_DECODE_PERSISTENT 0
#endif
int g_persistent = FM_DECODE_PERSISTENT;
int g_persistent_blocked = -1;  // decode_set_persistent: -1 the launcher's rule, else forced

// Host-side caches. Decode runs once per generated token, so its host path should cost a few
// microseconds: the shared-memory opt-in and the occupancy query are per (device, kernel,
// bytes) and are made once, not on every plan and launch.
std::mutex g_host_cache_mutex;
std::map<std::pair<int, const void*>, int64_t> g_smem_allowed;         // largest opt-in so far
std::map<std::tuple<int, const void*, int64_t>, int> g_blocks_per_sm;  // 0: query failed

// Raise `kernel`'s dynamic shared-memory limit on the current device to at least `smem` bytes.
// Never lowers it: a smaller request after a larger one keeps the larger limit, so the cache
// below always matches the attribute.
template <class Kernel>
cudaError_t raise_dynamic_smem(Kernel* kernel, int64_t smem) {
  const int device = current_device();
  std::lock_guard<std::mutex> lock(g_host_cache_mutex);
  int64_t& allowed = g_smem_allowed[{device, reinterpret_cast<const void*>(kernel)}];
  if (allowed >= smem) return cudaSuccess;
  const cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (err == cudaSuccess) allowed = smem;
  return err;
}

// The value cached under `key`, or query() stored there on a miss (the query runs outside the
// lock; two threads racing on a miss store the same answer).
template <class Map, class Query>
typename Map::mapped_type cached(Map& cache, const typename Map::key_type& key, Query&& query) {
  {
    std::lock_guard<std::mutex> lock(g_host_cache_mutex);
    const auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  const typename Map::mapped_type value = query();
  std::lock_guard<std::mutex> lock(g_host_cache_mutex);
  cache[key] = value;
  return value;
}

// Resident CTAs per SM of `kernel` (threads, smem) on the current device: the runtime's
// occupancy query (shared memory, registers and their per-warp allocation granularity); 0 if
// the query fails.
template <class Kernel>
int blocks_per_sm(Kernel* kernel, int threads, int64_t smem) {
  const auto key = std::make_tuple(current_device(), reinterpret_cast<const void*>(kernel), smem);
  return cached(g_blocks_per_sm, key, [&] {
    int blocks = 0;
    if (raise_dynamic_smem(kernel, smem) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, size_t(smem)) !=
            cudaSuccess) {
      blocks = 0;
    }
    (void)cudaGetLastError();
    return blocks;
  });
}

// The launch attribute that groups the `cluster` splits (grid y) of a column into one cluster.
cudaLaunchAttribute split_cluster_attribute(int cluster) {
  cudaLaunchAttribute attr = {};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = 1;
  attr.val.clusterDim.y = unsigned(cluster);
  attr.val.clusterDim.z = 1;
  return attr;
}

// Programmatic dependent launch: the kernel may launch while the previous one on the stream
// finishes, and waits for it (griddepcontrol.wait) before touching global memory.
cudaLaunchAttribute pdl_attribute() {
  cudaLaunchAttribute attr = {};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  return attr;
}

// The split, persistent and combine kernels use it on sm_90 (decode_set_tuning can turn it off):
// the combine's launch overlaps the split kernel, the split kernels' launch the append kernel's
// run or the caller's previous kernel (S_new = 1: 1.2 us, 1.5% at 268 MB; H200, round 13).
bool use_pdl(bool hopper) { return hopper && g_allow_pdl; }

// A launch of `grid` x `threads` with `smem` bytes of dynamic shared memory on `stream`.
cudaLaunchConfig_t launch_config(dim3 grid, int threads, int64_t smem, cudaStream_t stream) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(unsigned(threads));
  cfg.dynamicSmemBytes = size_t(smem);
  cfg.stream = stream;
  return cfg;
}

// A launch configuration and the attributes it points at (cfg.attrs points into attrs, so the
// object is neither copied nor moved): an optional cluster of `cluster` splits along grid y,
// then programmatic dependent launch where `pdl`.
struct DecodeLaunch {
  cudaLaunchConfig_t cfg;
  cudaLaunchAttribute attrs[2];

  DecodeLaunch(dim3 grid, int threads, int64_t smem, cudaStream_t stream, bool pdl, int cluster = 1)
      : cfg(launch_config(grid, threads, smem, stream)), attrs{} {
    unsigned n = 0;
    if (cluster > 1) attrs[n++] = split_cluster_attribute(cluster);
    if (pdl) attrs[n++] = pdl_attribute();
    cfg.attrs = attrs;
    cfg.numAttrs = n;
  }
  DecodeLaunch(const DecodeLaunch&) = delete;
  DecodeLaunch& operator=(const DecodeLaunch&) = delete;
};

// Whether launching `ctas` CTAs of `kernel` as clusters of `cluster` CTAs keeps as many resident
// as a plain launch would (min(ctas, SMs x blocks per SM)): clusters must fit inside one GPC,
// which can leave slots unused (H200, 2 CTAs/SM of 115 KB: clusters of 4 ran 1.3x slower than the
// combine). The runtime's answers (resident clusters, and the plain launch's resident CTAs) are
// cached per (device, kernel, bytes, cluster size).
std::map<std::tuple<int, const void*, int64_t, int>, std::pair<int, int64_t>> g_active_clusters;

template <class Kernel>
bool clusters_keep_occupancy(Kernel* kernel, int threads, int64_t smem, int cluster, int64_t ctas) {
  const int device = current_device();
  const auto key = std::make_tuple(device, reinterpret_cast<const void*>(kernel), smem, cluster);
  const auto [clusters, plain] = cached(g_active_clusters, key, [&] {
    const DecodeLaunch one_cluster(dim3(1, unsigned(cluster)), threads, smem, nullptr, false,
                                   cluster);
    int n = 0;
    if (raise_dynamic_smem(kernel, smem) != cudaSuccess ||
        cudaOccupancyMaxActiveClusters(&n, kernel, &one_cluster.cfg) != cudaSuccess) {
      n = 0;  // query failed: no cluster launch
    }
    (void)cudaGetLastError();
    return std::make_pair(n, int64_t(sm_count(device)) * blocks_per_sm(kernel, threads, smem));
  });
  return clusters > 0 && int64_t(clusters) * cluster >= std::min(ctas, plain);
}

bool device_is_hopper_or_newer() { return compute_capability_major(current_device()) >= 9; }

// The tensor-copy (TMA) kernels exist for sm_90+ only.
bool use_bulk_copy(bool hopper) {
  if (!hopper || FM_DECODE_FORCE_CPASYNC) return false;
  return g_copy_mode != DecodeCopyMode::kCpAsync && g_copy_mode != DecodeCopyMode::kCompact;
}

// The copy path and tile: TMA (sm_90+), or cp.async with the regular tile, or with the compact
// tile where the device's shared memory per block is too small for the regular one (sm_86/89).
struct Path {
  bool bulk = false;
  bool compact = false;
  bool wide = false;       // tensor-copy path: the alternative CTA (wide / dense; kAltCta)
  bool key_major = false;  // tensor-copy path: the key-major step (fp16/bf16, <= 8 rows)
};

// f(Config<T, kD, kBulk, kCompact, kAlt, kKeyMajor>{}) for the dtype, the decode head-dim bucket
// and the path.
template <class F>
void dispatch_decode(DType dtype, int64_t head_dim, Path path, F&& f) {
  auto by_dim = [&](auto type_tag) {
    using T = decltype(type_tag);
    auto by_copy = [&](auto dim_tag) {
      constexpr int kD = decltype(dim_tag)::value;
      if (path.bulk) {
        if constexpr (DecodeTraits<T, kD, true, false, true>::kWide) {
          if constexpr (DecodeTraits<T, kD, true, false, true, true>::kKeyMajor) {
            if (path.key_major && path.wide) return f(Config<T, kD, true, false, true, true>{});
            if (path.key_major) return f(Config<T, kD, true, false, false, true>{});
          }
          if (path.wide) return f(Config<T, kD, true, false, true>{});
        } else if constexpr (DecodeTraits<T, kD, true, false, false, true>::kKeyMajor) {
          // 512-byte rows
          if constexpr (DecodeTraits<T, kD, true, false, true, true>::kDense) {
            if (path.key_major && path.wide) return f(Config<T, kD, true, false, true, true>{});
          }
          if (path.key_major) return f(Config<T, kD, true, false, false, true>{});
        }
        return f(Config<T, kD, true>{});
      }
      if constexpr (kD <= 128 || sizeof(T) == 2) {
        if (path.compact) return f(Config<T, kD, false, true>{});
      }
      if constexpr (DecodeTraits<T, kD, false, false, false, true>::kKeyMajor) {
        if (path.key_major) return f(Config<T, kD, false, false, false, true>{});
      }
      return f(Config<T, kD, false>{});
    };
    switch (decode_head_dim_bucket(head_dim)) {
      case 64:
        return by_copy(std::integral_constant<int, 64>{});
      case 128:
        return by_copy(std::integral_constant<int, 128>{});
      default:
        return by_copy(std::integral_constant<int, 256>{});
    }
  };
  switch (dtype) {
    case DType::kFloat32:
      return by_dim(float{});
    case DType::kFloat16:
      return by_dim(__half{});
    case DType::kBFloat16:
      return by_dim(__nv_bfloat16{});
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Tensor map of one cache (K or V) for the TMA path, as a 4-D tensor (innermost first):
// (head_dim, positions, H_k, B) for a contiguous cache, (head_dim, page_size, H_k, pages) for a
// paged one; box = 128 bytes of head dim x `box_rows` positions, 128-byte swizzle, positions
// past the tensor zero-filled. With `full_rows` (head_dim fills its bucket) the head dim is
// split into (128-byte piece, piece) and one box copies whole rows in memory order (H200: 1.00-
// 1.03x over one box per 128-byte column, most at the 268 MB shapes; docs round 9).
// False when the layout cannot be described (then cp.async).
template <typename T>
bool make_cache_map(CUtensorMap* map, const void* base, const Strides& st, const DecodeParams& p,
                    int box_rows, bool full_rows) {
  const bool paged = p.block_table != nullptr;
  const int64_t es = int64_t(sizeof(T));
  const int64_t dims[4] = {p.head_dim, paged ? p.page_size : p.max_seqlen_k, p.heads_kv,
                           paged ? p.num_pages : p.batch};
  const int64_t strides[3] = {st.seq * es, st.head * es, st.batch * es};
  const CUtensorMapL2promotion promotion =
      g_l2_promotion >= 256   ? CU_TENSOR_MAP_L2_PROMOTION_L2_256B
      : g_l2_promotion >= 128 ? CU_TENSOR_MAP_L2_PROMOTION_L2_128B
      : g_l2_promotion >= 64  ? CU_TENSOR_MAP_L2_PROMOTION_L2_64B
                              : CU_TENSOR_MAP_L2_PROMOTION_NONE;
  const CUtensorMapDataType type = std::is_same_v<T, float>    ? CU_TENSOR_MAP_DATA_TYPE_FLOAT32
                                   : std::is_same_v<T, __half> ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                                               : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  if (full_rows) {  // (128-byte piece, piece, positions, H_k, B or pages)
    const int64_t pieces = p.head_dim * es / 128;
    const int64_t dims5[5] = {128 / es, pieces, dims[1], dims[2], dims[3]};
    const int64_t strides5[4] = {128, strides[0], strides[1], strides[2]};
    return make_tensor_map_rows(map, type, int(es), base, 5, dims5, strides5, box_rows, promotion);
  }
  return make_tensor_map_rows(map, type, int(es), base, 4, dims, strides, box_rows, promotion);
}

struct Layout {
  int64_t rows;        // query rows per KV head: group * S_q
  int64_t row_chunks;  // CTAs per (b, h_k) along the rows
  int64_t rows_cta;    // rows of the largest CTA
  int64_t total_rows;  // B * H_q * S_q
};

template <class Tr>
Layout layout(const DecodeParams& p) {
  Layout l;
  l.rows = p.group_size() * p.seqlen_q;
  l.row_chunks = ceil_div(l.rows, Tr::kMaxRows);
  l.rows_cta = std::min<int64_t>(l.rows, Tr::kMaxRows);
  l.total_rows = p.batch * p.heads_q * p.seqlen_q;
  return l;
}

// The key-major step (DecodeTraits::kKeyMajor) where a CTA's query rows fit its N = 8 side.
bool use_key_major(const DecodeParams& p) {
  return g_key_major && p.dtype != DType::kFloat32 &&
         p.group_size() * p.seqlen_q <=
             DecodeTraits<__half, 128, true, false, false, true>::kKeyMajorRows;
}

// The path for p on the current device. Where the regular cp.async tile exceeds the device's
// shared memory per block (99 KB on sm_86/89), fp16/bf16 and head dims <= 128 take the compact
// tile, and fp32 with larger head dims raises a clear error.
Path choose_path(const DecodeParams& p, bool hopper) {
  Path path;
  path.bulk = use_bulk_copy(hopper);
  path.wide = path.bulk && (p.wide_ctas != 0 || g_copy_mode == DecodeCopyMode::kBulkWide);
  path.key_major = use_key_major(p);
  if (path.bulk) return path;
  int64_t regular = 0;
  dispatch_decode(p.dtype, p.head_dim, Path{}, [&](auto cfg) {
    using Tr = typename decltype(cfg)::Traits;
    regular = Tr::smem_bytes(layout<Tr>(p).rows_cta);
  });
  const bool has_compact = decode_head_dim_bucket(p.head_dim) <= 128 || p.dtype != DType::kFloat32;
  if (!has_compact)
    require_smem_per_block(regular,
                           "flash_decode in float32 with head_dim " + std::to_string(p.head_dim),
                           " (fp16/bf16, or float32 with head_dim <= 128, run on it)");
  path.compact = has_compact && (regular > smem_per_block_optin(current_device()) ||
                                 g_copy_mode == DecodeCopyMode::kCompact);
  return path;
}

}  // namespace

void decode_set_tuning(DecodeCopyMode mode, bool allow_pdl) {
  g_copy_mode = mode;
  g_allow_pdl = allow_pdl;
}

void decode_set_tma_l2_promotion(int bytes) { g_l2_promotion = bytes; }

void decode_set_full_row_boxes(bool allow) { g_full_row_boxes = allow; }

void decode_set_key_major(bool allow) { g_key_major = allow; }

void decode_set_cluster_merge(bool allow) { g_allow_cluster = allow; }

void decode_set_persistent(int max_ctas, int blocked_units) {
  g_persistent = max_ctas;
  g_persistent_blocked = blocked_units;
}

int64_t decode_timeline(unsigned long long* out, int64_t max_ctas) {
#if FM_DECODE_TIMELINE
  long long n = 0;
  FM_CUDA_CHECK(cudaMemcpyFromSymbol(&n, g_timeline_ctas, sizeof(n)));
  n = std::min<long long>({n, max_ctas, kTimelineMaxCtas});
  FM_CUDA_CHECK(cudaMemcpyFromSymbol(out, g_timeline,
                                     sizeof(unsigned long long) * kTimelineFields * size_t(n)));
  return n;
#else
  (void)out;
  (void)max_ctas;
  return 0;
#endif
}

// One regular CTA per SM (sm_90 tensor copies, fp16 / bf16): where one wave of them covers the
// `ctas` columns (>= 90% of the SMs) with s = num_sms / ctas splits. Since the loop stopped
// serialising (round 10) its 4 compute warps keep up with an SM's share of the bandwidth: one
// CTA per SM beat the wide CTA and two regular CTAs per SM for key-major rows on the 268 MB
// shapes (H200, round 11), and two regular CTAs per SM for row-major rows (round 12; the
// caller tries the wide CTA first for those). Sets *splits.
bool one_wave_of_regular_ctas(const DecodeParams& p, bool hopper, int64_t ctas, int num_sms,
                              int64_t max_splits, int64_t* splits) {
  if (!FM_DECODE_ONE_PER_SM || !use_bulk_copy(hopper) || ctas > num_sms) return false;
  if (p.dtype == DType::kFloat32) return false;  // measured for fp16 / bf16 only
  if (g_copy_mode != DecodeCopyMode::kAuto && g_copy_mode != DecodeCopyMode::kBulk) return false;
  // Pages of 16 keys cut a 32 KB stage into 8 boxes, and one CTA per SM then streams 12-15%
  // slower than two CTAs per SM with twice the splits (H200, session 14; 32-key pages: within 2%
  // of the contiguous cache either way).
  if (p.block_table != nullptr && p.page_size < 32) return false;
  const int64_t s = std::min<int64_t>(num_sms / ctas, max_splits);
  if (ctas * s * 10 < int64_t(num_sms) * 9) return false;
  *splits = s;
  return true;
}

// Wide CTAs (DecodeTraits::kWide; sm_90, rows <= 256 bytes, a contiguous cache or pages of at
// least a wide block): taken where one wave of one-per-SM CTAs covers the `ctas` columns
// (>= 90% of the SMs) with at most kDecodeMaxClusterSplits splits per column, merged in a
// cluster that keeps every CTA resident. Then each SM holds one CTA, the SMs progress evenly
// and no combine kernel runs; elsewhere (several waves, more splits) the regular 2-CTA/SM tile
// is faster (H200, docs/kernels_decode.md round 7). Since round 11 key-major CTAs take one
// regular CTA per SM instead (one_wave_of_regular_ctas). Sets *splits.
bool wide_ctas_fit(const DecodeParams& p, bool hopper, int64_t ctas, int num_sms,
                   int64_t max_splits, int64_t* splits) {
  if (!use_bulk_copy(hopper) || ctas > num_sms) return false;
  if (g_copy_mode != DecodeCopyMode::kAuto && g_copy_mode != DecodeCopyMode::kBulk) return false;
  const int64_t s = std::min<int64_t>(num_sms / ctas, max_splits);
  if (s > kDecodeMaxClusterSplits || ctas * s * 10 < int64_t(num_sms) * 9) return false;
  Path path;
  path.bulk = path.wide = true;
  path.key_major = use_key_major(p);
  bool fits = false;
  dispatch_decode(p.dtype, p.head_dim, path, [&](auto cfg) {
    using T = typename decltype(cfg)::Type;
    using Tr = typename decltype(cfg)::Traits;
    if constexpr (Tr::kWide) {
      if (p.block_table != nullptr && p.page_size < Tr::kBc) return;
      const int64_t smem = Tr::smem_bytes(layout<Tr>(p).rows_cta);
      auto* kernel = decode_split_kernel<T, Tr::kHeadDim, true, false, true, Tr::kKeyMajor>;
      fits = blocks_per_sm(kernel, Tr::kThreads, smem) >= 1 &&
             (s == 1 || (g_allow_cluster &&
                         clusters_keep_occupancy(kernel, Tr::kThreads, smem, int(s), ctas * s)));
    }
  });
  *splits = s;
  return fits;
}

// The dense CTA (DecodeTraits::kDense; sm_90, key-major 512-byte rows): taken where the `ctas`
// CTAs outnumber the SMs, so that two per SM hide each other's start and end. One wave of one
// CTA per SM keeps the uncapped CTA.
bool dense_ctas_pay(const DecodeParams& p, bool hopper, int64_t ctas, int num_sms) {
  if (!use_bulk_copy(hopper) || ctas <= num_sms) return false;
  if (g_copy_mode != DecodeCopyMode::kAuto && g_copy_mode != DecodeCopyMode::kBulk) return false;
  Path path;
  path.bulk = path.wide = true;
  path.key_major = use_key_major(p);
  bool dense = false;
  dispatch_decode(p.dtype, p.head_dim, path, [&](auto cfg) {
    dense = decltype(cfg)::Traits::kDense;
  });
  return dense;
}

int64_t decode_plan(DecodeParams& p, int num_sms) {
  int64_t row_chunks = 1, per_sm = 1;
  const bool hopper = device_is_hopper_or_newer();
  dispatch_decode(p.dtype, p.head_dim, choose_path(p, hopper), [&](auto cfg) {
    using T = typename decltype(cfg)::Type;
    using Tr = typename decltype(cfg)::Traits;
    const Layout l = layout<Tr>(p);
    row_chunks = l.row_chunks;
    // Resident CTAs per SM: the runtime's occupancy query (shared memory, registers and their
    // per-warp allocation granularity); an estimate from shared memory alone if it fails.
    const int64_t smem = Tr::smem_bytes(l.rows_cta);
    per_sm = std::clamp<int64_t>((228 * 1024) / (smem + 1024), 1, 16);
    const int blocks = blocks_per_sm(
        decode_split_kernel<T, Tr::kHeadDim, Tr::kBulk, Tr::kCompact, Tr::kAltCta, Tr::kKeyMajor>,
        Tr::kThreads, smem);
    if (blocks > 0) per_sm = blocks;
  });
  if (p.num_splits == 0) {
    // Split the keys only when the (b, h_k, row chunk) CTAs fill less than ~a wave. Then pick
    // the fewest splits whose last wave is nearly full: efficiency(s) = waves / ceil(waves)
    // within 95% of the best reachable (measured on H200: one full wave beats two or more,
    // since every extra split costs a partial-O write and prologue). Splits keep at least
    // kDecodeMinKeysPerSplit keys of S_max (an upper bound: lengths live on the device).
    const int64_t ctas = std::max<int64_t>(1, p.batch * p.heads_kv * row_chunks);
    const int64_t slots = int64_t(std::max(num_sms, 1)) * per_sm;
    const int64_t max_splits =
        std::clamp<int64_t>(p.max_seqlen_k / kDecodeMinKeysPerSplit, 1, kDecodeMaxSplits);
    int64_t splits = 1;
    if (ctas * 5 < slots * 4) {
      auto efficiency = [&](int64_t s) {
        const double waves = double(ctas * s) / double(slots);
        return waves / std::ceil(waves);
      };
      double best = 0.0;
      for (int64_t s = 1; s <= max_splits; ++s) best = std::max(best, efficiency(s));
      for (int64_t s = 1; s <= max_splits; ++s) {
        if (efficiency(s) >= 0.95 * best) {
          splits = s;
          break;
        }
      }
    }
    p.wide_ctas = 0;
    int64_t wide_splits = 0, one_wave_splits = 0;
    // Key-major CTAs: one regular CTA per SM first. Row-major CTAs (> 8 rows): the wide CTA
    // where it fits (<= 8 splits in a cluster; 1.01x over one regular CTA per SM at B=8 L=8k and
    // B=16 L=4k, S_q = 4), else one regular CTA per SM rather than two (B=1 L=64k S_q = 4:
    // 1.023x, L=16k 1.04x; H200, round 12).
    const bool one_wave =
        one_wave_of_regular_ctas(p, hopper, ctas, num_sms, max_splits, &one_wave_splits);
    if (one_wave && use_key_major(p)) {
      splits = one_wave_splits;
    } else if (wide_ctas_fit(p, hopper, ctas, num_sms, max_splits, &wide_splits)) {
      splits = wide_splits;
      p.wide_ctas = 1;
    } else if (one_wave) {
      splits = one_wave_splits;
    }
    p.num_splits = splits;
  }
  if (p.wide_ctas == 0 &&
      dense_ctas_pay(p, hopper, p.batch * p.heads_kv * row_chunks * p.num_splits, num_sms))
    p.wide_ctas = 1;
  return decode_workspace_bytes(p);
}

int64_t decode_workspace_bytes(const DecodeParams& p) {
  if (p.num_splits <= 1) return 0;
  const int64_t total_rows = p.batch * p.heads_q * p.seqlen_q;
  return p.num_splits * total_rows * (p.head_dim + 1) * int64_t(sizeof(float));
}

void decode(const DecodeParams& p, cudaStream_t stream) {
  if (p.batch == 0) return;
  const bool hopper = device_is_hopper_or_newer();
  dispatch_decode(p.dtype, p.head_dim, choose_path(p, hopper), [&](auto cfg) {
    using T = typename decltype(cfg)::Type;
    using Tr = typename decltype(cfg)::Traits;
    const Layout l = layout<Tr>(p);

    // 2. Split-KV attention. The TMA kernel needs tensor maps of both caches; a layout they
    //    cannot describe falls back to the cp.async kernel.
    //    A few splits (<= kDecodeMaxClusterSplits, tensor-copy path) run as one thread-block
    //    cluster per (b, h_k, row chunk) and merge in distributed shared memory: no partials,
    //    no combine. More splits write partials to the workspace for the combine kernel.
    const int64_t splits = std::max<int64_t>(1, p.num_splits);
    bool combine = false;
    const dim3 grid(unsigned(p.batch * p.heads_kv * l.row_chunks), unsigned(splits));
    auto launch = [&](auto cfg_split, const CUtensorMap& tm_k, const CUtensorMap& tm_v,
                      bool full_rows) {
      using TrS = typename decltype(cfg_split)::Traits;
      const int64_t smem = TrS::smem_bytes(l.rows_cta);
      auto* kernel = decode_split_kernel<T, TrS::kHeadDim, TrS::kBulk, TrS::kCompact, TrS::kAltCta,
                                         TrS::kKeyMajor>;
      FM_CUDA_CHECK(raise_dynamic_smem(kernel, smem));
      const bool cluster = TrS::kClusterMerge && splits > 1 && splits <= kDecodeMaxClusterSplits &&
                           g_allow_cluster &&
                           clusters_keep_occupancy(kernel, TrS::kThreads, smem, int(splits),
                                                   int64_t(grid.x) * splits);
      combine = splits > 1 && !cluster;
      float* o_part = combine ? static_cast<float*>(p.workspace) : nullptr;
      float* lse_part = combine ? o_part + splits * l.total_rows * p.head_dim : nullptr;
      DecodeLaunch split_launch(grid, TrS::kThreads, smem, stream, use_pdl(hopper),
                                cluster ? int(splits) : 1);
      FM_CUDA_CHECK(cudaLaunchKernelEx(&split_launch.cfg, kernel, static_cast<DecodeParams>(p),
                                       int(l.row_chunks), o_part, lse_part, tm_k, tm_v, full_rows));
      FM_CUDA_CHECK(cudaGetLastError());
    };
    CUtensorMap tm_k{}, tm_v{};
    bool tma = false, full_rows = false;
    if constexpr (Tr::kBulk) {
      const int box_rows = p.block_table ? int(std::min<int64_t>(Tr::kBc, p.page_size)) : Tr::kBc;
      full_rows = g_full_row_boxes && p.head_dim == Tr::kHeadDim;
      tma = p.max_seqlen_k > 0 &&
            make_cache_map<T>(&tm_k, p.k_cache, p.k_cache_strides, p, box_rows, full_rows) &&
            make_cache_map<T>(&tm_v, p.v_cache, p.v_cache_strides, p, box_rows, full_rows);
    }

    // Append first (the attention kernel on the same stream sees the new keys), unless the
    // kernel that runs appends itself (fused).
    auto append_first = [&](bool fused) {
      if (p.k_new == nullptr || p.seqlen_new == 0 || fused) return;
      const int64_t total = p.batch * p.heads_kv * p.seqlen_new * (p.head_dim / (16 / sizeof(T)));
      const int blocks = int(std::min<int64_t>(ceil_div(total, 256), 65536));
      decode_append_kernel<T><<<blocks, 256, 0, stream>>>(p);
      FM_CUDA_CHECK(cudaGetLastError());
    };
    if constexpr (Tr::kBulk && Tr::kKeyMajor && Tr::kNarrow && !Tr::kWide) {
      // More (b, h_k) units than resident CTA slots, one split, key-major rows: the
      // persistent kernel, one CTA per slot (decode_set_persistent: > 0 forces it, with at most
      // that many CTAs; < 0 turns it off).
      if (tma && splits == 1 && l.row_chunks == 1 && g_persistent >= 0) {
        auto* kernel = decode_persistent_kernel<T, Tr::kHeadDim>;
        const int64_t smem = persistent_smem_bytes<T, Tr>();
        FM_CUDA_CHECK(raise_dynamic_smem(kernel, smem));
        const int64_t units = p.batch * p.heads_kv;
        const int64_t slots =
            int64_t(sm_count(current_device())) * blocks_per_sm(kernel, Tr::kThreads, smem);
        if (slots > 0 && units <= INT_MAX && (g_persistent > 0 || units > slots)) {
          const int64_t ctas = std::min(units, g_persistent > 0 ? int64_t(g_persistent) : slots);
          // Units of >= 1 MiB of K in a contiguous cache go to CTAs in runs of neighbours: with
          // u = c, c + G, ... the CTAs stream units 1 MiB apart at the same offsets at once,
          // which the H200 serves ~1.7% slower (B=64 L=4k, round 14); smaller units and paged
          // caches keep the strided order (blocked was 0.5-2% slower there).
          const bool blocked_units =
              g_persistent_blocked >= 0
                  ? g_persistent_blocked > 0
                  : !p.block_table && p.max_seqlen_k * p.head_dim * int64_t(sizeof(T)) >= (1 << 20);
          append_first(append_in_kernel(p, sizeof(T)));
          DecodeLaunch persistent_launch(dim3(unsigned(ctas)), Tr::kThreads, smem, stream,
                                         use_pdl(hopper));
          FM_CUDA_CHECK(cudaLaunchKernelEx(&persistent_launch.cfg, kernel,
                                           static_cast<DecodeParams>(p), tm_k, tm_v, full_rows,
                                           blocked_units));
          FM_CUDA_CHECK(cudaGetLastError());
          return;
        }
      }
    }
    append_first(
        tma && kFusedAppend<DecodeTraits<T, Tr::kHeadDim, true, false, Tr::kAltCta, Tr::kKeyMajor>> &&
        append_in_kernel(p, sizeof(T)));
    if (tma) {
      launch(Config<T, Tr::kHeadDim, true, false, Tr::kAltCta, Tr::kKeyMajor>{}, tm_k, tm_v,
             full_rows);
    } else {
      launch(Config<T, Tr::kHeadDim, false, Tr::kCompact, false, Tr::kKeyMajor>{}, tm_k, tm_v,
             false);
    }

    // 3. Combine the splits through their lse.
    if (combine) {
      const float* o_part = static_cast<const float*>(p.workspace);
      const float* lse_part = o_part + splits * l.total_rows * p.head_dim;
      // Programmatic dependent launch (sm_90+): the combine is launched while the split kernel's
      // last wave runs and waits on griddepcontrol.wait, hiding the launch gap.
      DecodeLaunch combine_launch(dim3(unsigned(l.total_rows)), kCombineThreads, 0, stream,
                                  use_pdl(hopper));
      FM_CUDA_CHECK(cudaLaunchKernelEx(&combine_launch.cfg, decode_combine_kernel<T>,
                                       static_cast<DecodeParams>(p), o_part, lse_part,
                                       int(splits)));
      FM_CUDA_CHECK(cudaGetLastError());
    }
  });
}

}  // namespace flashmin::cuda
