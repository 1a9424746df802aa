// Hopper (sm_90) copy engine building blocks: mbarriers (full / empty pipelines) and TMA tiled
// copies of a 4-D or 5-D tensor map into shared memory, plus setmaxnreg for warp-specialised
// kernels. Below sm_90 every function is a trap: kernels that use them are never launched there.
#pragma once

#include <cuda.h>  // CUtensorMap (type only)

#include <cstdint>

#include "flashmin/cuda/copy.h"  // smem_addr

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define FM_HAS_TMA 1
#else
#define FM_HAS_TMA 0
#endif

namespace flashmin::cuda {

// Order this thread's generic-proxy global writes (st.global) before later async-proxy reads of
// the same bytes (a TMA load issued after a barrier, by this or another thread).
__device__ __forceinline__ void fence_proxy_async_global() {
#if FM_HAS_TMA
  asm volatile("fence.proxy.async.global;\n" ::: "memory");
#endif
}

// Order this thread's generic-proxy shared-memory accesses (st.shared, ld.shared, cp.async)
// before later async-proxy ones (wgmma reads, TMA writes into the same bytes).
__device__ __forceinline__ void fence_proxy_async() {
#if FM_HAS_TMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Initialise an mbarrier expecting `count` arrivals per phase (one thread, then a barrier).
__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
#if FM_HAS_TMA
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count));
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#else
  __trap();
#endif
}

// Arrive once on this phase, announcing `bytes` that this thread's copies will deliver.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
#if FM_HAS_TMA
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)),
               "r"(bytes)
               : "memory");
#else
  __trap();
#endif
}

// Wait until the phase with this parity has completed. A fresh barrier is in phase 0, so waiting
// for parity 1 returns at once (how a producer's first pass over empty stages starts).
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
#if FM_HAS_TMA
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
  }
#else
  __trap();
#endif
}

// Plain arrive (a consumer releases a stage).
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
#if FM_HAS_TMA
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
#else
  __trap();
#endif
}

// TMA tiled copy of one box of a 4-D tensor map (coordinates innermost first) into shared
// memory, counted on `bar` (the whole box, out-of-bounds parts zero-filled, counts as bytes).
__device__ __forceinline__ void tma_load_4d(void* smem_dst, const CUtensorMap* map, int c0, int c1,
                                            int c2, int c3, uint64_t* bar) {
#if FM_HAS_TMA
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(smem_addr(smem_dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(smem_addr(bar))
      : "memory");
#else
  __trap();
#endif
}

// The same for a 5-D tensor map.
__device__ __forceinline__ void tma_load_5d(void* smem_dst, const CUtensorMap* map, int c0, int c1,
                                            int c2, int c3, int c4, uint64_t* bar) {
#if FM_HAS_TMA
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4, %5, %6}], [%7];\n" ::"r"(smem_addr(smem_dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4),
      "r"(smem_addr(bar))
      : "memory");
#else
  __trap();
#endif
}

// Warp-specialised kernels: a producer warpgroup gives registers back, consumer warpgroups take
// them (sm_90a; every warp of the warpgroup executes it; the kernel needs a register cap at
// entry, i.e. __launch_bounds__(threads, 1)).
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#endif
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#endif
}

}  // namespace flashmin::cuda
