// CPU Flash-Decoding: the same split-KV + combine as the GPU.
//   1. append k_new / v_new into the cache at [seqlens[b], seqlens[b] + S_new) (valid sequences)
//   2. work item = (batch, kv head, split, block of query rows): the S_q queries of all the heads
//      sharing a kv head are stacked as rows (GQA reads the cache once per group); each split
//      covers a contiguous chunk of the sequence's keys and produces a partial (O, m, l)
//   3. combine the splits of each row in order through SoftmaxState::merge
// A sequence whose length or pages are out of range is skipped entirely (no append, no reads)
// and gets NaN in O and lse.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/common.h"
#include "cpu/cpu_api.h"
#include "cpu/thread_pool.h"
#include "flashmin/online_softmax.h"

namespace flashmin::cpu {
namespace {

struct Sequence {
  int64_t cache_len;  // tokens in the cache before the append
  int64_t L;          // keys attended: cache_len + S_new
  bool valid;
};

Sequence inspect(const DecodeParams& p, int64_t b) {
  Sequence s;
  const int64_t appended = p.k_new ? p.seqlen_new : 0;
  s.cache_len = p.cache_seqlens ? p.cache_seqlens[b] : p.max_seqlen_k;
  s.L = s.cache_len + appended;
  s.valid = s.cache_len >= 0 && s.L <= p.max_seqlen_k;
  if (s.valid && p.block_table) {
    for (int64_t page = 0; page < ceil_div(s.L, p.page_size); ++page) {
      const int64_t idx = p.block_table[b * p.block_table_stride + page];
      if (idx < 0 || idx >= p.num_pages) s.valid = false;
    }
  }
  return s;
}

// Address of key position t of sequence b in a (paged or contiguous) cache.
template <typename T>
T* cache_row(const DecodeParams& p, void* cache, const Strides& st, int64_t b, int64_t hk,
             int64_t t) {
  if (!p.block_table) return at_mut<T>(cache, st, b, hk, t);
  const int64_t page = p.block_table[b * p.block_table_stride + t / p.page_size];
  return at_mut<T>(cache, st, page, hk, t % p.page_size);
}

template <typename T>
void decode_impl(const DecodeParams& p) {
  const Kernels& k = kernels();
  const int64_t B = p.batch, Hq = p.heads_q, Hk = p.heads_kv, Sq = p.seqlen_q;
  const int64_t D = p.head_dim, Dp = pad_columns(D);
  const CpuTiles tiles = cpu_tiles(Dp, p.heads_q / p.heads_kv * p.seqlen_q, p.max_seqlen_k);
  const int64_t Br = tiles.Br, Bc = tiles.Bc;
  const int64_t group = p.group_size(), ns = std::max<int64_t>(1, p.num_splits);
  const int64_t rows = group * Sq, Tq = ceil_div(rows, Br);

  std::vector<Sequence> seq(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) seq[b] = inspect(p, b);

  // 1. in-place append
  if (p.k_new && p.seqlen_new > 0) {
    parallel_for(B * Hk, [&](int64_t item) {
      const int64_t hk = item % Hk, b = item / Hk;
      if (!seq[b].valid) return;
      for (int64_t t = 0; t < p.seqlen_new; ++t) {
        const int64_t pos = seq[b].cache_len + t;
        std::memcpy(cache_row<T>(p, p.k_cache, p.k_cache_strides, b, hk, pos),
                    at<T>(p.k_new, p.k_new_strides, b, hk, t), D * sizeof(T));
        std::memcpy(cache_row<T>(p, p.v_cache, p.v_cache_strides, b, hk, pos),
                    at<T>(p.v_new, p.v_new_strides, b, hk, t), D * sizeof(T));
      }
    });
  }

  // 2. partial results per split: O (unnormalised), m (natural log domain), l
  const int64_t n_rows = B * Hq * Sq;
  std::vector<float> part_O(static_cast<size_t>(n_rows * ns * Dp)), part_m(n_rows * ns),
      part_l(n_rows * ns);
  const float q_scale = p.scale * kLog2e;
  const int64_t scratch = grain(D * Br) + grain(Br * Dp) + 3 * grain(Br) + grain(2 * Br) +
                          2 * grain(Bc * Dp) + grain(Bc * Br) + grain(Dp);

  parallel_for(B * Hk * ns * Tq, [&](int64_t item) {
    const int64_t tq = item % Tq, split = (item / Tq) % ns, hk = (item / (Tq * ns)) % Hk;
    const int64_t b = item / (Tq * ns * Hk);
    const Sequence& sq = seq[b];
    if (!sq.valid) return;
    const int64_t r0 = tq * Br, nr = std::min(Br, rows - r0);
    const int64_t chunk = ceil_div(sq.L, ns);
    const int64_t k0 = std::min(sq.L, split * chunk), k1 = std::min(sq.L, k0 + chunk);

    Scratch& s = thread_scratch(scratch);
    QueryTile q{Br, nr, D, Dp, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0};
    float* QiT = s.take(D * Br);  // (D x Br)  row r = (head hk * group + r / S_q, query r % S_q)
    q.O = s.take(Br * Dp);        // (Br x Dp)
    q.m = s.take(Br);
    q.l = s.take(Br);
    q.alpha = s.take(Br);
    int64_t* limit = s.take_int64(Br);
    float* Kj = s.take(Bc * Dp);
    float* Vj = s.take(Bc * Dp);
    float* St = s.take(Bc * Br);
    float* tmp = s.take(Dp);

    auto head_of = [&](int64_t r) { return hk * group + (r0 + r) / Sq; };
    auto query_of = [&](int64_t r) { return (r0 + r) % Sq; };
    load_transposed<T>(
        k, [&](int64_t r) { return at<T>(p.q, p.q_strides, b, head_of(r), query_of(r)); }, nr, D,
        q_scale, QiT, Br, tmp);
    q.QiT = QiT;
    // Bottom-right causal: query i is position L - S_q + i of its sequence.
    int64_t max_limit = -1;
    q.min_limit = kNoLimit;
    for (int64_t r = 0; r < Br; ++r) {
      limit[r] = r < nr ? sq.L - Sq + query_of(r) : kNoLimit;
      if (r < nr) {
        max_limit = std::max(max_limit, limit[r]);
        q.min_limit = std::min(q.min_limit, limit[r]);
      }
    }
    q.limit = limit;
    std::fill(q.O, q.O + Br * Dp, 0.0f);
    std::fill(q.m, q.m + Br, -INFINITY);
    std::fill(q.l, q.l + Br, 0.0f);
    zero_pad_columns(Vj, Bc, D, Dp);

    const int64_t end = std::min(k1, max_limit + 1);
    for (int64_t j0 = k0; j0 < end; j0 += Bc) {
      const int64_t nc = std::min(Bc, end - j0);
      for (int64_t c = 0; c < nc; ++c) {
        load_row(k, cache_row<T>(p, p.k_cache, p.k_cache_strides, b, hk, j0 + c), Kj + c * Dp, D);
        load_row(k, cache_row<T>(p, p.v_cache, p.v_cache_strides, b, hk, j0 + c), Vj + c * Dp, D);
      }
      fa2_step(k, q, Kj, Vj, j0, nc, St);
    }
    for (int64_t r = 0; r < nr; ++r) {
      const int64_t slot = ((b * Hq + head_of(r)) * Sq + query_of(r)) * ns + split;
      std::memcpy(part_O.data() + slot * Dp, q.O + r * Dp, Dp * sizeof(float));
      part_m[slot] = q.m[r] * kLn2;  // -inf stays -inf
      part_l[slot] = q.l[r];
    }
  });

  // 3. combine the splits
  parallel_for(B * Hq, [&](int64_t item) {
    const int64_t h = item % Hq, b = item / Hq;
    Scratch& s = thread_scratch(grain(Dp));
    float* acc = s.take(Dp);
    for (int64_t i = 0; i < Sq; ++i) {
      const int64_t row = item * Sq + i;
      T* out = at_mut<T>(p.o, p.o_strides, b, h, i);
      if (!seq[b].valid) {
        for (int64_t d = 0; d < D; ++d) out[d] = from_float<T>(NAN);
        if (p.lse) p.lse[row] = NAN;
        continue;
      }
      SoftmaxState state = SoftmaxState::empty();
      std::fill(acc, acc + Dp, 0.0f);
      for (int64_t split = 0; split < ns; ++split) {
        const int64_t slot = row * ns + split;
        float keep = 0.0f, add = 0.0f;
        state.merge({part_m[slot], part_l[slot]}, &keep, &add);
        const float* O_s = part_O.data() + slot * Dp;
        for (int64_t d = 0; d < Dp; ++d) acc[d] = keep * acc[d] + add * O_s[d];
      }
      store_row(acc, state.inv_l(), out, D);
      if (p.lse) p.lse[row] = state.lse();
    }
  });
}

}  // namespace

void decode(const DecodeParams& p) {
  if (p.batch == 0) return;
  switch (p.dtype) {
    case DType::kFloat32:
      return decode_impl<float>(p);
    case DType::kFloat16:
      return decode_impl<Half>(p);
    case DType::kBFloat16:
      return decode_impl<BFloat16>(p);
  }
}

}  // namespace flashmin::cpu
