// Device helpers shared by the FA2 backward kernel families (fa2_bwd.cu: sm80, mma.sync;
// fa2_bwd_sm90.cu: sm90, wgmma).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "flashmin/cuda/copy.h"
#include "flashmin/cuda/mma.h"
#include "flashmin/params.h"

namespace flashmin::cuda::bwd_detail {

constexpr float kLog2e = 1.4426950408889634f;

// Element offset of row `s` of head `h`, batch `b` (64-bit).
__device__ __forceinline__ int64_t row_offset(const Strides& st, int64_t b, int64_t h, int64_t s) {
  return b * st.batch + h * st.head + s * st.seq;
}

// Causal rule key <= query + offset as key - query <= diag, diag = query + offset - key for
// the thread's first element, clamped to int (a huge value when not causal).
__device__ __forceinline__ int causal_diag(const AttnBwdParams& p, int query, int key) {
  if (!p.is_causal) return 1 << 30;
  const int64_t diag = query + p.causal_offset - key;
  return static_cast<int>(diag<-(1 << 30) ? -(1 << 30) : diag>(1 << 30) ? (1 << 30) : diag);
}

// 4-byte async copy (one fp32 of lse / D per row); zero-fill when !valid.
__device__ __forceinline__ void cp_async_4(void* smem_dst, const void* gmem_src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(smem_dst)),
               "l"(gmem_src), "r"(valid ? 4 : 0));
}

}  // namespace flashmin::cuda::bwd_detail
