// Attributes of the current CUDA device, for the launchers (tile limits, grid sizes, which
// kernel family runs). Each is one cheap runtime call; nothing is cached.
#pragma once

#include <cuda_runtime_api.h>

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

}  // namespace flashmin::cuda
