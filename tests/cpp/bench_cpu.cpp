// Standalone CPU benchmark (built by ctest's CMakeLists, not run as a test):
//   bench_cpu [B H S D] [causal 0|1] [dtype f32|f16|bf16] [fa1|fa2] [reps]
// Prints the median time of flashmin::cpu::fwd (and bwd) with GFLOP/s, using the launcher entry
// points with device = -1. Compare with torch:
//   python3 -c "import torch,time; ... F.scaled_dot_product_attention(q,k,v)"  (see the report).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu/dtype_convert.h"
#include "cpu/kernels.h"
#include "cpu/thread_pool.h"
#include "launch.h"

using namespace flashmin;

namespace {

template <typename F>
double median_ms(int reps, F&& f) {
  f();  // warm-up
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto a = std::chrono::steady_clock::now();
    f();
    const auto b = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double, std::milli>(b - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int64_t B = 1, H = 8, S = 1024, D = 64;
  bool causal = false;
  std::string dt = "f32", algo = "fa2";
  int reps = 15;
  if (argc >= 5) {
    B = std::atoll(argv[1]);
    H = std::atoll(argv[2]);
    S = std::atoll(argv[3]);
    D = std::atoll(argv[4]);
  }
  if (argc >= 6) causal = std::atoi(argv[5]) != 0;
  if (argc >= 7) dt = argv[6];
  if (argc >= 8) algo = argv[7];
  if (argc >= 9) reps = std::atoi(argv[8]);
  const DType dtype = dt == "f16"    ? DType::kFloat16
                      : dt == "bf16" ? DType::kBFloat16
                                     : DType::kFloat32;
  const int64_t es = dtype == DType::kFloat32 ? 4 : 2;
  const int64_t n = B * H * S * D;

  std::mt19937 rng(0);
  std::normal_distribution<float> nd;
  auto make = [&] {
    std::vector<unsigned char> buf(static_cast<size_t>(n * es) + 64);
    void* p = buf.data();
    for (int64_t i = 0; i < n; ++i) {
      const float x = nd(rng);
      if (dtype == DType::kFloat32) static_cast<float*>(p)[i] = x;
      if (dtype == DType::kFloat16) static_cast<uint16_t*>(p)[i] = cpu::float_to_half(x);
      if (dtype == DType::kBFloat16) static_cast<uint16_t*>(p)[i] = cpu::float_to_bf16(x);
    }
    return buf;
  };
  auto q = make(), k = make(), v = make(), o = make(), dout = make(), dq = make(), dk = make(),
       dv = make();
  std::vector<float> lse(static_cast<size_t>(B * H * S));

  AttnBwdParams p;
  const Strides st{H * S * D, S * D, D};
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.o = o.data();
  p.lse = lse.data();
  p.q_strides = p.k_strides = p.v_strides = p.o_strides = st;
  p.batch = B;
  p.heads_q = p.heads_kv = H;
  p.seqlen_q = p.seqlen_k = S;
  p.head_dim = D;
  p.scale = 1.0f / std::sqrt(static_cast<float>(D));
  p.is_causal = causal;
  p.dtype = dtype;
  p.algorithm = algo == "fa1" ? Algorithm::kFA1 : Algorithm::kFA2;
  p.dout = dout.data();
  p.dq = dq.data();
  p.dk = dk.data();
  p.dv = dv.data();
  p.dout_strides = p.dq_strides = p.dk_strides = p.dv_strides = st;

  const double flops = 4.0 * B * H * S * S * D / (causal ? 2.0 : 1.0);
  const double f_ms = median_ms(reps, [&] { flashmin::fwd(p, -1, 0); });
  const double b_ms = median_ms(std::max(3, reps / 3), [&] { flashmin::bwd(p, -1, 0); });
  std::printf("isa=%s threads=%d B=%lld H=%lld S=%lld D=%lld causal=%d dtype=%s %s\n",
              cpu::kernels().name, cpu::num_threads(), (long long)B, (long long)H, (long long)S,
              (long long)D, causal ? 1 : 0, dt.c_str(), algo.c_str());
  std::printf("  fwd: %8.3f ms  %7.1f GFLOP/s\n", f_ms, flops / f_ms * 1e-6);
  std::printf("  bwd: %8.3f ms  %7.1f GFLOP/s (2.5x fwd flops)\n", b_ms, 2.5 * flops / b_ms * 1e-6);

  // Decode: B=8, H_q=32, H_k=8, S_q=1, L=4096 keys of a contiguous cache, D=128, this dtype.
  {
    const int64_t dB = 8, dHq = 32, dHk = 8, dL = 4096, dD = 128;
    std::vector<float> dq_buf(static_cast<size_t>(dB * dHq * dD)), dout_buf(dq_buf.size());
    std::vector<float> kc(static_cast<size_t>(dB * dHk * dL * dD)), vc(kc.size());
    for (auto* vec : {&dq_buf, &kc, &vc})
      for (float& x : *vec) x = nd(rng);  // any bit pattern is a finite 16-bit value here too
    if (dtype != DType::kFloat32)         // reinterpret as 16-bit: keep the values small and finite
      for (auto* vec : {&dq_buf, &kc, &vc})
        for (float& x : *vec) x = cpu::bits_to_float(0x3c003c00u);
    std::vector<int32_t> lens(static_cast<size_t>(dB), static_cast<int32_t>(dL));
    DecodeParams d;
    d.q = dq_buf.data();
    d.q_strides = {dHq * dD, dD, dD};
    d.k_cache = kc.data();
    d.v_cache = vc.data();
    d.k_cache_strides = d.v_cache_strides = {dHk * dL * dD, dL * dD, dD};
    d.cache_seqlens = lens.data();
    d.o = dout_buf.data();
    d.o_strides = d.q_strides;
    d.batch = dB;
    d.heads_q = dHq;
    d.heads_kv = dHk;
    d.seqlen_q = 1;
    d.max_seqlen_k = dL;
    d.head_dim = dD;
    d.scale = 0.088f;
    d.dtype = dtype;
    for (int64_t ns : {1, 4}) {
      d.num_splits = ns;
      const double ms = median_ms(reps, [&] { flashmin::decode(d, -1, 0); });
      const double bytes = 2.0 * dB * dHk * dL * dD * es;
      std::printf("  decode B=8 Hq=32 Hk=8 L=4096 D=128 splits=%lld: %8.3f ms  %6.1f GB/s of K/V\n",
                  (long long)ns, ms, bytes / ms * 1e-6);
    }
  }
  return 0;
}
