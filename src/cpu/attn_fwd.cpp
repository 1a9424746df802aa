// CPU forward pass, both loop orders of the papers:
//   FA2 (Algorithm 1 of the FA2 paper): work item = (batch, head, query block i); O_i, m_i, l_i
//       stay in the thread's scratch ("on chip") across all key blocks j and are written once.
//   FA1 (Algorithm 1 of the FA1 paper): work item = (batch, head, a few query blocks); the key
//       blocks j are the outer loop and O_i, l_i, m_i are read from and written back to a
//       full-size fp32 buffer (standing in for HBM) after every block.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/common.h"
#include "cpu/cpu_api.h"
#include "cpu/thread_pool.h"

namespace flashmin::cpu {
namespace {

// Rows i0 .. i0 + nr - 1: per-row causal limit; returns the number of keys any row can see.
inline int64_t row_limits(const AttnParams& p, int64_t i0, int64_t nr, int64_t Br, int64_t* limit,
                          int64_t* min_limit) {
  for (int64_t r = 0; r < Br; ++r)
    limit[r] = p.is_causal && r < nr ? i0 + r + p.causal_offset : kNoLimit;
  *min_limit = p.is_causal ? i0 + p.causal_offset : kNoLimit;
  if (!p.is_causal) return p.seqlen_k;
  const int64_t last = i0 + nr - 1 + p.causal_offset;  // the last row sees the most keys
  return std::clamp<int64_t>(last + 1, 0, p.seqlen_k);
}

template <typename T>
void load_kv_block(const Kernels& k, const AttnParams& p, int64_t b, int64_t hk, int64_t j0,
                   int64_t nc, int64_t D, int64_t Dp, float* Kj, float* Vj) {
  for (int64_t c = 0; c < nc; ++c) {
    load_row(k, at<T>(p.k, p.k_strides, b, hk, j0 + c), Kj + c * Dp, D);
    load_row(k, at<T>(p.v, p.v_strides, b, hk, j0 + c), Vj + c * Dp, D);
  }
}

// O_i / l_i to the output dtype and lse = (m + log2 l) ln 2; empty rows give 0 and -inf.
template <typename T>
void write_rows(const AttnParams& p, int64_t b, int64_t h, int64_t i0, int64_t nr, int64_t D,
                int64_t Dp, const float* O, const float* m, const float* l) {
  for (int64_t r = 0; r < nr; ++r) {
    const bool seen = l[r] > 0.0f;
    store_row(O + r * Dp, seen ? 1.0f / l[r] : 0.0f, at_mut<T>(p.o, p.o_strides, b, h, i0 + r), D);
    p.lse[(b * p.heads_q + h) * p.seqlen_q + i0 + r] =
        seen ? (m[r] + std::log2(l[r])) * kLn2 : -INFINITY;
  }
}

// ---- FA2 ----------------------------------------------------------------------------------------
template <typename T>
void fwd_fa2(const AttnParams& p) {
  const Kernels& k = kernels();
  const AttnGeometry g(p);
  const int64_t Br = g.Br, Bc = g.Bc, D = g.D, Dp = g.Dp;
  const int64_t scratch = grain(D * Br) + grain(Br * Dp) + 3 * grain(Br) + grain(2 * Br) +
                          2 * grain(Bc * Dp) + grain(Bc * Br) + grain(Dp);
  const float q_scale = p.scale * kLog2e;

  parallel_for(p.batch * p.heads_q * g.Tr, [&](int64_t item) {
    // Heaviest query blocks (most keys under causal masking) first.
    const int64_t ib = g.Tr - 1 - item % g.Tr;
    const int64_t h = (item / g.Tr) % p.heads_q;
    const int64_t b = item / (g.Tr * p.heads_q);
    const int64_t hk = h / g.group;
    const int64_t i0 = ib * Br, nr = std::min(Br, p.seqlen_q - i0);

    Scratch& s = thread_scratch(scratch);
    QueryTile q{Br, nr, D, Dp, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0};
    float* QiT = s.take(D * Br);  // (D x Br)
    q.O = s.take(Br * Dp);        // (Br x Dp)
    q.m = s.take(Br);
    q.l = s.take(Br);
    q.alpha = s.take(Br);
    int64_t* limit = s.take_int64(Br);
    float* Kj = s.take(Bc * Dp);  // (Bc x Dp)
    float* Vj = s.take(Bc * Dp);  // (Bc x Dp)
    float* St = s.take(Bc * Br);  // (Bc x Br)
    float* tmp = s.take(Dp);

    // Load Q_i^T (scaled); O_i = 0, m_i = -inf, l_i = 0
    load_transposed<T>(
        k, [&](int64_t r) { return at<T>(p.q, p.q_strides, b, h, i0 + r); }, nr, D, q_scale, QiT,
        Br, tmp);
    q.QiT = QiT;
    std::fill(q.O, q.O + Br * Dp, 0.0f);
    std::fill(q.m, q.m + Br, -INFINITY);
    std::fill(q.l, q.l + Br, 0.0f);
    zero_pad_columns(Vj, Bc, D, Dp);
    const int64_t keys = row_limits(p, i0, nr, Br, limit, &q.min_limit);
    q.limit = limit;

    for (int64_t j0 = 0; j0 < keys; j0 += Bc) {
      const int64_t nc = std::min(Bc, keys - j0);
      load_kv_block<T>(k, p, b, hk, j0, nc, D, Dp, Kj, Vj);
      fa2_step(k, q, Kj, Vj, j0, nc, St);
    }
    write_rows<T>(p, b, h, i0, nr, D, Dp, q.O, q.m, q.l);
  });
}

// ---- FA1 ----------------------------------------------------------------------------------------
constexpr int64_t kFa1BlocksPerItem = 4;  // query blocks per work item (same K_j/V_j load)

template <typename T>
void fwd_fa1(const AttnParams& p) {
  const Kernels& k = kernels();
  const AttnGeometry g(p);
  const int64_t Br = g.Br, Bc = g.Bc, D = g.D, Dp = g.Dp;
  const int64_t chunks = ceil_div(g.Tr, kFa1BlocksPerItem);
  const int64_t rows = p.batch * p.heads_q * p.seqlen_q;
  // "HBM": O (rows x Dp), l, m in fp32
  std::vector<float> O_hbm(static_cast<size_t>(rows * Dp)), m_hbm(rows), l_hbm(rows);
  const int64_t scratch = grain(D * Br) + grain(Br * Dp) + 3 * grain(Br) + grain(2 * Br) +
                          2 * grain(Bc * Dp) + grain(Bc * Br) + grain(Dp);
  const float q_scale = p.scale * kLog2e;

  parallel_for(p.batch * p.heads_q * chunks, [&](int64_t item) {
    const int64_t chunk = item % chunks;
    const int64_t h = (item / chunks) % p.heads_q;
    const int64_t b = item / (chunks * p.heads_q);
    const int64_t hk = h / g.group;
    const int64_t ib_begin = chunk * kFa1BlocksPerItem;
    const int64_t ib_end = std::min(g.Tr, ib_begin + kFa1BlocksPerItem);
    const int64_t row0 = (b * p.heads_q + h) * p.seqlen_q;

    Scratch& s = thread_scratch(scratch);
    float* QiT = s.take(D * Br);  // (D x Br)
    float* PV = s.take(Br * Dp);  // (Br x Dp)  P~_ij V_j
    float* mt = s.take(Br);       // m~_ij
    float* lt = s.take(Br);       // l~_ij
    float* alpha_unused = s.take(Br);
    int64_t* limit = s.take_int64(Br);
    float* Kj = s.take(Bc * Dp);
    float* Vj = s.take(Bc * Dp);
    float* St = s.take(Bc * Br);
    float* tmp = s.take(Dp);
    zero_pad_columns(Vj, Bc, D, Dp);

    // Initialise O = 0, l = 0, m = -inf in HBM
    const int64_t r_begin = ib_begin * Br, r_end = std::min(p.seqlen_q, ib_end * Br);
    std::fill(O_hbm.data() + (row0 + r_begin) * Dp, O_hbm.data() + (row0 + r_end) * Dp, 0.0f);
    std::fill(m_hbm.data() + row0 + r_begin, m_hbm.data() + row0 + r_end, -INFINITY);
    std::fill(l_hbm.data() + row0 + r_begin, l_hbm.data() + row0 + r_end, 0.0f);

    // Keys any row of the chunk can see (the last row sees the most).
    int64_t keys = p.seqlen_k;
    if (p.is_causal) keys = std::clamp<int64_t>(r_end - 1 + p.causal_offset + 1, 0, p.seqlen_k);

    for (int64_t j0 = 0; j0 < keys; j0 += Bc) {  // outer loop: K_j, V_j
      const int64_t nc = std::min(Bc, keys - j0);
      load_kv_block<T>(k, p, b, hk, j0, nc, D, Dp, Kj, Vj);
      for (int64_t ib = ib_begin; ib < ib_end; ++ib) {  // inner loop: Q_i, O_i, l_i, m_i
        const int64_t i0 = ib * Br, nr = std::min(Br, p.seqlen_q - i0);
        int64_t min_limit = 0;
        const int64_t row_keys = row_limits(p, i0, nr, Br, limit, &min_limit);
        if (j0 >= row_keys) continue;  // block fully masked for these rows
        load_transposed<T>(
            k, [&](int64_t r) { return at<T>(p.q, p.q_strides, b, h, i0 + r); }, nr, D, q_scale,
            QiT, Br, tmp);
        // S_ij^T = K_j Q_i^T                                     (nc x Br)
        k.gemm({nc, Br, D, Kj, Dp, 1, QiT, Br, St, Br, false});
        if (j0 + nc - 1 > min_limit) {
          for (int64_t c = 0; c < nc; ++c)
            for (int64_t r = 0; r < nr; ++r)
              if (j0 + c > limit[r]) St[c * Br + r] = -INFINITY;
        }
        // m~_ij = rowmax(S_ij), P~_ij = exp2(S_ij - m~_ij), l~_ij = rowsum(P~_ij)
        std::fill(mt, mt + Br, -INFINITY);
        std::fill(lt, lt + Br, 0.0f);
        k.softmax_step(St, nc, Br, mt, lt, alpha_unused);
        // P~_ij V_j                                              (nr x Dp)
        k.gemm({nr, Dp, nc, St, 1, Br, Vj, Dp, PV, Dp, false});
        // m_new = max(m_i, m~_ij), l_new = e^(m_i - m_new) l_i + e^(m~_ij - m_new) l~_ij
        // O_i = diag(l_new)^-1 (diag(l_i) e^(m_i - m_new) O_i + e^(m~_ij - m_new) P~_ij V_j)
        for (int64_t r = 0; r < nr; ++r) {
          float& m_i = m_hbm[row0 + i0 + r];
          float& l_i = l_hbm[row0 + i0 + r];
          float* O_i = O_hbm.data() + (row0 + i0 + r) * Dp;
          const float m_new = std::max(m_i, mt[r]);
          if (m_new == -INFINITY) continue;  // still no visible key
          const float a = m_i == -INFINITY ? 0.0f : std::exp2(m_i - m_new) * l_i;
          const float c = mt[r] == -INFINITY ? 0.0f : std::exp2(mt[r] - m_new);
          const float l_new = a + c * lt[r];
          const float inv = l_new > 0.0f ? 1.0f / l_new : 0.0f;
          for (int64_t d = 0; d < Dp; ++d) O_i[d] = (a * O_i[d] + c * PV[r * Dp + d]) * inv;
          m_i = m_new;
          l_i = l_new;
        }
      }
    }
    // O (already normalised) to the output dtype; lse
    for (int64_t r = r_begin; r < r_end; ++r) {
      const float l_r = l_hbm[row0 + r];
      const bool seen = l_r > 0.0f;
      store_row(O_hbm.data() + (row0 + r) * Dp, seen ? 1.0f : 0.0f,
                at_mut<T>(p.o, p.o_strides, b, h, r), D);
      p.lse[row0 + r] = seen ? (m_hbm[row0 + r] + std::log2(l_r)) * kLn2 : -INFINITY;
    }
  });
}

}  // namespace

void fwd(const AttnParams& p) {
  if (p.batch == 0 || p.heads_q == 0 || p.seqlen_q == 0) return;
  const bool fa1 = p.algorithm == Algorithm::kFA1;
  switch (p.dtype) {
    case DType::kFloat32:
      return fa1 ? fwd_fa1<float>(p) : fwd_fa2<float>(p);
    case DType::kFloat16:
      return fa1 ? fwd_fa1<Half>(p) : fwd_fa2<Half>(p);
    case DType::kBFloat16:
      return fa1 ? fwd_fa1<BFloat16>(p) : fwd_fa2<BFloat16>(p);
  }
}

}  // namespace flashmin::cpu
