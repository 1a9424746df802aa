// Part of the Flash-Decoding kernels, included by src/cuda/decode.cu only (one translation unit;
// see its header comment): the combine kernel.
#pragma once

#include "cuda/decode_split_kernel.cuh"

namespace flashmin::cuda {
namespace {

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

}  // namespace
}  // namespace flashmin::cuda
