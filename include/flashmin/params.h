// Plain-data parameter structs shared by every backend (CPU, CUDA) and the launcher.
// No torch, no CUDA headers: pointers, sizes and int64 element strides only.
//
// Layout convention (FA papers' notation):
//   Q, O, dO, dQ : (B, H_q, S_q, D)      K, V, dK, dV : (B, H_k, S_k, D)
//   lse, delta   : (B, H_q, S_q) float32, contiguous
// Every tensor's last dim is contiguous; the other three axes have arbitrary strides
// (in elements, 64-bit). Query head h reads K/V head h / (H_q / H_k) (GQA/MQA).
#pragma once

#include <cstdint>

namespace flashmin {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

enum class Algorithm : int {
  kFA2 = 0,  // outer loop over query blocks; O_i stays on chip (FA2 paper, Algorithm 1)
  kFA1 = 1,  // outer loop over key/value blocks; O_i, l_i, m_i round-trip to memory (FA1 paper)
};

// Strides (in elements) of a rank-4 (batch, head, seq, dim) tensor whose dim axis is contiguous.
struct Strides {
  int64_t batch = 0;
  int64_t head = 0;
  int64_t seq = 0;
};

// Causal masking in one rule: key j is visible to query i iff j <= i + causal_offset.
//   top-left (SDPA's is_causal)      : causal_offset = 0
//   bottom-right (decode, KV cache)  : causal_offset = S_k - S_q
// A query row that sees no key gets O_i = 0 and lse_i = -inf (and zero gradients).
struct AttnParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  float* lse = nullptr;  // (B, H_q, S_q), natural-log logsumexp of the scaled scores

  Strides q_strides, k_strides, v_strides, o_strides;

  int64_t batch = 0;
  int64_t heads_q = 0;
  int64_t heads_kv = 0;
  int64_t seqlen_q = 0;
  int64_t seqlen_k = 0;
  int64_t head_dim = 0;

  float scale = 1.0f;  // softmax scale applied to Q K^T
  bool is_causal = false;
  int64_t causal_offset = 0;

  DType dtype = DType::kFloat32;
  Algorithm algorithm = Algorithm::kFA2;

  // Scratch memory allocated by the caller (Python), size from the launcher's *_workspace_bytes().
  // Its contents on entry are undefined: kernels initialise what they use.
  void* workspace = nullptr;
  int64_t workspace_bytes = 0;

  int64_t group_size() const { return heads_kv > 0 ? heads_q / heads_kv : 0; }
};

struct AttnBwdParams : AttnParams {
  const void* dout = nullptr;  // dO, shaped like O
  Strides dout_strides;
  void* dq = nullptr;  // outputs; shaped like Q / K / V, same dtype as the inputs
  void* dk = nullptr;
  void* dv = nullptr;
  Strides dq_strides, dk_strides, dv_strides;

  bool deterministic = false;  // gradients bitwise identical run to run
};

// Flash-Decoding over a KV cache, contiguous or paged.
//   q          : (B, H_q, S_q, D), small S_q (1..16). Queries are the last S_q positions of
//                their sequence: bottom-right causal within each sequence.
//   k/v cache  : contiguous: (B, H_k, S_max, D)
//                paged:     (num_pages, H_k, page_size, D), page p of sequence b is
//                           block_table[b * block_table_stride + p]
//   seqlens    : int32 (B,), tokens already in the cache (nullptr: every sequence is S_max)
//   k/v new    : optional (B, H_k, S_new, D); appended in place at positions
//                [seqlens[b], seqlens[b] + S_new) before attending, so sequence b attends over
//                L_b = seqlens[b] + S_new keys.
// Invalid device-side data (a length beyond the cache, a page index out of range) cannot raise
// without a host sync: the kernels never touch memory out of range and write NaN to the
// affected sequence's output instead of a silently wrong value.
struct DecodeParams {
  const void* q = nullptr;
  Strides q_strides;
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  Strides k_cache_strides, v_cache_strides;  // "batch" axis is the page axis when paged
  const int32_t* cache_seqlens = nullptr;
  const int32_t* block_table = nullptr;  // nullptr: contiguous cache
  int64_t block_table_stride = 0;        // elements between rows of block_table
  int64_t max_pages_per_seq = 0;         // block_table's second dim
  int64_t num_pages = 0;                 // cache's first dim when paged
  int64_t page_size = 0;                 // power of two >= 16 when paged

  const void* k_new = nullptr;  // optional append
  const void* v_new = nullptr;
  Strides k_new_strides, v_new_strides;
  int64_t seqlen_new = 0;

  void* o = nullptr;  // (B, H_q, S_q, D), dtype of q
  Strides o_strides;
  float* lse = nullptr;  // optional (B, H_q, S_q) float32 contiguous

  int64_t batch = 0;
  int64_t heads_q = 0;
  int64_t heads_kv = 0;
  int64_t seqlen_q = 0;
  int64_t max_seqlen_k = 0;  // S_max (contiguous) or max_pages_per_seq * page_size (paged)
  int64_t head_dim = 0;

  float scale = 1.0f;
  DType dtype = DType::kFloat32;

  int64_t num_splits = 0;  // 0: heuristic; the launcher writes the value it used back here
  // Set by the heuristic (sm_90 decode): 1 = the alternative CTA shape: one wide CTA per SM for
  // rows of <= 256 bytes (DecodeTraits::kWide), two dense CTAs per SM for 512-byte rows (kDense).
  int64_t wide_ctas = 0;

  void* workspace = nullptr;  // size from decode_workspace_bytes()
  int64_t workspace_bytes = 0;

  int64_t group_size() const { return heads_kv > 0 ? heads_q / heads_kv : 0; }
};

}  // namespace flashmin
