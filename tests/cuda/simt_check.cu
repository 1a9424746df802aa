// Standalone GPU check of the SIMT kernels (src/cuda/simt_*.cu): float64 host reference for the
// forward (O, lse) and backward (dQ, dK, dV), every dtype, FA2 and FA1, odd sizes, S_q != S_k,
// GQA/MQA, causal (top-left and bottom-right with empty rows), strided layouts, S_k = 0 and
// S_q = 0, a bitwise determinism check, then timings (CUDA events, median) in fp32.
//
//   nvcc -std=c++17 -O3 --expt-relaxed-constexpr -Iinclude -Isrc -gencode
//   arch=compute_90a,code=sm_90a \
//     tests/cuda/simt_check.cu src/cuda/simt_attn.cu src/cuda/simt_fa1.cu src/cuda/simt_fa2.cu \
//     src/cuda/cuda_error.cpp -o /tmp/simt_check && /tmp/simt_check [--no-bench]
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_api.h"
#include "flashmin/params.h"

using namespace flashmin;

#define CK(x)                                                                              \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                               \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(2);                                                                        \
    }                                                                                      \
  } while (0)

static int elem_size(DType t) { return t == DType::kFloat32 ? 4 : 2; }
static const char* dname(DType t) {
  return t == DType::kFloat32 ? "fp32" : t == DType::kFloat16 ? "fp16" : "bf16";
}

static void to_bytes(DType t, double v, void* dst) {
  if (t == DType::kFloat32)
    *static_cast<float*>(dst) = static_cast<float>(v);
  else if (t == DType::kFloat16)
    *static_cast<__half*>(dst) = __float2half(static_cast<float>(v));
  else
    *static_cast<__nv_bfloat16*>(dst) = __float2bfloat16(static_cast<float>(v));
}
static double from_bytes(DType t, const void* src) {
  if (t == DType::kFloat32) return *static_cast<const float*>(src);
  if (t == DType::kFloat16) return __half2float(*static_cast<const __half*>(src));
  return __bfloat162float(*static_cast<const __nv_bfloat16*>(src));
}

// A (B, H, S, D) tensor in one of three layouts, its device buffer and a host double copy.
struct Tensor {
  int64_t B = 0, H = 0, S = 0, D = 0;
  Strides st;
  DType t;
  size_t bytes = 0;
  void* dev = nullptr;
  std::vector<double> val;  // logical (B, H, S, D), values as stored (rounded to dtype)

  Tensor(int64_t b, int64_t h, int64_t s, int64_t d, DType dt, int layout)
      : B(b), H(h), S(s), D(d), t(dt) {
    if (layout == 0)
      st = {H * S * D, S * D, D};  // BHSD contiguous
    else if (layout == 1)
      st = {S * H * D, D, H * D};  // BSHD viewed as BHSD
    else
      st = {H * (S * (D + 8) + 8), S * (D + 8) + 8, D + 8};  // padded rows and heads
    const int64_t span = (B - 1) * st.batch + (H - 1) * st.head + (S - 1) * st.seq + D;
    bytes = static_cast<size_t>(std::max<int64_t>(span, 8)) * elem_size(t) + 64;
    CK(cudaMalloc(&dev, bytes));
    val.assign(B * H * S * D, 0.0);
  }
  ~Tensor() { cudaFree(dev); }
  int64_t off(int64_t b, int64_t h, int64_t s, int64_t d) const {
    return b * st.batch + h * st.head + s * st.seq + d;
  }
  double& at(int64_t b, int64_t h, int64_t s, int64_t d) {
    return val[((b * H + h) * S + s) * D + d];
  }
  void poison() { CK(cudaMemset(dev, 0xFF, bytes)); }  // NaN in every dtype
  void fill_random(std::mt19937& rng) {
    std::normal_distribution<double> nd(0.0, 1.0);
    std::vector<char> host(bytes, 0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t s = 0; s < S; ++s)
          for (int64_t d = 0; d < D; ++d) {
            char* p = host.data() + off(b, h, s, d) * elem_size(t);
            to_bytes(t, nd(rng), p);
            at(b, h, s, d) = from_bytes(t, p);
          }
    CK(cudaMemcpy(dev, host.data(), bytes, cudaMemcpyHostToDevice));
  }
  std::vector<double> download() const {  // logical order
    std::vector<char> host(bytes);
    CK(cudaMemcpy(host.data(), dev, bytes, cudaMemcpyDeviceToHost));
    std::vector<double> out(B * H * S * D);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t s = 0; s < S; ++s)
          for (int64_t d = 0; d < D; ++d)
            out[((b * H + h) * S + s) * D + d] =
                from_bytes(t, host.data() + off(b, h, s, d) * elem_size(t));
    return out;
  }
  std::vector<char> raw() const {
    std::vector<char> host(bytes);
    CK(cudaMemcpy(host.data(), dev, bytes, cudaMemcpyDeviceToHost));
    return host;
  }
};

struct Case {
  const char* name;
  int64_t B, Hq, Hk, Sq, Sk, D;
  bool causal;
  int64_t offset;
  int layout;
};

// max |out - ref| / max |ref| (absolute error when ref is all zero); non-finite -> inf.
static double rel_err(const std::vector<double>& out, const std::vector<double>& ref) {
  double e = 0, m = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    e = std::max(e, std::fabs(out[i] - ref[i]));
    m = std::max(m, std::fabs(ref[i]));
  }
  return m > 0 ? e / m : e;
}

static int g_fail = 0;

struct Tol {
  double fwd, bwd;
};
static Tol tol(DType t) {
  if (t == DType::kFloat32) return {2e-5, 1e-4};
  if (t == DType::kFloat16) return {2e-3, 4e-3};
  return {1.6e-2, 3e-2};
}

static void* alloc_ws(int64_t bytes) {
  void* p = nullptr;
  if (bytes > 0) {
    CK(cudaMalloc(&p, bytes));
    CK(cudaMemset(p, 0xFF, bytes));  // garbage on entry
  }
  return p;
}

static void run_case(const Case& c, DType t, Algorithm alg, bool check_determinism) {
  std::mt19937 rng(1234 + c.Sq * 7 + c.Sk * 13 + c.D);
  const int lay = c.layout;
  Tensor q(c.B, c.Hq, c.Sq, c.D, t, lay), k(c.B, c.Hk, c.Sk, c.D, t, lay),
      v(c.B, c.Hk, c.Sk, c.D, t, lay), o(c.B, c.Hq, c.Sq, c.D, t, lay),
      dout(c.B, c.Hq, c.Sq, c.D, t, lay), dq(c.B, c.Hq, c.Sq, c.D, t, lay),
      dk(c.B, c.Hk, c.Sk, c.D, t, lay), dv(c.B, c.Hk, c.Sk, c.D, t, lay);
  q.fill_random(rng), k.fill_random(rng), v.fill_random(rng), dout.fill_random(rng);
  o.poison(), dq.poison(), dk.poison(), dv.poison();
  const int64_t rows = c.B * c.Hq * c.Sq;
  float* lse = nullptr;
  CK(cudaMalloc(&lse, std::max<int64_t>(rows, 1) * 4));
  CK(cudaMemset(lse, 0xFF, std::max<int64_t>(rows, 1) * 4));

  AttnBwdParams p;
  p.q = q.dev, p.k = k.dev, p.v = v.dev, p.o = o.dev, p.lse = lse;
  p.q_strides = q.st, p.k_strides = k.st, p.v_strides = v.st, p.o_strides = o.st;
  p.batch = c.B, p.heads_q = c.Hq, p.heads_kv = c.Hk, p.seqlen_q = c.Sq, p.seqlen_k = c.Sk;
  p.head_dim = c.D, p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.D)));
  p.is_causal = c.causal, p.causal_offset = c.offset, p.dtype = t, p.algorithm = alg;
  p.dout = dout.dev, p.dout_strides = dout.st;
  p.dq = dq.dev, p.dk = dk.dev, p.dv = dv.dev;
  p.dq_strides = dq.st, p.dk_strides = dk.st, p.dv_strides = dv.st;

  // ---- forward
  const int64_t ws_f = cuda::simt_fwd_workspace_bytes(p);
  p.workspace = alloc_ws(ws_f), p.workspace_bytes = ws_f;
  cuda::simt_fwd(p, 0);
  CK(cudaDeviceSynchronize());
  cudaFree(p.workspace);

  // ---- float64 reference
  const int64_t G = c.Hq / c.Hk, D = c.D;
  const double scale = p.scale;
  std::vector<double> O_ref(rows * D, 0.0), lse_ref(rows, -INFINITY);
  std::vector<double> dQ_ref(rows * D, 0.0), dK_ref(c.B * c.Hk * c.Sk * D, 0.0),
      dV_ref(c.B * c.Hk * c.Sk * D, 0.0);
  const std::vector<double> O_dev = o.download();  // the bwd's D_i uses the O it is given
  std::vector<double> s(c.Sk), P(c.Sk);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h) {
      const int64_t hk = h / G;
      for (int64_t i = 0; i < c.Sq; ++i) {
        double m = -INFINITY;
        for (int64_t j = 0; j < c.Sk; ++j) {
          const bool vis = !c.causal || j <= i + c.offset;
          double acc = 0;
          if (vis)
            for (int64_t d = 0; d < D; ++d) acc += q.at(b, h, i, d) * k.at(b, hk, j, d);
          s[j] = vis ? acc * scale : -INFINITY;
          m = std::max(m, s[j]);
        }
        const int64_t row = (b * c.Hq + h) * c.Sq + i;
        if (m == -INFINITY) continue;  // empty row: O = 0, lse = -inf, grads 0
        double l = 0;
        for (int64_t j = 0; j < c.Sk; ++j) l += (P[j] = std::exp(s[j] - m));
        for (int64_t j = 0; j < c.Sk; ++j) P[j] /= l;
        lse_ref[row] = m + std::log(l);
        for (int64_t j = 0; j < c.Sk; ++j)
          if (P[j] != 0)
            for (int64_t d = 0; d < D; ++d) O_ref[row * D + d] += P[j] * v.at(b, hk, j, d);
        double Di = 0;
        for (int64_t d = 0; d < D; ++d) Di += dout.at(b, h, i, d) * O_dev[row * D + d];
        for (int64_t j = 0; j < c.Sk; ++j) {
          if (P[j] == 0) continue;
          double dP = 0;
          for (int64_t d = 0; d < D; ++d) dP += dout.at(b, h, i, d) * v.at(b, hk, j, d);
          const double dS = P[j] * (dP - Di);
          const int64_t kr = (b * c.Hk + hk) * c.Sk + j;
          for (int64_t d = 0; d < D; ++d) {
            dQ_ref[row * D + d] += scale * dS * k.at(b, hk, j, d);
            dK_ref[kr * D + d] += scale * dS * q.at(b, h, i, d);
            dV_ref[kr * D + d] += P[j] * dout.at(b, h, i, d);
          }
        }
      }
    }

  // ---- compare forward
  std::vector<float> lse_h(std::max<int64_t>(rows, 1));
  CK(cudaMemcpy(lse_h.data(), lse, std::max<int64_t>(rows, 1) * 4, cudaMemcpyDeviceToHost));
  double lse_err = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (std::isinf(lse_ref[r]))
      lse_err = std::max(lse_err, lse_h[r] == -INFINITY ? 0.0 : INFINITY);
    else if (!std::isfinite(lse_h[r]))
      lse_err = INFINITY;
    else
      lse_err = std::max(lse_err, std::fabs(lse_h[r] - lse_ref[r]));
  }
  const double o_err = rel_err(O_dev, O_ref);

  // ---- backward (twice when checking determinism)
  const int64_t ws_b = cuda::simt_bwd_workspace_bytes(p);
  p.workspace = alloc_ws(ws_b), p.workspace_bytes = ws_b;
  p.deterministic = check_determinism;
  cuda::simt_bwd(p, 0);
  CK(cudaDeviceSynchronize());
  const double dq_err = rel_err(dq.download(), dQ_ref), dk_err = rel_err(dk.download(), dK_ref),
               dv_err = rel_err(dv.download(), dV_ref);
  bool det_ok = true;
  if (check_determinism) {
    const auto a_q = dq.raw(), a_k = dk.raw(), a_v = dv.raw();
    for (int rep = 0; rep < 3; ++rep) {
      dq.poison(), dk.poison(), dv.poison();
      CK(cudaMemset(p.workspace, 0xFF, ws_b));
      cuda::simt_bwd(p, 0);
      CK(cudaDeviceSynchronize());
      det_ok = det_ok && a_q == dq.raw() && a_k == dk.raw() && a_v == dv.raw();
    }
  }
  cudaFree(p.workspace);
  cudaFree(lse);

  const Tol tl = tol(t);
  const bool fwd_ok = c.Sq == 0 || (o_err <= tl.fwd && lse_err <= 1e-4);
  const bool bwd_ok = dq_err <= tl.bwd && dk_err <= tl.bwd && dv_err <= tl.bwd && det_ok;
  const bool ok = fwd_ok && bwd_ok;
  g_fail += !ok;
  std::printf(
      "%s %-4s %-3s %-34s O %.1e lse %.1e | dQ %.1e dK %.1e dV %.1e%s\n", ok ? "PASS" : "FAIL",
      dname(t), alg == Algorithm::kFA2 ? "FA2" : "FA1", c.name, o_err, lse_err, dq_err, dk_err,
      dv_err,
      check_determinism ? (det_ok ? " | bitwise-deterministic x3" : " | NOT DETERMINISTIC") : "");
}

// ---------------------------------------------------------------------------- timing
static float median_ms(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
static float time_ms(F&& f) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  f();  // warm-up
  CK(cudaDeviceSynchronize());
  CK(cudaEventRecord(a));
  f();
  CK(cudaEventRecord(b));
  CK(cudaEventSynchronize(b));
  float first = 0;
  CK(cudaEventElapsedTime(&first, a, b));
  const int reps = std::max(3, std::min(30, static_cast<int>(600.0f / std::max(first, 1e-3f))));
  std::vector<float> ts;
  for (int r = 0; r < reps; ++r) {
    CK(cudaEventRecord(a));
    f();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    ts.push_back(ms);
  }
  cudaEventDestroy(a), cudaEventDestroy(b);
  return median_ms(ts);
}

static void bench(int64_t B, int64_t H, int64_t S, int64_t D, bool causal, Algorithm alg) {
  const DType t = DType::kFloat32;
  std::mt19937 rng(7);
  Tensor q(B, H, S, D, t, 0), k(B, H, S, D, t, 0), v(B, H, S, D, t, 0), o(B, H, S, D, t, 0),
      dout(B, H, S, D, t, 0), dq(B, H, S, D, t, 0), dk(B, H, S, D, t, 0), dv(B, H, S, D, t, 0);
  q.fill_random(rng), k.fill_random(rng), v.fill_random(rng), dout.fill_random(rng);
  float* lse = nullptr;
  CK(cudaMalloc(&lse, B * H * S * 4));
  AttnBwdParams p;
  p.q = q.dev, p.k = k.dev, p.v = v.dev, p.o = o.dev, p.lse = lse;
  p.q_strides = q.st, p.k_strides = k.st, p.v_strides = v.st, p.o_strides = o.st;
  p.batch = B, p.heads_q = H, p.heads_kv = H, p.seqlen_q = S, p.seqlen_k = S, p.head_dim = D;
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  p.is_causal = causal, p.dtype = t, p.algorithm = alg;
  p.dout = dout.dev, p.dout_strides = dout.st, p.dq = dq.dev, p.dk = dk.dev, p.dv = dv.dev;
  p.dq_strides = dq.st, p.dk_strides = dk.st, p.dv_strides = dv.st;
  const int64_t ws = std::max(cuda::simt_fwd_workspace_bytes(p), cuda::simt_bwd_workspace_bytes(p));
  p.workspace = alloc_ws(ws), p.workspace_bytes = ws;
  const float f_ms = time_ms([&] { cuda::simt_fwd(p, 0); });
  const float b_ms = time_ms([&] { cuda::simt_bwd(p, 0); });
  const double flops = 4.0 * B * H * S * S * D / (causal ? 2.0 : 1.0);
  std::printf(
      "BENCH fp32 %s B=%lld H=%lld S=%lld D=%lld causal=%d  fwd %.3f ms %.2f TFLOP/s | bwd %.3f ms "
      "%.2f TFLOP/s\n",
      alg == Algorithm::kFA2 ? "FA2" : "FA1", (long long)B, (long long)H, (long long)S,
      (long long)D, causal, f_ms, flops / f_ms * 1e-9, b_ms, 2.5 * flops / b_ms * 1e-9);
  cudaFree(p.workspace);
  cudaFree(lse);
}

int main(int argc, char** argv) {
  const bool do_bench = !(argc > 1 && std::strcmp(argv[1], "--no-bench") == 0);
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount);

  const Case cases[] = {
      {"B1 H1/1 Sq1 Sk1 D64", 1, 1, 1, 1, 1, 64, false, 0, 0},
      {"B2 H2/2 Sq17 Sk17 D8", 2, 2, 2, 17, 17, 8, false, 0, 0},
      {"B1 H4/2 Sq97 Sk113 D72 causal GQA", 1, 4, 2, 97, 113, 72, true, 0, 0},
      {"B2 H2/1 Sq113 Sk97 D128 causal-br", 2, 2, 1, 113, 97, 128, true, 97 - 113, 0},
      {"B1 H2/2 Sq239 Sk239 D256 BSHD", 1, 2, 2, 239, 239, 256, false, 0, 1},
      {"B2 H3/3 Sq239 Sk17 D64 causal pad", 2, 3, 3, 239, 17, 64, true, 0, 2},
      {"B1 H2/2 Sq64 Sk128 D192 pad", 1, 2, 2, 64, 128, 192, false, 0, 2},
      {"B1 H2/1 Sq17 Sk239 D136 causal+50", 1, 2, 1, 17, 239, 136, true, 50, 1},
      {"B1 H8/1 Sq128 Sk256 D128 MQA c-br", 1, 8, 1, 128, 256, 128, true, 128, 0},
      {"B1 H2/2 Sq97 Sk0 D64 (no keys)", 1, 2, 2, 97, 0, 64, false, 0, 0},
      {"B1 H2/1 Sq0 Sk33 D64 (no queries)", 1, 2, 1, 0, 33, 64, false, 0, 0},
      {"B1 H2/2 Sq40 Sk40 D64 causal-300", 1, 2, 2, 40, 40, 64, true, -300, 0},
  };
  for (Algorithm alg : {Algorithm::kFA2, Algorithm::kFA1})
    for (DType t : {DType::kFloat32, DType::kFloat16, DType::kBFloat16})
      for (const Case& c : cases) {
        const bool det = (&c == &cases[2] || &c == &cases[8]) && t != DType::kFloat16;
        run_case(c, t, alg, det);
      }
  std::printf("%s: %d failure(s)\n", g_fail ? "FAILED" : "ALL PASSED", g_fail);

  if (do_bench) {
    for (bool causal : {false, true}) {
      bench(4, 16, 1024, 64, causal, Algorithm::kFA2);
      bench(1, 16, 4096, 128, causal, Algorithm::kFA2);
    }
    bench(4, 16, 1024, 64, false, Algorithm::kFA1);
    bench(1, 16, 4096, 128, false, Algorithm::kFA1);
  }
  return g_fail ? 1 : 0;
}
