// Flash-Decoding: split-KV attention over a (contiguous or paged) KV cache, then a combine.
//
// Decoding is memory-bound: each query row (S_q <= 16 per sequence) is tiny next to the cache,
// so the work is spread over the KEYS. Two kernels run on the stream, in order:
//   1. (only with k_new/v_new) the attention kernels below first write the new keys into the
//      cache at [seqlens[b], seqlens[b] + S_new): each CTA the keys of its own range (fused
//      append), before its copies read them.
//   2. decode_split_kernel   one CTA per (batch b, KV head h_k, <= 64 query rows, split s).
//      Its query rows are ALL (query head of the group, query position) pairs that read h_k
//      (GQA packing): K_j, V_j are read from global memory once per group. Split s covers a
//      contiguous range of key blocks computed on the device from L_b. The CTA streams
//      K_j, V_j (B_c keys, 32 KB per stage) through a 3-stage pipeline (sm_90: TMA tensor
//      copies issued by a dedicated producer warp, full/empty mbarriers; sm_80: cp.async);
//      each compute warp runs the FA2 inner loop (online softmax) on 16 query rows x 16 keys at a
//      time, on tensor cores (mma.sync m16n8k16) for fp16/bf16 or on CUDA cores for fp32; a
//      CTA with <= 8 fp16/bf16 rows runs it key-major instead (S^T = K Q^T, keys on the mma's
//      M side: no work on padding rows). Warps
//      that share a row tile split the keys of a block and merge at the end. With one split it
//      writes O and lse directly; otherwise a normalised partial O_s and its lse_s (fp32, in the
//      workspace).
//   3. decode_combine_kernel merges the splits through their lse (SoftmaxState):
//      O = sum_s exp(lse_s - lse) O_s,  lse = log sum_s exp(lse_s).
//
// Files: this one holds the host side (the split heuristic, the path and CTA-shape choices, the
// launches); the device code is in decode_device_helpers.cuh, decode_warp_steps.cuh (the FA2
// inner loop's tile math), decode_copies.cuh (tensor copies of K_j, V_j; the append),
// decode_split_kernel.cuh, decode_persistent_kernel.cuh and decode_combine_kernel.cuh, all
// compiled here as one translation unit. Tile sizes: decode_traits.h.
//
// Lengths are read on the device only (CUDA graphs). Invalid device data (seqlens[b] < 0,
// seqlens[b] + S_new beyond the cache, a page index outside [0, num_pages)) is never used to
// address memory; that sequence's O and lse become NaN instead.
#include <cuda.h>  // CUtensorMap (types only: the encoder is fetched through the runtime)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>

#include "cuda/cuda_api.h"
#include "cuda/decode_combine_kernel.cuh"
#include "cuda/decode_persistent_kernel.cuh"
#include "cuda/decode_split_kernel.cuh"
#include "cuda/decode_traits.h"
#include "cuda/device_query.h"
#include "cuda/tensor_map.h"

namespace flashmin::cuda {
namespace {

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------
template <typename T, int kD, bool kBulk, bool kCompact = false, bool kAlt = false,
          bool kKeyMajor = false>
struct Config {
  using Type = T;
  using Traits = DecodeTraits<T, kD, kBulk, kCompact, kAlt, kKeyMajor>;
};

DecodeCopyMode g_copy_mode = DecodeCopyMode::kAuto;
bool g_allow_pdl = true;
bool g_allow_cluster = true;
#ifndef FM_DECODE_L2_PROMO  // default L2 promotion of the K/V maps (decode_traits.h)
#define FM_DECODE_L2_PROMO 128
#endif
int g_l2_promotion = FM_DECODE_L2_PROMO;
#ifndef FM_DECODE_FULL_ROW_BOXES  // default of decode_set_full_row_boxes (decode_traits.h)
#define FM_DECODE_FULL_ROW_BOXES 1
#endif
bool g_full_row_boxes = FM_DECODE_FULL_ROW_BOXES;
#ifndef FM_DECODE_KEY_MAJOR  // default of decode_set_key_major (decode_traits.h)
#define FM_DECODE_KEY_MAJOR 1
#endif
bool g_key_major = FM_DECODE_KEY_MAJOR;
#ifndef FM_DECODE_ONE_PER_SM  // 0: the choices before rounds 11-12 (wide or two CTAs/SM), A/B
#define FM_DECODE_ONE_PER_SM 1
#endif
#ifndef FM_DECODE_PERSISTENT  // default of decode_set_persistent (decode_traits.h)
#define FM_DECODE_PERSISTENT 0
#endif
int g_persistent = FM_DECODE_PERSISTENT;
int g_persistent_blocked = -1;  // decode_set_persistent: -1 the launcher's rule, else forced

// Host-side caches. Decode runs once per generated token, so its host path should cost a few
// microseconds: the shared-memory opt-in and the occupancy query are per (device, kernel,
// bytes) and are made once, not on every plan and launch.
std::mutex g_host_cache_mutex;
std::map<std::pair<int, const void*>, int64_t> g_smem_allowed;         // largest opt-in so far
std::map<std::tuple<int, const void*, int64_t>, int> g_blocks_per_sm;  // 0: query failed

// Raise `kernel`'s dynamic shared-memory limit on the current device to at least `smem` bytes.
// Never lowers it: a smaller request after a larger one keeps the larger limit, so the cache
// below always matches the attribute.
template <class Kernel>
cudaError_t raise_dynamic_smem(Kernel* kernel, int64_t smem) {
  const int device = current_device();
  std::lock_guard<std::mutex> lock(g_host_cache_mutex);
  int64_t& allowed = g_smem_allowed[{device, reinterpret_cast<const void*>(kernel)}];
  if (allowed >= smem) return cudaSuccess;
  const cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (err == cudaSuccess) allowed = smem;
  return err;
}

// The value cached under `key`, or query() stored there on a miss (the query runs outside the
// lock; two threads racing on a miss store the same answer).
template <class Map, class Query>
typename Map::mapped_type cached(Map& cache, const typename Map::key_type& key, Query&& query) {
  {
    std::lock_guard<std::mutex> lock(g_host_cache_mutex);
    const auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  const typename Map::mapped_type value = query();
  std::lock_guard<std::mutex> lock(g_host_cache_mutex);
  cache[key] = value;
  return value;
}

// Resident CTAs per SM of `kernel` (threads, smem) on the current device: the runtime's
// occupancy query (shared memory, registers and their per-warp allocation granularity); 0 if
// the query fails.
template <class Kernel>
int blocks_per_sm(Kernel* kernel, int threads, int64_t smem) {
  const auto key = std::make_tuple(current_device(), reinterpret_cast<const void*>(kernel), smem);
  return cached(g_blocks_per_sm, key, [&] {
    int blocks = 0;
    if (raise_dynamic_smem(kernel, smem) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, size_t(smem)) !=
            cudaSuccess) {
      blocks = 0;
    }
    (void)cudaGetLastError();
    return blocks;
  });
}

// The launch attribute that groups the `cluster` splits (grid y) of a column into one cluster.
cudaLaunchAttribute split_cluster_attribute(int cluster) {
  cudaLaunchAttribute attr = {};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = 1;
  attr.val.clusterDim.y = unsigned(cluster);
  attr.val.clusterDim.z = 1;
  return attr;
}

// Programmatic dependent launch: the kernel may launch while the previous one on the stream
// finishes, and waits for it (griddepcontrol.wait) before touching global memory.
cudaLaunchAttribute pdl_attribute() {
  cudaLaunchAttribute attr = {};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  return attr;
}

// The split, persistent and combine kernels use it on sm_90 (decode_set_tuning can turn it off):
// the combine's launch overlaps the split kernel, the split kernels' launch the append kernel's
// run or the caller's previous kernel (S_new = 1: 1.2 us, 1.5% at 268 MB; H200, round 13).
bool use_pdl(bool hopper) { return hopper && g_allow_pdl; }

// A launch of `grid` x `threads` with `smem` bytes of dynamic shared memory on `stream`.
cudaLaunchConfig_t launch_config(dim3 grid, int threads, int64_t smem, cudaStream_t stream) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(unsigned(threads));
  cfg.dynamicSmemBytes = size_t(smem);
  cfg.stream = stream;
  return cfg;
}

// A launch configuration and the attributes it points at (cfg.attrs points into attrs, so the
// object is neither copied nor moved): an optional cluster of `cluster` splits along grid y,
// then programmatic dependent launch where `pdl`.
struct DecodeLaunch {
  cudaLaunchConfig_t cfg;
  cudaLaunchAttribute attrs[2];

  DecodeLaunch(dim3 grid, int threads, int64_t smem, cudaStream_t stream, bool pdl, int cluster = 1)
      : cfg(launch_config(grid, threads, smem, stream)), attrs{} {
    unsigned n = 0;
    if (cluster > 1) attrs[n++] = split_cluster_attribute(cluster);
    if (pdl) attrs[n++] = pdl_attribute();
    cfg.attrs = attrs;
    cfg.numAttrs = n;
  }
  DecodeLaunch(const DecodeLaunch&) = delete;
  DecodeLaunch& operator=(const DecodeLaunch&) = delete;
};

// Whether launching `ctas` CTAs of `kernel` as clusters of `cluster` CTAs keeps as many resident
// as a plain launch would (min(ctas, SMs x blocks per SM)): clusters must fit inside one GPC,
// which can leave slots unused (H200, 2 CTAs/SM of 115 KB: clusters of 4 ran 1.3x slower than the
// combine). The runtime's answers (resident clusters, and the plain launch's resident CTAs) are
// cached per (device, kernel, bytes, cluster size).
std::map<std::tuple<int, const void*, int64_t, int>, std::pair<int, int64_t>> g_active_clusters;

template <class Kernel>
bool clusters_keep_occupancy(Kernel* kernel, int threads, int64_t smem, int cluster, int64_t ctas) {
  const int device = current_device();
  const auto key = std::make_tuple(device, reinterpret_cast<const void*>(kernel), smem, cluster);
  const auto [clusters, plain] = cached(g_active_clusters, key, [&] {
    const DecodeLaunch one_cluster(dim3(1, unsigned(cluster)), threads, smem, nullptr, false,
                                   cluster);
    int n = 0;
    if (raise_dynamic_smem(kernel, smem) != cudaSuccess ||
        cudaOccupancyMaxActiveClusters(&n, kernel, &one_cluster.cfg) != cudaSuccess) {
      n = 0;  // query failed: no cluster launch
    }
    (void)cudaGetLastError();
    return std::make_pair(n, int64_t(sm_count(device)) * blocks_per_sm(kernel, threads, smem));
  });
  return clusters > 0 && int64_t(clusters) * cluster >= std::min(ctas, plain);
}

bool device_is_hopper_or_newer() { return compute_capability_major(current_device()) >= 9; }

// The tensor-copy (TMA) kernels exist for sm_90+ only.
bool use_bulk_copy(bool hopper) {
  if (!hopper || FM_DECODE_FORCE_CPASYNC) return false;
  return g_copy_mode != DecodeCopyMode::kCpAsync && g_copy_mode != DecodeCopyMode::kCompact;
}

// The copy path and tile: TMA (sm_90+), or cp.async with the regular tile, or with the compact
// tile where the device's shared memory per block is too small for the regular one (sm_86/89).
struct Path {
  bool bulk = false;
  bool compact = false;
  bool wide = false;       // tensor-copy path: the alternative CTA (wide / dense; kAltCta)
  bool key_major = false;  // tensor-copy path: the key-major step (fp16/bf16, <= 8 rows)
};

// f(Config<T, kD, kBulk, kCompact, kAlt, kKeyMajor>{}) for the dtype, the decode head-dim bucket
// and the path.
template <class F>
void dispatch_decode(DType dtype, int64_t head_dim, Path path, F&& f) {
  auto by_dim = [&](auto type_tag) {
    using T = decltype(type_tag);
    auto by_copy = [&](auto dim_tag) {
      constexpr int kD = decltype(dim_tag)::value;
      if (path.bulk) {
        if constexpr (DecodeTraits<T, kD, true, false, true>::kWide) {
          if constexpr (DecodeTraits<T, kD, true, false, true, true>::kKeyMajor) {
            if (path.key_major && path.wide) return f(Config<T, kD, true, false, true, true>{});
            if (path.key_major) return f(Config<T, kD, true, false, false, true>{});
          }
          if (path.wide) return f(Config<T, kD, true, false, true>{});
        } else if constexpr (DecodeTraits<T, kD, true, false, false, true>::kKeyMajor) {
          // 512-byte rows
          if constexpr (DecodeTraits<T, kD, true, false, true, true>::kDense) {
            if (path.key_major && path.wide) return f(Config<T, kD, true, false, true, true>{});
          }
          if (path.key_major) return f(Config<T, kD, true, false, false, true>{});
        }
        return f(Config<T, kD, true>{});
      }
      if constexpr (kD <= 128 || sizeof(T) == 2) {
        if (path.compact) return f(Config<T, kD, false, true>{});
      }
      if constexpr (DecodeTraits<T, kD, false, false, false, true>::kKeyMajor) {
        if (path.key_major) return f(Config<T, kD, false, false, false, true>{});
      }
      return f(Config<T, kD, false>{});
    };
    switch (decode_head_dim_bucket(head_dim)) {
      case 64:
        return by_copy(std::integral_constant<int, 64>{});
      case 128:
        return by_copy(std::integral_constant<int, 128>{});
      default:
        return by_copy(std::integral_constant<int, 256>{});
    }
  };
  switch (dtype) {
    case DType::kFloat32:
      return by_dim(float{});
    case DType::kFloat16:
      return by_dim(__half{});
    case DType::kBFloat16:
      return by_dim(__nv_bfloat16{});
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Tensor map of one cache (K or V) for the TMA path, as a 4-D tensor (innermost first):
// (head_dim, positions, H_k, B) for a contiguous cache, (head_dim, page_size, H_k, pages) for a
// paged one; box = 128 bytes of head dim x `box_rows` positions, 128-byte swizzle, positions
// past the tensor zero-filled. With `full_rows` (head_dim fills its bucket) the head dim is
// split into (128-byte piece, piece) and one box copies whole rows in memory order (H200: 1.00-
// 1.03x over one box per 128-byte column, most at the 268 MB shapes; docs round 9).
// False when the layout cannot be described (then cp.async).
template <typename T>
bool make_cache_map(CUtensorMap* map, const void* base, const Strides& st, const DecodeParams& p,
                    int box_rows, bool full_rows) {
  const bool paged = p.block_table != nullptr;
  const int64_t es = int64_t(sizeof(T));
  const int64_t dims[4] = {p.head_dim, paged ? p.page_size : p.max_seqlen_k, p.heads_kv,
                           paged ? p.num_pages : p.batch};
  const int64_t strides[3] = {st.seq * es, st.head * es, st.batch * es};
  const CUtensorMapL2promotion promotion =
      g_l2_promotion >= 256   ? CU_TENSOR_MAP_L2_PROMOTION_L2_256B
      : g_l2_promotion >= 128 ? CU_TENSOR_MAP_L2_PROMOTION_L2_128B
      : g_l2_promotion >= 64  ? CU_TENSOR_MAP_L2_PROMOTION_L2_64B
                              : CU_TENSOR_MAP_L2_PROMOTION_NONE;
  const CUtensorMapDataType type = std::is_same_v<T, float>    ? CU_TENSOR_MAP_DATA_TYPE_FLOAT32
                                   : std::is_same_v<T, __half> ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                                               : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  if (full_rows) {  // (128-byte piece, piece, positions, H_k, B or pages)
    const int64_t pieces = p.head_dim * es / 128;
    const int64_t dims5[5] = {128 / es, pieces, dims[1], dims[2], dims[3]};
    const int64_t strides5[4] = {128, strides[0], strides[1], strides[2]};
    return make_tensor_map_rows(map, type, int(es), base, 5, dims5, strides5, box_rows, promotion);
  }
  return make_tensor_map_rows(map, type, int(es), base, 4, dims, strides, box_rows, promotion);
}

struct Layout {
  int64_t rows;        // query rows per KV head: group * S_q
  int64_t row_chunks;  // CTAs per (b, h_k) along the rows
  int64_t rows_cta;    // rows of the largest CTA
  int64_t total_rows;  // B * H_q * S_q
};

template <class Tr>
Layout layout(const DecodeParams& p) {
  Layout l;
  l.rows = p.group_size() * p.seqlen_q;
  l.row_chunks = ceil_div(l.rows, Tr::kMaxRows);
  l.rows_cta = std::min<int64_t>(l.rows, Tr::kMaxRows);
  l.total_rows = p.batch * p.heads_q * p.seqlen_q;
  return l;
}

// The key-major step (DecodeTraits::kKeyMajor) where a CTA's query rows fit its N = 8 side.
bool use_key_major(const DecodeParams& p) {
  return g_key_major && p.dtype != DType::kFloat32 &&
         p.group_size() * p.seqlen_q <=
             DecodeTraits<__half, 128, true, false, false, true>::kKeyMajorRows;
}

// The path for p on the current device. Where the regular cp.async tile exceeds the device's
// shared memory per block (99 KB on sm_86/89), fp16/bf16 and head dims <= 128 take the compact
// tile, and fp32 with larger head dims raises a clear error.
Path choose_path(const DecodeParams& p, bool hopper) {
  Path path;
  path.bulk = use_bulk_copy(hopper);
  path.wide = path.bulk && (p.wide_ctas != 0 || g_copy_mode == DecodeCopyMode::kBulkWide);
  path.key_major = use_key_major(p);
  if (path.bulk) return path;
  int64_t regular = 0;
  dispatch_decode(p.dtype, p.head_dim, Path{}, [&](auto cfg) {
    using Tr = typename decltype(cfg)::Traits;
    regular = Tr::smem_bytes(layout<Tr>(p).rows_cta);
  });
  const bool has_compact = decode_head_dim_bucket(p.head_dim) <= 128 || p.dtype != DType::kFloat32;
  if (!has_compact)
    require_smem_per_block(regular,
                           "flash_decode in float32 with head_dim " + std::to_string(p.head_dim),
                           " (fp16/bf16, or float32 with head_dim <= 128, run on it)");
  path.compact = has_compact && (regular > smem_per_block_optin(current_device()) ||
                                 g_copy_mode == DecodeCopyMode::kCompact);
  return path;
}

}  // namespace

void decode_set_tuning(DecodeCopyMode mode, bool allow_pdl) {
  g_copy_mode = mode;
  g_allow_pdl = allow_pdl;
}

void decode_set_tma_l2_promotion(int bytes) { g_l2_promotion = bytes; }

void decode_set_full_row_boxes(bool allow) { g_full_row_boxes = allow; }

void decode_set_key_major(bool allow) { g_key_major = allow; }

void decode_set_cluster_merge(bool allow) { g_allow_cluster = allow; }

void decode_set_persistent(int max_ctas, int blocked_units) {
  g_persistent = max_ctas;
  g_persistent_blocked = blocked_units;
}

int64_t decode_timeline(unsigned long long* out, int64_t max_ctas) {
#if FM_DECODE_TIMELINE
  long long n = 0;
  FM_CUDA_CHECK(cudaMemcpyFromSymbol(&n, g_timeline_ctas, sizeof(n)));
  n = std::min<long long>({n, max_ctas, kTimelineMaxCtas});
  FM_CUDA_CHECK(cudaMemcpyFromSymbol(out, g_timeline,
                                     sizeof(unsigned long long) * kTimelineFields * size_t(n)));
  return n;
#else
  (void)out;
  (void)max_ctas;
  return 0;
#endif
}

namespace {

// One regular CTA per SM (sm_90 tensor copies, fp16 / bf16): where one wave of them covers the
// `ctas` columns (>= 90% of the SMs) with s = num_sms / ctas splits. Since the loop stopped
// serialising (round 10) its 4 compute warps keep up with an SM's share of the bandwidth: one
// CTA per SM beat the wide CTA and two regular CTAs per SM for key-major rows on the 268 MB
// shapes (H200, round 11), and two regular CTAs per SM for row-major rows (round 12; the
// caller tries the wide CTA first for those). Sets *splits.
bool one_wave_of_regular_ctas(const DecodeParams& p, bool hopper, int64_t ctas, int num_sms,
                              int64_t max_splits, int64_t* splits) {
  if (!FM_DECODE_ONE_PER_SM || !use_bulk_copy(hopper) || ctas > num_sms) return false;
  if (p.dtype == DType::kFloat32) return false;  // measured for fp16 / bf16 only
  if (g_copy_mode != DecodeCopyMode::kAuto && g_copy_mode != DecodeCopyMode::kBulk) return false;
  // Pages of 16 keys cut a 32 KB stage into 8 boxes, and one CTA per SM then streams 12-15%
  // slower than two CTAs per SM with twice the splits (H200, session 14; 32-key pages: within 2%
  // of the contiguous cache either way).
  if (p.block_table != nullptr && p.page_size < 32) return false;
  const int64_t s = std::min<int64_t>(num_sms / ctas, max_splits);
  if (ctas * s * 10 < int64_t(num_sms) * 9) return false;
  *splits = s;
  return true;
}

// Wide CTAs (DecodeTraits::kWide; sm_90, rows <= 256 bytes, a contiguous cache or pages of at
// least a wide block): taken where one wave of one-per-SM CTAs covers the `ctas` columns
// (>= 90% of the SMs) with at most kDecodeMaxClusterSplits splits per column, merged in a
// cluster that keeps every CTA resident. Then each SM holds one CTA, the SMs progress evenly
// and no combine kernel runs; elsewhere (several waves, more splits) the regular 2-CTA/SM tile
// is faster (H200, docs/kernels_decode.md round 7). Since round 11 key-major CTAs take one
// regular CTA per SM instead (one_wave_of_regular_ctas). Sets *splits.
bool wide_ctas_fit(const DecodeParams& p, bool hopper, int64_t ctas, int num_sms,
                   int64_t max_splits, int64_t* splits) {
  if (!use_bulk_copy(hopper) || ctas > num_sms) return false;
  if (g_copy_mode != DecodeCopyMode::kAuto && g_copy_mode != DecodeCopyMode::kBulk) return false;
  const int64_t s = std::min<int64_t>(num_sms / ctas, max_splits);
  if (s > kDecodeMaxClusterSplits || ctas * s * 10 < int64_t(num_sms) * 9) return false;
  Path path;
  path.bulk = path.wide = true;
  path.key_major = use_key_major(p);
  bool fits = false;
  dispatch_decode(p.dtype, p.head_dim, path, [&](auto cfg) {
    using T = typename decltype(cfg)::Type;
    using Tr = typename decltype(cfg)::Traits;
    if constexpr (Tr::kWide) {
      if (p.block_table != nullptr && p.page_size < Tr::kBc) return;
      const int64_t smem = Tr::smem_bytes(layout<Tr>(p).rows_cta);
      auto* kernel = decode_split_kernel<T, Tr::kHeadDim, true, false, true, Tr::kKeyMajor>;
      fits = blocks_per_sm(kernel, Tr::kThreads, smem) >= 1 &&
             (s == 1 || (g_allow_cluster &&
                         clusters_keep_occupancy(kernel, Tr::kThreads, smem, int(s), ctas * s)));
    }
  });
  *splits = s;
  return fits;
}

// The dense CTA (DecodeTraits::kDense; sm_90, key-major 512-byte rows): taken where the `ctas`
// CTAs outnumber the SMs, so that two per SM hide each other's start and end. One wave of one
// CTA per SM keeps the uncapped CTA.
bool dense_ctas_pay(const DecodeParams& p, bool hopper, int64_t ctas, int num_sms) {
  if (!use_bulk_copy(hopper) || ctas <= num_sms) return false;
  if (g_copy_mode != DecodeCopyMode::kAuto && g_copy_mode != DecodeCopyMode::kBulk) return false;
  Path path;
  path.bulk = path.wide = true;
  path.key_major = use_key_major(p);
  bool dense = false;
  dispatch_decode(p.dtype, p.head_dim, path,
                  [&](auto cfg) { dense = decltype(cfg)::Traits::kDense; });
  return dense;
}

}  // namespace

int64_t decode_plan(DecodeParams& p, int num_sms) {
  int64_t row_chunks = 1, per_sm = 1;
  const bool hopper = device_is_hopper_or_newer();
  dispatch_decode(p.dtype, p.head_dim, choose_path(p, hopper), [&](auto cfg) {
    using T = typename decltype(cfg)::Type;
    using Tr = typename decltype(cfg)::Traits;
    const Layout l = layout<Tr>(p);
    row_chunks = l.row_chunks;
    // Resident CTAs per SM: the runtime's occupancy query (shared memory, registers and their
    // per-warp allocation granularity); an estimate from shared memory alone if it fails.
    const int64_t smem = Tr::smem_bytes(l.rows_cta);
    per_sm = std::clamp<int64_t>((228 * 1024) / (smem + 1024), 1, 16);
    const int blocks = blocks_per_sm(
        decode_split_kernel<T, Tr::kHeadDim, Tr::kBulk, Tr::kCompact, Tr::kAltCta, Tr::kKeyMajor>,
        Tr::kThreads, smem);
    if (blocks > 0) per_sm = blocks;
  });
  if (p.num_splits == 0) {
    // Split the keys only when the (b, h_k, row chunk) CTAs fill less than ~a wave. Then pick
    // the fewest splits whose last wave is nearly full: efficiency(s) = waves / ceil(waves)
    // within 95% of the best reachable (measured on H200: one full wave beats two or more,
    // since every extra split costs a partial-O write and prologue). Splits keep at least
    // kDecodeMinKeysPerSplit keys of S_max (an upper bound: lengths live on the device).
    const int64_t ctas = std::max<int64_t>(1, p.batch * p.heads_kv * row_chunks);
    const int64_t slots = int64_t(std::max(num_sms, 1)) * per_sm;
    const int64_t max_splits =
        std::clamp<int64_t>(p.max_seqlen_k / kDecodeMinKeysPerSplit, 1, kDecodeMaxSplits);
    int64_t splits = 1;
    if (ctas * 5 < slots * 4) {
      auto efficiency = [&](int64_t s) {
        const double waves = double(ctas * s) / double(slots);
        return waves / std::ceil(waves);
      };
      double best = 0.0;
      for (int64_t s = 1; s <= max_splits; ++s) best = std::max(best, efficiency(s));
      for (int64_t s = 1; s <= max_splits; ++s) {
        if (efficiency(s) >= 0.95 * best) {
          splits = s;
          break;
        }
      }
    }
    p.wide_ctas = 0;
    int64_t wide_splits = 0, one_wave_splits = 0;
    // Key-major CTAs: one regular CTA per SM first. Row-major CTAs (> 8 rows): the wide CTA
    // where it fits (<= 8 splits in a cluster; 1.01x over one regular CTA per SM at B=8 L=8k and
    // B=16 L=4k, S_q = 4), else one regular CTA per SM rather than two (B=1 L=64k S_q = 4:
    // 1.023x, L=16k 1.04x; H200, round 12).
    const bool one_wave =
        one_wave_of_regular_ctas(p, hopper, ctas, num_sms, max_splits, &one_wave_splits);
    if (one_wave && use_key_major(p)) {
      splits = one_wave_splits;
    } else if (wide_ctas_fit(p, hopper, ctas, num_sms, max_splits, &wide_splits)) {
      splits = wide_splits;
      p.wide_ctas = 1;
    } else if (one_wave) {
      splits = one_wave_splits;
    }
    p.num_splits = splits;
  }
  if (p.wide_ctas == 0 &&
      dense_ctas_pay(p, hopper, p.batch * p.heads_kv * row_chunks * p.num_splits, num_sms))
    p.wide_ctas = 1;
  return decode_workspace_bytes(p);
}

int64_t decode_workspace_bytes(const DecodeParams& p) {
  if (p.num_splits <= 1) return 0;
  const int64_t total_rows = p.batch * p.heads_q * p.seqlen_q;
  return p.num_splits * total_rows * (p.head_dim + 1) * int64_t(sizeof(float));
}

void decode(const DecodeParams& p, cudaStream_t stream) {
  if (p.batch == 0) return;
  const bool hopper = device_is_hopper_or_newer();
  dispatch_decode(p.dtype, p.head_dim, choose_path(p, hopper), [&](auto cfg) {
    using T = typename decltype(cfg)::Type;
    using Tr = typename decltype(cfg)::Traits;
    const Layout l = layout<Tr>(p);

    // 2. Split-KV attention. The TMA kernel needs tensor maps of both caches; a layout they
    //    cannot describe falls back to the cp.async kernel.
    //    A few splits (<= kDecodeMaxClusterSplits, tensor-copy path) run as one thread-block
    //    cluster per (b, h_k, row chunk) and merge in distributed shared memory: no partials,
    //    no combine. More splits write partials to the workspace for the combine kernel.
    const int64_t splits = std::max<int64_t>(1, p.num_splits);
    bool combine = false;
    const dim3 grid(unsigned(p.batch * p.heads_kv * l.row_chunks), unsigned(splits));
    auto launch = [&](auto cfg_split, const CUtensorMap& tm_k, const CUtensorMap& tm_v,
                      bool full_rows) {
      using TrS = typename decltype(cfg_split)::Traits;
      const int64_t smem = TrS::smem_bytes(l.rows_cta);
      auto* kernel = decode_split_kernel<T, TrS::kHeadDim, TrS::kBulk, TrS::kCompact, TrS::kAltCta,
                                         TrS::kKeyMajor>;
      FM_CUDA_CHECK(raise_dynamic_smem(kernel, smem));
      const bool cluster = TrS::kClusterMerge && splits > 1 && splits <= kDecodeMaxClusterSplits &&
                           g_allow_cluster &&
                           clusters_keep_occupancy(kernel, TrS::kThreads, smem, int(splits),
                                                   int64_t(grid.x) * splits);
      combine = splits > 1 && !cluster;
      float* o_part = combine ? static_cast<float*>(p.workspace) : nullptr;
      float* lse_part = combine ? o_part + splits * l.total_rows * p.head_dim : nullptr;
      DecodeLaunch split_launch(grid, TrS::kThreads, smem, stream, use_pdl(hopper),
                                cluster ? int(splits) : 1);
      FM_CUDA_CHECK(cudaLaunchKernelEx(&split_launch.cfg, kernel, static_cast<DecodeParams>(p),
                                       int(l.row_chunks), o_part, lse_part, tm_k, tm_v, full_rows));
      FM_CUDA_CHECK(cudaGetLastError());
    };
    CUtensorMap tm_k{}, tm_v{};
    bool tma = false, full_rows = false;
    if constexpr (Tr::kBulk) {
      const int box_rows = p.block_table ? int(std::min<int64_t>(Tr::kBc, p.page_size)) : Tr::kBc;
      full_rows = g_full_row_boxes && p.head_dim == Tr::kHeadDim;
      tma = p.max_seqlen_k > 0 &&
            make_cache_map<T>(&tm_k, p.k_cache, p.k_cache_strides, p, box_rows, full_rows) &&
            make_cache_map<T>(&tm_v, p.v_cache, p.v_cache_strides, p, box_rows, full_rows);
    }

    // Append first (the attention kernel on the same stream sees the new keys), unless the
    // kernel that runs appends itself (fused).
    auto append_first = [&](bool fused) {
      if (p.k_new == nullptr || p.seqlen_new == 0 || fused) return;
      const int64_t total = p.batch * p.heads_kv * p.seqlen_new * (p.head_dim / (16 / sizeof(T)));
      const int blocks = int(std::min<int64_t>(ceil_div(total, 256), 65536));
      decode_append_kernel<T><<<blocks, 256, 0, stream>>>(p);
      FM_CUDA_CHECK(cudaGetLastError());
    };
    if constexpr (Tr::kBulk && Tr::kKeyMajor && Tr::kNarrow && !Tr::kWide) {
      // More (b, h_k) units than resident CTA slots, one split, key-major rows: the
      // persistent kernel, one CTA per slot (decode_set_persistent: > 0 forces it, with at most
      // that many CTAs; < 0 turns it off).
      if (tma && splits == 1 && l.row_chunks == 1 && g_persistent >= 0) {
        auto* kernel = decode_persistent_kernel<T, Tr::kHeadDim>;
        const int64_t smem = persistent_smem_bytes<T, Tr>();
        FM_CUDA_CHECK(raise_dynamic_smem(kernel, smem));
        const int64_t units = p.batch * p.heads_kv;
        const int64_t slots =
            int64_t(sm_count(current_device())) * blocks_per_sm(kernel, Tr::kThreads, smem);
        if (slots > 0 && units <= INT_MAX && (g_persistent > 0 || units > slots)) {
          const int64_t ctas = std::min(units, g_persistent > 0 ? int64_t(g_persistent) : slots);
          // Units of >= 1 MiB of K in a contiguous cache go to CTAs in runs of neighbours: with
          // u = c, c + G, ... the CTAs stream units 1 MiB apart at the same offsets at once,
          // which the H200 serves ~1.7% slower (B=64 L=4k, round 14); smaller units and paged
          // caches keep the strided order (blocked was 0.5-2% slower there).
          const bool blocked_units =
              g_persistent_blocked >= 0
                  ? g_persistent_blocked > 0
                  : !p.block_table && p.max_seqlen_k * p.head_dim * int64_t(sizeof(T)) >= (1 << 20);
          append_first(append_in_kernel(p, sizeof(T)));
          DecodeLaunch persistent_launch(dim3(unsigned(ctas)), Tr::kThreads, smem, stream,
                                         use_pdl(hopper));
          FM_CUDA_CHECK(cudaLaunchKernelEx(&persistent_launch.cfg, kernel,
                                           static_cast<DecodeParams>(p), tm_k, tm_v, full_rows,
                                           blocked_units));
          FM_CUDA_CHECK(cudaGetLastError());
          return;
        }
      }
    }
    append_first(
        tma &&
        kFusedAppend<DecodeTraits<T, Tr::kHeadDim, true, false, Tr::kAltCta, Tr::kKeyMajor>> &&
        append_in_kernel(p, sizeof(T)));
    if (tma) {
      launch(Config<T, Tr::kHeadDim, true, false, Tr::kAltCta, Tr::kKeyMajor>{}, tm_k, tm_v,
             full_rows);
    } else {
      launch(Config<T, Tr::kHeadDim, false, Tr::kCompact, false, Tr::kKeyMajor>{}, tm_k, tm_v,
             false);
    }

    // 3. Combine the splits through their lse.
    if (combine) {
      const float* o_part = static_cast<const float*>(p.workspace);
      const float* lse_part = o_part + splits * l.total_rows * p.head_dim;
      // Programmatic dependent launch (sm_90+): the combine is launched while the split kernel's
      // last wave runs and waits on griddepcontrol.wait, hiding the launch gap.
      DecodeLaunch combine_launch(dim3(unsigned(l.total_rows)), kCombineThreads, 0, stream,
                                  use_pdl(hopper));
      FM_CUDA_CHECK(cudaLaunchKernelEx(&combine_launch.cfg, decode_combine_kernel<T>,
                                       static_cast<DecodeParams>(p), o_part, lse_part,
                                       int(splits)));
      FM_CUDA_CHECK(cudaGetLastError());
    }
  });
}

}  // namespace flashmin::cuda
