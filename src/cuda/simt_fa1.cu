// FA1 on CUDA cores: the FlashAttention (v1) paper's loop order, kept as the teaching baseline.
// Same tile math as simt_fa2.cu (simt_common.cuh); what differs is the loop nest and therefore
// what travels through global memory (HBM):
//   forward  (FA1 Algorithm 1): one CTA per (head, batch). Outer loop over key blocks j (K_j, V_j
//            loaded once), inner loop over query blocks i: Q_i, O_i, l_i, m_i are READ from HBM,
//            updated, and WRITTEN back after every block, so O_i makes T_c round trips (FA2: one
//            write). O_i lives in an fp32 workspace, normalised after every step as in the paper,
//            and is converted to the output dtype (+ lse) at the end.
//   backward (FA1 Algorithm 4): one CTA per (KV head, batch). Outer loop over j with dK_j, dV_j
//            on chip; inner loop over the group's query heads and query blocks i, reading Q_i, O_i,
//            dO_i, dQ_i, lse_i and writing dQ_i back (fp32 workspace) after every block. One CTA
//            owns every query head of its KV group, so dK_j, dV_j and dQ_i have a single writer: no
//            races under GQA and bitwise reproducible results.
#include "cuda/simt_common.cuh"

namespace flashmin::cuda {
namespace simt {
namespace {

// ============================== forward (FA1 Algorithm 1) ==============================
// Workspace (fp32): O (B, H_q, S_q, d), then m (B, H_q, S_q), then l (B, H_q, S_q).
template <typename T, int kD>
__global__ void __launch_bounds__(kThreads, 1) fa1_fwd_simt_kernel(const AttnParams p) {
  using Tile = SimtTile<kD>;
  constexpr int B_r = Tile::kFwdBr, B_c = Tile::kFwdBc, ld = Tile::kLd, ld_pt = B_r + 4;
  constexpr int TM = B_r / 16, TN = B_c / 16, TN4 = kD / 64;
  extern __shared__ float4 smem_raw[];
  float* Q_s = reinterpret_cast<float*>(smem_raw);  // Q_i     (B_r x d)
  float* K_s = Q_s + B_r * ld;                      // K_j     (B_c x d)
  float* V_s = K_s + B_c * ld;                      // V_j     (B_c x d)
  float* Pt_s = V_s + B_c * ld;                     // P_ij^T  (B_c x B_r)

  const int d = static_cast<int>(p.head_dim);
  const int mg = threadIdx.x / 16, ng = threadIdx.x % 16;
  // One CTA per (h, b): the only parallelism FA1 has.
  const int64_t bh = blockIdx.x;
  const int64_t h = bh % p.heads_q, b = bh / p.heads_q, hk = h / (p.heads_q / p.heads_kv);
  const int64_t S_q = p.seqlen_q, rows_all = p.batch * p.heads_q * S_q;
  float* O_hbm = static_cast<float*>(p.workspace) + bh * S_q * d;             // O   (S_q x d)
  float* m_hbm = static_cast<float*>(p.workspace) + rows_all * d + bh * S_q;  // m (S_q)
  float* l_hbm = m_hbm + rows_all;                                            // l (S_q)
  const T* Q = head_ptr(static_cast<const T*>(p.q), p.q_strides, b, h);
  const T* K = head_ptr(static_cast<const T*>(p.k), p.k_strides, b, hk);
  const T* V = head_ptr(static_cast<const T*>(p.v), p.v_strides, b, hk);
  const int64_t T_r = (S_q + B_r - 1) / B_r, T_c = (p.seqlen_k + B_c - 1) / B_c;
  float ones[TM];
#pragma unroll
  for (int r = 0; r < TM; ++r) ones[r] = 1.0f;

  // Line 2: initialise O = 0, l = 0, m = -inf in HBM. Each thread writes exactly the elements
  // it will read and write later (same ownership in every step: no block-wide sync needed).
  for (int64_t i = 0; i < T_r; ++i) {
    float O[TM][4 * TN4];
    zero(O);
    store_out<float>(O_hbm, d, i * B_r, S_q, d, O, ones);
    if (ng == 0)
      for (int r = 0; r < TM; ++r) {
        const int64_t row = i * B_r + mg * TM + r;
        if (row < S_q) m_hbm[row] = -INFINITY, l_hbm[row] = 0.0f;
      }
  }

  // Line 5: for 1 <= j <= T_c
  for (int64_t j = 0; j < T_c; ++j) {
    const int64_t col0 = j * B_c;
    __syncthreads();  // everyone is done with K_s, V_s of block j - 1 (and with m/l writes)
    // Line 6: load K_j, V_j (B_c x d) from HBM to on-chip SRAM.
    const int valid_c = tile_rows(B_c, p.seqlen_k - col0);
    load_tile(K_s, ld, K + col0 * p.k_strides.seq, p.k_strides.seq, B_c, valid_c, d);
    load_tile(V_s, ld, V + col0 * p.v_strides.seq, p.v_strides.seq, B_c, valid_c, d);

    // Line 7: for 1 <= i <= T_r (causal: query blocks that see no key of block j are skipped)
    for (int64_t i = first_query(col0, p) / B_r; i < T_r; ++i) {
      const int64_t row0 = i * B_r;
      __syncthreads();  // everyone is done with Q_s, Pt_s of the previous step
      // Line 8: load Q_i, O_i, l_i, m_i from HBM (O_i: this thread's part, TM x 4*TN4).
      load_tile(Q_s, ld, Q + row0 * p.q_strides.seq, p.q_strides.seq, B_r,
                tile_rows(B_r, S_q - row0), d);
      float O[TM][4 * TN4];
      load_acc(O, O_hbm, row0, S_q, d);
      SoftmaxState st[TM];  // (m_i, l_i), full row values
#pragma unroll
      for (int r = 0; r < TM; ++r) {
        const int64_t row = row0 + mg * TM + r;
        st[r] = row < S_q ? SoftmaxState{m_hbm[row], l_hbm[row]} : SoftmaxState::empty();
      }
      __syncthreads();

      // Line 9: S_ij = scale * Q_i K_j^T   (B_r x B_c; thread part TM x TN)
      float S[TM][TN];
      scores(S, Q_s, K_s, ld, row0, col0, p);

      // Line 10: m~_ij = rowmax(S_ij), P~_ij = exp(S_ij - m~_ij), l~_ij = rowsum(P~_ij)
      // Line 11: m_i_new = max(m_i, m~_ij),
      //          l_i_new = e^(m_i - m_i_new) l_i + e^(m~_ij - m_i_new) l~_ij
      // Line 12: O_i = diag(l_i_new)^-1 (diag(l_i) e^(m_i - m_i_new) O_i
      //                                   + e^(m~_ij - m_i_new) P~_ij V_j)
      //   computed as O_i = a_i O_i + (c_i P~_ij) V_j with a_i = l_i e^(m_i - m_i_new) / l_i_new
      //   and c_i = e^(m~_ij - m_i_new) / l_i_new folded into P~ before the product.
#pragma unroll
      for (int r = 0; r < TM; ++r) {
        float mx = S[r][0];
#pragma unroll
        for (int c = 1; c < TN; ++c) mx = fmaxf(mx, S[r][c]);
        const float m_tilde = row_max16(mx);
        const float m_use = m_tilde == -INFINITY ? 0.0f : m_tilde;
        float sum = 0.0f;
#pragma unroll
        for (int c = 0; c < TN; ++c) {
          S[r][c] = expf(S[r][c] - m_use);
          sum += S[r][c];
        }
        const float l_tilde = row_sum16(sum);
        const float l_old = st[r].l;
        float e_old, e_tilde;
        st[r].merge(SoftmaxState{m_tilde, l_tilde}, &e_old, &e_tilde);
        const float inv_l_new = st[r].inv_l();
        const float a = l_old * e_old * inv_l_new, c_i = e_tilde * inv_l_new;
#pragma unroll
        for (int n = 0; n < 4 * TN4; ++n) O[r][n] *= a;
#pragma unroll
        for (int c = 0; c < TN; ++c) S[r][c] *= c_i;
      }
      store_scores(static_cast<float*>(nullptr), 0, Pt_s, ld_pt, S);  // (c_i P~_ij)^T -> smem
      __syncthreads();
      tile_mma_tn<B_c>(O, Pt_s, ld_pt, V_s, ld, d);  // O_i += (c_i P~_ij) V_j

      // Line 13: write O_i, l_i, m_i to HBM.
      store_out<float>(O_hbm, d, row0, S_q, d, O, ones);
      if (ng == 0)
#pragma unroll
        for (int r = 0; r < TM; ++r) {
          const int64_t row = row0 + mg * TM + r;
          if (row < S_q) m_hbm[row] = st[r].m, l_hbm[row] = st[r].l;
        }
    }
  }

  // Line 16: return O (converted to the output dtype) and lse = m + log(l) (-inf: empty row).
  __syncthreads();  // m/l were written by the ng == 0 thread of each row group
  T* O_out = head_ptr(static_cast<T*>(p.o), p.o_strides, b, h);
  for (int64_t i = 0; i < T_r; ++i) {
    float O[TM][4 * TN4];
    load_acc(O, O_hbm, i * B_r, S_q, d);
    store_out<T>(O_out, p.o_strides.seq, i * B_r, S_q, d, O, ones);
    if (ng == 0)
      for (int r = 0; r < TM; ++r) {
        const int64_t row = i * B_r + mg * TM + r;
        if (row < S_q) p.lse[bh * S_q + row] = SoftmaxState{m_hbm[row], l_hbm[row]}.lse();
      }
  }
}

// ============================== backward (FA1 Algorithm 4) ==============================
// Workspace (fp32): dQ (B, H_q, S_q, d), accumulated unscaled; dQ = scale * dQ_hbm at the end.
template <typename T, int kD>
__global__ void __launch_bounds__(kThreads, 1) fa1_bwd_simt_kernel(const AttnBwdParams p) {
  using Tile = SimtTile<kD>;
  constexpr int B_r = Tile::kBwdBr, B_c = Tile::kBwdBc, ld = Tile::kLd;
  constexpr int ld_p = B_c + 4, ld_st = B_r + 4;
  constexpr int TMr = B_r / 16, TNc = B_c / 16, TMc = B_c / 16, TN4 = kD / 64;
  extern __shared__ float4 smem_raw[];
  float* K_s = reinterpret_cast<float*>(smem_raw);  // K_j      (B_c x d)
  float* V_s = K_s + B_c * ld;                      // V_j      (B_c x d)
  float* Q_s = V_s + B_c * ld;                      // Q_i      (B_r x d)
  float* dO_s = Q_s + B_r * ld;                     // dO_i     (B_r x d)
  float* P_s = dO_s + B_r * ld;                     // P_ij     (B_r x B_c)
  float* dS_s = P_s + B_r * ld_p;                   // dS_ij    (B_r x B_c)
  float* lse_s = dS_s + B_r * ld_p;                 // lse_i    (B_r)
  float* D_s = lse_s + B_r;                         // D_i      (B_r)
  float* dSt_s = D_s + B_r;                         // dS_ij^T  (B_c x B_r)

  const int d = static_cast<int>(p.head_dim);
  const int warp = threadIdx.x / 32;
  // One CTA per (KV head, batch): the group's query heads are processed in turn.
  const int64_t bhk = blockIdx.x;
  const int64_t hk = bhk % p.heads_kv, b = bhk / p.heads_kv, G = p.heads_q / p.heads_kv;
  const int64_t S_q = p.seqlen_q;
  const int64_t T_r = (S_q + B_r - 1) / B_r, T_c = (p.seqlen_k + B_c - 1) / B_c;
  float* dQ_hbm_b = static_cast<float*>(p.workspace) + b * p.heads_q * S_q * d;  // (H_q, S_q, d)
  float ones[TMr];
#pragma unroll
  for (int r = 0; r < TMr; ++r) ones[r] = 1.0f;

  // Line 5: initialise dQ = 0 in HBM (each thread its own elements, as for O in the forward).
  for (int64_t h = hk * G; h < (hk + 1) * G; ++h)
    for (int64_t i = 0; i < T_r; ++i) {
      float dQ[TMr][4 * TN4];
      zero(dQ);
      store_out<float>(dQ_hbm_b + h * S_q * d, d, i * B_r, S_q, d, dQ, ones);
    }

  // Line 6: for 1 <= j <= T_c
  for (int64_t j = 0; j < T_c; ++j) {
    const int64_t col0 = j * B_c;
    const int valid_c = tile_rows(B_c, p.seqlen_k - col0);
    __syncthreads();  // everyone is done with K_s, V_s of block j - 1
    // Line 7: load K_j, V_j (B_c x d) to SRAM. Line 8: dK_j = dV_j = 0 on chip.
    load_tile(K_s, ld,
              head_ptr(static_cast<const T*>(p.k), p.k_strides, b, hk) + col0 * p.k_strides.seq,
              p.k_strides.seq, B_c, valid_c, d);
    load_tile(V_s, ld,
              head_ptr(static_cast<const T*>(p.v), p.v_strides, b, hk) + col0 * p.v_strides.seq,
              p.v_strides.seq, B_c, valid_c, d);
    float dK[TMc][4 * TN4], dV[TMc][4 * TN4];
    zero(dK);
    zero(dV);

    for (int64_t h = hk * G; h < (hk + 1) * G; ++h) {  // GQA: the query heads sharing K_j, V_j
      const int64_t bh = b * p.heads_q + h;
      const T* Q = head_ptr(static_cast<const T*>(p.q), p.q_strides, b, h);
      const T* O = head_ptr(static_cast<const T*>(p.o), p.o_strides, b, h);
      const T* dO = head_ptr(static_cast<const T*>(p.dout), p.dout_strides, b, h);
      float* dQ_hbm = dQ_hbm_b + h * S_q * d;
      // Line 9: for 1 <= i <= T_r (causal: query blocks that see no key of block j are skipped)
      for (int64_t i = first_query(col0, p) / B_r; i < T_r; ++i) {
        const int64_t row0 = i * B_r;
        const int valid_r = tile_rows(B_r, S_q - row0);
        __syncthreads();  // everyone is done with Q_s, dO_s, P_s, dS_s, dSt_s, D_s
        // Line 10: load Q_i, O_i, dO_i, dQ_i, lse_i (the paper's l_i, m_i) from HBM.
        load_tile(Q_s, ld, Q + row0 * p.q_strides.seq, p.q_strides.seq, B_r, valid_r, d);
        load_tile(dO_s, ld, dO + row0 * p.dout_strides.seq, p.dout_strides.seq, B_r, valid_r, d);
        for (int r = threadIdx.x; r < B_r; r += kThreads)
          lse_s[r] = r < valid_r ? p.lse[bh * S_q + row0 + r] : INFINITY;  // +inf: P = 0
        // D_i = rowsum(dO_i o O_i), recomputed from O_i in every step (one warp per row).
        for (int r = warp; r < B_r; r += kThreads / 32) {
          const float D = r < valid_r ? row_dot(dO + (row0 + r) * p.dout_strides.seq,
                                                O + (row0 + r) * p.o_strides.seq, d)
                                      : 0.0f;
          if (threadIdx.x % 32 == 0) D_s[r] = D;
        }
        float dQ[TMr][4 * TN4];  // dQ_i, this thread's part (TMr x 4*TN4)
        load_acc(dQ, dQ_hbm, row0, S_q, d);
        __syncthreads();

        // Lines 11-20: S_ij = scale Q_i K_j^T; P_ij = exp(S_ij - lse_i); dP_ij = dO_i V_j^T;
        // dS_ij = P_ij o (dP_ij - D_i)     (B_r x B_c; thread part TMr x TNc)
        float P[TMr][TNc], dS[TMr][TNc];
        bwd_probs(P, dS, Q_s, dO_s, K_s, V_s, lse_s, D_s, ld, row0, col0, p);
        store_scores(P_s, ld_p, static_cast<float*>(nullptr), 0, P);
        store_scores(dS_s, ld_p, dSt_s, ld_st, dS);
        __syncthreads();

        // Line 16: dV_j += P_ij^T dO_i    (B_c x d)
        tile_mma_tn<B_r>(dV, P_s, ld_p, dO_s, ld, d);
        // Line 22: dK_j += dS_ij^T Q_i    (B_c x d; times scale at the end)
        tile_mma_tn<B_r>(dK, dS_s, ld_p, Q_s, ld, d);
        // Line 21: dQ_i += dS_ij K_j      (B_r x d), written back to HBM
        tile_mma_tn<B_c>(dQ, dSt_s, ld_st, K_s, ld, d);
        store_out<float>(dQ_hbm, d, row0, S_q, d, dQ, ones);
      }
    }

    // Line 24: write dK_j (scaled), dV_j to HBM.
    float ones_c[TMc], scales_c[TMc];
#pragma unroll
    for (int r = 0; r < TMc; ++r) ones_c[r] = 1.0f, scales_c[r] = p.scale;
    store_out<T>(head_ptr(static_cast<T*>(p.dk), p.dk_strides, b, hk), p.dk_strides.seq, col0,
                 p.seqlen_k, d, dK, scales_c);
    store_out<T>(head_ptr(static_cast<T*>(p.dv), p.dv_strides, b, hk), p.dv_strides.seq, col0,
                 p.seqlen_k, d, dV, ones_c);
  }

  // Return dQ = scale * dQ_hbm in the output dtype (same per-thread ownership: no sync needed).
  float scales[TMr];
#pragma unroll
  for (int r = 0; r < TMr; ++r) scales[r] = p.scale;
  for (int64_t h = hk * G; h < (hk + 1) * G; ++h)
    for (int64_t i = 0; i < T_r; ++i) {
      float dQ[TMr][4 * TN4];
      load_acc(dQ, dQ_hbm_b + h * S_q * d, i * B_r, S_q, d);
      store_out<T>(head_ptr(static_cast<T*>(p.dq), p.dq_strides, b, h), p.dq_strides.seq, i * B_r,
                   S_q, d, dQ, scales);
    }
}

}  // namespace
}  // namespace simt

void simt_fa1_fwd(const AttnParams& p, cudaStream_t stream) {
  using namespace simt;
  dispatch_dtype(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_head_dim(p.head_dim, [&](auto kD_c) {
      constexpr int kD = decltype(kD_c)::value;
      launch(fa1_fwd_simt_kernel<T, kD>, p.batch * p.heads_q, SimtTile<kD>::fwd_smem(), stream, p);
    });
  });
}

void simt_fa1_bwd(const AttnBwdParams& p, cudaStream_t stream) {
  using namespace simt;
  dispatch_dtype(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_head_dim(p.head_dim, [&](auto kD_c) {
      constexpr int kD = decltype(kD_c)::value;
      launch(fa1_bwd_simt_kernel<T, kD>, p.batch * p.heads_kv, SimtTile<kD>::bwd_kv_smem(true),
             stream, p);
    });
  });
}

}  // namespace flashmin::cuda
