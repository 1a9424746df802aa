// Part of the Flash-Decoding kernels, included by src/cuda/decode.cu only (one translation unit;
// see its header comment): the split kernel and the merges of its warps and of a cluster's splits.
#pragma once

#include "cuda/decode_copies.cuh"
#include "cuda/decode_warp_steps.cuh"

namespace flashmin::cuda {
namespace {

// ---------------------------------------------------------------------------------------------
// 2. Split-KV attention. Grid: x = (b, h_k, row chunk), y = split.
//    o_part == nullptr: write O, lse directly (one split). Otherwise o_part (splits, B*H_q*S_q, D)
//    and lse_part (splits, B*H_q*S_q) receive this split's normalised O_s and lse_s.
// ---------------------------------------------------------------------------------------------
// Split partials loaded per batch before merge_partials uses them (the combine's global loads,
// the cluster merge's distributed shared-memory loads): one memory round trip per batch.
constexpr int kMergeBatch = 8;

// Epilogue: n_warps warps each hold (m_w, l_w, O_w) for one query row, at m[w * kWarpRows],
// l[w * kWarpRows] and columns [d, d + 4) of O at o[w * kWarpRows * kOStride] (m in log2
// units, O unnormalised). Returns their merged, normalised O and sets lse (natural log); an
// empty row gives O = 0, lse = -inf.
template <int kWarpRows, int kOStride, int kMaxWarps>
__device__ __forceinline__ float4 merge_warp_rows(const float* m, const float* l, const float* o,
                                                  int n_warps, float& lse) {
  // One thread's serial chain at the end of the CTA, on the kernel's critical path: every load
  // first (four warps at a time), then the hardware exp2, log2 and reciprocal (a loop over
  // n_warps with libm's exp2f, logf and division took ~0.9 us with the output write; round
  // 12). Slots past n_warps reload slot 0 and are skipped.
  constexpr int kBatch = kMaxWarps < 4 ? kMaxWarps : 4;  // loads in flight (registers)
  float m_w[kMaxWarps];
  float m_max = -INFINITY;
#pragma unroll
  for (int w = 0; w < kMaxWarps; ++w) {
    m_w[w] = m[(w < n_warps ? w : 0) * kWarpRows];
    if (w < n_warps) m_max = fmaxf(m_max, m_w[w]);
  }
  float l_sum = 0.0f;
  float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
  for (int w0 = 0; w0 < kMaxWarps; w0 += kBatch) {
    float l_w[kBatch];
    float4 o_w[kBatch];
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int w = w0 + k < n_warps ? w0 + k : 0;  // a slot of this row's warps
      l_w[k] = l[w * kWarpRows];
      o_w[k] = ld4(o + w * kWarpRows * kOStride);
    }
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int w = w0 + k;
      if (w >= n_warps || m_w[w] == -INFINITY) continue;  // no keys: O_w may be anything
      const float sc = fast_exp2(m_w[w] - m_max);
      l_sum = fmaf(sc, l_w[k], l_sum);
      acc = make_float4(fmaf(sc, o_w[k].x, acc.x), fmaf(sc, o_w[k].y, acc.y),
                        fmaf(sc, o_w[k].z, acc.z), fmaf(sc, o_w[k].w, acc.w));
    }
  }
  const float inv_l = l_sum > 0.0f ? __fdividef(1.0f, l_sum) : 0.0f;
  lse = l_sum > 0.0f ? (m_max + __log2f(l_sum)) * kLn2 : -INFINITY;
  return make_float4(acc.x * inv_l, acc.y * inv_l, acc.z * inv_l, acc.w * inv_l);
}

// Merge kN split partials (O_s normalised, lse_s in natural-log units) into a running state:
// st.m = max lse_s so far, st.l = sum exp(lse_s - st.m), acc = sum exp(lse_s - st.m) O_s. Empty
// splits (lse_s = -inf) add nothing; a NaN lse_s (invalid sequence) sets `bad`. Used by the
// combine kernel and by the cluster merge at the end of the split kernel; exp through the
// hardware exp2 (1.004-1.013x on the split shapes, H200 round 13).
template <int kN>
__device__ __forceinline__ void merge_partials(const float (&x)[kN], const float4 (&o)[kN],
                                               SoftmaxState& st, float4& acc, bool& bad) {
  float m_new = st.m;
#pragma unroll
  for (int k = 0; k < kN; ++k) {
    bad |= isnan(x[k]);
    if (x[k] > m_new) m_new = x[k];
  }
  if (m_new == -INFINITY) return;  // only empty splits so far
  const float sc = st.m == -INFINITY ? 0.0f : fast_exp2((st.m - m_new) * kLog2e);
  st = {m_new, st.l * sc};
  acc = make_float4(acc.x * sc, acc.y * sc, acc.z * sc, acc.w * sc);
#pragma unroll
  for (int k = 0; k < kN; ++k) {
    if (!(x[k] > -INFINITY)) continue;  // empty split (or NaN): weight 0, O_s unused
    const float w = fast_exp2((x[k] - m_new) * kLog2e);
    st.l += w;
    acc.x += w * o[k].x;
    acc.y += w * o[k].y;
    acc.z += w * o[k].z;
    acc.w += w * o[k].w;
  }
}

template <typename T, int kD, bool kBulk, bool kCompact, bool kAlt, bool kKeyMajor>
__global__ void __launch_bounds__(DecodeTraits<T, kD, kBulk, kCompact, kAlt, kKeyMajor>::kThreads)
    __maxnreg__((DecodeTraits<T, kD, kBulk, kCompact, kAlt, kKeyMajor>::kMaxRegs))
        decode_split_kernel(const DecodeParams p, const int row_chunks, float* o_part,
                            float* lse_part, const __grid_constant__ CUtensorMap tm_k,
                            const __grid_constant__ CUtensorMap tm_v, const bool full_row_boxes) {
  using Tr = DecodeTraits<T, kD, kBulk, kCompact, kAlt, kKeyMajor>;
  constexpr int kBc = Tr::kBc;
  constexpr int kStages = Tr::kStages;
  extern __shared__ __align__(128) unsigned char smem_raw[];

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  if (o_part != nullptr) pdl_launch_dependents();  // the combine may start its prologue
#if FM_DECODE_TIMELINE
  const unsigned long long t_start = global_timer_ns();
#endif

  // ---- Which (b, h_k, query rows, split) this CTA owns. 32-bit index math (every value is
  //      bounded by the grid or the head counts): 64-bit divisions cost hundreds of cycles on the
  //      way to the first copy and in the epilogue.
  const int group = int(p.heads_q) / int(p.heads_kv);
  const int S_q = int(p.seqlen_q);
  const int chunk = int(blockIdx.x % unsigned(row_chunks));
  const int column = int(blockIdx.x / unsigned(row_chunks));
  const int64_t hk = column % int(p.heads_kv);
  const int64_t b = column / int(p.heads_kv);
  const int split = blockIdx.y, num_splits = gridDim.y;
  // Row R of the group = (query head hk*group + R / S_q, query position R % S_q).
  const int row_begin = chunk * Tr::kMaxRows;
  const int rows = min(Tr::kMaxRows, group * S_q - row_begin);
  const int row_tiles = (rows + Tr::kRowTile - 1) / Tr::kRowTile;
  // Tensor-copy path: warp kWarps only issues the copies (producer); warps 0..kWarps-1 compute.
  const bool is_producer = Tr::kProducerWarp && warp == Tr::kWarps;
  // Warps that share a row tile split each K_j, V_j block between them (16-key chunks):
  // warps_n = the largest power of 2 with row_tiles * warps_n <= kWarps.
  int warps_n = 1;
  while (warps_n * 2 * row_tiles <= Tr::kWarps) warps_n *= 2;
  const int rt = warp / warps_n, wn = warp % warps_n;
  const bool warp_has_rows = !is_producer && rt < row_tiles;

  // ---- Shared memory (base 1024-byte aligned on the tensor-copy path, for the swizzle):
  //      stages x (K_j [B_c][kD], V_j [B_c][kD]) | Q_i [rows_pad][kD] | m, l | P | mbarriers.
  unsigned char* smem = smem_raw;
  if constexpr (Tr::kSmemAlign > 0)
    smem += (Tr::kSmemAlign - (smem_addr(smem_raw) & (Tr::kSmemAlign - 1))) & (Tr::kSmemAlign - 1);
  T* KVs = reinterpret_cast<T*>(smem);
  T* Qs = KVs + kStages * 2 * kBc * kD;
  float* Ms = reinterpret_cast<float*>(Qs + row_tiles * Tr::kRowTile * kD);          // [warps][16]
  float* Ls = Ms + Tr::kWarps * Tr::kRowTile;                                        // [warps][16]
  float* Pw = Ls + Tr::kWarps * Tr::kRowTile + warp * Tr::kRowTile * Tr::kKeyChunk;  // [16][16]
  uint64_t* full_bar = reinterpret_cast<uint64_t*>(Ls + Tr::kWarps * Tr::kRowTile +
                                                   Tr::kWarps * Tr::kRowTile * Tr::kKeyChunk);
  uint64_t* empty_bar = full_bar + kStages;
  float* Os = reinterpret_cast<float*>(KVs);  // epilogue: [warps][16][kOStride], reuses stages

  // ---- This sequence's length and this split's key blocks [blk_begin, blk_end).
  pdl_wait_primary();  // launched early (PDL): the previous kernel's writes are visible after this
  const SeqLen seq = seq_len(p, b);
  const int64_t L = seq.L;
  bool bad = !seq.valid;  // invalid length or page: the sequence's output becomes NaN
  const int64_t n_blocks = (L + kBc - 1) / kBc;
  const int64_t blocks_per_split = ceil_div_small(n_blocks, num_splits);
  const int64_t blk_begin = min(n_blocks, split * blocks_per_split);
  const int64_t blk_end = min(n_blocks, blk_begin + blocks_per_split);
  const int64_t causal_limit = L - S_q;  // query t sees key j iff j <= causal_limit + t
  const int log2_page = p.block_table ? __ffsll(p.page_size) - 1 : 0;
  const int head_dim = int(p.head_dim);
  // Tensor-copy path: how the rows of a K_j, V_j tile lie in shared memory (kv_off).
  const KvLines kl = full_row_boxes ? KvLines{Tr::kDBoxes, 1} : KvLines{1, kBc};
  // The warps of a row tile take the 16-key chunks of each block in turn (global chunk index
  // modulo warps_n), so blocks with fewer chunks than warps still keep all busy. (warps_n is a
  // power of 2; when kWarps divides the chunk count, every warp simply takes chunks wn + k
  // warps_n.) first_chunk(blk): this warp's first chunk of block blk.
  auto first_chunk = [&](int64_t blk) {
    constexpr int kChunks = kBc / Tr::kKeyChunk;
    if constexpr (kChunks % Tr::kWarps != 0)
      return (wn - int((uint32_t(blk) * kChunks) & uint32_t(warps_n - 1))) & (warps_n - 1);
    return wn;
  };

  const T* k_cache = static_cast<const T*>(p.k_cache);
  const T* v_cache = static_cast<const T*>(p.v_cache);

  // K_j, V_j (B_c x kD each) of key block blk -> stage. Tensor-copy path: issue_kv_block (the
  // producer warp's lane 0 only). cp.async path (every thread): keys >= L are zero-filled, not
  // read.
  auto load_kv = [&](int64_t blk, int stage) {
    T* Ks = KVs + stage * 2 * kBc * kD;
    T* Vs = Ks + kBc * kD;
    if constexpr (kBulk) {
      issue_kv_block<Tr>(p, &tm_k, &tm_v, full_row_boxes, b, hk, L, blk, log2_page, Ks, Vs,
                         &full_bar[stage], bad, nullptr);
    } else {
#pragma unroll
      for (int it = 0; it < Tr::kVecsPerThread; ++it) {
        const int i = tid + it * Tr::kThreads;
        const int r = i / Tr::kVecsPerRow, v = i % Tr::kVecsPerRow;
        const int64_t key = blk * kBc + r;
        bool ok = key < L && v * Tr::kVec < head_dim;
        const T* k_src = k_cache;
        const T* v_src = v_cache;
        if (ok) {
          int64_t sl, ps;
          ok = locate_key(p, b, key, log2_page, &sl, &ps);
          bad |= !ok;
          if (ok) {
            k_src = k_cache + offset(p.k_cache_strides, sl, hk, ps) + v * Tr::kVec;
            v_src = v_cache + offset(p.v_cache_strides, sl, hk, ps) + v * Tr::kVec;
          }
        }
        cp_async_16(Ks + kv_off<Tr>(r, v, kl), k_src, ok);
        cp_async_16(Vs + kv_off<Tr>(r, v, kl), v_src, ok);
      }
    }
  };

  // ---- Pipeline prologue. Tensor-copy path: the producer sets up the mbarriers (full: 1
  //      arrival + bytes; empty: one arrival per consumer warp) and fills every stage before
  //      anyone waits.
  if constexpr (kFusedAppend<Tr>) {
    // Fused append by the producer warp; its global writes come before the TMA reads them (async
    // proxy): a proxy fence by each writer, then a barrier with the issuing lane.
    if (is_producer && append_in_kernel(p, sizeof(T)) &&
        range_has_new_keys(p, seq, blk_begin, blk_end, kBc)) {
      append_new_keys<T>(p, b, hk, L, blk_begin * kBc, blk_end * kBc, log2_page, lane);
      __syncwarp();
    }
  }
  if constexpr (kBulk) {
    if (Tr::kProducerWarp ? (is_producer && lane == 0) : tid == 0) {
      for (int s = 0; s < kStages; ++s) {
        mbar_init(&full_bar[s], 1);
        mbar_init(&empty_bar[s], Tr::kWarps);
      }
      for (int s = 0; s < kStages; ++s) {
        if (blk_begin + s < blk_end) load_kv(blk_begin + s, s);
      }
    }
  }

  // ---- Q_i -> shared memory (zero-filled padding rows and columns).
  copy_q_rows<Tr>(Qs, p, b, hk, row_begin, row_tiles * Tr::kRowTile, rows, tid, Tr::kThreads);
  cp_async_commit();
  if constexpr (kBulk) {
    cp_async_wait<0>();
    __syncthreads();  // Q_i and the mbarrier initialisation are visible to every thread
  } else {
    // Q_i is the first cp.async group, then kStages - 1 blocks in flight; Q_i is visible to
    // every warp before the loop (the key-major step keeps Q_i^T in registers).
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (blk_begin + s < blk_end) load_kv(blk_begin + s, s);
      cp_async_commit();
    }
    cp_async_wait<kStages - 1>();
    __syncthreads();
  }

  // ---- Per-warp running state for the lane's two query rows (row-major step: rows lane/4 and
  //      lane/4 + 8 of the warp's row tile; key-major: rows 2*(lane%4) + {0, 1}): O_i (16 x D,
  //      or O_i^T D x 8), m_i (log2 units), l_i (partial row sums, completed at the end).
  float O[kD / 8][4];
  float Ot[kD / 16][4];
  uint32_t qf[kD / 16][2];  // key-major: Q_i^T as mma B fragments
#pragma unroll
  for (int nd = 0; nd < kD / 8; ++nd) O[nd][0] = O[nd][1] = O[nd][2] = O[nd][3] = 0.0f;
#pragma unroll
  for (int nd = 0; nd < kD / 16; ++nd) Ot[nd][0] = Ot[nd][1] = Ot[nd][2] = Ot[nd][3] = 0.0f;
  if constexpr (Tr::kKeyMajor) load_q_fragments<Tr>(qf, Qs, lane);
  float m_i[2] = {-INFINITY, -INFINITY};
  float l_i[2] = {0.0f, 0.0f};
  const int lr_lo = Tr::kKeyMajor ? 2 * (lane % 4) : lane / 4;  // rows within the row tile
  const int lr_hi = Tr::kKeyMajor ? lr_lo + 1 : lr_lo + 8;
  const int64_t t_row[2] = {(row_begin + rt * Tr::kRowTile + lr_lo) % S_q,
                            (row_begin + rt * Tr::kRowTile + lr_hi) % S_q};
  const float scale_log2 = p.scale * kLog2e;

#if FM_DECODE_TIMELINE
  unsigned long long tl[kTimelineFields] = {};
  const int64_t tl_slot = (int64_t(blockIdx.y) * gridDim.x + blockIdx.x) * kTimelineFields;
#define FM_TL_TIME(field, ...)                            \
  {                                                       \
    const long long tl_c0 = clock64();                    \
    __VA_ARGS__;                                          \
    tl[field] += (unsigned long long)(clock64() - tl_c0); \
  }
#else
#define FM_TL_TIME(field, ...) __VA_ARGS__;
#endif
  if (is_producer) {
    // Producer (tensor-copy path): as soon as every consumer warp has released the stage of
    // block blk - kStages, refill it with block blk. Never waits on a consumer otherwise.
    if (lane == 0) {
      for (int64_t blk = blk_begin + kStages; blk < blk_end; ++blk) {
        const int it = int(blk - blk_begin), stage = it % kStages;
        if constexpr (FM_DECODE_DIAG == 3)
          mbar_wait(&full_bar[stage], ((it / kStages) - 1) & 1);  // its last copy landed
        else
          FM_TL_TIME(kTlWaitEmpty, mbar_wait(&empty_bar[stage], ((it / kStages) - 1) & 1));
        load_kv(blk, stage);
      }
      if constexpr (FM_DECODE_DIAG == 3) {  // nothing may be in flight when the CTA exits
        for (int64_t blk = max(blk_begin, blk_end - kStages); blk < blk_end; ++blk) {
          const int it = int(blk - blk_begin);
          mbar_wait(&full_bar[it % kStages], (it / kStages) & 1);
        }
      }
#if FM_DECODE_TIMELINE
      if (tl_slot < kTimelineMaxCtas * kTimelineFields)
        g_timeline[tl_slot + kTlWaitEmpty] = tl[kTlWaitEmpty];
#endif
    }
    __syncwarp();
  }
  // Consumers: the FA2 inner loop over this split's key blocks.
  const int64_t consume_end = is_producer || FM_DECODE_DIAG == 3 ? blk_begin : blk_end;
  for (int64_t blk = blk_begin; blk < consume_end; ++blk) {
    const int it = int(blk - blk_begin);
    const int stage = it % kStages;
    if constexpr (kBulk) {
      if constexpr (!Tr::kProducerWarp) {
        // Thread 0 produces: once every warp has released block blk - 1, refill its stage.
        if (tid == 0 && it >= 1 && blk + kStages - 1 < blk_end) {
          const int prev = (it - 1) % kStages;
          mbar_wait(&empty_bar[prev], ((it - 1) / kStages) & 1);
          load_kv(blk + kStages - 1, prev);
        }
      }
      __syncwarp();
      FM_TL_TIME(kTlWaitFull, mbar_wait(&full_bar[stage], (it / kStages) & 1));  // block landed
      __syncwarp();
#if FM_DECODE_TIMELINE
      if (it == 0) tl[kTlFirstBlock] = global_timer_ns();
#endif
    } else {
      // Issue block blk + kStages - 1 into the stage freed at the end of the last iteration.
      if (blk + kStages - 1 < blk_end) load_kv(blk + kStages - 1, (it + kStages - 1) % kStages);
      cp_async_commit();
      cp_async_wait<kStages - 1>();  // block blk has landed
      __syncthreads();
    }

    const T* Ks = KVs + stage * 2 * kBc * kD;  // K_j: [B_c][kD]
    const T* Vs = Ks + kBc * kD;               // V_j: [B_c][kD]
    if (warp_has_rows && FM_DECODE_DIAG != 1)
      FM_TL_TIME(kTlMath, {
        constexpr int kChunks = kBc / Tr::kKeyChunk;
        for (int c = first_chunk(blk); c < kChunks; c += warps_n) {
          const int64_t key0 = blk * kBc + c * Tr::kKeyChunk;
          if (key0 >= L) break;
          const bool need_mask = key0 + Tr::kKeyChunk - 1 > causal_limit;
          const int kv_valid = int(min(int64_t(Tr::kKeyChunk), L - key0));
          if constexpr (Tr::kKeyMajor) {
            warp_step_key_major<Tr>(Ot, m_i, l_i, qf, Ks, Vs, c * Tr::kKeyChunk, lane, kl, key0,
                                    need_mask, causal_limit, t_row, scale_log2, kv_valid);
          } else {
            warp_step_row_major<Tr>(O, m_i, l_i, Qs, rt * Tr::kRowTile, Ks, Vs, c * Tr::kKeyChunk,
                                    lane, head_dim, kl, Pw, key0, need_mask, causal_limit, t_row,
                                    scale_log2, kv_valid);
          }
        }
      });
    if constexpr (kBulk) {
      __syncwarp();  // the whole warp is done reading this stage: release it to the producer
      if (lane == 0) mbar_arrive(&empty_bar[stage]);
    } else {
      __syncthreads();  // everyone is done with this stage before it is refilled
    }
  }

#if FM_DECODE_TIMELINE
  if (warp == 0 && lane == 0 && tl_slot < kTimelineMaxCtas * kTimelineFields) {
    tl[kTlLoopEnd] = global_timer_ns();
    tl[kTlBlocks] = (unsigned long long)(blk_end - blk_begin);
    for (int f : {kTlFirstBlock, kTlLoopEnd, kTlWaitFull, kTlMath, kTlBlocks})
      g_timeline[tl_slot + f] = tl[f];
  }
#endif
#undef FM_TL_TIME
  if constexpr (FM_DECODE_DIAG_NO_EPILOGUE) return;
  // ---- Epilogue: merge the warps of each row tile, normalise, write.
  cp_async_wait<0>();
  __syncthreads();  // pipeline buffers are free: reuse them as the O scratch
#if FM_DECODE_TIMELINE
  if (tid == 0) tl[kTlEpiSync] = global_timer_ns();
#endif
  // Complete the row sums over the lanes that hold the other keys of the same rows.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int x = Tr::kKeyMajor ? 4 : 1; x < (Tr::kKeyMajor ? 32 : 4); x *= 2)
      l_i[h] += __shfl_xor_sync(0xffffffffu, l_i[h], x);
  }
  if (warp_has_rows) {
    float* Ow = Os + warp * Tr::kRowTile * Tr::kOStride;  // [16][kOStride]
    const int g = lane / 4, col = 2 * (lane % 4);
    if constexpr (Tr::kKeyMajor) {
      stash_key_major_o<Tr>(Ow, Ot, lane);
    } else {
#pragma unroll
      for (int nd = 0; nd < kD / 8; ++nd) {
        *reinterpret_cast<float2*>(Ow + g * Tr::kOStride + nd * 8 + col) =
            make_float2(O[nd][0], O[nd][1]);
        *reinterpret_cast<float2*>(Ow + (g + 8) * Tr::kOStride + nd * 8 + col) =
            make_float2(O[nd][2], O[nd][3]);
      }
    }
    // One lane per row writes its m and l: lanes 0-3 (key-major), lanes 4k (row-major).
    if (Tr::kKeyMajor ? g == 0 : lane % 4 == 0) {
      Ms[warp * Tr::kRowTile + lr_lo] = m_i[0];
      Ms[warp * Tr::kRowTile + lr_hi] = m_i[1];
      Ls[warp * Tr::kRowTile + lr_lo] = l_i[0];
      Ls[warp * Tr::kRowTile + lr_hi] = l_i[1];
    }
  }
  bad = __syncthreads_or(bad);
#if FM_DECODE_TIMELINE
  if (tid == 0) tl[kTlEpiMerged] = global_timer_ns();
#endif

  // Cluster merge (sm_90; the host launches the splits of a (b, h_k, row chunk) as one cluster
  // when they are few): each CTA leaves its normalised O_s and lse_s in its own shared memory,
  // after the O scratch; after a cluster barrier every CTA merges a slice of the rows from all of
  // them and writes the output. No partials in global memory and no combine kernel, whose
  // memory round trips after the grid boundary cost ~4 us (H200).
  const int n_cluster = Tr::kClusterMerge ? cluster_size() : 1;
  float* Opart = Os + Tr::kWarps * Tr::kRowTile * Tr::kOStride;  // [kMaxRows][kD]
  float* Lpart = Opart + Tr::kMaxRows * kD;                      // [kMaxRows]
  const int vec4 = head_dim / 4;
  const int64_t total_rows = p.batch * p.heads_q * S_q;
  // Final O row r, columns [d, d + 4), and its lse.
  auto write_out = [&](int r, int d, float4 acc, float lse) {
    write_out_row<T>(p, b, hk, row_begin + r, d, acc, lse, group, S_q);
  };
  for (int i = tid; i < rows * vec4; i += Tr::kThreads) {
    // (row, column) of this float4; a compile-time divisor where the head dim fills the bucket.
    const int r = head_dim == kD ? i / (kD / 4) : i / vec4;
    const int d = (head_dim == kD ? i % (kD / 4) : i % vec4) * 4;
    const int tile = r / Tr::kRowTile, lr = r % Tr::kRowTile;
    const int row0 = tile * warps_n * Tr::kRowTile + lr;  // the row in the tile's first warp
    float lse;
    float4 acc = merge_warp_rows<Tr::kRowTile, Tr::kOStride, Tr::kWarps>(
        Ms + row0, Ls + row0, Os + row0 * Tr::kOStride + d, warps_n, lse);
    if (bad) {
      acc = make_float4(NAN, NAN, NAN, NAN);
      lse = NAN;
    }
    if (n_cluster > 1) {
      *reinterpret_cast<float4*>(Opart + r * kD + d) = acc;
      if (d == 0) Lpart[r] = lse;
    } else if (o_part == nullptr) {
      write_out(r, d, acc, lse);
    } else {
      const int R = row_begin + r;
      const int64_t row_id = (b * p.heads_q + hk * group + R / S_q) * S_q + R % S_q;
      *reinterpret_cast<float4*>(o_part + (split * total_rows + row_id) * p.head_dim + d) = acc;
      if (d == 0) lse_part[split * total_rows + row_id] = lse;
    }
  }
#if FM_DECODE_TIMELINE
  if (tid == 0) tl[kTlEpiWritten] = global_timer_ns();
#endif
  if constexpr (Tr::kClusterMerge) {
    if (n_cluster > 1) {
      cluster_sync();  // every CTA's O_s, lse_s are in its shared memory
      constexpr int kBatch = kMergeBatch;
      for (int i = cluster_rank() * Tr::kThreads + tid; i < rows * vec4;
           i += n_cluster * Tr::kThreads) {
        const int r = i / vec4, d = (i % vec4) * 4;
        SoftmaxState st = SoftmaxState::empty();
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        bool row_bad = false;
        for (int q0 = 0; q0 < n_cluster; q0 += kBatch) {
          float x[kBatch];
          float4 o[kBatch];
#pragma unroll
          for (int k = 0; k < kBatch; ++k) {
            x[k] = -INFINITY;
            o[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (q0 + k < n_cluster) {
              x[k] = ld_peer_f32(peer_smem(Lpart + r, q0 + k));
              o[k] = ld_peer_f32x4(peer_smem(Opart + r * kD + d, q0 + k));
            }
          }
          merge_partials(x, o, st, acc, row_bad);
        }
        const float inv_l = st.inv_l();
        acc = make_float4(acc.x * inv_l, acc.y * inv_l, acc.z * inv_l, acc.w * inv_l);
        if (row_bad) acc = make_float4(NAN, NAN, NAN, NAN);
        write_out(r, d, acc, row_bad ? NAN : st.lse());
      }
      cluster_sync_relaxed();  // the peers have finished reading this CTA's shared memory
    }
  }
#if FM_DECODE_TIMELINE
  if (tid == 0) {
    const int64_t cta = int64_t(blockIdx.y) * gridDim.x + blockIdx.x;
    unsigned sm;
    asm volatile("mov.u32 %0, %%smid;\n" : "=r"(sm));
    if (cta < kTimelineMaxCtas) {
      g_timeline[kTimelineFields * cta + kTlStart] = t_start;
      g_timeline[kTimelineFields * cta + kTlEnd] = global_timer_ns();
      g_timeline[kTimelineFields * cta + kTlSm] = sm;
      for (int f : {kTlEpiSync, kTlEpiMerged, kTlEpiWritten})
        g_timeline[kTimelineFields * cta + f] = tl[f];
    }
    if (cta == 0) g_timeline_ctas = (long long)gridDim.x * gridDim.y;
  }
#endif
}

}  // namespace
}  // namespace flashmin::cuda
