// Part of the Flash-Decoding kernels, included by src/cuda/decode.cu only (one translation unit;
// see its header comment): small device helpers (shared-memory tile layouts, programmatic launch,
// sequence lengths, page lookups, vector loads and stores).
#pragma once

#include <cuda.h>  // CUtensorMap (types only: the encoder is fetched through the runtime)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "cuda/decode_traits.h"
#include "flashmin/cuda/cluster.h"
#include "flashmin/cuda/copy.h"
#include "flashmin/cuda/mma.h"
#include "flashmin/cuda/tma.h"
#include "flashmin/online_softmax.h"
#include "flashmin/params.h"

namespace flashmin::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---------------------------------------------------------------------------------------------
// Small device helpers
// ---------------------------------------------------------------------------------------------

// Element offset of 16-byte vector `vec` of row `row` in a shared-memory tile, laid out so that
// ldmatrix (8 rows, same column) and the fp32 path's per-lane row reads hit 8 different bank
// groups.
// Q_i (and K_j, V_j on the cp.async path): [rows][kD], vector index XORed with row % 8.
template <class Tr>
__device__ __forceinline__ int q_off(int row, int vec) {
  return row * Tr::kHeadDim + ((vec ^ (row & 7)) * Tr::kVec);
}
// K_j, V_j on the tensor-copy path: 128-byte lines, TMA's 128-byte swizzle puts 16-byte chunk c
// of line i at chunk c ^ (i % 8) (the tile starts 1024-byte aligned). Row r's 128-byte piece h
// is line r * per_row + h * per_piece: {kDBoxes, 1} when one box copies whole rows in memory
// order (head_dim fills the bucket), {1, B_c} when each 128-byte column is its own box.
struct KvLines {
  int per_row, per_piece;
};
template <class Tr>
__device__ __forceinline__ int kv_off(int row, int vec, KvLines kl) {
  if constexpr (Tr::kBulk) {
    const int line = row * kl.per_row + (vec / 8) * kl.per_piece;
    return line * Tr::kBoxCols + (((vec % 8) ^ (line & 7)) * Tr::kVec);
  }
  return q_off<Tr>(row, vec);
}

// ---- Hopper (sm_90): mbarriers and TMA copies come from flashmin/cuda/tma.h (FM_HAS_TMA: sm_90
// and newer device code); PDL here, under the same condition.

// Programmatic dependent launch (sm_90): a kernel launched with it may start while the previous
// kernel on the stream finishes; it must wait before touching global memory. The split kernels
// wait for the append (or whatever the caller ran before); the combine waits for the splits.
// Without a programmatic dependency the wait returns at once.
__device__ __forceinline__ void pdl_launch_dependents() {
#if FM_HAS_TMA
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait_primary() {
#if FM_HAS_TMA
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Tokens of sequence b after the append (L_b), and whether its device-side length is valid.
struct SeqLen {
  int64_t L;
  bool valid;
};

// ceil(a / b) for 0 <= a, 1 <= b, in 32 bits wherever a fits (a key-block count always does
// for a cache that fits in memory).
__device__ __forceinline__ int64_t ceil_div_small(int64_t a, int b) {
  if (a <= int64_t(INT_MAX) - b) return (unsigned(a) + unsigned(b) - 1) / unsigned(b);
  return (a + b - 1) / b;
}

__device__ __forceinline__ SeqLen seq_len(const DecodeParams& p, int64_t b) {
  const int64_t cached = p.cache_seqlens ? int64_t(p.cache_seqlens[b]) : p.max_seqlen_k;
  const bool valid = cached >= 0 && cached + p.seqlen_new <= p.max_seqlen_k;
  return {valid ? cached + p.seqlen_new : 0, valid};
}

// Diagnostic, FM_DECODE_TIMELINE=1 builds only: kTimelineFields values per CTA of the last
// split-kernel launch (TimelineField), read back with decode_timeline() (decode_check:
// FM_TIMELINE=1). The phase sums are clock64() cycles of compute warp 0 and the producer.
#ifndef FM_DECODE_TIMELINE
#define FM_DECODE_TIMELINE 0
#endif
#if FM_DECODE_TIMELINE
constexpr int64_t kTimelineMaxCtas = int64_t(1) << 16;
__device__ unsigned long long g_timeline[kTimelineFields * kTimelineMaxCtas];
__device__ long long g_timeline_ctas;
__device__ __forceinline__ unsigned long long global_timer_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
  return t;
}
#endif

// Where key `key` of sequence b lives: (index on the cache's first axis, index on its seq
// axis). Contiguous: (b, key). Paged: (block_table[b][key / page_size], key % page_size).
// Returns false (and touches nothing) when the page index is out of range.
__device__ __forceinline__ bool locate_key(const DecodeParams& p, int64_t b, int64_t key,
                                           int log2_page, int64_t* slot, int64_t* pos) {
  if (p.block_table == nullptr) {
    *slot = b;
    *pos = key;
    return true;
  }
  const int64_t page = p.block_table[b * p.block_table_stride + (key >> log2_page)];
  *slot = page;
  *pos = key & (p.page_size - 1);
  return page >= 0 && page < p.num_pages;
}

__device__ __forceinline__ int64_t offset(const Strides& s, int64_t slot, int64_t head,
                                          int64_t pos) {
  return slot * s.batch + head * s.head + pos * s.seq;
}

__device__ __forceinline__ float4 ld4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}

__device__ __forceinline__ float dot4(float4 a, float4 b) {
  return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

// Store 4 consecutive fp32 values as T (8 or 16 bytes, aligned by construction).
template <typename T>
__device__ __forceinline__ void store4(T* dst, float4 v) {
  if constexpr (std::is_same_v<T, float>) {
    *reinterpret_cast<float4*>(dst) = v;
  } else {
    uint2 packed;
    packed.x = MmaType<T>::pack(v.x, v.y);
    packed.y = MmaType<T>::pack(v.z, v.w);
    *reinterpret_cast<uint2*>(dst) = packed;
  }
}

}  // namespace
}  // namespace flashmin::cuda
