// CPU backward pass. Recomputes P_ij from Q, K and the forward lse (no stored attention matrix):
//   P_ij = exp(scale S_ij - lse_i)     dV_j += P_ij^T dO_i       dP_ij = dO_i V_j^T
//   dS_ij = P_ij * (dP_ij - D_i)       dK_j += scale dS_ij^T Q_i  dQ_i += scale dS_ij K_j
// with D_i = rowsum(dO_i * O_i). Deterministic: every output element is accumulated by one
// thread in a fixed order, GQA heads of a group are summed in order inside one work item.
//   FA2: preprocess D; pass 1 over key blocks j (dK_j, dV_j on chip, looping over the heads of the
//        group and the query blocks i); pass 2 over query blocks i (dQ_i on chip, looping over j).
//        Pass 2 recomputes S and dP instead of racing on dQ with atomics.
//   FA1 (Algorithm 4 of the FA1 paper): work item = (batch, kv head); outer loop over j, inner
//        loop over i; D_i computed in the inner loop, dQ_i read from and written back to a fp32
//        buffer ("HBM") after every block.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/common.h"
#include "cpu/cpu_api.h"
#include "cpu/thread_pool.h"

namespace flashmin::cpu {
namespace {

// exp(scale s - lse) = exp2(s * scale log2 e - lse log2 e); an empty row (lse = -inf) gives P = 0.
inline float lse_log2(float lse) { return lse == -INFINITY ? INFINITY : lse * kLog2e; }

template <typename T>
float dot_rows(const Kernels& k, const T* a, const T* b, int64_t D, float* ta, float* tb) {
  load_row(k, a, ta, D);
  load_row(k, b, tb, D);
  float s = 0.0f;
  for (int64_t d = 0; d < D; ++d) s += ta[d] * tb[d];
  return s;
}

// First query block that can see key j0 (causal), Tr if none.
inline int64_t first_query_block(const AttnParams& p, const AttnGeometry& g, int64_t j0) {
  if (!p.is_causal) return 0;
  const int64_t i_first = std::max<int64_t>(0, j0 - p.causal_offset);
  return std::min(g.Tr, i_first / g.Br);
}

// ---- one key block j: dK_j, dV_j (and, for FA1, dQ_i updates in HBM) ----------------------------
template <typename T>
struct KvBlock {
  const Kernels& k;
  const AttnBwdParams& p;
  const AttnGeometry& g;
  const float* delta;  // FA2: precomputed D (B, H_q, S_q); FA1: nullptr (computed inline)
  float* dq_hbm;       // FA1: fp32 dQ (B, H_q, S_q, Dp); FA2: nullptr

  static int64_t scratch_floats(const AttnGeometry& g) {
    return 5 * grain(g.Bc * g.Dp) + 3 * grain(g.Br * g.Dp) + 2 * grain(g.Br * g.Bc) +
           2 * grain(g.Br) + grain(g.Dp);
  }

  void run(int64_t b, int64_t hk, int64_t jb) const {
    const int64_t D = g.D, Dp = g.Dp, Br = g.Br, Bc = g.Bc;
    const int64_t j0 = jb * Bc, nc = std::min(Bc, p.seqlen_k - j0);
    const float sl2 = p.scale * kLog2e;
    const bool fa1 = dq_hbm != nullptr;

    Scratch& s = thread_scratch(scratch_floats(g));
    float* KjT = s.take(D * Bc);   // (D x Bc)
    float* VjT = s.take(D * Bc);   // (D x Bc)
    float* Kj = s.take(Bc * Dp);   // (Bc x Dp)   FA1's dQ update
    float* dKj = s.take(Bc * Dp);  // (Bc x Dp)
    float* dVj = s.take(Bc * Dp);  // (Bc x Dp)
    float* Qi = s.take(Br * Dp);   // (Br x Dp)
    float* dOi = s.take(Br * Dp);  // (Br x Dp)
    float* Oi = s.take(Br * Dp);   // (Br x Dp)   FA1's inline D_i
    float* P = s.take(Br * Bc);    // (Br x Bc)
    float* dP = s.take(Br * Bc);   // (Br x Bc)   then dS
    float* lse2 = s.take(Br);
    float* Di = s.take(Br);
    float* ta = s.take(Dp);

    std::fill(dKj, dKj + Bc * Dp, 0.0f);
    std::fill(dVj, dVj + Bc * Dp, 0.0f);
    zero_pad_columns(Qi, Br, D, Dp);
    zero_pad_columns(dOi, Br, D, Dp);
    zero_pad_columns(Kj, Bc, D, Dp);
    bool loaded = false;

    for (int64_t h = hk * g.group; h < (hk + 1) * g.group; ++h) {  // GQA: sum over the group
      for (int64_t ib = first_query_block(p, g, j0); ib < g.Tr; ++ib) {
        const int64_t i0 = ib * Br, nr = std::min(Br, p.seqlen_q - i0);
        const int64_t row0 = (b * p.heads_q + h) * p.seqlen_q + i0;
        if (!loaded) {  // K_j^T, V_j^T (and K_j) only when some query block sees this block
          load_transposed<T>(
              k, [&](int64_t c) { return at<T>(p.k, p.k_strides, b, hk, j0 + c); }, nc, D, 1.0f,
              KjT, Bc, ta);
          load_transposed<T>(
              k, [&](int64_t c) { return at<T>(p.v, p.v_strides, b, hk, j0 + c); }, nc, D, 1.0f,
              VjT, Bc, ta);
          if (fa1)
            for (int64_t c = 0; c < nc; ++c)
              load_row(k, at<T>(p.k, p.k_strides, b, hk, j0 + c), Kj + c * Dp, D);
          loaded = true;
        }
        // Load Q_i, dO_i, lse_i (and O_i, D_i)
        for (int64_t r = 0; r < nr; ++r) {
          load_row(k, at<T>(p.q, p.q_strides, b, h, i0 + r), Qi + r * Dp, D);
          load_row(k, at<T>(p.dout, p.dout_strides, b, h, i0 + r), dOi + r * Dp, D);
          lse2[r] = lse_log2(p.lse[row0 + r]);
          if (fa1) {  // D_i = rowsum(dO_i * O_i)
            load_row(k, at<T>(p.o, p.o_strides, b, h, i0 + r), Oi + r * Dp, D);
            float acc = 0.0f;
            for (int64_t d = 0; d < D; ++d) acc += dOi[r * Dp + d] * Oi[r * Dp + d];
            Di[r] = acc;
          } else {
            Di[r] = delta[row0 + r];
          }
        }
        // S_ij = Q_i K_j^T                                       (nr x Bc)
        k.gemm({nr, Bc, D, Qi, Dp, 1, KjT, Bc, P, Bc, false});
        // P_ij = exp(scale S_ij - lse_i), 0 where masked
        k.exp_bias(P, nr, Bc, Bc, sl2, lse2, false);
        for (int64_t r = 0; r < nr; ++r) {
          const int64_t first_hidden =
              p.is_causal ? std::clamp<int64_t>(i0 + r + p.causal_offset + 1 - j0, 0, Bc) : Bc;
          std::fill(P + r * Bc + std::min(first_hidden, nc), P + (r + 1) * Bc, 0.0f);
        }
        // dV_j += P_ij^T dO_i                                    (nc x Dp)
        k.gemm({nc, Dp, nr, P, 1, Bc, dOi, Dp, dVj, Dp, true});
        // dP_ij = dO_i V_j^T                                     (nr x Bc)
        k.gemm({nr, Bc, D, dOi, Dp, 1, VjT, Bc, dP, Bc, false});
        // dS_ij = P_ij * (dP_ij - D_i)
        k.dsoftmax(P, dP, nr, Bc, Bc, Di, false);
        // dK_j += dS_ij^T Q_i                                    (nc x Dp)
        k.gemm({nc, Dp, nr, dP, 1, Bc, Qi, Dp, dKj, Dp, true});
        if (fa1) {
          // dQ_i += dS_ij K_j, read from and written back to HBM (nr x Dp)
          k.gemm({nr, Dp, nc, dP, Bc, 1, Kj, Dp, dq_hbm + row0 * Dp, Dp, true});
        }
      }
    }
    // Write dK_j = scale dS^T Q, dV_j
    for (int64_t c = 0; c < nc; ++c) {
      store_row(dKj + c * Dp, p.scale, at_mut<T>(p.dk, p.dk_strides, b, hk, j0 + c), D);
      store_row(dVj + c * Dp, 1.0f, at_mut<T>(p.dv, p.dv_strides, b, hk, j0 + c), D);
    }
  }
};

// ---- FA2 pass 2: one query block i, dQ_i on chip --------------------------------------------
template <typename T>
void dq_block(const Kernels& k, const AttnBwdParams& p, const AttnGeometry& g, const float* delta,
              int64_t b, int64_t h, int64_t ib) {
  const int64_t D = g.D, Dp = g.Dp, Br = g.Br, Bc = g.Bc;
  const int64_t hk = h / g.group;
  const int64_t i0 = ib * Br, nr = std::min(Br, p.seqlen_q - i0);
  const int64_t row0 = (b * p.heads_q + h) * p.seqlen_q + i0;
  const float sl2 = p.scale * kLog2e;

  Scratch& s = thread_scratch(2 * grain(D * Br) + grain(Br * Dp) + 2 * grain(Bc * Dp) +
                              2 * grain(Bc * Br) + 2 * grain(Br) + grain(2 * Br) + grain(Dp));
  float* QiT = s.take(D * Br);   // (D x Br)
  float* dOiT = s.take(D * Br);  // (D x Br)
  float* dQi = s.take(Br * Dp);  // (Br x Dp)
  float* Kj = s.take(Bc * Dp);   // (Bc x Dp)
  float* Vj = s.take(Bc * Dp);   // (Bc x Dp)
  float* Pt = s.take(Bc * Br);   // (Bc x Br)  P_ij^T
  float* dPt = s.take(Bc * Br);  // (Bc x Br)  dP_ij^T, then dS_ij^T
  float* lse2 = s.take(Br);
  float* Di = s.take(Br);
  int64_t* limit = s.take_int64(Br);
  float* tmp = s.take(Dp);

  load_transposed<T>(
      k, [&](int64_t r) { return at<T>(p.q, p.q_strides, b, h, i0 + r); }, nr, D, 1.0f, QiT, Br,
      tmp);
  load_transposed<T>(
      k, [&](int64_t r) { return at<T>(p.dout, p.dout_strides, b, h, i0 + r); }, nr, D, 1.0f, dOiT,
      Br, tmp);
  for (int64_t r = 0; r < Br; ++r) {
    lse2[r] = r < nr ? lse_log2(p.lse[row0 + r]) : INFINITY;  // padded rows: P = 0
    Di[r] = r < nr ? delta[row0 + r] : 0.0f;
    limit[r] = p.is_causal ? i0 + r + p.causal_offset : kNoLimit;
  }
  std::fill(dQi, dQi + Br * Dp, 0.0f);
  zero_pad_columns(Kj, Bc, D, Dp);
  int64_t keys = p.seqlen_k;
  if (p.is_causal) keys = std::clamp<int64_t>(i0 + nr + p.causal_offset, 0, p.seqlen_k);

  for (int64_t j0 = 0; j0 < keys; j0 += Bc) {
    const int64_t nc = std::min(Bc, keys - j0);
    for (int64_t c = 0; c < nc; ++c) {
      load_row(k, at<T>(p.k, p.k_strides, b, hk, j0 + c), Kj + c * Dp, D);
      load_row(k, at<T>(p.v, p.v_strides, b, hk, j0 + c), Vj + c * Dp, D);
    }
    // S_ij^T = K_j Q_i^T, P_ij^T = exp(scale S - lse)          (nc x Br)
    k.gemm({nc, Br, D, Kj, Dp, 1, QiT, Br, Pt, Br, false});
    k.exp_bias(Pt, nc, Br, Br, sl2, lse2, true);
    if (p.is_causal && j0 + nc - 1 > i0 + p.causal_offset) {
      for (int64_t c = 0; c < nc; ++c)
        for (int64_t r = 0; r < nr; ++r)
          if (j0 + c > limit[r]) Pt[c * Br + r] = 0.0f;
    }
    // dP_ij^T = V_j dO_i^T                                       (nc x Br)
    k.gemm({nc, Br, D, Vj, Dp, 1, dOiT, Br, dPt, Br, false});
    // dS_ij^T = P_ij^T * (dP_ij^T - D_i)
    k.dsoftmax(Pt, dPt, nc, Br, Br, Di, true);
    // dQ_i += dS_ij K_j                                          (nr x Dp)
    k.gemm({nr, Dp, nc, dPt, 1, Br, Kj, Dp, dQi, Dp, true});
  }
  for (int64_t r = 0; r < nr; ++r)
    store_row(dQi + r * Dp, p.scale, at_mut<T>(p.dq, p.dq_strides, b, h, i0 + r), D);
}

template <typename T>
void bwd_impl(const AttnBwdParams& p) {
  const Kernels& k = kernels();
  const AttnGeometry g(p);
  const int64_t heads_kv = p.heads_kv;

  if (p.algorithm == Algorithm::kFA1) {
    // dQ in an fp32 "HBM" buffer, updated after every (i, j) block.
    std::vector<float> dq_hbm(static_cast<size_t>(p.batch * p.heads_q * p.seqlen_q * g.Dp));
    const KvBlock<T> kv{k, p, g, nullptr, dq_hbm.data()};
    parallel_for(p.batch * heads_kv, [&](int64_t item) {
      const int64_t hk = item % heads_kv, b = item / heads_kv;
      const int64_t row_begin = (b * p.heads_q + hk * g.group) * p.seqlen_q;
      const int64_t row_end = row_begin + g.group * p.seqlen_q;
      std::fill(dq_hbm.data() + row_begin * g.Dp, dq_hbm.data() + row_end * g.Dp, 0.0f);
      for (int64_t jb = 0; jb < g.Tc; ++jb) kv.run(b, hk, jb);
      for (int64_t row = row_begin; row < row_end; ++row) {
        const int64_t h = row / p.seqlen_q % p.heads_q, i = row % p.seqlen_q;
        store_row(dq_hbm.data() + row * g.Dp, p.scale, at_mut<T>(p.dq, p.dq_strides, b, h, i), g.D);
      }
    });
    return;
  }

  // D_i = rowsum(dO_i * O_i)
  std::vector<float> delta(static_cast<size_t>(p.batch * p.heads_q * p.seqlen_q));
  parallel_for(p.batch * p.heads_q, [&](int64_t item) {
    const int64_t h = item % p.heads_q, b = item / p.heads_q;
    Scratch& s = thread_scratch(2 * grain(g.Dp));
    float* ta = s.take(g.Dp);
    float* tb = s.take(g.Dp);
    for (int64_t i = 0; i < p.seqlen_q; ++i)
      delta[item * p.seqlen_q + i] = dot_rows(k, at<T>(p.dout, p.dout_strides, b, h, i),
                                              at<T>(p.o, p.o_strides, b, h, i), g.D, ta, tb);
  });
  // Pass 1: dK_j, dV_j
  const KvBlock<T> kv{k, p, g, delta.data(), nullptr};
  parallel_for(p.batch * heads_kv * g.Tc, [&](int64_t item) {
    const int64_t jb = item % g.Tc, hk = (item / g.Tc) % heads_kv, b = item / (g.Tc * heads_kv);
    kv.run(b, hk, jb);
  });
  // Pass 2: dQ_i
  parallel_for(p.batch * p.heads_q * g.Tr, [&](int64_t item) {
    const int64_t ib = g.Tr - 1 - item % g.Tr, h = (item / g.Tr) % p.heads_q,
                  b = item / (g.Tr * p.heads_q);
    dq_block<T>(k, p, g, delta.data(), b, h, ib);
  });
}

}  // namespace

void bwd(const AttnBwdParams& p) {
  if (p.batch == 0) return;
  switch (p.dtype) {
    case DType::kFloat32:
      return bwd_impl<float>(p);
    case DType::kFloat16:
      return bwd_impl<Half>(p);
    case DType::kBFloat16:
      return bwd_impl<BFloat16>(p);
  }
}

}  // namespace flashmin::cpu
