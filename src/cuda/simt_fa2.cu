// FA2 on CUDA cores (the exact fp32 path; also instantiated for fp16/bf16 storage), following the
// FlashAttention-2 paper:
//   forward  (Algorithm 1): one CTA per (query block i, head, batch); K_j, V_j stream through
//            shared memory; m_i, l_i and O_i stay on chip and are written once, with lse_i.
//   backward (Algorithm 2): D = rowsum(dO o O) preprocess; one CTA per (key block j, KV head,
//            batch) accumulates dK_j, dV_j on chip over every query block (and over the query heads
//            of a GQA group, so no two CTAs write the same dK_j); dQ_i in a second kernel, one CTA
//            per query block, accumulating dQ_i = sum_j dS_ij K_j in fp32 registers.
// No float atomics anywhere: the gradients are bitwise reproducible in every mode, so
// p.deterministic needs no separate path (the price is recomputing S_ij, dP_ij in the dQ kernel).
// All arithmetic is fp32 (fmaf, expf); the tile products live in simt_common.cuh.
#include "cuda/simt_common.cuh"

namespace flashmin::cuda {
namespace simt {
namespace {

// ============================== forward (FA2 Algorithm 1) ==============================
template <typename T, int kD>
__global__ void __launch_bounds__(kThreads, SimtTile<kD>::fwd_min_blocks())
    fa2_fwd_simt_kernel(const AttnParams p) {
  using Tile = SimtTile<kD>;
  constexpr int B_r = Tile::kFwdBr, B_c = Tile::kFwdBc, ld = Tile::kLd, ld_pt = B_r + 4;
  constexpr int TM = B_r / 16, TN = B_c / 16, TN4 = kD / 64;
  extern __shared__ float4 smem_raw[];
  float* Q_s = reinterpret_cast<float*>(smem_raw);  // Q_i     (B_r x d)
  float* K_s = Q_s + B_r * ld;                      // K_j     (B_c x d)
  float* V_s = K_s + B_c * ld;                      // V_j     (B_c x d)
  float* Pt_s = V_s + B_c * ld;                     // P_ij^T  (B_c x B_r)

  const int d = static_cast<int>(p.head_dim);
  const int ng = threadIdx.x % 16;
  // One CTA per (i, h, b); the largest i (longest causal row blocks) are scheduled first.
  const int64_t T_r = (p.seqlen_q + B_r - 1) / B_r;
  const int64_t i = T_r - 1 - static_cast<int64_t>(blockIdx.x) % T_r;
  const int64_t bh = static_cast<int64_t>(blockIdx.x) / T_r;
  const int64_t h = bh % p.heads_q, b = bh / p.heads_q, hk = h / (p.heads_q / p.heads_kv);
  const int64_t row0 = i * B_r;
  const T* Q = head_ptr(static_cast<const T*>(p.q), p.q_strides, b, h);
  const T* K = head_ptr(static_cast<const T*>(p.k), p.k_strides, b, hk);
  const T* V = head_ptr(static_cast<const T*>(p.v), p.v_strides, b, hk);

  // Load Q_i (B_r x d) to shared memory: read once, reused for every K_j.
  load_tile(Q_s, ld, Q + row0 * p.q_strides.seq, p.q_strides.seq, B_r,
            tile_rows(B_r, p.seqlen_q - row0), d);

  // On chip: O_i = 0 (B_r x d, thread part TM x 4*TN4), m_i = -inf, l_i = 0. l_i is kept as
  // this thread's partial row sum and reduced over the half-warp once, at the end.
  float O[TM][4 * TN4];
  zero(O);
  SoftmaxState st[TM];
#pragma unroll
  for (int r = 0; r < TM; ++r) st[r] = SoftmaxState::empty();

  const int64_t kv_len = visible_keys(row0, B_r, p);  // causal: later key blocks are skipped
  const int64_t T_c = (kv_len + B_c - 1) / B_c;
  for (int64_t j = 0; j < T_c; ++j) {
    const int64_t col0 = j * B_c;
    __syncthreads();  // everyone is done with K_s, V_s, Pt_s of block j - 1
    // Load K_j, V_j (B_c x d) to shared memory.
    const int valid = tile_rows(B_c, p.seqlen_k - col0);
    load_tile(K_s, ld, K + col0 * p.k_strides.seq, p.k_strides.seq, B_c, valid, d);
    load_tile(V_s, ld, V + col0 * p.v_strides.seq, p.v_strides.seq, B_c, valid, d);
    __syncthreads();

    // S_ij = scale * Q_i K_j^T   (B_r x B_c; thread part TM x TN), invisible keys -> -inf
    float S[TM][TN];
    scores(S, Q_s, K_s, ld, row0, col0, p);

    // m_i_new = max(m_i, rowmax(S_ij)); P_ij = exp(S_ij - m_i_new);
    // l_i = exp(m_i - m_i_new) l_i + rowsum(P_ij); O_i = diag(exp(m_i - m_i_new)) O_i
#pragma unroll
    for (int r = 0; r < TM; ++r) {
      float mx = S[r][0];
#pragma unroll
      for (int c = 1; c < TN; ++c) mx = fmaxf(mx, S[r][c]);
      const float m_new = fmaxf(st[r].m, row_max16(mx));
      const float alpha = SoftmaxState::rescale(st[r].m, m_new);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // empty so far: P = exp(-inf) = 0
      float sum = 0.0f;
#pragma unroll
      for (int c = 0; c < TN; ++c) {
        S[r][c] = expf(S[r][c] - m_use);
        sum += S[r][c];
      }
      st[r].l = st[r].l * alpha + sum;
      st[r].m = m_new;
#pragma unroll
      for (int n = 0; n < 4 * TN4; ++n) O[r][n] *= alpha;
    }
    store_scores(static_cast<float*>(nullptr), 0, Pt_s, ld_pt, S);  // P_ij^T -> smem
    __syncthreads();

    // O_i += P_ij V_j   (B_r x d)
    tile_mma_tn<B_c>(O, Pt_s, ld_pt, V_s, ld, d);
  }

  // O_i = diag(l_i)^-1 O_i; lse_i = m_i + log(l_i). Empty rows: O_i = 0, lse_i = -inf.
  float inv_l[TM];
#pragma unroll
  for (int r = 0; r < TM; ++r) {
    st[r].l = row_sum16(st[r].l);
    inv_l[r] = st[r].inv_l();
  }
  T* O_out = head_ptr(static_cast<T*>(p.o), p.o_strides, b, h);
  store_out<T>(O_out, p.o_strides.seq, row0, p.seqlen_q, d, O, inv_l);
  if (ng == 0) {
    const int mg = threadIdx.x / 16;
#pragma unroll
    for (int r = 0; r < TM; ++r) {
      const int64_t row = row0 + mg * TM + r;
      if (row < p.seqlen_q) p.lse[bh * p.seqlen_q + row] = st[r].lse();
    }
  }
}

// ============================== backward (FA2 Algorithm 2) ==============================

// D_i = rowsum(dO_i o O_i)  (B, H_q, S_q), one warp per row.
template <typename T>
__global__ void __launch_bounds__(kThreads) fa2_bwd_preprocess_simt_kernel(const AttnBwdParams p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  const int64_t rows = p.batch * p.heads_q * p.seqlen_q;
  if (row >= rows) return;  // whole warp
  const int64_t r = row % p.seqlen_q, bh = row / p.seqlen_q;
  const int64_t h = bh % p.heads_q, b = bh / p.heads_q;
  const T* dO =
      head_ptr(static_cast<const T*>(p.dout), p.dout_strides, b, h) + r * p.dout_strides.seq;
  const T* O = head_ptr(static_cast<const T*>(p.o), p.o_strides, b, h) + r * p.o_strides.seq;
  const float D = row_dot(dO, O, static_cast<int>(p.head_dim));
  if (threadIdx.x % 32 == 0) static_cast<float*>(p.workspace)[row] = D;
}

// Load lse_i and D_i for rows [row0, row0 + B_r) of head bh. Rows past S_q get lse = +inf,
// so their recomputed P is exactly 0.
template <int B_r>
__device__ __forceinline__ void load_row_stats(float* lse_s, float* D_s, const float* D_ws,
                                               int64_t bh, int64_t row0, const AttnParams& p) {
  for (int r = threadIdx.x; r < B_r; r += kThreads) {
    const int64_t row = row0 + r;
    const bool ok = row < p.seqlen_q;
    lse_s[r] = ok ? p.lse[bh * p.seqlen_q + row] : INFINITY;
    D_s[r] = ok ? D_ws[bh * p.seqlen_q + row] : 0.0f;
  }
}

// dK_j, dV_j: one CTA per (j, KV head, batch); inner loop over the group's query heads and the
// query blocks i that can see block j.
template <typename T, int kD>
__global__ void __launch_bounds__(kThreads) fa2_bwd_dkdv_simt_kernel(const AttnBwdParams p) {
  using Tile = SimtTile<kD>;
  constexpr int B_r = Tile::kBwdBr, B_c = Tile::kBwdBc, ld = Tile::kLd, ld_p = B_c + 4;
  constexpr int TMr = B_r / 16, TNc = B_c / 16, TMc = B_c / 16, TN4 = kD / 64;
  extern __shared__ float4 smem_raw[];
  float* K_s = reinterpret_cast<float*>(smem_raw);  // K_j    (B_c x d)
  float* V_s = K_s + B_c * ld;                      // V_j    (B_c x d)
  float* Q_s = V_s + B_c * ld;                      // Q_i    (B_r x d)
  float* dO_s = Q_s + B_r * ld;                     // dO_i   (B_r x d)
  float* P_s = dO_s + B_r * ld;                     // P_ij   (B_r x B_c)
  float* dS_s = P_s + B_r * ld_p;                   // dS_ij  (B_r x B_c)
  float* lse_s = dS_s + B_r * ld_p;                 // lse_i  (B_r)
  float* D_s = lse_s + B_r;                         // D_i    (B_r)

  const int d = static_cast<int>(p.head_dim);
  const int64_t T_c = (p.seqlen_k + B_c - 1) / B_c;
  const int64_t j = static_cast<int64_t>(blockIdx.x) % T_c;
  const int64_t bhk = static_cast<int64_t>(blockIdx.x) / T_c;
  const int64_t hk = bhk % p.heads_kv, b = bhk / p.heads_kv, G = (p.heads_q / p.heads_kv);
  const int64_t col0 = j * B_c;
  const float* D_ws = static_cast<const float*>(p.workspace);

  // Load K_j, V_j (B_c x d) once; dK_j = dV_j = 0 on chip (thread part TMc x 4*TN4).
  const int valid_c = tile_rows(B_c, p.seqlen_k - col0);
  load_tile(K_s, ld,
            head_ptr(static_cast<const T*>(p.k), p.k_strides, b, hk) + col0 * p.k_strides.seq,
            p.k_strides.seq, B_c, valid_c, d);
  load_tile(V_s, ld,
            head_ptr(static_cast<const T*>(p.v), p.v_strides, b, hk) + col0 * p.v_strides.seq,
            p.v_strides.seq, B_c, valid_c, d);
  float dK[TMc][4 * TN4], dV[TMc][4 * TN4];
  zero(dK);
  zero(dV);

  const int64_t T_r = (p.seqlen_q + B_r - 1) / B_r;
  const int64_t i_first = first_query(col0, p) / B_r;  // causal: earlier query blocks see nothing
  for (int64_t h = hk * G; h < (hk + 1) * G; ++h) {    // GQA: the query heads sharing K_j, V_j
    const int64_t bh = b * p.heads_q + h;
    const T* Q = head_ptr(static_cast<const T*>(p.q), p.q_strides, b, h);
    const T* dO = head_ptr(static_cast<const T*>(p.dout), p.dout_strides, b, h);
    for (int64_t i = i_first; i < T_r; ++i) {
      const int64_t row0 = i * B_r;
      const int valid_r = tile_rows(B_r, p.seqlen_q - row0);
      __syncthreads();  // everyone is done with Q_s, dO_s, P_s, dS_s of the previous block
      // Load Q_i, dO_i (B_r x d), lse_i, D_i (B_r).
      load_tile(Q_s, ld, Q + row0 * p.q_strides.seq, p.q_strides.seq, B_r, valid_r, d);
      load_tile(dO_s, ld, dO + row0 * p.dout_strides.seq, p.dout_strides.seq, B_r, valid_r, d);
      load_row_stats<B_r>(lse_s, D_s, D_ws, bh, row0, p);
      __syncthreads();

      // S_ij = scale Q_i K_j^T; P_ij = exp(S_ij - lse_i); dP_ij = dO_i V_j^T;
      // dS_ij = P_ij o (dP_ij - D_i)      (B_r x B_c; thread part TMr x TNc)
      float P[TMr][TNc], dS[TMr][TNc];
      bwd_probs(P, dS, Q_s, dO_s, K_s, V_s, lse_s, D_s, ld, row0, col0, p);
      store_scores(P_s, ld_p, static_cast<float*>(nullptr), 0, P);
      store_scores(dS_s, ld_p, static_cast<float*>(nullptr), 0, dS);
      __syncthreads();

      // dV_j += P_ij^T dO_i   (B_c x d)
      tile_mma_tn<B_r>(dV, P_s, ld_p, dO_s, ld, d);
      // dK_j += dS_ij^T Q_i   (B_c x d; times scale at the end)
      tile_mma_tn<B_r>(dK, dS_s, ld_p, Q_s, ld, d);
    }
  }

  // Write dK_j (scaled), dV_j.
  float ones[TMc], scales[TMc];
#pragma unroll
  for (int r = 0; r < TMc; ++r) ones[r] = 1.0f, scales[r] = p.scale;
  store_out<T>(head_ptr(static_cast<T*>(p.dk), p.dk_strides, b, hk), p.dk_strides.seq, col0,
               p.seqlen_k, d, dK, scales);
  store_out<T>(head_ptr(static_cast<T*>(p.dv), p.dv_strides, b, hk), p.dv_strides.seq, col0,
               p.seqlen_k, d, dV, ones);
}

// dQ_i = scale * sum_j dS_ij K_j: one CTA per (i, head, batch), fp32 accumulators on chip.
template <typename T, int kD>
__global__ void __launch_bounds__(kThreads) fa2_bwd_dq_simt_kernel(const AttnBwdParams p) {
  using Tile = SimtTile<kD>;
  constexpr int B_r = Tile::kBwdBr, B_c = Tile::kBwdBc, ld = Tile::kLd, ld_st = B_r + 4;
  constexpr int TMr = B_r / 16, TNc = B_c / 16, TN4 = kD / 64;
  extern __shared__ float4 smem_raw[];
  float* Q_s = reinterpret_cast<float*>(smem_raw);  // Q_i      (B_r x d)
  float* dO_s = Q_s + B_r * ld;                     // dO_i     (B_r x d)
  float* K_s = dO_s + B_r * ld;                     // K_j      (B_c x d)
  float* V_s = K_s + B_c * ld;                      // V_j      (B_c x d)
  float* dSt_s = V_s + B_c * ld;                    // dS_ij^T  (B_c x B_r)
  float* lse_s = dSt_s + B_c * ld_st;               // lse_i    (B_r)
  float* D_s = lse_s + B_r;                         // D_i      (B_r)

  const int d = static_cast<int>(p.head_dim);
  const int64_t T_r = (p.seqlen_q + B_r - 1) / B_r;
  const int64_t i = T_r - 1 - static_cast<int64_t>(blockIdx.x) % T_r;
  const int64_t bh = static_cast<int64_t>(blockIdx.x) / T_r;
  const int64_t h = bh % p.heads_q, b = bh / p.heads_q, hk = h / (p.heads_q / p.heads_kv);
  const int64_t row0 = i * B_r;
  const int valid_r = tile_rows(B_r, p.seqlen_q - row0);
  const T* K = head_ptr(static_cast<const T*>(p.k), p.k_strides, b, hk);
  const T* V = head_ptr(static_cast<const T*>(p.v), p.v_strides, b, hk);

  // Load Q_i, dO_i (B_r x d), lse_i, D_i once.
  load_tile(Q_s, ld,
            head_ptr(static_cast<const T*>(p.q), p.q_strides, b, h) + row0 * p.q_strides.seq,
            p.q_strides.seq, B_r, valid_r, d);
  load_tile(
      dO_s, ld,
      head_ptr(static_cast<const T*>(p.dout), p.dout_strides, b, h) + row0 * p.dout_strides.seq,
      p.dout_strides.seq, B_r, valid_r, d);
  load_row_stats<B_r>(lse_s, D_s, static_cast<const float*>(p.workspace), bh, row0, p);
  float dQ[TMr][4 * TN4];  // (B_r x d; thread part TMr x 4*TN4)
  zero(dQ);

  const int64_t T_c = (visible_keys(row0, B_r, p) + B_c - 1) / B_c;
  for (int64_t j = 0; j < T_c; ++j) {
    const int64_t col0 = j * B_c;
    const int valid_c = tile_rows(B_c, p.seqlen_k - col0);
    __syncthreads();
    // Load K_j, V_j (B_c x d).
    load_tile(K_s, ld, K + col0 * p.k_strides.seq, p.k_strides.seq, B_c, valid_c, d);
    load_tile(V_s, ld, V + col0 * p.v_strides.seq, p.v_strides.seq, B_c, valid_c, d);
    __syncthreads();

    // P_ij, dS_ij recomputed exactly as in the dK/dV kernel (same helper, same bits).
    float P[TMr][TNc], dS[TMr][TNc];
    bwd_probs(P, dS, Q_s, dO_s, K_s, V_s, lse_s, D_s, ld, row0, col0, p);
    store_scores(static_cast<float*>(nullptr), 0, dSt_s, ld_st, dS);
    __syncthreads();

    // dQ_i += dS_ij K_j   (B_r x d)
    tile_mma_tn<B_c>(dQ, dSt_s, ld_st, K_s, ld, d);
  }

  float scales[TMr];
#pragma unroll
  for (int r = 0; r < TMr; ++r) scales[r] = p.scale;
  store_out<T>(head_ptr(static_cast<T*>(p.dq), p.dq_strides, b, h), p.dq_strides.seq, row0,
               p.seqlen_q, d, dQ, scales);
}

}  // namespace
}  // namespace simt

void simt_fa2_fwd(const AttnParams& p, cudaStream_t stream) {
  using namespace simt;
  dispatch_dtype(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_head_dim(p.head_dim, [&](auto kD_c) {
      constexpr int kD = decltype(kD_c)::value;
      using Tile = SimtTile<kD>;
      const int64_t blocks = ceil_div(p.seqlen_q, Tile::kFwdBr) * p.batch * p.heads_q;
      launch(fa2_fwd_simt_kernel<T, kD>, blocks, Tile::fwd_smem(), stream, p);
    });
  });
}

void simt_fa2_bwd(const AttnBwdParams& p, cudaStream_t stream) {
  using namespace simt;
  dispatch_dtype(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    // D = rowsum(dO o O) -> workspace (every element written before it is read).
    launch(fa2_bwd_preprocess_simt_kernel<T>,
           ceil_div(p.batch * p.heads_q * p.seqlen_q, kThreads / 32), 0, stream, p);
    dispatch_head_dim(p.head_dim, [&](auto kD_c) {
      constexpr int kD = decltype(kD_c)::value;
      using Tile = SimtTile<kD>;
      // S_q == 0 still launches this one: dK = dV = 0.
      launch(fa2_bwd_dkdv_simt_kernel<T, kD>,
             ceil_div(p.seqlen_k, Tile::kBwdBc) * p.batch * p.heads_kv, Tile::bwd_kv_smem(false),
             stream, p);
      // S_k == 0 still launches this one: dQ = 0.
      launch(fa2_bwd_dq_simt_kernel<T, kD>,
             ceil_div(p.seqlen_q, Tile::kBwdBr) * p.batch * p.heads_q, Tile::dq_smem(), stream, p);
    });
  });
}

}  // namespace flashmin::cuda
