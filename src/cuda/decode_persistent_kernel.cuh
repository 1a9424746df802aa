// Part of the Flash-Decoding kernels, included by src/cuda/decode.cu only (one translation unit;
// see its header comment): the persistent split kernel.
#pragma once

#include "cuda/decode_split_kernel.cuh"

namespace flashmin::cuda {
namespace {

// ---------------------------------------------------------------------------------------------
// 2b. Persistent split kernel (sm_90 tensor copies, key-major step, one split, any cache;
//     the launcher takes it where the (b, h_k) units outnumber the resident CTA slots). CTA c
//     works through units u = c, c + gridDim.x, ...; its producer runs on into the next unit's
//     key blocks while the compute warps finish the current one, so the pipeline never drains
//     between units. With one CTA per unit, every unit ends by draining its stages, merging and
//     exiting before the next CTA issues a copy (~3 us per wave at 1 GB, H200, session 9).
//     The compute warps merge a unit in the stage of its last block, which they release only
//     afterwards; Q_i of the next unit is copied into a second buffer while this one runs.
// ---------------------------------------------------------------------------------------------
template <typename T, class Tr>
constexpr int64_t persistent_smem_bytes() {
  return Tr::kSmemAlign + int64_t(Tr::kStages) * Tr::kStageBytes +
         2 * Tr::kKeyMajorRows * Tr::kHeadDim * int64_t(sizeof(T)) +
         2 * Tr::kWarps * Tr::kKeyMajorRows * 4 + Tr::barrier_bytes() + 4 * Tr::kStages;
}

template <typename T, int kD>
__global__ void __launch_bounds__(DecodeTraits<T, kD, true, false, false, true>::kThreads)
    __maxnreg__((DecodeTraits<T, kD, true, false, false, true>::kMaxRegs))
        decode_persistent_kernel(const DecodeParams p, const __grid_constant__ CUtensorMap tm_k,
                                 const __grid_constant__ CUtensorMap tm_v,
                                 const bool full_row_boxes, const bool blocked_units) {
  using Tr = DecodeTraits<T, kD, true, false, false, true>;
  constexpr int kBc = Tr::kBc, kStages = Tr::kStages, kRows = Tr::kKeyMajorRows;
  constexpr int kWarps = Tr::kWarps, kConsumers = 32 * kWarps, kChunks = kBc / Tr::kKeyChunk;
  static_assert(Tr::kKeyMajor && Tr::kProducerWarp && !Tr::kWide, "key-major TMA tile");
  static_assert(kWarps * kRows * Tr::kOStride * 4 <= Tr::kStageBytes, "merge scratch > stage");
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  // 32-bit index math (units <= INT_MAX: launcher): no 64-bit division at a unit switch.
  const int group = int(p.heads_q) / int(p.heads_kv), S_q = int(p.seqlen_q);
  const int heads_kv = int(p.heads_kv);
  const int rows = group * S_q;  // <= kRows (launcher)
  const int64_t units = p.batch * p.heads_kv;
  // This CTA's units: c, c + G, c + 2 G, ... or, blocked, a run of neighbours [c U / G,
  // (c + 1) U / G) (the launcher's choice; ctas <= units, so every CTA has at least one).
  const int64_t u_first = blocked_units ? blockIdx.x * units / gridDim.x : blockIdx.x;
  const int64_t u_end = blocked_units ? (blockIdx.x + 1) * units / gridDim.x : units;
  const int64_t u_step = blocked_units ? 1 : gridDim.x;

  // Shared memory: stages (1024-byte aligned) | Q_i [2][kRows][kD] | m, l [warps][kRows] |
  // full, empty mbarriers | invalid-page flag per stage.
  unsigned char* smem =
      smem_raw +
      ((Tr::kSmemAlign - (smem_addr(smem_raw) & (Tr::kSmemAlign - 1))) & (Tr::kSmemAlign - 1));
  T* KVs = reinterpret_cast<T*>(smem);
  T* Qs = KVs + kStages * 2 * kBc * kD;
  float* Ms = reinterpret_cast<float*>(Qs + 2 * kRows * kD);
  float* Ls = Ms + kWarps * kRows;
  uint64_t* full_bar = reinterpret_cast<uint64_t*>(Ls + kWarps * kRows);
  uint64_t* empty_bar = full_bar + kStages;
  uint32_t* bad_flags = reinterpret_cast<uint32_t*>(empty_bar + kStages);  // per stage
  auto stage_k = [&](int stage) { return KVs + stage * 2 * kBc * kD; };
  auto consumers_sync = [] { named_barrier_sync(1, kConsumers); };

  // Q_i of unit u -> buffer buf (compute warps; one cp.async group; zero-filled padding).
  auto load_q = [&](int64_t u, int buf) {
    copy_q_rows<Tr>(Qs + buf * kRows * kD, p, int(u) / heads_kv, int(u) % heads_kv, 0, kRows, rows,
                    tid, kConsumers);
    cp_async_commit();
  };

  if (warp == kWarps) {
    if (lane == 0) {
      for (int s = 0; s < kStages; ++s) {
        mbar_init(&full_bar[s], 1);
        mbar_init(&empty_bar[s], kWarps);
      }
    }
    pdl_wait_primary();
  } else {
    pdl_wait_primary();  // launched early (PDL): the previous kernel's writes are visible
    load_q(u_first, 0);
  }
  __syncthreads();  // the mbarrier initialisation is visible to every thread

  if (warp == kWarps) {
    // Producer: the key blocks of all this CTA's units in order; block number g (over the units)
    // goes to stage g % kStages once every compute warp has released block g - kStages. Lane 0
    // issues; with a fused append the other lanes stay to write a unit's new keys with it first.
    const bool appending = append_in_kernel(p, sizeof(T));
    if (lane != 0 && !appending) return;
    const int log2_page = p.block_table ? __ffsll(p.page_size) - 1 : 0;
    int g = 0;
    bool bad = false;  // per block: bad_flags
    for (int64_t u = u_first; u < u_end; u += u_step) {
      const int64_t b = int(u) / heads_kv, hk = int(u) % heads_kv;
      const SeqLen seq = seq_len(p, b);
      const int64_t L = seq.L, n_blocks = (L + kBc - 1) / kBc;
      if (appending && range_has_new_keys(p, seq, 0, n_blocks, kBc)) {
        append_new_keys<T>(p, b, hk, L, 0, L, log2_page, lane);
        __syncwarp();
      }
      if (lane != 0) continue;
      for (int64_t blk = 0; blk < n_blocks; ++blk, ++g) {
        const int stage = g % kStages;
        if (g >= kStages) mbar_wait(&empty_bar[stage], ((g / kStages) - 1) & 1);
        issue_kv_block<Tr>(p, &tm_k, &tm_v, full_row_boxes, b, hk, L, blk, log2_page,
                           stage_k(stage), stage_k(stage) + kBc * kD, &full_bar[stage], bad,
                           &bad_flags[stage]);
      }
    }
    return;  // the compute warps synchronise among themselves only from here on
  }

  // Compute warps: lane rows 2*(lane%4) + {0, 1} of the key-major step; warp w takes chunks
  // w, w + kWarps, ... of every block.
  const int lr_lo = 2 * (lane % 4), lr_hi = lr_lo + 1;
  const int64_t t_row[2] = {lr_lo % S_q, lr_hi % S_q};
  const float scale_log2 = p.scale * kLog2e;
  const KvLines kl = full_row_boxes ? KvLines{Tr::kDBoxes, 1} : KvLines{1, kBc};
  const int vec4 = int(p.head_dim) / 4;
  int g = 0, k = 0;
  for (int64_t u = u_first; u < u_end; u += u_step, ++k) {
    const int buf = k & 1;
    cp_async_wait<0>();
    consumers_sync();  // Q_i of u has landed; every warp is past the previous unit's merge
    uint32_t qf[kD / 16][2];
    load_q_fragments<Tr>(qf, Qs + buf * kRows * kD, lane);
    if (u + u_step < u_end) load_q(u + u_step, buf ^ 1);

    const int64_t b = int(u) / heads_kv, hk = int(u) % heads_kv;
    const SeqLen seq = seq_len(p, b);
    const int64_t L = seq.L, causal_limit = L - S_q;
    const int64_t n_blocks = (L + kBc - 1) / kBc;
    bool bad = !seq.valid;  // or a block with an invalid page index: the rows become NaN
    float Ot[kD / 16][4];
#pragma unroll
    for (int nd = 0; nd < kD / 16; ++nd) Ot[nd][0] = Ot[nd][1] = Ot[nd][2] = Ot[nd][3] = 0.0f;
    float m_i[2] = {-INFINITY, -INFINITY}, l_i[2] = {0.0f, 0.0f};
    for (int64_t blk = 0; blk < n_blocks; ++blk, ++g) {
      const int stage = g % kStages;
      mbar_wait(&full_bar[stage], (g / kStages) & 1);  // block blk has landed
      __syncwarp();
      bad |= bad_flags[stage] != 0;
      const T* Ks = stage_k(stage);
      for (int c = warp; c < kChunks; c += kWarps) {
        const int64_t key0 = blk * kBc + c * Tr::kKeyChunk;
        if (key0 >= L) break;
        warp_step_key_major<Tr>(Ot, m_i, l_i, qf, Ks, Ks + kBc * kD, c * Tr::kKeyChunk, lane, kl,
                                key0, key0 + Tr::kKeyChunk - 1 > causal_limit, causal_limit, t_row,
                                scale_log2, int(min(int64_t(Tr::kKeyChunk), L - key0)));
      }
      __syncwarp();
      if (blk + 1 < n_blocks && lane == 0) mbar_arrive(&empty_bar[stage]);  // the last: below
    }

    // Merge the warps' (m, l, O) in the stage of the unit's last block (still held), write.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int x = 4; x < 32; x *= 2) l_i[h] += __shfl_xor_sync(0xffffffffu, l_i[h], x);
    }
    const int last = (g + kStages - 1) % kStages;
    float* Os = reinterpret_cast<float*>(stage_k(last));  // [warps][kRows][kOStride]
    consumers_sync();  // every warp is done reading the last block: it becomes the scratch
    if (n_blocks > 0) {
      stash_key_major_o<Tr>(Os + warp * kRows * Tr::kOStride, Ot, lane);
      if (lane < 4) {
        Ms[warp * kRows + lr_lo] = m_i[0];
        Ms[warp * kRows + lr_hi] = m_i[1];
        Ls[warp * kRows + lr_lo] = l_i[0];
        Ls[warp * kRows + lr_hi] = l_i[1];
      }
    }
    consumers_sync();
    for (int i = tid; i < rows * vec4; i += kConsumers) {
      const int r = i / vec4, d = (i % vec4) * 4;
      float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      float lse = -INFINITY;  // empty sequence: O = 0
      if (n_blocks > 0)
        acc = merge_warp_rows<kRows, Tr::kOStride, kWarps>(Ms + r, Ls + r,
                                                           Os + r * Tr::kOStride + d, kWarps, lse);
      if (bad) {
        acc = make_float4(NAN, NAN, NAN, NAN);
        lse = NAN;
      }
      write_out_row<T>(p, b, hk, r, d, acc, lse, group, S_q);
    }
    // The scratch and m, l are read: release the last block's stage, after ordering this
    // thread's scratch accesses before the TMA's writes into it (another proxy).
    fence_proxy_async();
    consumers_sync();
    if (n_blocks > 0 && lane == 0) mbar_arrive(&empty_bar[last]);
  }
}

}  // namespace
}  // namespace flashmin::cuda
