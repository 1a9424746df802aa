// Standalone GPU check for the FA2 forward (src/cuda/fa2_fwd.cu): correctness against a float64
// host reference over odd sizes, S_q != S_k, GQA/MQA, causal (top-left, bottom-right, negative
// offsets), strided layouts, every head-dim bucket; then timings on the benchmark shapes.
//
//   nvcc -std=c++17 -O3 --expt-relaxed-constexpr -Iinclude -Isrc \
//        -gencode arch=compute_90a,code=sm_90a \
//        -DFLASHMIN_HAS_SM90A=1 tests/cuda/fa2_fwd_check.cu src/cuda/fa2_fwd.cu \
//        src/cuda/fa2_fwd_sm90.cu src/cuda/tensor_map.cpp src/cuda/cuda_error.cpp -o /tmp/fa2 &&
//        /tmp/fa2
//
// On an sm_90 GPU this checks and times the sm90 family; FLASHMIN_FORCE_SM80=1 the sm80 one.
// Tuning mode (-DFA2_TUNE_D=64|128|160|192|256, no separate fa2_fwd.cu on the command line):
// includes the kernel source and times alternative tile configurations of that bucket.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#ifdef FA2_TUNE_D
#include "cuda/fa2_fwd.cu"
#else
#include "cuda/cuda_api.h"
#endif

using flashmin::AttnParams;
using flashmin::DType;

#define CK(x)                                                                                 \
  do {                                                                                        \
    cudaError_t e_ = (x);                                                                     \
    if (e_ != cudaSuccess) {                                                                  \
      std::fprintf(stderr, "CUDA %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(2);                                                                           \
    }                                                                                         \
  } while (0)

static uint64_t g_rng = 0x12345678abcdefULL;
static double randn() {
  auto u01 = [] {
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return ((g_rng >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  };
  const double u1 = u01(), u2 = u01();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

static uint16_t to_bits(float x, DType t) {
  uint16_t r;
  if (t == DType::kFloat16) {
    __half h = __float2half_rn(x);
    std::memcpy(&r, &h, 2);
  } else {
    __nv_bfloat16 h = __float2bfloat16_rn(x);
    std::memcpy(&r, &h, 2);
  }
  return r;
}
static double from_bits(uint16_t b, DType t) {
  if (t == DType::kFloat16) {
    __half h;
    std::memcpy(&h, &b, 2);
    return __half2float(h);
  }
  __nv_bfloat16 h;
  std::memcpy(&h, &b, 2);
  return __bfloat162float(h);
}
static bool is_nan_bits(uint16_t b, DType t) { return std::isnan(from_bits(b, t)); }

// A (B, H, S, D) tensor in one of two layouts, optionally with padded rows:
//   BHSD: strides (H*S*Ds, S*Ds, Ds)   BSHD: strides (S*H*Ds, Ds, H*Ds)   Ds = D + pad
struct Tensor4 {
  int64_t B, H, S, D, pad;
  bool bshd;
  flashmin::Strides st;
  int64_t numel;
  std::vector<uint16_t> host;
  uint16_t* dev = nullptr;

  Tensor4(int64_t B_, int64_t H_, int64_t S_, int64_t D_, bool bshd_, int64_t pad_)
      : B(B_), H(H_), S(S_), D(D_), pad(pad_), bshd(bshd_) {
    const int64_t Ds = D + pad;
    if (bshd)
      st = {S * H * Ds, Ds, H * Ds};
    else
      st = {H * S * Ds, S * Ds, Ds};
    numel = std::max<int64_t>(B * H * S * Ds, 8);
    host.assign(numel, 0x7fff);  // NaN bits (fp16 and bf16)
  }
  int64_t off(int64_t b, int64_t h, int64_t s, int64_t d) const {
    return b * st.batch + h * st.head + s * st.seq + d;
  }
  void fill_random(DType t) {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t s = 0; s < S; ++s)
          for (int64_t d = 0; d < D; ++d) host[off(b, h, s, d)] = to_bits((float)randn(), t);
  }
  void upload() {
    if (!dev) CK(cudaMalloc(&dev, numel * 2));
    CK(cudaMemcpy(dev, host.data(), numel * 2, cudaMemcpyHostToDevice));
  }
  void download() { CK(cudaMemcpy(host.data(), dev, numel * 2, cudaMemcpyDeviceToHost)); }
  double at(int64_t b, int64_t h, int64_t s, int64_t d, DType t) const {
    return from_bits(host[off(b, h, s, d)], t);
  }
  ~Tensor4() {
    if (dev) cudaFree(dev);
  }
};

struct Case {
  int64_t B, Hq, Hk, Sq, Sk, D;
  bool causal;
  int64_t offset;
  bool bshd;
  int64_t pad;
  float scale;  // 0: 1/sqrt(D)
};

// The forward under test: the library entry point, or one tuning variant.
static void (*g_launch)(const AttnParams&, cudaStream_t) = flashmin::cuda::fa2_fwd_mma;
static void run_fwd(const AttnParams& p) { g_launch(p, 0); }

static bool check_case(const Case& c, DType t) {
  Tensor4 q(c.B, c.Hq, c.Sq, c.D, c.bshd, c.pad), k(c.B, c.Hk, c.Sk, c.D, c.bshd, c.pad),
      v(c.B, c.Hk, c.Sk, c.D, c.bshd, c.pad), o(c.B, c.Hq, c.Sq, c.D, c.bshd, c.pad);
  q.fill_random(t);
  k.fill_random(t);
  v.fill_random(t);
  q.upload();
  k.upload();
  v.upload();
  o.upload();  // poisoned
  const int64_t n_lse = std::max<int64_t>(c.B * c.Hq * c.Sq, 1);
  float* lse_d;
  CK(cudaMalloc(&lse_d, n_lse * 4));
  CK(cudaMemset(lse_d, 0xff, n_lse * 4));  // NaN

  AttnParams p;
  p.q = q.dev;
  p.k = k.dev;
  p.v = v.dev;
  p.o = o.dev;
  p.lse = lse_d;
  p.q_strides = q.st;
  p.k_strides = k.st;
  p.v_strides = v.st;
  p.o_strides = o.st;
  p.batch = c.B;
  p.heads_q = c.Hq;
  p.heads_kv = c.Hk;
  p.seqlen_q = c.Sq;
  p.seqlen_k = c.Sk;
  p.head_dim = c.D;
  p.scale = c.scale != 0.f ? c.scale : 1.0f / std::sqrt((float)c.D);
  p.is_causal = c.causal;
  p.causal_offset = c.offset;
  p.dtype = t;
  run_fwd(p);
  CK(cudaDeviceSynchronize());
  o.download();
  std::vector<float> lse(n_lse);
  CK(cudaMemcpy(lse.data(), lse_d, n_lse * 4, cudaMemcpyDeviceToHost));
  CK(cudaFree(lse_d));

  const double atol = t == DType::kBFloat16 ? 2e-2 : 3e-3;
  const double rtol = t == DType::kBFloat16 ? 1.6e-2 : 4e-3;
  double max_err = 0, max_rel = 0, max_lse_err = 0;
  int64_t bad = 0, bad_lse = 0, bad_pad = 0;
  const int64_t group = c.Hq / c.Hk;
  std::vector<double> s(std::max<int64_t>(c.Sk, 1));
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t i = 0; i < c.Sq; ++i) {
        const int64_t hk = h / group;
        double mx = -INFINITY;
        for (int64_t j = 0; j < c.Sk; ++j) {
          if (c.causal && j > i + c.offset) {
            s[j] = -INFINITY;
            continue;
          }
          double acc = 0;
          for (int64_t d = 0; d < c.D; ++d) acc += q.at(b, h, i, d, t) * k.at(b, hk, j, d, t);
          s[j] = acc * p.scale;
          mx = std::max(mx, s[j]);
        }
        double l = 0;
        for (int64_t j = 0; j < c.Sk; ++j)
          s[j] = s[j] == -INFINITY ? 0.0 : std::exp(s[j] - mx), l += s[j];
        const double ref_lse = l > 0 ? mx + std::log(l) : -INFINITY;
        const float got_lse = lse[(b * c.Hq + h) * c.Sq + i];
        if (std::isinf(ref_lse)) {
          if (!(std::isinf(got_lse) && got_lse < 0)) ++bad_lse;
        } else {
          const double e = std::fabs(got_lse - ref_lse);
          max_lse_err = std::max(max_lse_err, e);
          if (!(e <= 2e-3 + 1e-5 * std::fabs(ref_lse))) ++bad_lse;
        }
        for (int64_t d = 0; d < c.D; ++d) {
          double ref = 0;
          if (l > 0) {
            for (int64_t j = 0; j < c.Sk; ++j)
              if (s[j] != 0) ref += s[j] * v.at(b, hk, j, d, t);
            ref /= l;
          }
          const double got = o.at(b, h, i, d, t);
          const double e = std::fabs(got - ref);
          if (!(e <= atol + rtol * std::fabs(ref))) ++bad;
          if (std::isnan(e))
            max_err = NAN;
          else if (!std::isnan(max_err))
            max_err = std::max(max_err, e);
          max_rel = std::max(max_rel, e / (std::fabs(ref) + 1e-2));
        }
        for (int64_t d = c.D; d < c.D + c.pad; ++d)
          if (!is_nan_bits(o.host[o.off(b, h, i, d)], t)) ++bad_pad;
      }
  // Elements outside the logical tensor (BSHD padding rows, etc.) must stay poisoned.
  int64_t logical_written = 0;
  for (int64_t x = 0; x < o.numel; ++x) logical_written += !is_nan_bits(o.host[x], t);
  const int64_t expect_written = c.B * c.Hq * c.Sq * c.D;
  if (logical_written != expect_written) bad_pad += std::llabs(logical_written - expect_written);

  const bool ok = bad == 0 && bad_lse == 0 && bad_pad == 0;
  std::printf(
      "%s %-4s B=%ld Hq=%ld Hk=%ld Sq=%ld Sk=%ld D=%ld causal=%d off=%ld %s pad=%ld | max_abs=%.3e "
      "max_rel=%.3e lse_err=%.3e bad=%ld bad_lse=%ld bad_pad=%ld\n",
      ok ? "PASS" : "FAIL", t == DType::kFloat16 ? "fp16" : "bf16", (long)c.B, (long)c.Hq,
      (long)c.Hk, (long)c.Sq, (long)c.Sk, (long)c.D, (int)c.causal, (long)c.offset,
      c.bshd ? "BSHD" : "BHSD", (long)c.pad, max_err, max_rel, max_lse_err, (long)bad,
      (long)bad_lse, (long)bad_pad);
  return ok;
}

// ---------------------------------------------------------------------------------------------
// Timing
// ---------------------------------------------------------------------------------------------
__global__ void fill_kernel(uint16_t* x, int64_t n, uint32_t seed, bool bf16) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    const float u = (h & 0xffffff) * (1.f / 16777216.f) * 3.4641f - 1.732f;  // unit variance
    if (bf16) {
      __nv_bfloat16 b = __float2bfloat16_rn(u);
      x[i] = *reinterpret_cast<uint16_t*>(&b);
    } else {
      __half b = __float2half_rn(u);
      x[i] = *reinterpret_cast<uint16_t*>(&b);
    }
  }
}

template <class Launch>
static double time_ms(Launch&& launch, double flops_hint) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  launch();
  CK(cudaDeviceSynchronize());
  CK(cudaEventRecord(a));
  launch();
  CK(cudaEventRecord(b));
  CK(cudaEventSynchronize(b));
  float one;
  CK(cudaEventElapsedTime(&one, a, b));
  const int reps = std::max(5, std::min(50, (int)(150.0 / std::max(one, 1e-3f))));
  for (int w = 0; w < 3; ++w) launch();
  std::vector<float> ts;
  for (int r = 0; r < reps; ++r) {
    CK(cudaEventRecord(a));
    launch();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    ts.push_back(ms);
  }
  std::sort(ts.begin(), ts.end());
  (void)flops_hint;
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return ts[ts.size() / 2];
}

struct BenchBufs {
  uint16_t *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  float* lse = nullptr;
  BenchBufs() {
    const int64_t n = 16384LL * 2048;
    CK(cudaMalloc(&q, n * 2));
    CK(cudaMalloc(&k, n * 2));
    CK(cudaMalloc(&v, n * 2));
    CK(cudaMalloc(&o, n * 2));
    CK(cudaMalloc(&lse, 16384LL * 32 * 4));
  }
  void fill(bool bf16) {
    const int64_t n = 16384LL * 2048;
    fill_kernel<<<1024, 256>>>(q, n, 1u, bf16);
    fill_kernel<<<1024, 256>>>(k, n, 2u, bf16);
    fill_kernel<<<1024, 256>>>(v, n, 3u, bf16);
    CK(cudaDeviceSynchronize());
  }
};

static AttnParams bench_params(const BenchBufs& bb, int D, int S, bool causal, DType t) {
  const int H = 2048 / D, B = 16384 / S;
  AttnParams p;
  p.q = bb.q;
  p.k = bb.k;
  p.v = bb.v;
  p.o = bb.o;
  p.lse = bb.lse;
  const flashmin::Strides st{(int64_t)H * S * D, (int64_t)S * D, D};
  p.q_strides = p.k_strides = p.v_strides = p.o_strides = st;
  p.batch = B;
  p.heads_q = p.heads_kv = H;
  p.seqlen_q = p.seqlen_k = S;
  p.head_dim = D;
  p.scale = 1.0f / std::sqrt((float)D);
  p.is_causal = causal;
  p.dtype = t;
  return p;
}

static double tflops(const AttnParams& p, double ms) {
  double f = 4.0 * p.batch * p.heads_q * p.seqlen_q * p.seqlen_k * p.head_dim;
  if (p.is_causal && p.seqlen_q == p.seqlen_k) f *= 0.5;
  return f / (ms * 1e-3) / 1e12;
}

// The correctness cases of the full run (the tuning mode runs those of its bucket).
static std::vector<Case> all_cases() {
  std::vector<Case> cases = {
      //  B  Hq Hk  Sq   Sk    D  causal off  bshd pad scale
      {1, 1, 1, 1, 1, 64, false, 0, false, 0, 0},
      {2, 2, 2, 17, 17, 8, false, 0, false, 0, 0},
      {1, 2, 1, 97, 113, 40, false, 0, false, 0, 0},
      {2, 4, 2, 113, 97, 64, true, 0, false, 0, 0},
      {1, 2, 2, 239, 239, 72, true, 0, true, 8, 0},
      {1, 3, 1, 128, 256, 128, true, 128, false, 0, 0},  // bottom-right
      {2, 2, 2, 239, 17, 136, false, 0, true, 0, 0},
      {1, 2, 2, 97, 239, 256, true, 142, false, 8, 0},
      {1, 1, 1, 256, 256, 256, false, 0, false, 0, 0},
      {1, 8, 2, 64, 300, 128, false, 0, true, 16, 0},  // GQA
      {1, 4, 1, 33, 201, 96, true, 168, false, 0, 0},  // MQA, bottom-right
      {1, 2, 2, 17, 0, 64, false, 0, false, 0, 0},     // S_k = 0
      {1, 2, 2, 17, 0, 64, true, 0, false, 0, 0},
      {1, 2, 2, 100, 100, 64, true, -30, false, 0, 0},  // rows that see nothing
      {1, 2, 2, 200, 150, 128, true, -70, true, 0, 0},
      {1, 1, 1, 1, 1000, 32, false, 0, false, 0, 0},
      {1, 1, 1, 1000, 1, 32, true, 0, false, 0, 0},
      {2, 2, 2, 130, 260, 64, false, 0, false, 0, -0.2f},  // negative scale
      {1, 2, 2, 70, 70, 64, true, 0, false, 0, 1e-20f},    // tiny scale
      {1, 2, 1, 600, 700, 128, true, 100, false, 0, 0},
      {1, 4, 2, 1000, 1500, 64, true, 500, true, 0, 0},  // many K/V blocks, GQA
      {2, 2, 1, 700, 900, 256, false, 0, false, 8, 0},
      // d256 with S_k >= 1024 (causal >= 4096): the 80-key blocks, O written from registers
      {2, 2, 1, 300, 1100, 256, false, 0, false, 8, 0},
      {1, 2, 1, 1000, 4200, 256, true, 3200, true, 0, 0},
      {1, 2, 2, 130, 1030, 248, false, 0, false, 0, 0},
      {1, 1, 1, 200, 4096, 200, true, -100, false, 0, 0},  // rows that see nothing
  };
  const int dims[] = {8,   16,  32,  40,  48,  64,  72,  80,  96,  104, 120, 128,
                      136, 152, 160, 168, 192, 200, 216, 224, 232, 248, 256};
  int n = 0;
  for (int d : dims) {
    cases.push_back({1, 2, 1, (n % 2) ? 131 : 77, (n % 2) ? 77 : 131, d, n % 3 != 0,
                     (n % 2) ? -40 : 0, n % 4 == 1, (n % 4 == 3) ? 8 : 0, 0});
    ++n;
  }

  return cases;
}

[[maybe_unused]] static const int kSeqs[] = {512, 1024, 2048, 4096, 8192, 16384};

#ifdef FA2_TUNE_D
// ---- tuning: alternative configurations of one bucket -------------------------------------
using namespace flashmin::cuda;
template <class Tr>
static void launch_variant(const AttnParams& p, cudaStream_t stream) {
  if (p.dtype == DType::kFloat16)
    fa2_fwd_sm80_launch<__half, Tr>(p, stream);
  else
    fa2_fwd_sm80_launch<__nv_bfloat16, Tr>(p, stream);
}

static int g_tune_fails = 0;
// One variant: every correctness case of this bucket (full list + 3 extra) in both dtypes, then
// the benchmark shapes in both dtypes as TIME lines tagged with the variant (fa2_fwd_sdpa.py
// reads them).
template <class Tr>
static void tune_one(const char* name, BenchBufs& bb) {
  g_launch = launch_variant<Tr>;
  constexpr int D = FA2_TUNE_D;
  std::vector<Case> cases = {{1, 2, 1, 131, 77, D, true, -40, false, 0, 0},
                             {2, 2, 2, 239, 300, D - 8, false, 0, false, 0, 0},
                             {1, 3, 3, 200, 200, D, true, 0, true, 8, 0}};
  for (const Case& c : all_cases())
    if (flashmin::head_dim_bucket(c.D) == D) cases.push_back(c);
  int fails = 0;
  for (const Case& c : cases)
    for (DType t : {DType::kBFloat16, DType::kFloat16}) fails += !check_case(c, t);
  g_tune_fails += fails;
  std::printf("TUNE D=%d %-30s smem=%6zu checks=%s (%zu)\n", D, name,
              Tr::template smem_bytes<__half>(), fails ? "FAIL" : "pass", 2 * cases.size());
  std::string tag(name);
  for (char& ch : tag)
    if (ch == ' ') ch = '_';
  for (DType t : {DType::kBFloat16, DType::kFloat16}) {
    bb.fill(t == DType::kBFloat16);
    for (int causal = 0; causal < 2; ++causal)
      for (int S : kSeqs) {
        AttnParams p = bench_params(bb, D, S, causal, t);
        const double ms = time_ms([&] { run_fwd(p); }, 0);
        std::printf("TIME %s %d %d %d %d %d %.4f %.1f %s\n",
                    t == DType::kBFloat16 ? "bf16" : "fp16", (int)p.batch, (int)p.heads_q, S, D,
                    causal, ms, tflops(p, ms), tag.c_str());
      }
  }
  std::fflush(stdout);
}
#define TUNE(...) tune_one<Fa2FwdSm80Config<FA2_TUNE_D, __VA_ARGS__>>(#__VA_ARGS__, bb)

int main() {
  BenchBufs bb;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount);
  //    B_r  B_c warps stages QinRegs minCTAs split
#if FA2_TUNE_D == 64
  TUNE(128, 64, 4, 2, true, 2);
  TUNE(128, 64, 4, 1, true, 2);
#elif FA2_TUNE_D == 128
  TUNE(128, 48, 4, 2, false, 2);  // chosen
  TUNE(128, 64, 4, 1, false, 2);
#elif FA2_TUNE_D == 160 || FA2_TUNE_D == 192
  TUNE(64, 64, 4, 2, false, 1);  // the tile before session 13
  TUNE(64, 64, 4, 1, false, 1);  // chosen (two CTAs per SM; fits 99 KB)
#elif FA2_TUNE_D == 256
  TUNE(64, 32, 4, 2, false, 2);  // the previous tile
  TUNE(64, 64, 4, 1, false, 2);
  TUNE(128, 64, 8, 1, false, 1);
  TUNE(64, 64, 4, 1, false, 2, 2);
  TUNE(128, 64, 8, 1, false, 1, 2);  // chosen
  TUNE(64, 32, 4, 2, false, 2, 2);
#endif
  std::printf("tune D=%d: %d check failure(s)\n", FA2_TUNE_D, g_tune_fails);
  return g_tune_fails ? 1 : 0;
}

#else
int main(int argc, char** argv) {
  const bool skip_bench = argc > 1 && std::strcmp(argv[1], "--no-bench") == 0;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount);

  const std::vector<Case> cases = all_cases();
  int fails = 0;
  for (const Case& c : cases)
    for (DType t : {DType::kBFloat16, DType::kFloat16}) fails += !check_case(c, t);
  std::printf("correctness: %d failure(s) over %zu checks\n", fails, cases.size() * 2);

  if (!skip_bench) {
    BenchBufs bb;
    for (DType t : {DType::kBFloat16, DType::kFloat16}) {
      bb.fill(t == DType::kBFloat16);
      for (int D : {64, 128, 256})
        for (int causal = 0; causal < 2; ++causal)
          for (int S : kSeqs) {
            AttnParams p = bench_params(bb, D, S, causal, t);
            const double ms = time_ms([&] { run_fwd(p); }, 0);
            std::printf("TIME %s %d %d %d %d %d %.4f %.1f\n",
                        t == DType::kBFloat16 ? "bf16" : "fp16", (int)p.batch, (int)p.heads_q, S, D,
                        causal, ms, tflops(p, ms));
          }
    }
  }
  return fails ? 1 : 0;
}
#endif
