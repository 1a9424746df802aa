// Standalone GPU check of the FA2 tensor-core backward (src/cuda/fa2_bwd.cu) against a float64
// host reference, plus timings. Build (repo root):
//   nvcc -std=c++17 -O3 --expt-relaxed-constexpr -Iinclude -Isrc -gencode
//   arch=compute_90a,code=sm_90a \
//     -DFLASHMIN_HAS_SM90A=1 tests/cuda/fa2_bwd_check.cu src/cuda/fa2_bwd.cu
//     src/cuda/fa2_bwd_sm90.cu \ src/cuda/cuda_error.cpp -o /tmp/fa2_bwd_check
// (FLASHMIN_FORCE_SM80=1 in the environment times the sm80 family on an sm_90 GPU.)
// Usage: fa2_bwd_check [--no-bench | --bench-only | --one bf16|fp16 D S B H causal]. Prints
// PASS/FAIL per case, exits 1 on any failure, then "TIME dtype B H S D causal det ms tflops" lines
// (tests/cuda/fa2_bwd_sdpa.py reads them).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_api.h"

using namespace flashmin;

#define CK(x)                                                                              \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                               \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(2);                                                                        \
    }                                                                                      \
  } while (0)

static uint16_t to_bits(float x, DType t) {
  if (t == DType::kFloat16) {
    __half h = __float2half_rn(x);
    uint16_t u;
    std::memcpy(&u, &h, 2);
    return u;
  }
  __nv_bfloat16 h = __float2bfloat16_rn(x);
  uint16_t u;
  std::memcpy(&u, &h, 2);
  return u;
}
static double from_bits(uint16_t u, DType t) {
  if (t == DType::kFloat16) {
    __half h;
    std::memcpy(&h, &u, 2);
    return __half2float(h);
  }
  __nv_bfloat16 h;
  std::memcpy(&h, &u, 2);
  return __bfloat162float(h);
}

// A rank-4 (B, H, S, D) tensor on the host (16-bit bits) with a physical layout: either
// contiguous (B, H, S, D) or "strided" (B, S, H, Dp) with Dp = D + 8 (gaps never written).
struct Tensor {
  int64_t B, H, S, D, Dp;
  bool strided;
  Strides st;
  std::vector<uint16_t> data;
  Tensor(int64_t b, int64_t h, int64_t s, int64_t d, bool strided_)
      : B(b), H(h), S(s), D(d), Dp(strided_ ? d + 8 : d), strided(strided_) {
    if (strided) {
      st.seq = H * Dp;
      st.head = Dp;
      st.batch = S * H * Dp;
    } else {
      st.seq = D;
      st.head = S * D;
      st.batch = H * S * D;
    }
    data.assign(std::max<int64_t>(B * H * S * Dp, 8), 0xFFFF);  // poison (NaN)
  }
  int64_t idx(int64_t b, int64_t h, int64_t s, int64_t d) const {
    return b * st.batch + h * st.head + s * st.seq + d;
  }
  size_t bytes() const { return data.size() * 2; }
};

struct Case {
  std::string name;
  int64_t B, Hq, Hk, Sq, Sk, D;
  bool causal;
  int64_t off;
  bool strided;
  bool det;
  DType dt;
};

static double gauss(std::mt19937& g) {
  std::normal_distribution<double> n(0.0, 1.0);
  return n(g);
}

struct DevBuf {
  void* p = nullptr;
  size_t n = 0;
  DevBuf(size_t bytes) : n(bytes) { CK(cudaMalloc(&p, std::max<size_t>(bytes, 16))); }
  ~DevBuf() { cudaFree(p); }
};

static bool run_case(const Case& c) {
  const DType dt = c.dt;
  std::mt19937 gen(1234 + c.Sq * 7 + c.Sk * 13 + c.D);
  Tensor q(c.B, c.Hq, c.Sq, c.D, c.strided), k(c.B, c.Hk, c.Sk, c.D, c.strided),
      v(c.B, c.Hk, c.Sk, c.D, c.strided), o(c.B, c.Hq, c.Sq, c.D, c.strided),
      dout(c.B, c.Hq, c.Sq, c.D, c.strided), dq(c.B, c.Hq, c.Sq, c.D, c.strided),
      dk(c.B, c.Hk, c.Sk, c.D, c.strided), dv(c.B, c.Hk, c.Sk, c.D, c.strided);
  auto fill = [&](Tensor& t) {
    for (int64_t b = 0; b < t.B; ++b)
      for (int64_t h = 0; h < t.H; ++h)
        for (int64_t s = 0; s < t.S; ++s)
          for (int64_t d = 0; d < t.D; ++d) t.data[t.idx(b, h, s, d)] = to_bits(gauss(gen), dt);
  };
  fill(q);
  fill(k);
  fill(v);
  fill(dout);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
  const int64_t G = c.Hq / c.Hk;
  std::vector<float> lse(std::max<int64_t>(c.B * c.Hq * c.Sq, 1));
  std::vector<double> rdq(c.B * c.Hq * c.Sq * c.D, 0.0), rdk(c.B * c.Hk * c.Sk * c.D, 0.0),
      rdv(c.B * c.Hk * c.Sk * c.D, 0.0);
  auto X = [&](const Tensor& t, int64_t b, int64_t h, int64_t s, int64_t d) {
    return from_bits(t.data[t.idx(b, h, s, d)], dt);
  };
  // float64 reference: forward (O, lse) then backward with the exact O.
  std::vector<double> P(c.Sk), dP(c.Sk), Orow(c.D);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h) {
      const int64_t hk = h / G;
      for (int64_t i = 0; i < c.Sq; ++i) {
        double m = -INFINITY;
        for (int64_t j = 0; j < c.Sk; ++j) {
          const bool vis = !c.causal || j <= i + c.off;
          double s = 0;
          if (vis)
            for (int64_t d = 0; d < c.D; ++d) s += X(q, b, h, i, d) * X(k, b, hk, j, d);
          P[j] = vis ? s * scale : -INFINITY;
          m = std::max(m, P[j]);
        }
        double l = 0;
        for (int64_t j = 0; j < c.Sk; ++j) l += P[j] == -INFINITY ? 0.0 : std::exp(P[j] - m);
        const double L = l > 0 ? m + std::log(l) : -INFINITY;
        lse[(b * c.Hq + h) * c.Sq + i] = static_cast<float>(L);
        for (int64_t j = 0; j < c.Sk; ++j)
          P[j] = (L == -INFINITY || P[j] == -INFINITY) ? 0.0 : std::exp(P[j] - L);
        std::fill(Orow.begin(), Orow.end(), 0.0);
        for (int64_t j = 0; j < c.Sk; ++j)
          if (P[j] != 0)
            for (int64_t d = 0; d < c.D; ++d) Orow[d] += P[j] * X(v, b, hk, j, d);
        double Di = 0;
        for (int64_t d = 0; d < c.D; ++d) {
          o.data[o.idx(b, h, i, d)] = to_bits(static_cast<float>(Orow[d]), dt);
          Di += Orow[d] * X(dout, b, h, i, d);
        }
        for (int64_t j = 0; j < c.Sk; ++j) {
          if (P[j] == 0) continue;
          double dp = 0;
          for (int64_t d = 0; d < c.D; ++d) dp += X(dout, b, h, i, d) * X(v, b, hk, j, d);
          const double ds = P[j] * (dp - Di);
          for (int64_t d = 0; d < c.D; ++d) {
            rdq[((b * c.Hq + h) * c.Sq + i) * c.D + d] += scale * ds * X(k, b, hk, j, d);
            rdk[((b * c.Hk + hk) * c.Sk + j) * c.D + d] += scale * ds * X(q, b, h, i, d);
            rdv[((b * c.Hk + hk) * c.Sk + j) * c.D + d] += P[j] * X(dout, b, h, i, d);
          }
        }
      }
    }

  DevBuf q_d(q.bytes()), k_d(k.bytes()), v_d(v.bytes()), o_d(o.bytes()), do_d(dout.bytes()),
      dq_d(dq.bytes()), dk_d(dk.bytes()), dv_d(dv.bytes()), lse_d(lse.size() * 4);
  CK(cudaMemcpy(q_d.p, q.data.data(), q.bytes(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(k_d.p, k.data.data(), k.bytes(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(v_d.p, v.data.data(), v.bytes(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(o_d.p, o.data.data(), o.bytes(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(do_d.p, dout.data.data(), dout.bytes(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(lse_d.p, lse.data(), lse.size() * 4, cudaMemcpyHostToDevice));

  AttnBwdParams p;
  p.q = q_d.p;
  p.k = k_d.p;
  p.v = v_d.p;
  p.o = o_d.p;
  p.lse = static_cast<float*>(lse_d.p);
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
  p.scale = static_cast<float>(scale);
  p.is_causal = c.causal;
  p.causal_offset = c.off;
  p.dtype = dt;
  p.algorithm = Algorithm::kFA2;
  p.dout = do_d.p;
  p.dout_strides = dout.st;
  p.dq = dq_d.p;
  p.dk = dk_d.p;
  p.dv = dv_d.p;
  p.dq_strides = dq.st;
  p.dk_strides = dk.st;
  p.dv_strides = dv.st;
  p.deterministic = c.det;
  const int64_t ws = cuda::fa2_bwd_mma_workspace_bytes(p);
  DevBuf ws_d(ws);
  p.workspace = ws_d.p;
  p.workspace_bytes = ws;

  auto launch = [&]() {
    CK(cudaMemset(ws_d.p, 0xFF, std::max<int64_t>(ws, 16)));  // garbage workspace
    CK(cudaMemcpy(dq_d.p, dq.data.data(), dq.bytes(), cudaMemcpyHostToDevice));  // NaN poison
    CK(cudaMemcpy(dk_d.p, dk.data.data(), dk.bytes(), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dv_d.p, dv.data.data(), dv.bytes(), cudaMemcpyHostToDevice));
    cuda::fa2_bwd_mma(p, 0);
    CK(cudaDeviceSynchronize());
  };
  launch();
  std::vector<uint16_t> gq(dq.data.size()), gk(dk.data.size()), gv(dv.data.size());
  CK(cudaMemcpy(gq.data(), dq_d.p, dq.bytes(), cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(gk.data(), dk_d.p, dk.bytes(), cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(gv.data(), dv_d.p, dv.bytes(), cudaMemcpyDeviceToHost));

  bool ok = true;
  std::string msg;
  const double tol_max = dt == DType::kFloat16 ? 1e-2 : 4e-2;
  const double tol_l2 = dt == DType::kFloat16 ? 5e-3 : 2e-2;
  auto compare = [&](const char* nm, const Tensor& t, const std::vector<uint16_t>& got,
                     const std::vector<double>& ref) {
    double max_err = 0, max_ref = 0, se = 0, sr = 0;
    int64_t bad = 0, gaps = 0;
    for (int64_t b = 0; b < t.B; ++b)
      for (int64_t h = 0; h < t.H; ++h)
        for (int64_t s = 0; s < t.S; ++s) {
          for (int64_t d = 0; d < t.D; ++d) {
            const double g = from_bits(got[t.idx(b, h, s, d)], dt);
            const double r = ref[((b * t.H + h) * t.S + s) * t.D + d];
            if (!std::isfinite(g)) ++bad;
            const double e = std::fabs(g - r);
            max_err = std::max(max_err, e);
            max_ref = std::max(max_ref, std::fabs(r));
            se += e * e;
            sr += r * r;
          }
          for (int64_t d = t.D; d < t.Dp; ++d) gaps += got[t.idx(b, h, s, d)] != 0xFFFF;
        }
    const double rel_max = max_err / std::max(max_ref, 1e-6);
    const double rel_l2 = std::sqrt(se) / std::max(std::sqrt(sr), 1e-6);
    const bool pass = bad == 0 && gaps == 0 &&
                      (max_ref == 0 ? max_err == 0 : rel_max <= tol_max && rel_l2 <= tol_l2);
    char buf[256];
    std::snprintf(buf, sizeof buf, " %s[maxerr %.2e maxref %.2e rel_max %.2e rel_l2 %.2e%s%s]", nm,
                  max_err, max_ref, rel_max, rel_l2, bad ? " NONFINITE" : "",
                  gaps ? " GAP-WRITTEN" : "");
    msg += buf;
    ok = ok && pass;
  };
  compare("dq", dq, gq, rdq);
  compare("dk", dk, gk, rdk);
  compare("dv", dv, gv, rdv);
  if (c.det) {  // a second run must be bitwise identical
    launch();
    std::vector<uint16_t> hq(gq.size()), hk(gk.size()), hv(gv.size());
    CK(cudaMemcpy(hq.data(), dq_d.p, dq.bytes(), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hk.data(), dk_d.p, dk.bytes(), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hv.data(), dv_d.p, dv.bytes(), cudaMemcpyDeviceToHost));
    const bool same = std::memcmp(hq.data(), gq.data(), hq.size() * 2) == 0 &&
                      std::memcmp(hk.data(), gk.data(), hk.size() * 2) == 0 &&
                      std::memcmp(hv.data(), gv.data(), hv.size() * 2) == 0;
    msg += same ? " bitwise-repeat OK" : " bitwise-repeat DIFFERS";
    ok = ok && same;
  }
  std::printf("%s %-44s %s B%lld Hq%lld Hk%lld Sq%lld Sk%lld D%lld%s off%lld%s%s%s\n",
              ok ? "PASS" : "FAIL", c.name.c_str(), dt == DType::kFloat16 ? "fp16" : "bf16",
              (long long)c.B, (long long)c.Hq, (long long)c.Hk, (long long)c.Sq, (long long)c.Sk,
              (long long)c.D, c.causal ? " causal" : "", (long long)c.off,
              c.strided ? " strided" : "", c.det ? " det" : "", msg.c_str());
  std::fflush(stdout);
  return ok;
}

// Time one backward (all kernels) with cudaEvents: median of reps after warm-up.
static void bench(DType dt, int64_t B, int64_t H, int64_t S, int64_t D, bool causal, bool det) {
  // Every benchmark shape has B * H * S * D = 16384 * 2048: one set of buffers, filled once.
  const int64_t n = B * H * S * D;
  static const int64_t kN = int64_t(16384) * 2048;
  if (n > kN) return;
  static DevBuf q_d(kN * 2), k_d(kN * 2), v_d(kN * 2), o_d(kN * 2), do_d(kN * 2), dq_d(kN * 2),
      dk_d(kN * 2), dv_d(kN * 2), lse_d(kN / 8 * 4);
  static bool filled = false;
  if (!filled) {
    filled = true;
    std::vector<uint16_t> h(kN);
    std::mt19937 gen(7);
    int which = 0;
    for (auto* buf : {&q_d, &k_d, &v_d, &o_d, &do_d}) {
      if (which < 2)  // q, k differ; v, o, dO reuse them (values only matter for NaN-freedom)
        for (int64_t x = 0; x < kN; ++x) h[x] = to_bits(static_cast<float>(gauss(gen)), dt);
      CK(cudaMemcpy(buf->p, h.data(), kN * 2, cudaMemcpyHostToDevice));
      ++which;
    }
  }
  std::vector<float> lse(B * H * S);
  for (int64_t r = 0; r < B * H * S; ++r) {
    const int64_t i = r % S;
    lse[r] = static_cast<float>(std::log(causal ? i + 1.0 : double(S)) + 0.5);
  }
  CK(cudaMemcpy(lse_d.p, lse.data(), lse.size() * 4, cudaMemcpyHostToDevice));
  Strides st{H * S * D, S * D, D};
  AttnBwdParams p;
  p.q = q_d.p;
  p.k = k_d.p;
  p.v = v_d.p;
  p.o = o_d.p;
  p.lse = static_cast<float*>(lse_d.p);
  p.q_strides = p.k_strides = p.v_strides = p.o_strides = st;
  p.batch = B;
  p.heads_q = H;
  p.heads_kv = H;
  p.seqlen_q = S;
  p.seqlen_k = S;
  p.head_dim = D;
  p.scale = static_cast<float>(1.0 / std::sqrt(double(D)));
  p.is_causal = causal;
  p.dtype = dt;
  p.dout = do_d.p;
  p.dout_strides = st;
  p.dq = dq_d.p;
  p.dk = dk_d.p;
  p.dv = dv_d.p;
  p.dq_strides = p.dk_strides = p.dv_strides = st;
  p.deterministic = det;
  const int64_t ws = cuda::fa2_bwd_mma_workspace_bytes(p);
  DevBuf ws_d(ws);
  p.workspace = ws_d.p;
  p.workspace_bytes = ws;
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int w = 0; w < 3; ++w) cuda::fa2_bwd_mma(p, 0);
  CK(cudaDeviceSynchronize());
  std::vector<float> ms;
  for (int r = 0; r < 15; ++r) {
    CK(cudaEventRecord(e0));
    cuda::fa2_bwd_mma(p, 0);
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float t;
    CK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  const double flops = 2.5 * 4.0 * B * H * S * S * D * (causal ? 0.5 : 1.0);
  std::printf("TIME %s %lld %lld %lld %lld %d %d %.4f %.1f\n",
              dt == DType::kFloat16 ? "fp16" : "bf16", (long long)B, (long long)H, (long long)S,
              (long long)D, causal ? 1 : 0, det ? 1 : 0, med, flops / (med * 1e-3) / 1e12);
  std::fflush(stdout);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
}

int main(int argc, char** argv) {
  const std::string arg = argc > 1 ? argv[1] : "";
  const bool do_bench = arg != "--no-bench", do_check = arg != "--bench-only";
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  const DType F = DType::kFloat16, Bf = DType::kBFloat16;
  if (arg == "--one" && argc == 8) {  // --one bf16|fp16 D S B H causal : time one shape (ncu)
    bench(std::string(argv[2]) == "fp16" ? F : Bf, std::atoll(argv[5]), std::atoll(argv[6]),
          std::atoll(argv[4]), std::atoll(argv[3]), std::atoi(argv[7]) != 0, false);
    return 0;
  }
  std::vector<Case> cases = {
      {"tiny 1x1", 1, 1, 1, 1, 1, 64, false, 0, false, false, F},
      {"odd 17 d40 causal", 2, 3, 3, 17, 17, 40, true, 0, false, false, Bf},
      {"gqa 97x113 d64", 1, 4, 2, 97, 113, 64, false, 0, false, false, F},
      {"gqa 97x113 d64 bf16", 1, 4, 2, 97, 113, 64, false, 0, false, false, Bf},
      {"mqa 113x97 d128 causal bottom-right", 1, 2, 1, 113, 97, 128, true, -16, false, false, Bf},
      {"239 d128 causal strided", 2, 2, 2, 239, 239, 128, true, 0, true, false, F},
      {"239x17 d256", 1, 2, 2, 239, 17, 256, false, 0, false, false, Bf},
      {"17x239 d256 causal br gqa", 1, 4, 2, 17, 239, 256, true, 222, false, false, F},
      {"97 d8 causal", 1, 2, 2, 97, 97, 8, true, 0, false, false, F},
      {"113x239 d96 strided", 1, 2, 1, 113, 239, 96, false, 0, true, false, Bf},
      {"239x113 d160 causal", 1, 2, 2, 239, 113, 160, true, 0, false, false, F},
      {"200 d192 causal gqa strided", 1, 3, 1, 200, 200, 192, true, 0, true, false, Bf},
      {"130x70 d224", 1, 2, 2, 130, 70, 224, false, 0, false, false, F},
      {"Sk=0 d64", 1, 2, 2, 17, 0, 64, false, 0, false, false, F},
      {"Sq=0 d64", 1, 2, 2, 0, 17, 64, false, 0, false, false, F},
      {"empty rows causal off=-50", 1, 2, 2, 97, 113, 32, true, -50, false, false, Bf},
      {"1023 d64 causal", 1, 2, 2, 1023, 1023, 64, true, 0, false, false, Bf},
      {"gqa 300x700 d128 causal br", 2, 8, 2, 300, 700, 128, true, 400, false, false, Bf},
      {"511 d64 strided", 1, 2, 2, 511, 511, 64, false, 0, true, false, F},
      {"gqa 257x640 d112 causal", 1, 6, 3, 257, 640, 112, true, 383, false, false, F},
      {"gqa 500x520 d256 causal strided", 1, 4, 2, 500, 520, 256, true, 20, true, false, Bf},
      {"333 d248", 1, 2, 2, 333, 333, 248, false, 0, false, false, F},
      {"det 239 d128 causal gqa strided", 2, 4, 2, 239, 239, 128, true, 0, true, true, F},
      {"det 97x113 d64", 1, 2, 2, 97, 113, 64, false, 0, false, true, Bf},
      {"det 113x239 d256 causal br", 1, 2, 1, 113, 239, 256, true, 126, false, true, Bf},
      {"det 17 d40 causal", 2, 3, 3, 17, 17, 40, true, 0, false, true, F},
      {"det 1023 d64 causal", 1, 2, 2, 1023, 1023, 64, true, 0, false, true, F},
      {"det 300 d160 strided", 1, 2, 1, 300, 300, 160, false, 0, true, true, Bf},
  };
  int fails = 0;
  if (do_check) {
    for (const Case& c : cases) fails += !run_case(c);
    std::printf("%s: %d of %zu cases failed\n", fails ? "FAILED" : "ALL PASSED", fails,
                cases.size());
  }
  if (do_bench) {
    for (int64_t D : {64, 128, 256})
      for (int64_t S : {512, 2048, 8192, 16384})
        for (bool causal : {false, true}) bench(Bf, 16384 / S, 2048 / D, S, D, causal, false);
    for (bool causal : {false, true}) bench(Bf, 8, 2048 / 32, 2048, 32, causal, false);
    for (int64_t D : {64, 128, 256}) bench(F, 8, 2048 / D, 2048, D, true, false);
    for (int64_t D : {64, 128, 256}) bench(Bf, 8, 2048 / D, 2048, D, true, true);
    for (int64_t D : {128}) bench(Bf, 2, 2048 / D, 8192, D, false, true);
  }
  return fails ? 1 : 0;
}
