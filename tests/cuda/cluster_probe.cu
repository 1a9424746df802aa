// How the GPU places thread-block clusters (diagnostic for the decode cluster merge; run on the
// GPU): cudaOccupancyMaxActiveClusters for cluster sizes 1..16 at the decode kernels' CTA shapes
// (the regular tile: 160 threads, ~106 KB; the wide tile: 288 threads, ~206 KB), and the SM ids
// of each cluster of the largest size that launches with one CTA per SM (CTAs of a cluster share
// a GPC, so this lists the GPCs and their SM counts).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <vector>

#define CHECK(x)                                                                          \
  do {                                                                                    \
    cudaError_t e = (x);                                                                  \
    if (e != cudaSuccess) {                                                               \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e), __FILE__, __LINE__); \
      return 1;                                                                           \
    }                                                                                     \
  } while (0)

__global__ void record_sm(int* out) {
  unsigned sm, cluster_id;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
  asm volatile("mov.u32 %0, %%clusterid.x;" : "=r"(cluster_id));
  if (threadIdx.x == 0) {
    out[2 * blockIdx.x] = int(sm);
    out[2 * blockIdx.x + 1] = int(cluster_id);
  }
}

// Launch configuration of `ctas` CTAs in clusters of `cluster` (attr must outlive cfg).
cudaLaunchConfig_t cluster_config(int ctas, int threads, int smem, int cluster,
                                  cudaLaunchAttribute* attr) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(ctas));
  cfg.blockDim = dim3(unsigned(threads));
  cfg.dynamicSmemBytes = size_t(smem);
  attr->id = cudaLaunchAttributeClusterDimension;
  attr->val.clusterDim.x = unsigned(cluster);
  attr->val.clusterDim.y = 1;
  attr->val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cfg;
}

int query(int threads, int smem, int cluster) {
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t cfg = cluster_config(cluster, threads, smem, cluster, &attr);
  int n = -1;
  cudaError_t e = cudaOccupancyMaxActiveClusters(&n, record_sm, &cfg);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return n;
}

int main() {
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  CHECK(cudaFuncSetAttribute(record_sm, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024));
  CHECK(cudaFuncSetAttribute(record_sm, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  std::printf("SMs %d\n", sms);
  const int shapes[][2] = {{160, 108080}, {288, 210992}};
  for (auto& s : shapes) {
    int plain = 0;
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&plain, record_sm, s[0], size_t(s[1])));
    std::printf(
        "CTA %d threads %d B smem: %d per SM, %d resident; clusters (size: resident "
        "clusters, CTAs):",
        s[0], s[1], plain, plain * sms);
    for (int c = 1; c <= 16; ++c) {
      const int n = query(s[0], s[1], c);
      std::printf(" %d:%d,%d", c, n, n * c);
    }
    std::printf("\n");
  }
  // GPC map: clusters of 16 (else smaller) with one CTA per SM.
  for (int c = 16; c >= 8; --c) {
    const int n = query(288, 210992, c);
    if (n <= 0) continue;
    const int ctas = n * c;
    int* d_out = nullptr;
    CHECK(cudaMalloc(&d_out, sizeof(int) * 2 * ctas));
    cudaLaunchAttribute attr;
    const cudaLaunchConfig_t cfg = cluster_config(ctas, 288, 210992, c, &attr);
    CHECK(cudaLaunchKernelEx(&cfg, record_sm, d_out));
    CHECK(cudaDeviceSynchronize());
    std::vector<int> h(2 * ctas);
    CHECK(cudaMemcpy(h.data(), d_out, sizeof(int) * 2 * ctas, cudaMemcpyDeviceToHost));
    std::map<int, std::vector<int>> by_cluster;
    for (int i = 0; i < ctas; ++i) by_cluster[i / c].push_back(h[2 * i]);
    std::printf("clusters of %d (%d resident): SM ids per cluster\n", c, n);
    for (auto& [id, v] : by_cluster) {
      std::sort(v.begin(), v.end());
      std::printf("  cluster %d:", id);
      for (int sm : v) std::printf(" %d", sm);
      std::printf("\n");
    }
    CHECK(cudaFree(d_out));
    break;
  }
  return 0;
}
