// The streaming floor of a decode shape: how fast kernels that only READ the K and V bytes
// (no math, no output) get through them under the same L2 flush as the decode benchmark, so
// ours and cuDNN's decode times can be set against what any kernel could do on this chip.
//
//   stream_floor "B:L,B:L,..." [--sweep | --hints | --persist | --rotate | --half]
//   (H_k 8, D 128, bf16: K + V = B * L * 4096 bytes)
//
// FM_FLUSH=read flushes L2 by reading 256 MB (clean lines), FM_FLUSH=fill by a kernel that writes
// it (as triton.testing.do_bench's zero_()), else a 256 MB memset (dirty lines as well). Kernels
// (each CTA's work is contiguous bytes):
//   ldg64k    512 threads x 8 x 16-byte loads in flight = 64 KB per CTA, one CTA per 64 KB:
//             the block scheduler hands the next chunk to whichever SM frees a slot (balanced)
//   bulk1m    one thread per CTA issues 1-D bulk copies (cp.async.bulk) of 32 KB into 3 stages,
//             1 MB per CTA, two CTAs per SM, the grid as large as the bytes need (balanced)
//   bulkstat2 the same copies, grid = 2 CTAs per SM, each CTA 1/grid of the bytes (a static
//             split with equal shares, like a one-wave decode grid: shows the tail of unequal
//             SM rates)
//   bulkstat1 the same with one CTA per SM (the one-wave grids of round 11)
//   tma       the decode kernel's copies alone: CTA (b, h_k) reads its K and V through 3 stages
//             of one 5-D tensor box each (64 whole rows), as src/cuda/decode.cu issues them
//   +dep      the same, every address first waiting for a global load (the sequence length)
// --hints adds the ldg and tma kernels with L2 eviction-priority hints; --persist the copies of
// the persistent decode kernel (ptma-str / ptma-blk: strided or blocked units per CTA); --rotate
// the split kernel's copies in rotated block orders (stma-r0..3); --half static grids of one CTA
// on half the SMs (or fewer), 3-6 stages (can a half-chip grid of clusters stream at the floor?).
// --sweep adds bulk grids that separate the CTA count, the chunks' alignment and reading two
// regions per CTA (K and V) from each other.
// Sm_90 only (bulk copies), built by scripts/decode_variants.sh with FLOOR=1 (links
// src/cuda/tensor_map.cpp and cuda_error.cpp).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/tensor_map.h"
#include "event_timing.cuh"
#include "flashmin/cuda/tma.h"

#define CK(x)                                                                                \
  do {                                                                                       \
    cudaError_t e = (x);                                                                     \
    if (e != cudaSuccess) {                                                                  \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)

namespace {

constexpr int kLdgThreads = 512, kLdgLoads = 8;
constexpr int64_t kLdgChunk = int64_t(kLdgThreads) * kLdgLoads * 16;  // 64 KB
constexpr int kMaxStages = 6;                                         // 192 KB of shared memory
constexpr uint32_t kStageBytes = 32 << 10;

// XOR of what was read, stored only if it equals a value it never takes: keeps the loads.
__device__ void keep(uint32_t acc, uint32_t* sink) {
  if (acc == 0x9e3779b9u) *sink = acc;
}

// L2 eviction hints on the loads (--hints): does a streamed read that marks its own lines
// evict-first leave the flush's dirty lines in L2 (no write-back while it runs)?
enum class Hint { kNone, kPolicyFirst, kPolicyLast, kPolicyUnchanged };

template <Hint kHint>
__device__ uint4 load16(const uint4* p) {
  uint4 v;
  if constexpr (kHint == Hint::kNone) {
    v = __ldg(p);
  } else {
    uint64_t policy;
    if constexpr (kHint == Hint::kPolicyFirst)
      asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
    else if constexpr (kHint == Hint::kPolicyLast)
      asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;\n" : "=l"(policy));
    else
      asm volatile("createpolicy.fractional.L2::evict_unchanged.b64 %0, 1.0;\n" : "=l"(policy));
    asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p), "l"(policy));
  }
  return v;
}

template <Hint kHint = Hint::kNone>
__global__ void __launch_bounds__(kLdgThreads)
    ldg_chunks_kernel(const uint4* x, int64_t n16, uint32_t* sink) {
  const int64_t base = int64_t(blockIdx.x) * (kLdgChunk / 16) + threadIdx.x;
  uint4 v[kLdgLoads];
#pragma unroll
  for (int i = 0; i < kLdgLoads; ++i) {
    const int64_t at = base + int64_t(i) * kLdgThreads;
    v[i] = at < n16 ? load16<kHint>(x + at) : make_uint4(0, 0, 0, 0);
  }
  uint32_t acc = 0;
#pragma unroll
  for (int i = 0; i < kLdgLoads; ++i) acc ^= v[i].x ^ v[i].y ^ v[i].z ^ v[i].w;
  keep(acc, sink);
}

// One thread streams [begin, end) of each of `streams` regions stream_stride bytes apart (1: a
// single region; 2: like K and V) through `stages` shared-memory stages with 1-D bulk copies,
// kStageBytes / streams bytes of each region per stage (or, alternating, a whole stage of one).
__global__ void __launch_bounds__(32)
    bulk_kernel(const char* x, int64_t bytes, int64_t per_cta, int streams, int64_t stream_stride,
                int stages, const int* dep, bool alternate, uint32_t* sink) {
  extern __shared__ __align__(128) char stage[];
  __shared__ __align__(8) uint64_t full[kMaxStages];
  // dep (zeros, evicted by the flush): every address waits for a global load first, as a
  // decode CTA waits for its sequence length.
  const int64_t begin = int64_t(blockIdx.x) * per_cta + (dep ? dep[blockIdx.x % 256] : 0);
  const int64_t end = std::min(bytes, begin + per_cta);
  if (threadIdx.x != 0 || begin >= end) return;
  for (int s = 0; s < stages; ++s) flashmin::cuda::mbar_init(&full[s], 1);
  // alternate: each stage takes kStageBytes of ONE region, the regions in turn (K, V, K, ...).
  const uint32_t piece = alternate ? kStageBytes : kStageBytes / streams;
  const int64_t pieces = (end - begin + piece - 1) / piece * (alternate ? streams : 1);
  for (int64_t j = 0; j < pieces; ++j) {
    const int s = int(j % stages);
    if (j >= stages) flashmin::cuda::mbar_wait(&full[s], uint32_t((j / stages - 1) & 1));
    const int64_t at = begin + (alternate ? j / streams : j) * piece;
    const uint32_t n = uint32_t(std::min<int64_t>(piece, end - at));
    flashmin::cuda::mbar_arrive_expect_tx(&full[s], alternate ? n : n * streams);
    for (int r = alternate ? int(j % streams) : 0; r < (alternate ? int(j % streams) + 1 : streams);
         ++r)
      asm volatile(
          "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, "
          "[%3];\n" ::"r"(
              flashmin::cuda::smem_addr(stage + s * kStageBytes + (alternate ? 0 : r * piece))),
          "l"(x + r * stream_stride + at), "r"(n), "r"(flashmin::cuda::smem_addr(&full[s]))
          : "memory");
  }
  for (int64_t j = std::max<int64_t>(0, pieces - stages); j < pieces; ++j)
    flashmin::cuda::mbar_wait(&full[j % stages], uint32_t((j / stages) & 1));
  keep(*reinterpret_cast<const uint32_t*>(stage), sink);
}

// One thread's ring of 3 stages, each one 64-row box of K and one of V of a unit (b, h) =
// (u / 8, u % 8), in the 1024-byte-aligned dynamic shared memory: the ptma and stma kernels.
struct KvBoxRing {
  static constexpr int kStages = 3;
  char* stage;
  uint64_t* full;
  __device__ KvBoxRing(char* smem_raw, uint64_t* bars)
      : stage(smem_raw + ((1024 - (flashmin::cuda::smem_addr(smem_raw) & 1023)) & 1023)),
        full(bars) {
    for (int s = 0; s < kStages; ++s) flashmin::cuda::mbar_init(&full[s], 1);
  }
  // Copy number n (key block j of unit u) into stage n % 3, once copy n - 3 has landed.
  __device__ void issue(int n, const CUtensorMap* tm_k, const CUtensorMap* tm_v, int j, int u) {
    const int s = n % kStages;
    if (n >= kStages) flashmin::cuda::mbar_wait(&full[s], uint32_t((n / kStages - 1) & 1));
    flashmin::cuda::mbar_arrive_expect_tx(&full[s], kStageBytes);
    flashmin::cuda::tma_load_5d(stage + s * kStageBytes, tm_k, 0, 0, j * 64, u % 8, u / 8,
                                &full[s]);
    flashmin::cuda::tma_load_5d(stage + s * kStageBytes + kStageBytes / 2, tm_v, 0, 0, j * 64,
                                u % 8, u / 8, &full[s]);
  }
  // Wait for the last copies of `count` (nothing may be in flight when the CTA exits).
  __device__ void drain(int count, uint32_t* sink) {
    for (int n = max(0, count - kStages); n < count; ++n)
      flashmin::cuda::mbar_wait(&full[n % kStages], uint32_t((n / kStages) & 1));
    keep(*reinterpret_cast<const uint32_t*>(stage), sink);
  }
};

// The persistent decode kernel's copies without its math: CTA c streams the K and V boxes of
// units c, c + G, ... (blocked: a run of neighbours [c U / G, (c + 1) U / G)), one ring across
// its units.
__global__ void __launch_bounds__(32)
    ptma_kernel(const __grid_constant__ CUtensorMap tm_k, const __grid_constant__ CUtensorMap tm_v,
                int L, int units, bool blocked, uint32_t* sink) {
  extern __shared__ __align__(1024) char smem_raw[];
  __shared__ __align__(8) uint64_t full[KvBoxRing::kStages];
  if (threadIdx.x != 0) return;
  KvBoxRing ring(smem_raw, full);
  const int G = gridDim.x, c = blockIdx.x;
  const int first = blocked ? int(int64_t(c) * units / G) : c;
  const int end = blocked ? int(int64_t(c + 1) * units / G) : units;
  int n = 0;
  for (int u = first; u < end; u += blocked ? 1 : G) {
    for (int j = 0; j < L / 64; ++j) ring.issue(n++, &tm_k, &tm_v, j, u);
  }
  ring.drain(n, sink);
}

// The split decode kernel's copies without its math, in a rotated order: CTA (unit, split)
// (grid: units x splits) reads the blocks [begin, end) of its split of the unit, starting at
// begin + r and wrapping around (r = 0; 1: 5 c mod n; 2: n / 2 for odd c; 3: c n / C, spread
// evenly; c = the CTA's index, C = the grid, n = its block count), so that CTAs streaming
// aligned ranges do not hit the same offsets at the same time.
__global__ void __launch_bounds__(32)
    stma_kernel(const __grid_constant__ CUtensorMap tm_k, const __grid_constant__ CUtensorMap tm_v,
                int L, int rot, uint32_t* sink) {
  extern __shared__ __align__(1024) char smem_raw[];
  __shared__ __align__(8) uint64_t full[KvBoxRing::kStages];
  if (threadIdx.x != 0) return;
  KvBoxRing ring(smem_raw, full);
  const int u = blockIdx.x, splits = gridDim.y, blocks = L / 64;
  const int per = (blocks + splits - 1) / splits, begin = min(blocks, int(blockIdx.y) * per);
  const int n = min(blocks, begin + per) - begin;
  const int c = blockIdx.y * gridDim.x + blockIdx.x, C = gridDim.x * gridDim.y;
  const int r = n == 0     ? 0
                : rot == 1 ? (5 * c) % n
                : rot == 2 ? (c % 2) * (n / 2)
                : rot == 3 ? int(int64_t(c) * n / C) % n
                           : 0;
  for (int i = 0; i < n; ++i) ring.issue(i, &tm_k, &tm_v, begin + (i + r) % n, u);
  ring.drain(n, sink);
}

// The decode kernel's copies without its math: CTA (b, h) streams K and V of its head through
// `stages` stages, each one 5-D tensor box of 64 whole rows (16 KB) of K and one of V.
__global__ void __launch_bounds__(32)
    tma_kernel(const __grid_constant__ CUtensorMap tm_k, const __grid_constant__ CUtensorMap tm_v,
               int L, int stages, const int* dep, bool evict_first, uint32_t* sink) {
  extern __shared__ __align__(1024) char smem_raw[];
  __shared__ __align__(8) uint64_t full[kMaxStages];
  char* stage = smem_raw + ((1024 - (flashmin::cuda::smem_addr(smem_raw) & 1023)) & 1023);
  const int b = blockIdx.x / 8, h = blockIdx.x % 8;
  if (threadIdx.x != 0) return;
  const int blocks = L / 64 + (dep ? dep[blockIdx.x % 256] : 0);
  for (int s = 0; s < stages; ++s) flashmin::cuda::mbar_init(&full[s], 1);
  for (int j = 0; j < blocks; ++j) {
    const int s = j % stages;
    if (j >= stages) flashmin::cuda::mbar_wait(&full[s], uint32_t((j / stages - 1) & 1));
    flashmin::cuda::mbar_arrive_expect_tx(&full[s], kStageBytes);
    if (evict_first) {  // --hints: the same boxes, the lines marked evict-first in L2
      uint64_t policy;
      asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
      for (int r = 0; r < 2; ++r)
        asm volatile(
            "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
            ".L2::cache_hint [%0], [%1, {%2, %3, %4, %5, %6}], [%7], %8;\n" ::"r"(
                flashmin::cuda::smem_addr(stage + s * kStageBytes + r * kStageBytes / 2)),
            "l"(reinterpret_cast<uint64_t>(r ? &tm_v : &tm_k)), "r"(0), "r"(0), "r"(j * 64), "r"(h),
            "r"(b), "r"(flashmin::cuda::smem_addr(&full[s])), "l"(policy)
            : "memory");
      continue;
    }
    flashmin::cuda::tma_load_5d(stage + s * kStageBytes, &tm_k, 0, 0, j * 64, h, b, &full[s]);
    flashmin::cuda::tma_load_5d(stage + s * kStageBytes + kStageBytes / 2, &tm_v, 0, 0, j * 64, h,
                                b, &full[s]);
  }
  for (int j = std::max(0, blocks - stages); j < blocks; ++j)
    flashmin::cuda::mbar_wait(&full[j % stages], uint32_t((j / stages) & 1));
  keep(*reinterpret_cast<const uint32_t*>(stage), sink);
}

__global__ void fill_kernel(uint4* x, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    x[i] = make_uint4(uint32_t(i * 2654435761u), uint32_t(i), 7u, uint32_t(i >> 7));
}

// Median of 50 calls, each after the flush, timed by events around the call alone (us).
template <class F>
float time_us(F&& f, void* flush) {
  return 1e3f * harness::median_event_ms(f, 50, [&](int i) { harness::flush_l2(flush, i); });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(
        stderr,
        "usage: stream_floor \"B:L,B:L,...\" [--sweep | --hints | --persist | --rotate | --half]\n");
    return 2;
  }
  std::vector<std::pair<int, int>> shapes;
  const std::string list = argv[1];
  for (size_t at = 0; at < list.size();) {
    const size_t end = std::min(list.find(',', at), list.size());
    int B = 0, L = 0;
    if (std::sscanf(list.substr(at, end - at).c_str(), "%d:%d", &B, &L) != 2 || B < 1 || L < 1) {
      std::fprintf(stderr, "stream_floor: bad shape '%s' (expected B:L)\n",
                   list.substr(at, end - at).c_str());
      return 2;
    }
    shapes.emplace_back(B, L);
    at = end + 1;
  }
  // --sweep: also the bulk configurations that separate CTA count, alignment and two streams.
  const bool sweep = argc > 2 && std::strcmp(argv[2], "--sweep") == 0;
  const bool hints = argc > 2 && std::strcmp(argv[2], "--hints") == 0;
  const bool persist = argc > 2 && std::strcmp(argv[2], "--persist") == 0;
  const bool rotate = argc > 2 && std::strcmp(argv[2], "--rotate") == 0;
  const bool half = argc > 2 && std::strcmp(argv[2], "--half") == 0;
  int sms;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  CK(cudaFuncSetAttribute(bulk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                          kMaxStages * kStageBytes));
  const int smem_tma = 3 * kStageBytes + 1024;
  CK(cudaFuncSetAttribute(tma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_tma));
  CK(cudaFuncSetAttribute(ptma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_tma));
  CK(cudaFuncSetAttribute(stma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_tma));
  void *flush, *sink_p, *zeros_p;
  CK(cudaMalloc(&zeros_p, 1024));
  CK(cudaMemset(zeros_p, 0, 1024));
  const int* zeros = static_cast<const int*>(zeros_p);
  CK(cudaMalloc(&flush, harness::kFlushBytes));
  CK(cudaMalloc(&sink_p, 64));
  auto* sink = static_cast<uint32_t*>(sink_p);
  for (int rep = 0; rep < 2; ++rep) {
    for (const auto& shape : shapes) {
      const int B = shape.first, L = shape.second;
      const int64_t bytes = int64_t(2) * B * 8 * L * 128 * 2;
      void* kv;
      CK(cudaMalloc(&kv, bytes));
      fill_kernel<<<4096, 256>>>(static_cast<uint4*>(kv), bytes / 16);
      const auto* x = static_cast<const char*>(kv);
      auto round_up = [](int64_t n, int64_t to) { return (n + to - 1) / to * to; };
      // A bulk configuration: each CTA reads `per` bytes of each of `streams` regions.
      auto bulk = [&](int streams, int64_t per, int stages = 3, const int* dep = nullptr,
                      bool alternate = false) {
        const int64_t region = bytes / streams;
        const int grid = int((region + per - 1) / per);
        return time_us(
            [&] {
              bulk_kernel<<<grid, 32, stages * kStageBytes>>>(x, region, per, streams, region,
                                                              stages, dep, alternate, sink);
            },
            flush);
      };
      std::vector<std::pair<std::string, float>> runs;
      runs.emplace_back("ldg64k", time_us(
                                      [&] {
                                        ldg_chunks_kernel<>
                                            <<<int(bytes / kLdgChunk), kLdgThreads>>>(
                                                static_cast<const uint4*>(kv), bytes / 16, sink);
                                      },
                                      flush));
      // --hints: the same loads with L2 eviction hints (policy = createpolicy + cache_hint).
      auto ldg_hint = [&](auto kernel) {
        return time_us(
            [&] {
              kernel<<<int(bytes / kLdgChunk), kLdgThreads>>>(static_cast<const uint4*>(kv),
                                                              bytes / 16, sink);
            },
            flush);
      };
      CUtensorMap tm[2];
      bool tma_ok = L % 64 == 0;
      for (int r = 0; r < 2; ++r) {  // (64 elements = 128 B, 2 pieces, L, H_k, B), 64-row box
        const int64_t dims[5] = {64, 2, L, 8, B};
        const int64_t strides[4] = {128, 256, int64_t(L) * 256, int64_t(8) * L * 256};
        tma_ok = tma_ok && flashmin::cuda::make_tensor_map_rows(
                               &tm[r], CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, x + r * bytes / 2, 5,
                               dims, strides, 64, CU_TENSOR_MAP_L2_PROMOTION_L2_128B);
      }
      auto tma = [&](const int* dep, bool evict_first) {
        return time_us(
            [&] {
              tma_kernel<<<B * 8, 32, smem_tma>>>(tm[0], tm[1], L, 3, dep, evict_first, sink);
            },
            flush);
      };
      if (rotate && tma_ok) {  // the decode grid's splits (as its heuristic picks them)
        const int splits = B == 1 ? 16 : B == 8 ? 2 : 1;
        for (int rot = 0; rot < 4; ++rot)
          runs.emplace_back("stma-r" + std::to_string(rot),
                            time_us(
                                [&] {
                                  stma_kernel<<<dim3(B * 8, splits), 32, smem_tma>>>(tm[0], tm[1],
                                                                                     L, rot, sink);
                                },
                                flush));
      }
      if (persist && tma_ok) {  // one CTA per unit, and persistent grids of 2 CTAs per SM
        const int units = B * 8, grid = std::min(units, 2 * sms);
        runs.emplace_back("tma", tma(nullptr, false));
        for (const bool blocked : {false, true})
          runs.emplace_back(blocked ? "ptma-blk" : "ptma-str",
                            time_us(
                                [&] {
                                  ptma_kernel<<<grid, 32, smem_tma>>>(tm[0], tm[1], L, units,
                                                                      blocked, sink);
                                },
                                flush));
      }
      if (hints) {
        if (tma_ok) {
          runs.emplace_back("tma", tma(nullptr, false));
          runs.emplace_back("tma-ef", tma(nullptr, true));
        }
        runs.emplace_back("ldg-pol-ef", ldg_hint(ldg_chunks_kernel<Hint::kPolicyFirst>));
        runs.emplace_back("ldg-pol-el", ldg_hint(ldg_chunks_kernel<Hint::kPolicyLast>));
        runs.emplace_back("ldg-pol-eu", ldg_hint(ldg_chunks_kernel<Hint::kPolicyUnchanged>));
        runs.emplace_back("ldg64k-2", ldg_hint(ldg_chunks_kernel<Hint::kNone>));
      }
      runs.emplace_back("bulk1m", bulk(1, 1 << 20));
      runs.emplace_back("bulkstat2", bulk(1, round_up(bytes / (2 * sms), 16)));
      runs.emplace_back("bulkstat1", bulk(1, round_up(bytes / sms, 16)));
      if (half) {  // 64 CTAs (8 clusters of 8) or 96, one per SM, 3-6 stages of 32 KB
        for (const int ctas : {64, 96})
          for (const int stages : {3, 4, 6})
            runs.emplace_back("h" + std::to_string(ctas) + "x" + std::to_string(stages),
                              bulk(1, round_up(bytes / ctas, 64 << 10), stages));
      }
      if (sweep) {  // what makes a one-wave static split slow: CTA count, alignment, K/V streams
        runs.emplace_back("b2m", bulk(1, 2 << 20));
        runs.emplace_back("b4m", bulk(1, 4 << 20));
        runs.emplace_back("b512k", bulk(1, 512 << 10));
        runs.emplace_back("b1m+4k", bulk(1, (1 << 20) + (4 << 10)));
        runs.emplace_back("b1m-64k", bulk(1, (1 << 20) - (64 << 10)));
        runs.emplace_back("stat2a64k", bulk(1, round_up(bytes / (2 * sms), 64 << 10)));
        runs.emplace_back("stat1a64k", bulk(1, round_up(bytes / sms, 64 << 10)));
        runs.emplace_back("kv512k", bulk(2, 512 << 10));
        runs.emplace_back("kv1m", bulk(2, 1 << 20));
        runs.emplace_back("kv2m", bulk(2, 2 << 20));
        runs.emplace_back("kv1m+dep", bulk(2, 1 << 20, 3, zeros));
        runs.emplace_back("kv1m-alt", bulk(2, 1 << 20, 3, nullptr, true));
        runs.emplace_back("kv2m-alt", bulk(2, 2 << 20, 3, nullptr, true));
        runs.emplace_back("kv1m-alt4", bulk(2, 1 << 20, 4, nullptr, true));
        if (tma_ok) {
          for (const int* d : {static_cast<const int*>(nullptr), zeros})
            runs.emplace_back(d ? "tma+dep" : "tma", tma(d, false));
        }
        runs.emplace_back("kv1m-2st", bulk(2, 1 << 20, 2));
        runs.emplace_back("kv1m-4st", bulk(2, 1 << 20, 4));
        runs.emplace_back("kv2m-2st", bulk(2, 2 << 20, 2));
        runs.emplace_back("kv2m-4st", bulk(2, 2 << 20, 4));
        runs.emplace_back("kvstat2", bulk(2, round_up(bytes / 2 / (2 * sms), 16)));
        runs.emplace_back("kvstat1", bulk(2, round_up(bytes / 2 / sms, 16)));
      }
      for (const auto& [name, us] : runs)
        std::printf("FLOOR %-9s B=%-3d L=%-6d %s flush %8.1f us %7.1f GB/s\n", name.c_str(), B, L,
                    harness::read_flush()   ? "read  "
                    : harness::fill_flush() ? "fill  "
                                            : "memset",
                    us, bytes / (us * 1e-6) / 1e9);
      CK(cudaFree(kv));
    }
  }
  CK(cudaFree(flush));
  CK(cudaFree(sink_p));
  return 0;
}
