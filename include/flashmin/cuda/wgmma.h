// Hopper (sm_90a) warpgroup MMA building blocks: shared-memory matrix descriptors for the
// 128-byte swizzled layout, the wgmma fence / commit / wait protocol, and the fragment layout
// that ties accumulators to the next product's register operand.
//
// Shared-memory tiles use one layout everywhere: a (rows x cols) 16-bit tile is cut into column
// blocks of 64 elements (128 bytes per row); block c64 is [rows][64] contiguous and 16-byte chunk
// k of row r sits at chunk k ^ (r % 8) (the hardware's 128-byte swizzle; blocks are 1024-byte
// aligned). The same tile serves as
//   K-major operand (the contraction runs along the row): rows = M or N, SBO = 1024 bytes
//     (8-row groups), 16 contraction steps of 16 elements advance the start by 32 bytes inside
//     a column block, then jump to the next block;
//   MN-major operand (the contraction runs down the rows): 64 M/N elements per block row, LBO
//     = bytes between column blocks, SBO = 1024 bytes; 16 contraction rows advance 2048 bytes.
// wgmma accumulators (m64 x N, fp32, N/2 per thread): warp w of the warpgroup owns rows
// 16w .. 16w+15; register 4*t + e of n8-tile t holds row 16w + lane/4 + 8*(e/2), column
// 8t + 2*(lane%4) + e%2 -- the mma.sync m16n8 layout per tile, so two adjacent tiles pack into
// one 16x16 A fragment of a register-A wgmma (the FA2 "P stays in registers" trick).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FM_HAS_WGMMA 1
#else
#define FM_HAS_WGMMA 0
#endif

#include "flashmin/cuda/copy.h"
#include "flashmin/cuda/wgmma_ops.h"

namespace flashmin::cuda {

// Byte offset of element (r, c) of a swizzled [rows][cols] tile (see above).
template <int kRows>
__device__ __forceinline__ int sw128_offset(int r, int c) {
  return (c / 64) * (kRows * 128) + r * 128 + ((((c % 64) / 8) ^ (r % 8)) * 16) + (c % 8) * 2;
}

// cp.async a (kRows x kD) tile, rows [row0, row0 + kRows) of a (n_rows x d) matrix with row
// stride seq_stride (elements), into the swizzled layout. Rows >= n_rows and columns >= d are
// zero-filled without reading global memory. kThreads threads take part.
template <int kRows, int kD, int kThreads, typename T>
__device__ __forceinline__ void cp_async_tile_sw128(T* smem, const T* gmem, int64_t seq_stride,
                                                    int row0, int n_rows, int d) {
  constexpr int kVecs = kD / 8;  // 16-byte vectors per row
  static_assert((kRows * kVecs) % kThreads == 0, "tile load");
#pragma unroll
  for (int n = 0; n < kRows * kVecs / kThreads; ++n) {
    const int idx = n * kThreads + static_cast<int>(threadIdx.x) % kThreads;
    const int r = idx / kVecs, c = (idx % kVecs) * 8;
    const bool valid = row0 + r < n_rows && c < d;
    const T* src = valid ? gmem + (row0 + r) * seq_stride + c : gmem;
    cp_async_16(reinterpret_cast<char*>(smem) + sw128_offset<kRows>(r, c), src, valid);
  }
}

// Matrix descriptor of a 128-byte-swizzled operand starting at `smem` (shared address space).
__device__ __forceinline__ uint64_t sw128_desc(const void* smem, uint32_t lbo_bytes,
                                               uint32_t sbo_bytes) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  uint64_t desc = (addr & 0x3FFFF) >> 4;
  desc |= static_cast<uint64_t>((lbo_bytes >> 4) & 0x3FFF) << 16;
  desc |= static_cast<uint64_t>((sbo_bytes >> 4) & 0x3FFF) << 32;
  desc |= static_cast<uint64_t>(1) << 62;  // 128-byte swizzle
  return desc;
}

// The descriptor of the operand `bytes` further on in shared memory.
__device__ __forceinline__ uint64_t desc_plus(uint64_t desc, int bytes) {
  return desc + static_cast<uint64_t>(bytes >> 4);
}

// Order register writes (e.g. packing an A fragment, zeroing an accumulator) before the wgmma
// that reads them.
__device__ __forceinline__ void wgmma_fence() {
#if FM_HAS_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if FM_HAS_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
// Wait until at most kPending committed groups are still running.
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
#if FM_HAS_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}
// Keep the compiler from moving accumulator accesses across an async wgmma.
template <int N>
__device__ __forceinline__ void pin_registers(float (&acc)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(acc[i])::"memory");
}
}  // namespace flashmin::cuda
