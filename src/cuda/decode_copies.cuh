// Part of the Flash-Decoding kernels, included by src/cuda/decode.cu only (one translation unit;
// see its header comment): K_j/V_j tensor copies into a pipeline stage, and the append of new keys
// (its own kernel, or fused into the attention kernels).
#pragma once

#include "cuda/decode_device_helpers.cuh"

namespace flashmin::cuda {
namespace {

// Tensor-copy path (one thread): issue the TMA copies of K_j, V_j (key block blk of sequence b,
// KV head hk) into one stage (Ks, Vs), completing on `full`. The block is cut into sub-blocks of
// `sub_rows` keys (B_c, or the page size when pages are smaller) that each lie in one page; a
// sub-block starting at or past L is skipped (its keys are masked), so only pages the sequence
// uses are looked up. Keys in [L, sub-block end) are loaded as whatever the cache holds and
// neutralised by the score mask (K) and the V key masks. An invalid page sets `bad`, and
// *bad_flag (when given) says whether this block had one, published by the arrival on `full`.
template <class Tr, typename T>
__device__ __forceinline__ void issue_kv_block(const DecodeParams& p, const CUtensorMap* tm_k,
                                               const CUtensorMap* tm_v, bool full_row_boxes,
                                               int64_t b, int64_t hk, int64_t L, int64_t blk,
                                               int log2_page, T* Ks, T* Vs, uint64_t* full,
                                               bool& bad, uint32_t* bad_flag) {
  constexpr int kBc = Tr::kBc, kD = Tr::kHeadDim;
  constexpr int kMaxSub = kBc / 16;  // page_size >= 16
  const int head_dim = int(p.head_dim);
  const int sub_rows = p.block_table ? int(min(int64_t(kBc), p.page_size)) : kBc;
  const int n_sub = kBc / sub_rows;
  // Boxes entirely past D are issued too (they read nothing and land as zeros), so the padded
  // columns read as zero (kPadColsZero). Rows of <= 256 bytes keep the run-time count: for 16-bit
  // types it is every box of the bucket at any head dim (a constant changed ptxas' registers
  // there), and fp32 steps stop at D themselves.
  const int d_boxes = Tr::kNarrow || !FM_DECODE_ALL_BOXES
                          ? (head_dim + Tr::kBoxCols - 1) / Tr::kBoxCols
                          : Tr::kDBoxes;
  int slot[kMaxSub], pos[kMaxSub];
  uint32_t bytes = 0;
  bool block_bad = false;
#pragma unroll
  for (int i = 0; i < kMaxSub; ++i) {
    slot[i] = -1;
    const int64_t key = blk * kBc + int64_t(i) * sub_rows;
    if (i >= n_sub || key >= L) continue;
    int64_t sl, ps;
    if (locate_key(p, b, key, log2_page, &sl, &ps)) {
      slot[i] = int(sl);
      pos[i] = int(ps);
      bytes += 2u * uint32_t(d_boxes) * uint32_t(sub_rows) * 128u;
    } else {
      block_bad = true;
    }
  }
  bad |= block_bad;
  if (bad_flag != nullptr) *bad_flag = block_bad ? 1u : 0u;
  if constexpr (FM_DECODE_DIAG == 2) {
    mbar_arrive_expect_tx(full, 0);  // diagnostic: no copies
    return;
  }
  mbar_arrive_expect_tx(full, bytes);
#pragma unroll
  for (int i = 0; i < kMaxSub; ++i) {
    if (slot[i] < 0) continue;
    if (full_row_boxes) {  // head_dim == kD: one box of whole rows
      const int off = i * sub_rows * kD;
      tma_load_5d(Ks + off, tm_k, 0, 0, pos[i], int(hk), slot[i], full);
      tma_load_5d(Vs + off, tm_v, 0, 0, pos[i], int(hk), slot[i], full);
    } else {
      for (int db = 0; db < d_boxes; ++db) {
        const int off = db * kBc * Tr::kBoxCols + i * sub_rows * Tr::kBoxCols;
        tma_load_4d(Ks + off, tm_k, db * Tr::kBoxCols, pos[i], int(hk), slot[i], full);
        tma_load_4d(Vs + off, tm_v, db * Tr::kBoxCols, pos[i], int(hk), slot[i], full);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 1. Append k_new / v_new into the cache (one thread per 16-byte vector): a kernel of its own
//    before the row-major and cp.async split kernels; fused into the key-major TMA kernels (below).
// ---------------------------------------------------------------------------------------------
template <typename T>
__global__ void __launch_bounds__(256) decode_append_kernel(const DecodeParams p) {
  constexpr int kVec = 16 / int(sizeof(T));
  const int vecs = int(p.head_dim / kVec);
  const int64_t total = p.batch * p.heads_kv * p.seqlen_new * vecs;
  const int log2_page = p.block_table ? __ffsll(p.page_size) - 1 : 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int v = int(i % vecs);
    const int64_t j = (i / vecs) % p.seqlen_new;
    const int64_t hk = (i / vecs / p.seqlen_new) % p.heads_kv;
    const int64_t b = i / vecs / p.seqlen_new / p.heads_kv;
    const int64_t cached = p.cache_seqlens ? int64_t(p.cache_seqlens[b]) : p.max_seqlen_k;
    if (cached < 0 || cached + p.seqlen_new > p.max_seqlen_k) continue;  // NaN'd by attention
    int64_t slot, pos;
    if (!locate_key(p, b, cached + j, log2_page, &slot, &pos)) continue;
    const auto* k_src = static_cast<const T*>(p.k_new) + offset(p.k_new_strides, b, hk, j);
    const auto* v_src = static_cast<const T*>(p.v_new) + offset(p.v_new_strides, b, hk, j);
    auto* k_dst = static_cast<T*>(p.k_cache) + offset(p.k_cache_strides, slot, hk, pos);
    auto* v_dst = static_cast<T*>(p.v_cache) + offset(p.v_cache_strides, slot, hk, pos);
    reinterpret_cast<uint4*>(k_dst)[v] = reinterpret_cast<const uint4*>(k_src)[v];
    reinterpret_cast<uint4*>(v_dst)[v] = reinterpret_cast<const uint4*>(v_src)[v];
  }
}

// ---------------------------------------------------------------------------------------------
// 1b. Fused append (key-major TMA split kernels and the persistent kernel, decode's usual path,
//    for a few new keys): the producer warp of a CTA writes the new keys and values that fall in
//    its own key range [key_lo, key_hi) into the cache before any of its copies reads them. Every
//    new key lies in exactly one split of each (b, h_k, row chunk); CTAs of other row chunks write
//    the same bytes (same values). A separate append kernel costs 3.8 us per call at 268 MB (2.6
//    us with PDL; H200, round 13). Each lane loads all its 16-byte pieces before storing any (one
//    memory round trip: a load-store chain per piece cost ~6 us for 16 keys while the streams
//    run), so the fusion is limited to kAppendPieces pieces per lane; more new keys go through the
//    append kernel. Not fused into the row-major and cp.async kernels: there the extra prologue
//    code made ptxas spill 20-230 bytes in the loop.
// ---------------------------------------------------------------------------------------------
constexpr int kAppendPieces = 4;  // 16-byte pieces of K (and of V) per producer lane

// The split kernels that can append themselves.
template <class Tr>
constexpr bool kFusedAppend = Tr::kBulk && Tr::kKeyMajor && Tr::kProducerWarp;

// Whether the call appends and its new keys of one (b, h_k) fit one round of the producer warp,
// so that a kernel with kFusedAppend writes them itself (the host and the kernels decide alike).
__host__ __device__ inline bool append_in_kernel(const DecodeParams& p, int elem_bytes) {
  return p.k_new != nullptr && p.seqlen_new > 0 &&
         p.seqlen_new * (p.head_dim * elem_bytes / 16) <= 32 * kAppendPieces;
}

// Whether key blocks [blk_begin, blk_end) of a valid sequence hold new keys (CTA-uniform).
__device__ __forceinline__ bool range_has_new_keys(const DecodeParams& p, const SeqLen& seq,
                                                   int64_t blk_begin, int64_t blk_end, int bc) {
  return seq.valid && blk_begin < blk_end && blk_end * bc > seq.L - p.seqlen_new;
}

// The new keys in [key_lo, key_hi) of (b, hk), by the 32 lanes of a warp; then a proxy fence, so
// that TMA reads issued after the warp's next barrier see them. A valid length only (seq_len); a
// key whose page index is invalid is skipped (its load marks the sequence bad).
template <typename T>
__device__ __forceinline__ void append_new_keys(const DecodeParams& p, int64_t b, int64_t hk,
                                                int64_t L, int64_t key_lo, int64_t key_hi,
                                                int log2_page, int lane) {
  constexpr int kVec = 16 / int(sizeof(T));
  const int vecs = int(p.head_dim) / kVec;
  const int64_t cached = L - p.seqlen_new;  // the first new key
  const int64_t first = max(cached, key_lo), last = min(L, key_hi);
  const int count = first < last ? int(last - first) * vecs : 0;  // <= 32 * kAppendPieces
  uint4 k_val[kAppendPieces], v_val[kAppendPieces];
  T* k_dst[kAppendPieces];
  T* v_dst[kAppendPieces];
#pragma unroll
  for (int j = 0; j < kAppendPieces; ++j) {  // every load first
    const int i = lane + 32 * j;
    k_dst[j] = v_dst[j] = nullptr;
    if (i >= count) continue;
    const int64_t key = first + i / vecs;
    const int v = i % vecs;
    int64_t slot, pos;
    if (!locate_key(p, b, key, log2_page, &slot, &pos)) continue;
    k_val[j] = reinterpret_cast<const uint4*>(static_cast<const T*>(p.k_new) +
                                              offset(p.k_new_strides, b, hk, key - cached))[v];
    v_val[j] = reinterpret_cast<const uint4*>(static_cast<const T*>(p.v_new) +
                                              offset(p.v_new_strides, b, hk, key - cached))[v];
    k_dst[j] = static_cast<T*>(p.k_cache) + offset(p.k_cache_strides, slot, hk, pos) + v * kVec;
    v_dst[j] = static_cast<T*>(p.v_cache) + offset(p.v_cache_strides, slot, hk, pos) + v * kVec;
  }
#pragma unroll
  for (int j = 0; j < kAppendPieces; ++j) {
    if (k_dst[j] == nullptr) continue;
    *reinterpret_cast<uint4*>(k_dst[j]) = k_val[j];
    *reinterpret_cast<uint4*>(v_dst[j]) = v_val[j];
  }
  fence_proxy_async_global();
}

}  // namespace
}  // namespace flashmin::cuda
