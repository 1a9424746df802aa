// Standalone GPU check + benchmark of the Flash-Decoding kernels (src/cuda/decode.cu).
// Build and run (no torch):
//   nvcc -std=c++17 -O3 --expt-relaxed-constexpr -Iinclude -Isrc -gencode
//   arch=compute_90a,code=sm_90a \
//     tests/cuda/decode_check.cu src/cuda/decode.cu src/cuda/tensor_map.cpp \
//     src/cuda/cuda_error.cpp -o /tmp/decode_check
//   /tmp/decode_check          (correctness, then timings; exit code != 0 on any failure)
//   /tmp/decode_check --no-bench
//   /tmp/decode_check --bench-only
// Timing: median of CUDA-event times of single calls, two ways: "serial" (the GPU idles while
// the host prepares each call: host launch overhead included) and "queued" (a 256 MB memset,
// which also flushes L2, runs before the start event, as triton.testing.do_bench does, so the
// host work overlaps it: comparable with the SDPA numbers of decode_sdpa_bench.py).
//
// Correctness: float64 host reference on the dtype-rounded inputs; every cache position beyond
// a sequence's length (and every slot the append must fill) starts as NaN, unused block-table
// entries are out of range, outputs are poisoned with NaN: reading anything outside [0, L_b)
// or leaving an output unwritten shows up as a failure.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_api.h"
#include "cuda/decode_traits.h"
#include "event_timing.cuh"

using flashmin::DecodeParams;
using flashmin::DType;
using flashmin::Strides;

#define CK(x)                                                                            \
  do {                                                                                   \
    cudaError_t e_ = (x);                                                                \
    if (e_ != cudaSuccess) {                                                             \
      std::fprintf(stderr, "CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, \
                   __LINE__);                                                            \
      std::exit(2);                                                                      \
    }                                                                                    \
  } while (0)

namespace {

int esize(DType t) { return t == DType::kFloat32 ? 4 : 2; }
const char* dname(DType t) {
  return t == DType::kFloat32 ? "f32" : t == DType::kFloat16 ? "f16" : "bf16";
}

float round_to(DType t, float x) {
  if (t == DType::kFloat16) return __half2float(__float2half(x));
  if (t == DType::kBFloat16) return __bfloat162float(__float2bfloat16(x));
  return x;
}
void put(DType t, std::vector<uint8_t>& buf, int64_t i, float x) {
  if (t == DType::kFloat32) {
    std::memcpy(&buf[i * 4], &x, 4);
  } else if (t == DType::kFloat16) {
    __half h = __float2half(x);
    std::memcpy(&buf[i * 2], &h, 2);
  } else {
    __nv_bfloat16 h = __float2bfloat16(x);
    std::memcpy(&buf[i * 2], &h, 2);
  }
}
float get(DType t, const std::vector<uint8_t>& buf, int64_t i) {
  if (t == DType::kFloat32) {
    float x;
    std::memcpy(&x, &buf[i * 4], 4);
    return x;
  } else if (t == DType::kFloat16) {
    __half h;
    std::memcpy(&h, &buf[i * 2], 2);
    return __half2float(h);
  } else {
    __nv_bfloat16 h;
    std::memcpy(&h, &buf[i * 2], 2);
    return __bfloat162float(h);
  }
}

struct DevBuf {
  void* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t bytes) : n(bytes) {
    if (bytes) CK(cudaMalloc(&p, bytes));
  }
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
};

struct Case {
  std::string name;
  DType dt = DType::kBFloat16;
  int B = 2, Hq = 8, Hk = 2, Sq = 1, D = 128;
  int S_max = 300;           // cache capacity per sequence (paged: rounded up to pages)
  std::vector<int> seqlens;  // cached tokens per batch; empty: nullptr (every sequence S_max)
  int S_new = 0;             // append k_new / v_new
  bool paged = false;
  int page_size = 16;
  bool q_bshd = false;      // q and o as (B, S, H, D) memory viewed as (B, H, S, D)
  bool cache_bshd = false;  // cache as (B|pages, S, H_k, D)
  bool with_lse = true;
  std::vector<int> splits = {0};
  int bad_page_batch = -1;  // corrupt the first block-table entry of this sequence
  float scale_mul = 1.0f;
};

struct Result {
  bool ok = true;
  std::vector<float> o;  // logical (B, Hq, Sq, D) of the last split count run
};

double tol_o(DType t) { return t == DType::kFloat32 ? 1e-4 : t == DType::kFloat16 ? 2e-3 : 1.2e-2; }
double tol_lse(DType t) { return t == DType::kFloat32 ? 1e-4 : 2e-3; }

int g_failures = 0;
int g_cases = 0;

Result run_case(const Case& c) {
  Result res;
  const DType dt = c.dt;
  const int es = esize(dt);
  const int B = c.B, Hq = c.Hq, Hk = c.Hk, Sq = c.Sq, D = c.D, G = Hq / Hk;
  const int ps = c.page_size;
  const int pages_per_seq = c.paged ? (c.S_max + ps - 1) / ps : 0;
  const int cap = c.paged ? pages_per_seq * ps : c.S_max;
  std::mt19937 rng(1234 + B * 7 + Hq * 13 + D * 17 + Sq * 19 + cap);
  std::uniform_real_distribution<float> U(-1.0f, 1.0f);

  std::vector<int> cached(B);
  for (int b = 0; b < B; ++b) cached[b] = c.seqlens.empty() ? cap : c.seqlens[b];
  auto valid = [&](int b) { return cached[b] >= 0 && int64_t(cached[b]) + c.S_new <= cap; };

  // ---- logical inputs (rounded to dtype)
  std::vector<float> q(size_t(B) * Hq * Sq * D), kl(size_t(B) * Hk * cap * D),
      vl(size_t(B) * Hk * cap * D), kn(size_t(B) * Hk * std::max(c.S_new, 1) * D),
      vn(size_t(B) * Hk * std::max(c.S_new, 1) * D);
  for (auto& x : q) x = round_to(dt, 2.0f * U(rng));
  for (auto& x : kl) x = round_to(dt, U(rng));
  for (auto& x : vl) x = round_to(dt, U(rng));
  for (auto& x : kn) x = round_to(dt, U(rng));
  for (auto& x : vn) x = round_to(dt, U(rng));
  const float scale = c.scale_mul / std::sqrt(float(D));

  // ---- device layouts
  DecodeParams p;
  p.dtype = dt;
  p.batch = B;
  p.heads_q = Hq;
  p.heads_kv = Hk;
  p.seqlen_q = Sq;
  p.head_dim = D;
  p.scale = scale;
  p.max_seqlen_k = cap;
  p.q_strides = c.q_bshd ? Strides{int64_t(Sq) * Hq * D, D, int64_t(Hq) * D}
                         : Strides{int64_t(Hq) * Sq * D, int64_t(Sq) * D, D};
  p.o_strides = p.q_strides;
  const int64_t slots = c.paged ? int64_t(B) * pages_per_seq + 5 : B;
  const int64_t slot_len = c.paged ? ps : cap;
  p.k_cache_strides = c.cache_bshd ? Strides{slot_len * Hk * D, D, int64_t(Hk) * D}
                                   : Strides{int64_t(Hk) * slot_len * D, slot_len * D, D};
  p.v_cache_strides = p.k_cache_strides;
  const int64_t cache_elems = slots * slot_len * Hk * D;

  // block table: pages of sequence b from a random permutation; entries past the pages a
  // sequence uses are out of range (the kernels must never read them).
  const int bt_stride = pages_per_seq + 3;
  std::vector<int32_t> bt;
  if (c.paged) {
    std::vector<int32_t> perm(slots);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    bt.assign(size_t(B) * bt_stride, 1 << 30);
    for (int b = 0; b < B; ++b) {
      const int64_t L = valid(b) ? int64_t(cached[b]) + c.S_new : cap;
      const int64_t used = (L + ps - 1) / ps;
      for (int j = 0; j < used; ++j)
        bt[size_t(b) * bt_stride + j] = perm[size_t(b) * pages_per_seq + j];
    }
    if (c.bad_page_batch >= 0) bt[size_t(c.bad_page_batch) * bt_stride] = -5;
  }
  auto phys = [&](int b, int hk, int64_t pos, int d) -> int64_t {
    const Strides& s = p.k_cache_strides;
    if (!c.paged) return b * s.batch + hk * s.head + pos * s.seq + d;
    const int32_t page = bt[size_t(b) * bt_stride + pos / ps];
    return page * s.batch + hk * s.head + (pos % ps) * s.seq + d;
  };
  auto page_ok = [&](int b, int64_t pos) {
    if (!c.paged) return true;
    const int32_t page = bt[size_t(b) * bt_stride + pos / ps];
    return page >= 0 && page < slots;
  };

  // cache memory: NaN everywhere, then the cached prefix of each valid sequence.
  std::vector<uint8_t> hk_c(cache_elems * es), hv_c(cache_elems * es);
  for (int64_t i = 0; i < cache_elems; ++i) {
    put(dt, hk_c, i, NAN);
    put(dt, hv_c, i, NAN);
  }
  for (int b = 0; b < B; ++b) {
    if (!valid(b)) continue;
    for (int hk = 0; hk < Hk; ++hk)
      for (int64_t j = 0; j < cached[b]; ++j) {
        if (!page_ok(b, j)) continue;
        for (int d = 0; d < D; ++d) {
          const size_t li = ((size_t(b) * Hk + hk) * cap + j) * D + d;
          put(dt, hk_c, phys(b, hk, j, d), kl[li]);
          put(dt, hv_c, phys(b, hk, j, d), vl[li]);
        }
      }
  }
  std::vector<uint8_t> hq(size_t(B) * Hq * Sq * D * es);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hq; ++h)
      for (int t = 0; t < Sq; ++t)
        for (int d = 0; d < D; ++d)
          put(dt, hq, b * p.q_strides.batch + h * p.q_strides.head + t * p.q_strides.seq + d,
              q[((size_t(b) * Hq + h) * Sq + t) * D + d]);
  std::vector<uint8_t> hkn(kn.size() * es), hvn(vn.size() * es);
  for (size_t i = 0; i < kn.size(); ++i) {
    put(dt, hkn, i, kn[i]);
    put(dt, hvn, i, vn[i]);
  }

  DevBuf dq(hq.size()), dk(hk_c.size()), dv(hv_c.size()), dkn(hkn.size()), dvn(hvn.size()),
      dout(hq.size()), dlse(size_t(B) * Hq * Sq * 4), dseq(B * 4), dbt(bt.size() * 4 + 4);
  CK(cudaMemcpy(dq.p, hq.data(), hq.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dk.p, hk_c.data(), hk_c.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dv.p, hv_c.data(), hv_c.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dkn.p, hkn.data(), hkn.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dvn.p, hvn.data(), hvn.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dseq.p, cached.data(), B * 4, cudaMemcpyHostToDevice));
  if (c.paged) CK(cudaMemcpy(dbt.p, bt.data(), bt.size() * 4, cudaMemcpyHostToDevice));

  p.q = dq.p;
  p.k_cache = dk.p;
  p.v_cache = dv.p;
  p.cache_seqlens = c.seqlens.empty() ? nullptr : static_cast<int32_t*>(dseq.p);
  if (c.paged) {
    p.block_table = static_cast<int32_t*>(dbt.p);
    p.block_table_stride = bt_stride;
    p.max_pages_per_seq = pages_per_seq;
    p.num_pages = slots;
    p.page_size = ps;
  }
  if (c.S_new > 0) {
    p.k_new = dkn.p;
    p.v_new = dvn.p;
    p.k_new_strides = Strides{int64_t(Hk) * c.S_new * D, int64_t(c.S_new) * D, D};
    p.v_new_strides = p.k_new_strides;
    p.seqlen_new = c.S_new;
  }
  p.o = dout.p;
  p.lse = c.with_lse ? static_cast<float*>(dlse.p) : nullptr;

  // ---- float64 reference
  std::vector<double> ro(size_t(B) * Hq * Sq * D, 0.0), rl(size_t(B) * Hq * Sq, -INFINITY);
  for (int b = 0; b < B; ++b) {
    if (!valid(b)) continue;
    const int64_t L = int64_t(cached[b]) + c.S_new;
    for (int h = 0; h < Hq; ++h) {
      const int hk = h / G;
      auto key = [&](int64_t j, int d, bool is_v) -> double {
        if (j < cached[b]) return (is_v ? vl : kl)[((size_t(b) * Hk + hk) * cap + j) * D + d];
        return (is_v ? vn : kn)[((size_t(b) * Hk + hk) * c.S_new + (j - cached[b])) * D + d];
      };
      for (int t = 0; t < Sq; ++t) {
        const int64_t limit = L - Sq + t;  // keys 0..limit
        if (limit < 0) continue;
        std::vector<double> s(limit + 1);
        double mx = -INFINITY;
        for (int64_t j = 0; j <= limit; ++j) {
          double acc = 0;
          for (int d = 0; d < D; ++d)
            acc += double(q[((size_t(b) * Hq + h) * Sq + t) * D + d]) * key(j, d, false);
          s[j] = acc * scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (auto& x : s) sum += (x = std::exp(x - mx));
        double* o = &ro[((size_t(b) * Hq + h) * Sq + t) * D];
        for (int64_t j = 0; j <= limit; ++j)
          for (int d = 0; d < D; ++d) o[d] += s[j] / sum * key(j, d, true);
        rl[(size_t(b) * Hq + h) * Sq + t] = mx + std::log(sum);
      }
    }
  }

  int device = 0, sms = 0;
  CK(cudaGetDevice(&device));
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));

  std::vector<float> first_o;
  for (int splits : c.splits) {
    ++g_cases;
    DecodeParams pp = p;
    pp.num_splits = splits;
    const int64_t ws = flashmin::cuda::decode_plan(pp, sms);
    DevBuf dws{size_t(ws)};
    CK(cudaMemset(dws.p, 0xFF, ws));  // garbage (NaN) workspace
    pp.workspace = dws.p;
    pp.workspace_bytes = ws;
    CK(cudaMemset(dout.p, 0xFF, dout.n));  // NaN in every dtype
    CK(cudaMemset(dlse.p, 0xFF, dlse.n));
    flashmin::cuda::decode(pp, nullptr);
    CK(cudaDeviceSynchronize());

    std::vector<uint8_t> ho(dout.n);
    std::vector<float> hl(size_t(B) * Hq * Sq);
    CK(cudaMemcpy(ho.data(), dout.p, dout.n, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hl.data(), dlse.p, dlse.n, cudaMemcpyDeviceToHost));
    std::vector<float> o_log(ro.size());
    double err_o = 0, err_l = 0, diff_first = 0;
    int nan_bad = 0;
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < Hq; ++h)
        for (int t = 0; t < Sq; ++t) {
          const size_t r = (size_t(b) * Hq + h) * Sq + t;
          for (int d = 0; d < D; ++d) {
            const float x =
                get(dt, ho, b * p.o_strides.batch + h * p.o_strides.head + t * p.o_strides.seq + d);
            o_log[r * D + d] = x;
            if (!valid(b) || b == c.bad_page_batch) {
              nan_bad += !std::isnan(x);
            } else if (!std::isfinite(x)) {
              nan_bad++;
            } else {
              err_o = std::max(err_o, std::fabs(double(x) - ro[r * D + d]));
              if (!first_o.empty())
                diff_first = std::max(diff_first, std::fabs(double(x) - first_o[r * D + d]));
            }
          }
          if (c.with_lse) {
            const float l = hl[r];
            if (!valid(b) || b == c.bad_page_batch) {
              nan_bad += !std::isnan(l);
            } else if (std::isinf(rl[r])) {
              nan_bad += !(std::isinf(l) && l < 0);
            } else if (!std::isfinite(l)) {
              nan_bad++;
            } else {
              err_l = std::max(err_l, std::fabs(double(l) - rl[r]));
            }
          }
        }
    // appended keys landed in the cache
    int append_bad = 0;
    if (c.S_new > 0) {
      std::vector<uint8_t> ck(hk_c.size()), cv(hv_c.size());
      CK(cudaMemcpy(ck.data(), dk.p, ck.size(), cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(cv.data(), dv.p, cv.size(), cudaMemcpyDeviceToHost));
      for (int b = 0; b < B; ++b) {
        if (!valid(b)) continue;
        for (int hk = 0; hk < Hk; ++hk)
          for (int j = 0; j < c.S_new; ++j) {
            if (!page_ok(b, cached[b] + j)) continue;
            for (int d = 0; d < D; ++d) {
              const size_t ni = ((size_t(b) * Hk + hk) * c.S_new + j) * D + d;
              append_bad += get(dt, ck, phys(b, hk, cached[b] + j, d)) != kn[ni];
              append_bad += get(dt, cv, phys(b, hk, cached[b] + j, d)) != vn[ni];
            }
          }
      }
    }
    const bool ok = err_o <= tol_o(dt) && err_l <= tol_lse(dt) && nan_bad == 0 && append_bad == 0 &&
                    diff_first <= tol_o(dt);
    std::printf(
        "%s %-44s %-4s splits=%-3d(used %3lld) max|dO|=%.2e max|dlse|=%.2e split-diff=%.2e "
        "nan/unwritten=%d append_bad=%d\n",
        ok ? "PASS" : "FAIL", c.name.c_str(), dname(dt), splits, (long long)pp.num_splits, err_o,
        err_l, diff_first, nan_bad, append_bad);
    if (!ok) {
      ++g_failures;
      res.ok = false;
    }
    if (first_o.empty()) first_o = o_log;
    res.o = o_log;
  }
  return res;
}

void compare(const char* what, const Result& a, const Result& b, DType dt) {
  ++g_cases;
  double diff = 0;
  bool nan_mismatch = false;
  for (size_t i = 0; i < a.o.size(); ++i) {
    if (std::isnan(a.o[i]) != std::isnan(b.o[i])) nan_mismatch = true;
    if (!std::isnan(a.o[i]) && !std::isnan(b.o[i]))
      diff = std::max(diff, double(std::fabs(a.o[i] - b.o[i])));
  }
  const bool ok = diff <= tol_o(dt) && !nan_mismatch && a.o.size() == b.o.size();
  std::printf("%s %-44s max diff=%.2e\n", ok ? "PASS" : "FAIL", what, diff);
  if (!ok) ++g_failures;
}

// ---------------------------------------------------------------------------------------------
// Benchmark
// ---------------------------------------------------------------------------------------------
__global__ void fill_random(__nv_bfloat16* x, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    x[i] = __float2bfloat16(float(h & 0xffff) / 32768.0f - 1.0f);
  }
}

void* g_flush = nullptr;  // harness::kFlushBytes, flushed before each queued rep

double g_copy_gbs = 0;
const char* g_mode = "";

void bench_copy() {
  const size_t bytes = size_t(4) << 30;
  DevBuf a(bytes), b(bytes);
  CK(cudaMemset(a.p, 1, bytes));
  const float ms = harness::median_event_ms(
      [&] { CK(cudaMemcpyAsync(b.p, a.p, bytes, cudaMemcpyDeviceToDevice)); }, 10, [](int) {});
  g_copy_gbs = 2.0 * bytes / (ms * 1e-3) / 1e9;
  std::printf("BENCH copy 4 GiB D2D: %.3f ms -> %.1f GB/s (read + write)\n", ms, g_copy_gbs);
}

// FM_TIMELINE=1 with a decode.cu built with FM_DECODE_TIMELINE=1: one call after a flush, then
// the per-CTA durations, the kernel span and the tail (span - mean CTA time), the mean busy
// time of the SMs in each group of 16 SM ids, and where compute warp 0 and the producer spend
// a CTA (means over CTAs: prologue = start to first block, loop, epilogue = loop end to CTA
// end; per key block: cycles waiting for data, in math, producer waiting for a free stage).
template <class F>
void report_timeline(F&& f) {
  using namespace flashmin::cuda;
  harness::flush_l2(g_flush, 0);
  f();
  CK(cudaDeviceSynchronize());
  std::vector<unsigned long long> t(kTimelineFields * (size_t(1) << 16));
  const int64_t n = decode_timeline(t.data(), int64_t(1) << 16);
  if (n == 0) {
    std::printf("TIMELINE unavailable (build decode.cu with -DFM_DECODE_TIMELINE=1)\n");
    return;
  }
  unsigned long long t0 = ~0ull, t1 = 0;
  std::vector<double> dur(n);
  std::vector<std::pair<unsigned long long, unsigned long long>> sm(1024, {~0ull, 0ull});
  double pro = 0, loop = 0, epi = 0, wait_full = 0, math = 0, wait_empty = 0, blocks = 0;
  for (int64_t i = 0; i < n; ++i) {
    const unsigned long long* c = &t[kTimelineFields * i];
    const unsigned long long s = c[kTlStart], e = c[kTlEnd], id = c[kTlSm] % 1024;
    t0 = std::min(t0, s);
    t1 = std::max(t1, e);
    dur[i] = (e - s) * 1e-3;
    sm[id] = {std::min(sm[id].first, s), std::max(sm[id].second, e)};
    pro += (double(c[kTlFirstBlock]) - double(s)) * 1e-3;
    loop += (double(c[kTlLoopEnd]) - double(c[kTlFirstBlock])) * 1e-3;
    epi += (double(e) - double(c[kTlLoopEnd])) * 1e-3;
    wait_full += double(c[kTlWaitFull]);
    math += double(c[kTlMath]);
    wait_empty += double(c[kTlWaitEmpty]);
    blocks += double(c[kTlBlocks]);
  }
  // Percentile q of a sorted vector.
  const auto at = [&](const std::vector<double>& v, double q) {
    return v[size_t(q * double(n - 1))];
  };
  std::vector<double> sorted = dur;
  std::sort(sorted.begin(), sorted.end());
  const double mean = std::accumulate(dur.begin(), dur.end(), 0.0) / double(n);
  std::printf(
      "TIMELINE %lld CTAs: span %.1f us, CTA us min %.1f p10 %.1f p50 %.1f p90 %.1f max %.1f, "
      "tail %.1f us\n",
      (long long)n, (t1 - t0) * 1e-3, sorted.front(), at(sorted, 0.1), at(sorted, 0.5),
      at(sorted, 0.9), sorted.back(), (t1 - t0) * 1e-3 - mean);
  const double per_blk = std::max(1.0, blocks);
  std::printf(
      "TIMELINE phases (mean per CTA, us): prologue %.2f loop %.2f epilogue %.2f; per key block "
      "(%.1f per CTA), cycles: warp 0 waits %.0f, math %.0f; producer waits %.0f\n",
      pro / n, loop / n, epi / n, blocks / n, wait_full / per_blk, math / per_blk,
      wait_empty / per_blk);
  // The epilogue's steps of one CTA (thread 0), us: loop end -> first barrier -> stash +
  // barrier -> merge and write -> end (the cluster merge, or nothing).
  const auto epilogue_steps = [](const unsigned long long* c, double (&out)[4]) {
    const double marks[5] = {double(c[kTlLoopEnd]), double(c[kTlEpiSync]), double(c[kTlEpiMerged]),
                             double(c[kTlEpiWritten]), double(c[kTlEnd])};
    for (int k = 0; k < 4; ++k) out[k] = (marks[k + 1] - marks[k]) * 1e-3;
  };
  // The critical path: when (after the first CTA's start) the first blocks land, the loops end
  // and the CTAs end, and the phases of the CTA that ends last.
  std::vector<double> first(n), loop_end(n), end(n);
  double epi_mean[4] = {0, 0, 0, 0}, epi_last[4];
  int64_t last = 0;
  for (int64_t i = 0; i < n; ++i) {
    const unsigned long long* c = &t[kTimelineFields * i];
    first[i] = (double(c[kTlFirstBlock]) - double(t0)) * 1e-3;
    loop_end[i] = (double(c[kTlLoopEnd]) - double(t0)) * 1e-3;
    end[i] = (double(c[kTlEnd]) - double(t0)) * 1e-3;
    if (end[i] > end[last]) last = i;
    double steps[4];
    epilogue_steps(c, steps);
    for (int k = 0; k < 4; ++k) epi_mean[k] += steps[k] / double(n);
  }
  epilogue_steps(&t[kTimelineFields * last], epi_last);
  const double last_first = first[last], last_loop = loop_end[last], last_end = end[last];
  const double last_start = (double(t[kTimelineFields * last + kTlStart]) - double(t0)) * 1e-3;
  for (auto* v : {&first, &loop_end, &end}) std::sort(v->begin(), v->end());
  std::printf(
      "TIMELINE after the first start, us: first block lands min %.2f p50 %.2f max %.2f; loop "
      "ends p10 %.1f p50 %.1f max %.1f; CTA ends p50 %.1f max %.1f; last CTA: start %.2f, first "
      "block %.2f, loop end %.1f, end %.1f (epilogue %.2f)\n",
      first.front(), at(first, 0.5), first.back(), at(loop_end, 0.1), at(loop_end, 0.5),
      loop_end.back(), at(end, 0.5), end.back(), last_start, last_first, last_loop, last_end,
      last_end - last_loop);
  std::printf(
      "TIMELINE epilogue steps, us (mean / last CTA): first barrier %.2f / %.2f, stash + barrier "
      "%.2f / %.2f, merge + write %.2f / %.2f, to the end %.2f / %.2f\n",
      epi_mean[0], epi_last[0], epi_mean[1], epi_last[1], epi_mean[2], epi_last[2], epi_mean[3],
      epi_last[3]);
  std::printf("TIMELINE SM busy us by SM-id group of 16:");
  for (int g = 0; g < 1024; g += 16) {
    double sum = 0;
    int cnt = 0;
    for (int id = g; id < g + 16; ++id) {
      if (sm[id].second == 0) continue;
      sum += (sm[id].second - sm[id].first) * 1e-3;
      ++cnt;
    }
    if (cnt > 0) std::printf(" [%d-%d] %.1f", g, g + 15, sum / cnt);
  }
  std::printf("\n");
}

// S_new > 0: each call first appends S_new new keys and values at positions [L - S_new, L).
void bench(int B, int L, std::vector<int> split_list, int page_size, int Sq = 1, int S_new = 0) {
  // FM_BENCH_D: the head dim (default 128).
  const int Hq = 32, Hk = 8,
            D = std::getenv("FM_BENCH_D") ? std::atoi(std::getenv("FM_BENCH_D")) : 128;
  const int64_t kv_elems = int64_t(B) * Hk * L * D;
  // K and V in one allocation, V starting FM_KV_GAP bytes after K ends (default 0: adjacent,
  // as torch's caching allocator places two equal tensors).
  const int64_t gap = std::getenv("FM_KV_GAP") ? std::atoll(std::getenv("FM_KV_GAP")) : 0;
  DevBuf q(size_t(B) * Hq * Sq * D * 2), kv(size_t(kv_elems) * 4 + gap),
      o(size_t(B) * Hq * Sq * D * 2), lse(size_t(B) * Hq * Sq * 4), seq(B * 4);
  void* k_p = kv.p;
  void* v_p = static_cast<char*>(kv.p) + kv_elems * 2 + gap;
  fill_random<<<1024, 256>>>(static_cast<__nv_bfloat16*>(q.p), int64_t(B) * Hq * Sq * D, 1);
  fill_random<<<4096, 256>>>(static_cast<__nv_bfloat16*>(k_p), kv_elems, 2);
  fill_random<<<4096, 256>>>(static_cast<__nv_bfloat16*>(v_p), kv_elems, 3);
  std::vector<int32_t> hs(B, L - S_new);
  CK(cudaMemcpy(seq.p, hs.data(), B * 4, cudaMemcpyHostToDevice));
  DevBuf kv_new(size_t(B) * Hk * std::max(S_new, 1) * D * 2 * 2);
  fill_random<<<256, 256>>>(static_cast<__nv_bfloat16*>(kv_new.p),
                            int64_t(B) * Hk * std::max(S_new, 1) * D * 2, 4);
  DecodeParams p;
  p.dtype = DType::kBFloat16;
  p.batch = B;
  p.heads_q = Hq;
  p.heads_kv = Hk;
  p.seqlen_q = Sq;
  p.head_dim = D;
  p.scale = 1.0f / std::sqrt(float(D));
  p.q = q.p;
  p.o = o.p;
  p.lse = static_cast<float*>(lse.p);
  p.q_strides = p.o_strides = Strides{int64_t(Hq) * Sq * D, int64_t(Sq) * D, D};
  p.k_cache = k_p;
  p.v_cache = v_p;
  p.cache_seqlens = static_cast<int32_t*>(seq.p);
  std::vector<int32_t> bt;
  DevBuf dbt(page_size ? size_t(B) * (L / page_size) * 4 : 4);
  if (page_size) {
    const int pps = L / page_size;
    const int64_t pages = int64_t(B) * pps;
    std::vector<int32_t> perm(pages);
    std::iota(perm.begin(), perm.end(), 0);
    std::mt19937 rng(5);
    std::shuffle(perm.begin(), perm.end(), rng);
    CK(cudaMemcpy(dbt.p, perm.data(), pages * 4, cudaMemcpyHostToDevice));
    p.block_table = static_cast<int32_t*>(dbt.p);
    p.block_table_stride = pps;
    p.max_pages_per_seq = pps;
    p.num_pages = pages;
    p.page_size = page_size;
    p.k_cache_strides = p.v_cache_strides =
        Strides{int64_t(Hk) * page_size * D, int64_t(page_size) * D, D};
  } else {
    p.k_cache_strides = p.v_cache_strides = Strides{int64_t(Hk) * L * D, int64_t(L) * D, D};
  }
  p.max_seqlen_k = L;
  if (S_new > 0) {
    p.k_new = kv_new.p;
    p.v_new = static_cast<__nv_bfloat16*>(kv_new.p) + int64_t(B) * Hk * S_new * D;
    p.k_new_strides = p.v_new_strides = Strides{int64_t(Hk) * S_new * D, int64_t(S_new) * D, D};
    p.seqlen_new = S_new;
  }
  int sms;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  for (int splits : split_list) {
    DecodeParams pp = p;
    pp.num_splits = splits;
    const int64_t ws = flashmin::cuda::decode_plan(pp, sms);
    DevBuf dws{size_t(ws)};
    pp.workspace = dws.p;
    pp.workspace_bytes = ws;
    auto call = [&] { flashmin::cuda::decode(pp, nullptr); };
    const float ms_q =
        harness::median_event_ms(call, 50, [](int i) { harness::flush_l2(g_flush, i); });
    if (std::getenv("FM_TIMELINE")) report_timeline(call);
    const float ms_s = harness::median_event_ms(call, 50, [](int) {});
    CK(cudaDeviceSynchronize());
    const double bytes = 2.0 * kv_elems * 2;
    const double gbs = bytes / (ms_q * 1e-3) / 1e9;
    std::printf(
        "BENCH %-8s B=%-3d L=%-6d Sq=%d %-10s splits=%-3lld%s queued=%7.1f us K+V %7.1f GB/s "
        "%5.1f%% of copy | serial=%7.1f us %7.1f GB/s\n",
        g_mode, B, L, Sq,
        (page_size ? "paged" + std::to_string(page_size)
         : S_new   ? "append" + std::to_string(S_new)
                   : std::string("contiguous"))
            .c_str(),
        (long long)pp.num_splits, splits == 0 ? "(h)" : "   ", ms_q * 1e3, gbs,
        100.0 * gbs / g_copy_gbs, ms_s * 1e3, bytes / (ms_s * 1e-3) / 1e9);
  }
}

}  // namespace

void correctness_suite() {
  const DType all[3] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};

  // 1. Split-count invariance, mixed lengths incl. empty and full, every dtype.
  for (DType dt : all) {
    Case c;
    c.name = "mixed lengths 0,1,17,1000,Smax G4 Sq1 D128";
    c.dt = dt;
    c.B = 5;
    c.Hq = 8;
    c.Hk = 2;
    c.S_max = 1100;
    c.seqlens = {0, 1, 17, 1000, 1100};
    c.splits = {1, 2, 3, 7, 32, 0};
    run_case(c);
  }
  // 2. GQA ratios x S_q.
  for (int G : {1, 2, 4, 8, 16})
    for (int Sq : {1, 4, 16}) {
      Case c;
      c.name = "GQA " + std::to_string(G) + " Sq" + std::to_string(Sq) + " lens 97,239";
      c.Hk = 2;
      c.Hq = 2 * G;
      c.Sq = Sq;
      c.S_max = 256;
      c.seqlens = {97, 239};
      c.splits = {1, 3, 0};
      c.scale_mul = 2.0f;
      run_case(c);
    }
  // 3. Head dims x dtypes (S_q = 4, causal tail matters).
  for (DType dt : all)
    for (int D : {64, 72, 128, 256, 32, 160}) {
      Case c;
      c.name = "head_dim " + std::to_string(D) + " G4 Sq4 lens 113,500";
      c.dt = dt;
      c.D = D;
      c.Sq = 4;
      c.S_max = 512;
      c.seqlens = {113, 500};
      c.splits = {1, 7};
      run_case(c);
    }
  // 3b. The 256 bucket with few rows (S_q 1): head dims whose last boxes lie past D.
  for (DType dt : {DType::kFloat16, DType::kBFloat16})
    for (int D : {136, 192, 256}) {
      Case c;
      c.name = "head_dim " + std::to_string(D) + " G4 Sq1 lens 113,500";
      c.dt = dt;
      c.D = D;
      c.S_max = 512;
      c.seqlens = {113, 500};
      c.splits = {1, 3};
      run_case(c);
    }
  // 4. Paged vs contiguous (same logical data: same seed, same capacity).
  for (DType dt : {DType::kFloat32, DType::kBFloat16})
    for (int ps : {16, 64, 256}) {
      Case c;
      c.dt = dt;
      c.B = 4;
      c.S_max = 1024;
      c.seqlens = {0, 17, 1000, 1024};
      c.Sq = 2;
      c.splits = {5};
      c.name = "contiguous (ref for paged " + std::to_string(ps) + ")";
      const Result a = run_case(c);
      c.paged = true;
      c.page_size = ps;
      c.name = "paged " + std::to_string(ps);
      const Result b = run_case(c);
      compare(("paged " + std::to_string(ps) + " == contiguous " + dname(dt)).c_str(), a, b, dt);
    }
  // 5. Append path, contiguous and paged, every dtype. Row-major CTAs (G 8 x S_q up to 4) take
  //    the append kernel. 5b: key-major CTAs (G 4 x S_q 2 <= 8 rows) on the TMA path write the
  //    new keys themselves (fused append) across a block, a page and a split boundary; up to 8
  //    keys (D 128, 16-bit) fit one round of the producer warp, 9 go through the append kernel.
  struct AppendCases {
    const char* name;
    int Hq, max_sq, page_size;  // S_q = min(S_new, max_sq)
    std::vector<int> seqlens, s_new;
  };
  for (const AppendCases& a : {AppendCases{"append", 16, 4, 32, {0, 17, 300}, {1, 5}},
                               AppendCases{"fused append", 8, 2, 16, {0, 60, 300}, {3, 8, 9}}})
    for (DType dt : all)
      for (bool paged : {false, true})
        for (int S_new : a.s_new) {
          Case c;
          c.dt = dt;
          c.B = 3;
          c.Hq = a.Hq;
          c.Hk = 2;
          c.Sq = std::min(S_new, a.max_sq);
          c.S_new = S_new;
          c.S_max = 512;
          c.seqlens = a.seqlens;
          c.paged = paged;
          c.page_size = a.page_size;
          c.splits = {1, 7, 0};
          c.name = std::string(a.name) + " S_new=" + std::to_string(S_new) +
                   (paged ? " paged" + std::to_string(a.page_size) : std::string(" contiguous"));
          run_case(c);
        }
  // 6. Strided layouts (B, S, H, D) for q/o and the cache; lse not requested.
  for (bool paged : {false, true}) {
    Case c;
    c.B = 3;
    c.Hq = 16;  // G = 16, S_q = 3: 48 rows = 3 row tiles
    c.Hk = 1;
    c.Sq = 3;
    c.S_max = 700;
    c.seqlens = {700, 1, 333};
    c.q_bshd = c.cache_bshd = true;
    c.paged = paged;
    c.page_size = 64;
    c.with_lse = false;
    c.S_new = 2;
    c.seqlens = {698, 1, 333};
    c.splits = {1, 4, 0};
    c.name = std::string("BSHD strides, append, no lse") + (paged ? " paged64" : "");
    run_case(c);
  }
  // 7. Invalid device data -> NaN for that sequence only.
  for (bool paged : {false, true}) {
    Case c;
    c.B = 5;
    c.S_max = 256;
    c.seqlens = {-1, 50, 257, 30, 255};  // 255 + S_new 2 > 256: invalid too
    c.S_new = 2;
    c.Sq = 2;
    c.paged = paged;
    c.page_size = 16;
    c.splits = {1, 3};
    c.name = std::string("invalid lengths -> NaN") + (paged ? " paged" : "");
    run_case(c);
  }
  {
    Case c;
    c.B = 3;
    c.S_max = 256;
    c.seqlens = {100, 200, 30};
    c.paged = true;
    c.page_size = 16;
    c.bad_page_batch = 1;
    c.splits = {1, 4};
    c.name = "invalid page index -> NaN";
    run_case(c);
  }
  // 9. Tensor-copy specifics: several sub-blocks per block (pages smaller than B_c: bf16 D64
  //    B_c 128 with page 32, fp32 D256 B_c 16 with page 16), head dim 8 (one partial box),
  //    a single KV head and batch 1 (size-1 axes), lengths ending mid-box.
  {
    Case c;
    c.D = 64;
    c.B = 3;
    c.S_max = 700;
    c.seqlens = {700, 129, 383};
    c.paged = true;
    c.page_size = 32;
    c.splits = {1, 3};
    c.name = "D64 paged32 (4 sub-blocks per block)";
    run_case(c);
    c.dt = DType::kFloat32;
    c.D = 256;
    c.page_size = 16;
    c.name = "f32 D256 paged16";
    run_case(c);
    Case d;
    d.D = 8;
    d.B = 1;
    d.Hq = 4;
    d.Hk = 1;
    d.S_max = 1000;
    d.seqlens = {997};
    d.splits = {1, 5, 0};
    d.name = "D8 B1 Hk1";
    run_case(d);
    for (DType dt : {DType::kFloat16, DType::kFloat32}) {
      d.dt = dt;
      d.D = 96;
      d.Sq = 3;
      d.S_max = 4111;
      d.seqlens = {4099};
      d.name = "D96 Sq3 L4099";
      run_case(d);
    }
  }
  // 10. Many (b, h_k) units of uneven lengths, empty ones between non-empty ones, more splits
  //     than some sequences have blocks.
  for (DType dt : {DType::kFloat16, DType::kBFloat16}) {
    Case c;
    c.dt = dt;
    c.B = 9;
    c.Hq = 8;
    c.Hk = 4;
    c.S_max = 1300;
    c.seqlens = {0, 1, 63, 64, 65, 500, 0, 1300, 2};
    c.splits = {1, 2, 3, 5, 13, 64, 200, 0};
    c.name = "9 sequences, uneven lengths, G2";
    run_case(c);
    c.Hq = 16;
    c.Hk = 1;
    c.Sq = 1;
    c.name = "9 sequences, G16 (16 rows)";
    c.splits = {3, 7, 0};
    run_case(c);
    // Few columns, 9-16 splits: more splits than a portable cluster merges, so the combine
    // kernel (session 14 tried clusters of 9-16 at one CTA per SM; the GPCs hold too few).
    Case d;
    d.dt = dt;
    d.B = 2;
    d.Hq = 8;
    d.Hk = 2;
    d.S_max = 4096;
    d.seqlens = {4000, 37};
    d.splits = {9, 12, 16};
    d.name = "2 sequences, 9-16 splits (large clusters)";
    run_case(d);
  }
  // 8. seqlens == nullptr (every sequence S_max), long sequence with heuristic split.
  {
    Case c;
    c.B = 2;
    c.Hq = 32;
    c.Hk = 8;
    c.S_max = 333;
    c.splits = {1, 0};
    c.name = "seqlens=nullptr";
    run_case(c);
    Case d;
    d.B = 1;
    d.Hq = 32;
    d.Hk = 8;
    d.S_max = 20000;
    d.seqlens = {19999};
    d.S_new = 1;
    d.splits = {0, 256};
    d.name = "long 20000 heuristic + 256 splits";
    run_case(d);
  }
}

int main(int argc, char** argv) {
  using flashmin::cuda::DecodeCopyMode;
  const bool do_bench = !(argc > 1 && std::strcmp(argv[1], "--no-bench") == 0);
  const bool do_check = !(argc > 1 && std::strcmp(argv[1], "--bench-only") == 0);
  // --bench-only --l2: also sweep the tensor maps' L2 promotion.
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, cc %d.%d\n", prop.name, prop.multiProcessorCount, prop.major,
              prop.minor);
  const bool hopper = prop.major >= 9;

  // Correctness of both copy paths (the tensor-copy path exists on sm_90+ only).
  if (do_check) {
    flashmin::cuda::decode_set_tuning(DecodeCopyMode::kCpAsync, true);
    std::printf("=== copy path: cp.async\n");
    correctness_suite();
    const int fail_cp = g_failures;
    if (hopper) {
      flashmin::cuda::decode_set_tuning(DecodeCopyMode::kBulk, true);
      std::printf("=== copy path: bulk (sm_90 TMA tensor copies + mbarriers)\n");
      correctness_suite();
      // The row-major step for the CTAs that take the key-major one by default (<= 8 rows).
      flashmin::cuda::decode_set_key_major(false);
      std::printf("=== copy path: bulk, row-major step\n");
      correctness_suite();
      flashmin::cuda::decode_set_key_major(true);
      // The persistent kernel (key-major, one split, contiguous) wherever it applies, with at
      // most 3 CTAs, so every CTA works through several (b, h_k) units.
      // Both unit orders: strided (c, c + G, ...) and in runs of neighbours.
      for (const int blocked : {0, 1}) {
        flashmin::cuda::decode_set_persistent(3, blocked);
        std::printf("=== copy path: bulk, persistent kernel (<= 3 CTAs, %s units)\n",
                    blocked ? "blocked" : "strided");
        correctness_suite();
      }
      flashmin::cuda::decode_set_persistent(0);
      // Every split count through the combine kernel (<= 8 splits merge in a cluster above).
      flashmin::cuda::decode_set_cluster_merge(false);
      std::printf("=== copy path: bulk, cluster merge off\n");
      correctness_suite();
      flashmin::cuda::decode_set_cluster_merge(true);
      // The alternative CTA for every case, whatever the heuristic would pick: the wide CTA (8
      // compute warps, 64 KB stages) for narrow rows, the dense CTA for 512-byte key-major rows.
      flashmin::cuda::decode_set_tuning(DecodeCopyMode::kBulkWide, true);
      std::printf("=== copy path: bulk, wide CTA\n");
      correctness_suite();
    }
    const int fail_bulk = g_failures - fail_cp;
    // The compact cp.async tile (2 stages, <= 32 rows per CTA) that sm_86/89 parts run, forced
    // here on a GPU whose shared memory fits the regular tile too (fp32 head dims > 128 keep it).
    flashmin::cuda::decode_set_tuning(DecodeCopyMode::kCompact, true);
    std::printf("=== copy path: cp.async, compact tile\n");
    correctness_suite();
    std::printf("correctness: %d checks, %d failures (cp.async %d, bulk %d, compact %d)\n", g_cases,
                g_failures, fail_cp, fail_bulk, g_failures - fail_cp - fail_bulk);
  }

  if (do_bench) {
    CK(cudaMalloc(&g_flush, harness::kFlushBytes));
    bench_copy();
    flashmin::cuda::decode_set_tuning(hopper ? DecodeCopyMode::kBulk : DecodeCopyMode::kCpAsync,
                                      true);
    g_mode = hopper ? "bulk" : "cp.async";
    if (argc > 3 && std::strcmp(argv[2], "--shape") == 0) {  // one shape (for ncu): B L [splits]
      bench(std::atoi(argv[3]), std::atoi(argv[4]), {argc > 5 ? std::atoi(argv[5]) : 0}, 0);
      CK(cudaFree(g_flush));
      return g_failures == 0 ? 0 : 1;
    }
    // Several shapes in one warm process, two rounds: "B:L:splits[:w|c|t[:S_q[:S_new]]],..."
    // (splits 0 = the heuristic; w = the wide CTA, c = the cp.async path, t = the TMA tiles'
    // heuristic; S_new > 0 appends that many keys first).
    if (argc > 3 && std::strcmp(argv[2], "--shapes") == 0) {
      const std::string list = argv[3];
      for (int rep = 0; rep < 2; ++rep) {
        for (size_t at = 0; at < list.size();) {
          const size_t end = std::min(list.find(',', at), list.size());
          const std::string item = list.substr(at, end - at);
          at = end + 1;
          int B = 0, L = 0, splits = 0, Sq = 1, S_new = 0;
          char path = 0;  // 'w' wide CTA, 'c' cp.async, else ('t') the TMA tiles
          if (std::sscanf(item.c_str(), "%d:%d:%d:%c:%d:%d", &B, &L, &splits, &path, &Sq, &S_new) <
                  3 ||
              B < 1 || L < 1 || splits < 0 || Sq < 1 || Sq > 16 || S_new < 0 || S_new > L) {
            std::fprintf(stderr,
                         "--shapes: bad item '%s' (expected B:L:splits[:w|c|t[:S_q[:S_new]]])\n",
                         item.c_str());
            return 2;
          }
          flashmin::cuda::decode_set_tuning(path == 'w'   ? DecodeCopyMode::kBulkWide
                                            : path == 'c' ? DecodeCopyMode::kCpAsync
                                                          : DecodeCopyMode::kBulk,
                                            true);
          g_mode = path == 'w' ? "wide" : path == 'c' ? "cp.async" : "bulk";
          // FM_BENCH_PAGE: a paged cache with that page size (default 0: contiguous).
          const char* page_env = std::getenv("FM_BENCH_PAGE");
          bench(B, L, {splits}, page_env ? std::atoi(page_env) : 0, Sq, S_new);
        }
      }
      CK(cudaFree(g_flush));
      return g_failures == 0 ? 0 : 1;
    }
    if (argc > 2 && std::strcmp(argv[2], "--wide-sweep") == 0) {  // the wide CTA, any split count
      flashmin::cuda::decode_set_tuning(DecodeCopyMode::kBulkWide, true);
      g_mode = "wide";
      for (int rep = 0; rep < 2; ++rep) {
        bench(1, 16384, {8, 16, 32}, 0);
        bench(1, 65536, {8, 16, 32}, 0);
        bench(8, 8192, {1, 2, 4}, 0);
        bench(16, 4096, {1, 2}, 0);
      }
      CK(cudaFree(g_flush));
      return g_failures == 0 ? 0 : 1;
    }
    if (argc > 2 && std::strcmp(argv[2], "--quick") == 0) {  // the heuristic on the main shapes
      for (int rep = 0; rep < 2; ++rep) {
        bench(1, 16384, {0}, 0);
        bench(1, 65536, {0}, 0);
        bench(8, 8192, {0}, 0);
        bench(16, 4096, {0}, 0);
        bench(64, 1024, {0}, 0);
        bench(64, 2048, {0}, 0);
        bench(32, 8192, {0}, 0);
        bench(64, 4096, {0}, 0);
        bench(128, 2048, {0}, 0);
        bench(32, 8192, {0}, 16);
        bench(8, 8192, {0}, 16);
        bench(32, 8192, {0}, 0, 4);
        bench(64, 1024, {0}, 16);
        bench(128, 2048, {0}, 64);
      }
      CK(cudaFree(g_flush));
      return g_failures == 0 ? 0 : 1;
    }
    bench(1, 65536, {0, 16, 24, 32, 40, 48, 64, 66}, 0);
    bench(8, 8192, {0, 2, 3, 4, 6, 8}, 0);
    bench(16, 4096, {0, 1, 2, 3, 4}, 0);
    bench(32, 8192, {0, 1, 2, 3, 4, 8}, 0);
    bench(64, 2048, {0, 1, 2, 3, 4}, 0);
    bench(64, 4096, {0, 1, 2, 4}, 0);
    bench(128, 2048, {0, 1, 2, 4}, 0);
    bench(64, 1024, {0, 1, 2, 3, 4}, 0);
    bench(32, 8192, {0}, 16);
    bench(32, 8192, {0}, 256);
    bench(8, 8192, {0}, 16);
    bench(32, 8192, {0}, 0, 4);
    if (hopper) {
      flashmin::cuda::decode_set_tuning(DecodeCopyMode::kCpAsync, true);
      g_mode = "cp.async";
      bench(1, 65536, {0}, 0);
      bench(32, 8192, {0}, 0);
      flashmin::cuda::decode_set_tuning(DecodeCopyMode::kBulk, false);
      g_mode = "no-PDL";
      bench(1, 65536, {0}, 0);
      bench(8, 8192, {0}, 0);
      if (argc > 2 && std::strcmp(argv[2], "--l2") == 0) {
        flashmin::cuda::decode_set_tuning(DecodeCopyMode::kBulk, true);
        for (int promo : {0, 128, 256}) {
          flashmin::cuda::decode_set_tma_l2_promotion(promo);
          static char mode[32];
          std::snprintf(mode, sizeof(mode), "L2p%d", promo);
          g_mode = mode;
          bench(1, 65536, {32}, 0);
          bench(8, 8192, {4}, 0);
          bench(32, 8192, {1}, 0);
        }
        flashmin::cuda::decode_set_tma_l2_promotion(128);  // the default
      }
    }
    CK(cudaFree(g_flush));
  }
  return g_failures == 0 ? 0 : 1;
}
