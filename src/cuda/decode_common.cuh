// Device helpers shared by the Flash-Decoding kernels: the per-CTA split kernel (decode.cu)
// and the persistent stream kernel (decode_stream.cu). Shared-memory tile offsets, sequence
// lengths and page lookup, the warp-level tile math (S = Q K^T, O += P V, one 16-key chunk of
// the FA2 inner loop) and the TMA issue of one K_j, V_j block.
#pragma once

#include <cuda.h>  // CUtensorMap (type only)
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "flashmin/cuda/copy.h"
#include "flashmin/cuda/mma.h"
#include "flashmin/cuda/tma.h"
#include "flashmin/params.h"

namespace flashmin::cuda::decode_detail {

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
// K_j, V_j on the tensor-copy path: kDBoxes boxes of [B_c][128 bytes]; TMA's 128-byte swizzle
// puts 16-byte chunk c of a box row r at chunk c ^ (r % 8) (boxes start 1024-byte aligned).
template <class Tr>
__device__ __forceinline__ int kv_off(int row, int vec) {
  if constexpr (Tr::kBulk) {
    return (vec / 8) * (Tr::kBc * Tr::kBoxCols) + row * Tr::kBoxCols +
           (((vec % 8) ^ (row & 7)) * Tr::kVec);
  }
  return q_off<Tr>(row, vec);
}

// ---- Hopper (sm_90): mbarriers and TMA copies come from flashmin/cuda/tma.h (FM_HAS_TMA: sm_90
// and newer device code); PDL here, under the same condition.

// Programmatic dependent launch: let the combine kernel launch early / wait for our results.
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

__device__ __forceinline__ SeqLen seq_len(const DecodeParams& p, int64_t b) {
  const int64_t cached = p.cache_seqlens ? int64_t(p.cache_seqlens[b]) : p.max_seqlen_k;
  const bool valid = cached >= 0 && cached + p.seqlen_new <= p.max_seqlen_k;
  return {valid ? cached + p.seqlen_new : 0, valid};
}

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

// S (16 x 16) = Q_i (16 x D) K_c^T; Q_i = rows r0.. of Qs, K_c = keys c0.. of Ks.
template <class Tr, typename T>
__device__ __forceinline__ void warp_qk(float (&S)[2][4], const T* Qs, int r0, const T* Ks, int c0,
                                        int lane, int head_dim) {
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
          const float4 k = ld4(Ks + kv_off<Tr>(c0 + nt * 8 + 2 * q + e, v));
          S[nt][e] += dot4(qa, k);
          S[nt][2 + e] += dot4(qb, k);
        }
      }
    }
  } else {
    // Tensor cores: A = Q_i (16 x 16 slice of D), B = K_c^T (16 x 16): ldmatrix (non-trans)
    // of K rows gives the "col" B fragment directly; matrices 0,1 are keys 0-7, 2,3 keys 8-15.
#pragma unroll
    for (int ks = 0; ks < Tr::kHeadDim / 16; ++ks) {
      if (ks * 16 >= head_dim) break;
      uint32_t a[4], bk[4];
      ldmatrix_x4(a, Qs + q_off<Tr>(r0 + ((lane / 8) & 1) * 8 + lane % 8, ks * 2 + lane / 16));
      ldmatrix_x4(bk, Ks + kv_off<Tr>(c0 + (lane / 16) * 8 + lane % 8, ks * 2 + ((lane / 8) & 1)));
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
                                        int kv_valid) {
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
        float2 v =
            *reinterpret_cast<const float2*>(Vs + kv_off<Tr>(c0 + k, nd * 2 + q / 2) + (q & 1) * 2);
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
    const int k2 = 2 * (lane % 4);
    const uint32_t keep_lo =
        (k2 < kv_valid ? 0x0000ffffu : 0u) | (k2 + 1 < kv_valid ? 0xffff0000u : 0u);
    const uint32_t keep_hi =
        (k2 + 8 < kv_valid ? 0x0000ffffu : 0u) | (k2 + 9 < kv_valid ? 0xffff0000u : 0u);
#pragma unroll
    for (int nd = 0; nd < Tr::kHeadDim / 16; ++nd) {
      if (nd * 16 >= head_dim) break;
      uint32_t bv[4];
      ldmatrix_x4_trans(bv,
                        Vs + kv_off<Tr>(c0 + ((lane / 8) & 1) * 8 + lane % 8, nd * 2 + lane / 16));
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

// One 16-key chunk of the FA2 inner loop for the warp's 16 query rows (rows r0.. of Qs):
// S = Q_i K_c^T in the log2 domain, keys past each row's causal limit (and past L) masked,
// online softmax update of (m_i, l_i) with O rescaled, then O += P V_c. Keys key0.. of the
// sequence sit at chunk c of the stage (Ks, Vs). t_row: query positions of the lane's two rows.
template <class Tr, typename T>
__device__ __forceinline__ void attend_chunk(float (&O)[Tr::kHeadDim / 8][4], float (&m_i)[2],
                                             float (&l_i)[2], const T* Qs, int r0, const T* Ks,
                                             const T* Vs, int c, int64_t key0, int64_t L,
                                             int64_t causal_limit, const int64_t (&t_row)[2],
                                             float scale_log2, int lane, int head_dim, float* Pw) {
  // S_ij = Q_i K_j^T   (16 rows x 16 keys)
  float S[2][4] = {};
  warp_qk<Tr>(S, Qs, r0, Ks, c * Tr::kKeyChunk, lane, head_dim);

  // Scale into the log2 domain; mask keys past each row's causal limit (and past L).
  const bool need_mask = key0 + Tr::kKeyChunk - 1 > causal_limit;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      S[nt][e] *= scale_log2;
      const int64_t key = key0 + nt * 8 + 2 * (lane % 4) + (e & 1);
      if (need_mask && key > causal_limit + t_row[e >> 1]) S[nt][e] = -INFINITY;
    }
  }

  // m_i = max(m_i, rowmax(S_ij)),  P_ij = exp2(S_ij - m_i),  l_i = e^(..) l_i + rowsum(P)
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float mx = fmaxf(fmaxf(S[0][2 * h], S[0][2 * h + 1]), fmaxf(S[1][2 * h], S[1][2 * h + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m_i[h], mx);
    const float alpha = m_i[h] == -INFINITY ? 0.0f : fast_exp2(m_i[h] - m_new);
    const float m_ref = m_new == -INFINITY ? 0.0f : m_new;  // fully masked row: P = 0
    float row_sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        S[nt][2 * h + e] = fast_exp2(S[nt][2 * h + e] - m_ref);
        row_sum += S[nt][2 * h + e];
      }
    }
    l_i[h] = l_i[h] * alpha + row_sum;
    m_i[h] = m_new;
#pragma unroll
    for (int nd = 0; nd < Tr::kHeadDim / 8; ++nd) {
      O[nd][2 * h] *= alpha;
      O[nd][2 * h + 1] *= alpha;
    }
  }

  // O_i += P_ij V_j
  warp_pv<Tr>(O, S, Vs, c * Tr::kKeyChunk, lane, head_dim, Pw,
              int(min(int64_t(Tr::kKeyChunk), L - key0)));
}

// TMA issue of key block blk of (b, h_k) into a stage (one thread). The block is cut into
// sub-blocks of `sub_rows` keys (B_c, or the page size when pages are smaller) that each lie in
// one page; a sub-block starting at or past L is skipped (its keys are masked), so only pages the
// sequence uses are looked up. Keys in [L, sub-block end) are loaded as whatever the cache holds
// and neutralised by the mask (K) and warp_pv's kv_valid (V). Head-dim boxes past D are not
// issued (the TMA zero-fills their columns). Returns false on a page index out of range (that
// sub-block is not loaded; the caller poisons the sequence); then *bad_flag (if given) is set
// to 1 before the arrival, so a consumer that waited for the block sees it.
template <class Tr, typename T>
__device__ __forceinline__ bool issue_kv_block(const DecodeParams& p, const CUtensorMap* tm_k,
                                               const CUtensorMap* tm_v, int64_t b, int64_t hk,
                                               int64_t blk, int64_t L, int log2_page, T* Ks, T* Vs,
                                               uint64_t* full_bar, int* bad_flag = nullptr) {
  constexpr int kBc = Tr::kBc;
  constexpr int kMaxSub = kBc / 16;  // page_size >= 16
  const int sub_rows = p.block_table ? int(min(int64_t(kBc), p.page_size)) : kBc;
  const int n_sub = kBc / sub_rows;
  const int d_boxes = (int(p.head_dim) + Tr::kBoxCols - 1) / Tr::kBoxCols;
  int slot[kMaxSub], pos[kMaxSub];
  uint32_t bytes = 0;
  bool ok = true;
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
      ok = false;
    }
  }
  if (!ok && bad_flag != nullptr) *bad_flag = 1;
  mbar_arrive_expect_tx(full_bar, bytes);
#pragma unroll
  for (int i = 0; i < kMaxSub; ++i) {
    if (slot[i] < 0) continue;
    for (int db = 0; db < d_boxes; ++db) {
      const int off = db * kBc * Tr::kBoxCols + i * sub_rows * Tr::kBoxCols;
      tma_load_4d(Ks + off, tm_k, db * Tr::kBoxCols, pos[i], int(hk), slot[i], full_bar);
      tma_load_4d(Vs + off, tm_v, db * Tr::kBoxCols, pos[i], int(hk), slot[i], full_bar);
    }
  }
  return ok;
}

}  // namespace flashmin::cuda::decode_detail
