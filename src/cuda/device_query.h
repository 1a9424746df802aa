// Attributes of the current CUDA device, for the launchers (tile limits, grid sizes, which
// kernel family runs). Each is one cheap runtime call; nothing is cached.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdlib>

#include "cuda/cuda_api.h"

namespace flashmin::cuda {

inline int current_device() {
  int device = 0;
  FM_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

inline int device_attribute(cudaDeviceAttr attr, int device) {
  int value = 0;
  FM_CUDA_CHECK(cudaDeviceGetAttribute(&value, attr, device));
  return value;
}

inline int sm_count(int device) { return device_attribute(cudaDevAttrMultiProcessorCount, device); }

inline int compute_capability_major(int device) {
  return device_attribute(cudaDevAttrComputeCapabilityMajor, device);
}

inline int smem_per_block_optin(int device) {
  return device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
}

// FLASHMIN_FORCE_COMPACT=1: the sm80 family's compact tiles (what 99 KB parts, sm_86 / sm_89,
// run) wherever a bucket has them, so that they are tested on larger GPUs. Read per call.
inline bool compact_tiles_forced() {
  const char* force = std::getenv("FLASHMIN_FORCE_COMPACT");
  return force != nullptr && force[0] == '1';
}

}  // namespace flashmin::cuda
