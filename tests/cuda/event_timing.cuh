// The L2 flush and the CUDA-event timing loop of the standalone decode harnesses
// (decode_check.cu, stream_floor.cu): one definition, so the decode kernels and the read-only
// floor they are set against are flushed and timed the same way.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace harness {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error %s in %s\n", cudaGetErrorString(e), what);
    std::exit(2);
  }
}

constexpr size_t kFlushBytes = size_t(256) << 20;

// FM_FLUSH=read: flush L2 by reading the buffer (clean lines); FM_FLUSH=fill: by a kernel that
// writes it (dirty lines, and a kernel right before the timed one, as triton.testing.do_bench's
// zero_() is); otherwise a memset (dirty lines, written back while the timed kernel runs).
inline bool flush_mode_is(const char* mode) {
  const char* env = std::getenv("FM_FLUSH");
  return env != nullptr && std::strcmp(env, mode) == 0;
}
inline bool read_flush() {
  static const bool read = flush_mode_is("read");
  return read;
}
inline bool fill_flush() {
  static const bool fill = flush_mode_is("fill");
  return fill;
}

__global__ void fill_flush_kernel(uint4* x, size_t n, unsigned value) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    x[i] = make_uint4(value, value, value, value);
}

__global__ void read_flush_kernel(const uint4* x, size_t n, uint4* sink) {
  uint4 acc = make_uint4(0, 0, 0, 0);
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const uint4 v = x[i];
    acc.x ^= v.x;
    acc.y ^= v.y;
    acc.z ^= v.z;
    acc.w ^= v.w;
  }
  if (acc.x == 0x12345678u) *sink = acc;  // keeps the loads
}

// Flush L2 through `buf` (kFlushBytes; its last 16 bytes are the read kernel's sink). `i`
// varies the memset's byte.
inline void flush_l2(void* buf, int i) {
  constexpr size_t n = kFlushBytes / 16 - 1;
  if (fill_flush()) {
    fill_flush_kernel<<<1056, 512>>>(static_cast<uint4*>(buf), n, unsigned(i) * 0x01010101u);
    check(cudaGetLastError(), "fill_flush_kernel");
  } else if (read_flush()) {
    read_flush_kernel<<<1024, 512>>>(static_cast<const uint4*>(buf), n,
                                     static_cast<uint4*>(buf) + n);
    check(cudaGetLastError(), "read_flush_kernel");
  } else {
    check(cudaMemsetAsync(buf, i & 0xff, kFlushBytes), "flush memset");
  }
}

// Median of `reps` CUDA-event times of f() alone, after 3 untimed calls; before(i) runs ahead
// of call i, outside the events (a flush, or nothing).
template <class F, class Before>
float median_event_ms(F&& f, int reps, Before&& before) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "cudaEventCreate");
  check(cudaEventCreate(&b), "cudaEventCreate");
  for (int i = 0; i < 3; ++i) f();
  std::vector<float> ts;
  for (int i = 0; i < reps; ++i) {
    before(i);
    check(cudaEventRecord(a), "cudaEventRecord");
    f();
    check(cudaEventRecord(b), "cudaEventRecord");
    check(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms;
    check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    ts.push_back(ms);
  }
  check(cudaGetLastError(), "the timed calls");
  check(cudaEventDestroy(a), "cudaEventDestroy");
  check(cudaEventDestroy(b), "cudaEventDestroy");
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

}  // namespace harness
