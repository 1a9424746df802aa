// Part of the Flash-Decoding kernels, included by src/cuda/decode.cu only (one translation unit;
// see its header comment): the warp-level tile math (row-major and key-major steps of the FA2 inner
// loop), Q_i loads and the row output.
#pragma once

#include "cuda/decode_device_helpers.cuh"

namespace flashmin::cuda {
namespace {

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

}  // namespace
}  // namespace flashmin::cuda
