// Flash-Decoding, persistent stream kernel (sm_90, fp16/bf16, <= 16 query rows per KV head).
//
// Why: the per-split kernel (decode.cu) runs 2 CTAs per SM with a static share of work each;
// co-resident CTAs get unequal memory bandwidth, so the fast ones finish early and the SM
// streams at half depth until the slow one ends (a measured 5-20% tail), and every CTA pays a
// pipeline fill. Here ONE CTA per SM (7 compute warps + 1 producer warp, a 6-deep TMA pipeline
// of 32 KB stages: the same bytes in flight per SM) streams an equal share of ALL key blocks:
//
//   stream = units (b, h_k) in order, unit (b, h_k) = its ceil(L_b / B_c) key blocks;
//   CTA c takes stream blocks [T c / G, T (c + 1) / G)   (T = total blocks, G = CTAs).
//
// A CTA's share crosses unit boundaries: the producer runs straight on into the next unit
// (loading that unit's Q_i into a 2-slot ring), so the pipeline never drains. A unit that lies
// entirely inside one CTA's share is written directly (O, lse); a unit cut by a share boundary
// leaves normalised partials (O_s, lse_s) in two slots per CTA (slot 0: the unit the share starts
// inside, slot 1: the unit the share ends inside), merged by decode_stream_combine_kernel.
// Lengths are read on the device (T too), so this works under CUDA graphs.
#include "cuda/decode_stream.h"

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cuda/cuda_api.h"
#include "cuda/decode_common.cuh"
#include "cuda/decode_traits.h"

namespace flashmin::cuda {
namespace {
using namespace decode_detail;

constexpr int kStreamCombineThreads = 128;

// Key blocks of each (b, h_k) unit of sequence b (0 for an empty or invalid sequence).
template <int kBc>
__device__ __forceinline__ int64_t unit_blocks(const DecodeParams& p, int64_t b) {
  return (seq_len(p, b).L + kBc - 1) / kBc;
}

// T: key blocks of all units (a warp-wide sum; every lane gets it).
template <int kBc>
__device__ int64_t stream_total_blocks(const DecodeParams& p, int lane) {
  int64_t t = 0;
  for (int64_t b = lane; b < p.batch; b += 32) t += unit_blocks<kBc>(p, b);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) t += __shfl_xor_sync(0xffffffffu, t, off);
  return t * p.heads_kv;
}

// The CTA whose share holds stream block x: the largest c with T c / G <= x.
__device__ __forceinline__ int share_owner(int64_t x, int64_t total, int ctas) {
  return int(min(int64_t(ctas - 1), ((x + 1) * ctas - 1) / total));
}

// A position in the stream: unit (b, h_k), its length n in blocks and its first stream block.
struct StreamCursor {
  int64_t b, hk, n, unit0;
};

// The unit holding stream block x < T (a warp-wide prefix scan over the sequences).
template <int kBc>
__device__ StreamCursor locate_block(const DecodeParams& p, int64_t x, int lane) {
  int64_t base = 0;  // stream blocks of the sequences before b0
  for (int64_t b0 = 0; b0 < p.batch; b0 += 32) {
    const int64_t n = b0 + lane < p.batch ? unit_blocks<kBc>(p, b0 + lane) : 0;
    const int64_t blocks = n * p.heads_kv;
    int64_t incl = blocks;
#pragma unroll
    for (int off = 1; off < 32; off *= 2) {
      const int64_t v = __shfl_up_sync(0xffffffffu, incl, off);
      if (lane >= off) incl += v;
    }
    const uint32_t hit = __ballot_sync(0xffffffffu, base + incl > x);
    if (hit != 0) {
      const int src = __ffs(hit) - 1;
      StreamCursor c;
      c.b = b0 + src;
      c.n = __shfl_sync(0xffffffffu, n, src);
      const int64_t seq0 = base + __shfl_sync(0xffffffffu, incl - blocks, src);
      c.hk = (x - seq0) / c.n;
      c.unit0 = seq0 + c.hk * c.n;
      return c;
    }
    base += __shfl_sync(0xffffffffu, incl, 31);
  }
  return {p.batch, 0, 1, base};  // not reached for x < T
}

// The next non-empty unit.
template <int kBc>
__device__ __forceinline__ void next_unit(const DecodeParams& p, StreamCursor& c) {
  c.unit0 += c.n;
  if (++c.hk < p.heads_kv) return;
  c.hk = 0;
  do {
    ++c.b;
    c.n = c.b < p.batch ? unit_blocks<kBc>(p, c.b) : 1;
  } while (c.n == 0);
}

// part_o: [2 * CTAs][16][head_dim] normalised O_s, part_lse: [2 * CTAs][16] lse_s (slot 0 / 1 of
// each CTA); cta_meta[c] = (b * H_k + h_k, last CTA) of the unit CTA c's share ends inside when
// that unit also starts inside it (the combine's work item), else (-1, 0).
template <typename T, int kD>
__global__ void __launch_bounds__(DecodeStreamTraits<T, kD>::kThreads, 1)
    decode_stream_kernel(const DecodeParams p, float* part_o, float* part_lse, int2* cta_meta,
                         const __grid_constant__ CUtensorMap tm_k,
                         const __grid_constant__ CUtensorMap tm_v) {
  using Tr = DecodeStreamTraits<T, kD>;
  constexpr int kBc = Tr::kBc, kStages = Tr::kStages, kWarps = Tr::kWarps;
  constexpr int kRows = Tr::kMaxRows;
  constexpr int kConsumers = 32 * kWarps;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  pdl_launch_dependents();  // the combine may start its prologue

  // ---- Shared memory (base 1024-byte aligned for the 128-byte swizzle): stages | Q_i ring |
  //      O sum | l sums | m | bad flags | mbarriers.
  unsigned char* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  T* KVs = reinterpret_cast<T*>(smem);
  T* Qring = KVs + kStages * 2 * kBc * kD;                         // [2][16][kD], q_off layout
  float* Osum = reinterpret_cast<float*>(Qring + 2 * kRows * kD);  // [16][kOStride]
  float* Lsum = Osum + kRows * Tr::kOStride;                       // [2][16]
  float* Ms = Lsum + 2 * kRows;                                    // [2][warps][16]
  int* bad_flag = reinterpret_cast<int*>(Ms + 2 * kWarps * kRows);  // [2] (+2 padding)
  uint64_t* full_bar = reinterpret_cast<uint64_t*>(bad_flag + 4);
  uint64_t* empty_bar = full_bar + kStages;
  uint64_t* q_full = empty_bar + kStages;  // [2]: the ring slot's Q_i landed
  uint64_t* q_empty = q_full + 2;          // [2]: every consumer warp is done with the slot

  const int ctas = int(gridDim.x), cta = int(blockIdx.x);
  const int64_t group = p.heads_q / p.heads_kv, S_q = p.seqlen_q;
  const int rows = int(group * S_q);
  const int head_dim = int(p.head_dim);
  const int log2_page = p.block_table ? __ffsll(p.page_size) - 1 : 0;
  const bool is_producer = warp == kWarps;

  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full_bar[s], 1);
      mbar_init(&empty_bar[s], kWarps);
    }
    for (int s = 0; s < 2; ++s) {
      mbar_init(&q_full[s], 32);  // one cp.async arrival per producer lane
      mbar_init(&q_empty[s], kWarps);
    }
  }
  for (int i = tid; i < kRows * Tr::kOStride; i += Tr::kThreads) Osum[i] = 0.0f;
  if (tid < 2 * kRows) Lsum[tid] = 0.0f;
  __syncthreads();

  // ---- This CTA's share of the stream, and the unit it starts in (every warp computes both).
  const int64_t total = stream_total_blocks<kBc>(p, lane);
  const int64_t x_begin = total * cta / ctas, x_end = total * (cta + 1) / ctas;
  if (x_begin >= x_end) {  // more CTAs than blocks: an empty share (weight 0 in the combine)
    if (tid == 0) cta_meta[cta] = make_int2(-1, 0);
    if (tid < 2 * kRows) part_lse[int64_t(cta) * 2 * kRows + tid] = -INFINITY;
    return;
  }
  StreamCursor cur = locate_block<kBc>(p, x_begin, lane);
  const T* q = static_cast<const T*>(p.q);

  if (is_producer) {
    // Per unit: Q_i into its ring slot (32 lanes, cp.async, arriving on the slot's barrier),
    // then lane 0 refills each stage as soon as every consumer warp has released it.
    int stage = 0;
    uint32_t phase = 0;
    int64_t x = x_begin;
    for (int piece = 0;; ++piece) {
      const int slot = piece & 1;
      const int64_t j0 = x - cur.unit0, j1 = min(x_end, cur.unit0 + cur.n) - cur.unit0;
      const int64_t L = seq_len(p, cur.b).L;
      if (piece >= 2) mbar_wait(&q_empty[slot], ((piece >> 1) - 1) & 1);
      if (lane == 0) bad_flag[slot] = 0;
      T* Qs = Qring + slot * kRows * kD;
      for (int i = lane; i < kRows * Tr::kVecsPerRow; i += 32) {
        const int r = i / Tr::kVecsPerRow, v = i % Tr::kVecsPerRow;
        const bool ok = r < rows && v * Tr::kVec < head_dim;
        const T* src = q;
        if (ok) src = q + offset(p.q_strides, cur.b, cur.hk * group + r / S_q, r % S_q) + v * Tr::kVec;
        cp_async_16(Qs + q_off<Tr>(r, v), src, ok);
      }
      cp_async_mbar_arrive(&q_full[slot]);
      if (lane == 0) {
        for (int64_t j = j0; j < j1; ++j) {
          mbar_wait(&empty_bar[stage], phase ^ 1);
          T* Ks = KVs + stage * 2 * kBc * kD;
          issue_kv_block<Tr>(p, &tm_k, &tm_v, cur.b, cur.hk, j, L, log2_page, Ks, Ks + kBc * kD,
                             &full_bar[stage], &bad_flag[slot]);
          if (++stage == kStages) {
            stage = 0;
            phase ^= 1;
          }
        }
      }
      __syncwarp();
      x = cur.unit0 + j1;
      if (x >= x_end) break;
      next_unit<kBc>(p, cur);
    }
    return;
  }

  // ---- Consumers: per unit, the FA2 inner loop over the share's blocks of it (the warps take
  //      the 16-key chunks of the stream in turn), then the warps merge and write.
  const float scale_log2 = p.scale * kLog2e;
  const int g = lane / 4;
  const int64_t t_row[2] = {g % S_q, (g + 8) % S_q};
  int stage = 0;
  uint32_t phase = 0;
  int64_t x = x_begin;
  int2 meta = make_int2(-1, 0);
  for (int piece = 0;; ++piece) {
    const int slot = piece & 1;
    const int64_t j0 = x - cur.unit0, j1 = min(x_end, cur.unit0 + cur.n) - cur.unit0;
    const int64_t L = seq_len(p, cur.b).L;
    const int64_t causal_limit = L - S_q;  // query t sees key j iff j <= causal_limit + t
    float O[kD / 8][4];
#pragma unroll
    for (int nd = 0; nd < kD / 8; ++nd) O[nd][0] = O[nd][1] = O[nd][2] = O[nd][3] = 0.0f;
    float m_i[2] = {-INFINITY, -INFINITY};
    float l_i[2] = {0.0f, 0.0f};
    const T* Qs = Qring + slot * kRows * kD;
    mbar_wait(&q_full[slot], (piece >> 1) & 1);
    for (int64_t j = j0; j < j1; ++j) {
      mbar_wait(&full_bar[stage], phase);
      const T* Ks = KVs + stage * 2 * kBc * kD;
      const T* Vs = Ks + kBc * kD;
      // Chunk c of block j belongs to warp (j * chunks + c) mod warps.
      const int c0 = (warp - int((uint64_t(j) * Tr::kKeyChunks) % kWarps) + kWarps) % kWarps;
      for (int c = c0; c < Tr::kKeyChunks; c += kWarps) {
        const int64_t key0 = j * kBc + c * Tr::kKeyChunk;
        if (key0 >= L) break;
        attend_chunk<Tr>(O, m_i, l_i, Qs, 0, Ks, Vs, c, key0, L, causal_limit, t_row, scale_log2,
                         lane, head_dim, nullptr);
      }
      __syncwarp();
      if (lane == 0) mbar_arrive(&empty_bar[stage]);
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1;
      }
    }

    // Merge: publish each warp's row maxima, rescale to the maximum over warps, add O and l
    // into the shared sums (m and l sums double-buffered by unit parity: a fast warp may start
    // the next unit's merge while a slow one still writes this one).
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      l_i[h] += __shfl_xor_sync(0xffffffffu, l_i[h], 1);
      l_i[h] += __shfl_xor_sync(0xffffffffu, l_i[h], 2);
    }
    float* Mp = Ms + slot * kWarps * kRows;
    float* Lp = Lsum + slot * kRows;
    if (lane % 4 == 0) {
      Mp[warp * kRows + g] = m_i[0];
      Mp[warp * kRows + g + 8] = m_i[1];
    }
    named_barrier_sync(1, kConsumers);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = g + 8 * h;
      if (r >= rows || m_i[h] == -INFINITY) continue;  // no keys seen: adds nothing
      float m = -INFINITY;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) m = fmaxf(m, Mp[w * kRows + r]);
      const float sc = exp2f(m_i[h] - m);
#pragma unroll
      for (int nd = 0; nd < kD / 8; ++nd) {
        if (nd * 8 >= head_dim) break;
        float* dst = Osum + r * Tr::kOStride + nd * 8 + 2 * (lane % 4);
        atomicAdd(dst, sc * O[nd][2 * h]);
        atomicAdd(dst + 1, sc * O[nd][2 * h + 1]);
      }
      if (lane % 4 == 0) atomicAdd(&Lp[r], sc * l_i[h]);
    }
    named_barrier_sync(1, kConsumers);

    // Write: the whole unit -> O, lse; part of it -> this CTA's slot 0 (the unit started before
    // the share) or 1 (it ends after the share).
    const bool whole = j0 == 0 && j1 == cur.n;
    const int which = j0 > 0 ? 0 : 1;
    const bool bad = bad_flag[slot] != 0;
    const int vec4 = head_dim / 4;
    for (int i = tid; i < rows * vec4; i += kConsumers) {
      const int r = i / vec4, d = (i % vec4) * 4;
      float m = -INFINITY;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) m = fmaxf(m, Mp[w * kRows + r]);
      const float l = Lp[r];
      float4* src = reinterpret_cast<float4*>(Osum + r * Tr::kOStride + d);
      float4 o = *src;
      *src = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      const float inv_l = l > 0.0f ? 1.0f / l : 0.0f;
      float lse = l > 0.0f ? m * kLn2 + logf(l) : -INFINITY;
      o = make_float4(o.x * inv_l, o.y * inv_l, o.z * inv_l, o.w * inv_l);
      if (bad) {
        o = make_float4(NAN, NAN, NAN, NAN);
        lse = NAN;
      }
      const int64_t h = cur.hk * group + r / S_q, t = r % S_q;
      if (whole) {
        store4(static_cast<T*>(p.o) + offset(p.o_strides, cur.b, h, t) + d, o);
        if (p.lse != nullptr && d == 0) p.lse[(cur.b * p.heads_q + h) * S_q + t] = lse;
      } else {
        const int64_t ps = (int64_t(cta) * 2 + which) * kRows + r;
        *reinterpret_cast<float4*>(part_o + ps * head_dim + d) = o;
        if (d == 0) part_lse[ps] = lse;
      }
    }
    if (tid < kRows) Lsum[(slot ^ 1) * kRows + tid] = 0.0f;  // the next unit's l sums
    if (!whole && which == 1) {
      meta = make_int2(int(cur.b * p.heads_kv + cur.hk),
                       share_owner(cur.unit0 + cur.n - 1, total, ctas));
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(&q_empty[slot]);
    x = cur.unit0 + j1;
    if (x >= x_end) break;
    next_unit<kBc>(p, cur);
  }
  if (tid == 0) cta_meta[cta] = meta;
}

// Combine, one CTA per stream CTA c: (1) if c's share ends inside a unit that starts inside it,
// merge that unit's partials (slot 1 of c, slot 0 of c+1 .. c2) through their lse; (2) write the
// empty / invalid units among b*H_k+h_k = c, c + G, ... (O = 0, lse = -inf; NaN if invalid).
template <typename T, int kBc>
__global__ void __launch_bounds__(kStreamCombineThreads)
    decode_stream_combine_kernel(const DecodeParams p, const float* part_o, const float* part_lse,
                                 const int2* cta_meta) {
  constexpr int kRows = 16;
  const int tid = threadIdx.x;
  const int64_t group = p.heads_q / p.heads_kv, S_q = p.seqlen_q;
  const int rows = int(group * S_q);
  const int head_dim = int(p.head_dim), vec4 = head_dim / 4;
  auto write_row = [&](int64_t b, int64_t hk, int r, int d, float4 o, float lse) {
    const int64_t h = hk * group + r / S_q, t = r % S_q;
    store4(static_cast<T*>(p.o) + offset(p.o_strides, b, h, t) + d, o);
    if (p.lse != nullptr && d == 0) p.lse[(b * p.heads_q + h) * S_q + t] = lse;
  };
  pdl_wait_primary();  // the stream kernel's partials and cta_meta are visible after this

  const int2 meta = cta_meta[blockIdx.x];
  if (meta.x >= 0) {
    const int c1 = int(blockIdx.x), c2 = meta.y;
    const int64_t b = meta.x / p.heads_kv, hk = meta.x % p.heads_kv;
    for (int i = tid; i < rows * vec4; i += kStreamCombineThreads) {
      const int r = i / vec4, d = (i % vec4) * 4;
      auto piece = [&](int c) { return (int64_t(c) * 2 + (c == c1 ? 1 : 0)) * kRows + r; };
      float m = -INFINITY;
      bool bad = false;
      for (int c = c1; c <= c2; ++c) {
        const float x = part_lse[piece(c)];
        bad |= isnan(x);
        m = fmaxf(m, x);
      }
      float l = 0.0f;
      float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      for (int c = c1; c <= c2; ++c) {
        const float x = part_lse[piece(c)];
        if (!(x > -INFINITY)) continue;  // a piece with no visible keys: weight 0
        const float w = expf(x - m);
        const float4 o = ld4(part_o + piece(c) * head_dim + d);
        l += w;
        acc = make_float4(acc.x + w * o.x, acc.y + w * o.y, acc.z + w * o.z, acc.w + w * o.w);
      }
      const float inv_l = l > 0.0f ? 1.0f / l : 0.0f;
      float lse = l > 0.0f ? m + logf(l) : -INFINITY;
      acc = make_float4(acc.x * inv_l, acc.y * inv_l, acc.z * inv_l, acc.w * inv_l);
      if (bad) {
        acc = make_float4(NAN, NAN, NAN, NAN);
        lse = NAN;
      }
      write_row(b, hk, r, d, acc, lse);
    }
  }

  for (int64_t u = blockIdx.x; u < p.batch * p.heads_kv; u += gridDim.x) {
    const int64_t b = u / p.heads_kv, hk = u % p.heads_kv;
    const SeqLen seq = seq_len(p, b);
    if (seq.L > 0) continue;  // a non-empty unit: written by the stream kernel or above
    const float fill = seq.valid ? 0.0f : NAN;
    for (int i = tid; i < rows * vec4; i += kStreamCombineThreads) {
      write_row(b, hk, i / vec4, (i % vec4) * 4, make_float4(fill, fill, fill, fill),
                seq.valid ? -INFINITY : NAN);
    }
  }
}

// f(T{}, integral_constant<kD>) for a 16-bit dtype and the head-dim bucket.
template <class F>
void dispatch_stream(DType dtype, int64_t head_dim, F&& f) {
  auto by_dim = [&](auto type_tag) {
    switch (decode_head_dim_bucket(head_dim)) {
      case 64:
        return f(type_tag, std::integral_constant<int, 64>{});
      case 128:
        return f(type_tag, std::integral_constant<int, 128>{});
      default:
        return f(type_tag, std::integral_constant<int, 256>{});
    }
  };
  if (dtype == DType::kFloat16) return by_dim(__half{});
  return by_dim(__nv_bfloat16{});
}

#ifndef FM_DECODE_STREAM_DEFAULT
#define FM_DECODE_STREAM_DEFAULT 0  // A/B builds: -1 keeps the split kernel
#endif
int g_stream_ctas = FM_DECODE_STREAM_DEFAULT;

}  // namespace

void decode_set_stream_ctas(int ctas) { g_stream_ctas = ctas; }

bool decode_stream_supported(const DecodeParams& p) {
  return g_stream_ctas >= 0 && p.dtype != DType::kFloat32 && p.heads_kv > 0 &&
         p.group_size() * p.seqlen_q <= 16;
}

int decode_stream_block_keys(const DecodeParams& p) {
  int keys = 0;
  dispatch_stream(p.dtype, p.head_dim, [&](auto type_tag, auto dim_tag) {
    keys = DecodeStreamTraits<decltype(type_tag), decltype(dim_tag)::value>::kBc;
  });
  return keys;
}

int64_t decode_stream_ctas(const DecodeParams& p, int num_sms) {
  if (g_stream_ctas > 0) return g_stream_ctas;
  const int64_t bc = decode_stream_block_keys(p);
  const int64_t max_blocks = p.batch * p.heads_kv * ((p.max_seqlen_k + bc - 1) / bc);
  const int64_t by_work = (max_blocks + kDecodeStreamMinBlocksPerCta - 1) /
                          kDecodeStreamMinBlocksPerCta;
  return std::clamp<int64_t>(by_work, 1, std::max(num_sms, 1));
}

int64_t decode_stream_workspace_bytes(const DecodeParams& p, int64_t ctas) {
  const int64_t slots = 2 * ctas * 16;
  return slots * (p.head_dim + 1) * int64_t(sizeof(float)) + ctas * int64_t(sizeof(int2));
}

void decode_stream_launch(const DecodeParams& p, const CUtensorMap& tm_k, const CUtensorMap& tm_v,
                          bool allow_pdl, cudaStream_t stream) {
  const int ctas = int(p.persistent_ctas);
  float* part_o = static_cast<float*>(p.workspace);
  float* part_lse = part_o + 2 * int64_t(ctas) * 16 * p.head_dim;
  int2* cta_meta = reinterpret_cast<int2*>(part_lse + 2 * int64_t(ctas) * 16);
  dispatch_stream(p.dtype, p.head_dim, [&](auto type_tag, auto dim_tag) {
    using T = decltype(type_tag);
    using Tr = DecodeStreamTraits<T, decltype(dim_tag)::value>;
    auto* kernel = decode_stream_kernel<T, Tr::kHeadDim>;
    FM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       Tr::kSmemBytes));
    kernel<<<ctas, Tr::kThreads, Tr::kSmemBytes, stream>>>(p, part_o, part_lse, cta_meta, tm_k,
                                                           tm_v);
    FM_CUDA_CHECK(cudaGetLastError());

    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(unsigned(ctas));
    cfg.blockDim = dim3(kStreamCombineThreads);
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = allow_pdl ? 1 : 0;
    FM_CUDA_CHECK(cudaLaunchKernelEx(&cfg, decode_stream_combine_kernel<T, Tr::kBc>,
                                     static_cast<DecodeParams>(p),
                                     static_cast<const float*>(part_o),
                                     static_cast<const float*>(part_lse),
                                     static_cast<const int2*>(cta_meta)));
    FM_CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace flashmin::cuda
