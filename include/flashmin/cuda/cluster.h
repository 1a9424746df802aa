// Hopper (sm_90) thread-block clusters: the CTA's rank and the cluster size, the cluster-wide
// barrier, and loads from a peer CTA's shared memory (distributed shared memory). Below sm_90 a
// cluster is a single CTA: size 1, rank 0, the barrier is the CTA barrier, and peer loads are
// traps (callers only reach them with a cluster larger than one CTA).
#pragma once

#include <cstdint>

#include "flashmin/cuda/copy.h"  // smem_addr
#include "flashmin/cuda/tma.h"   // FM_HAS_TMA (sm_90 device code)

namespace flashmin::cuda {

__device__ __forceinline__ int cluster_size() {
#if FM_HAS_TMA
  uint32_t n;
  asm volatile("mov.u32 %0, %%cluster_nctarank;\n" : "=r"(n));
  return int(n);
#else
  return 1;
#endif
}

__device__ __forceinline__ int cluster_rank() {
#if FM_HAS_TMA
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return int(r);
#else
  return 0;
#endif
}

// Every thread of every CTA of the cluster arrives; shared-memory writes made before the barrier
// are visible to the cluster's CTAs after it (release / acquire).
__device__ __forceinline__ void cluster_sync() {
#if FM_HAS_TMA
  asm volatile(
      "barrier.cluster.arrive.release.aligned;\n"
      "barrier.cluster.wait.acquire.aligned;\n" ::
          : "memory");
#else
  __syncthreads();
#endif
}

// The same barrier without ordering memory, for "every CTA is done reading its peers' shared
// memory" (each read's value was used before the arrive). The release form also orders the
// CTA's outstanding global stores (a GPU-scope MEMBAR in SASS), which at the end of a kernel
// waits for its output writes for nothing.
__device__ __forceinline__ void cluster_sync_relaxed() {
#if FM_HAS_TMA
  asm volatile(
      "barrier.cluster.arrive.relaxed.aligned;\n"
      "barrier.cluster.wait.aligned;\n" ::
          : "memory");
#else
  __syncthreads();
#endif
}

// The shared::cluster address of `p` (a shared-memory pointer of this CTA) in CTA `rank`.
__device__ __forceinline__ uint32_t peer_smem(const void* p, int rank) {
#if FM_HAS_TMA
  uint32_t out;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(out) : "r"(smem_addr(p)), "r"(rank));
  return out;
#else
  __trap();
  return 0;
#endif
}

__device__ __forceinline__ float ld_peer_f32(uint32_t addr) {
#if FM_HAS_TMA
  float v;
  asm volatile("ld.shared::cluster.f32 %0, [%1];\n" : "=f"(v) : "r"(addr) : "memory");
  return v;
#else
  __trap();
  return 0.0f;
#endif
}

__device__ __forceinline__ float4 ld_peer_f32x4(uint32_t addr) {
#if FM_HAS_TMA
  float4 v;
  asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];\n"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "r"(addr)
               : "memory");
  return v;
#else
  __trap();
  return make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#endif
}

}  // namespace flashmin::cuda
