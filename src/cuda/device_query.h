// Attributes of the current CUDA device, for the launchers (tile limits, grid sizes, which
// kernel family runs). Each is one cheap runtime call; nothing is cached.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

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

// Opt-in dynamic shared memory per block of sm_86 / sm_89 parts (RTX 30 / 40, A10, L4, L40), the
// smallest the tiles are sized for.
constexpr int kSm86MaxSmemBytes = 99 * 1024;

inline int smem_per_block_optin(int device) {
  return device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
}

// FLASHMIN_FORCE_COMPACT=1: the sm80 family's compact tiles (what 99 KB parts, sm_86 / sm_89,
// run) wherever a bucket has them, so that they are tested on larger GPUs. Read per call.
inline bool compact_tiles_forced() {
  const char* force = std::getenv("FLASHMIN_FORCE_COMPACT");
  return force != nullptr && force[0] == '1';
}

// Whether a bucket that has compact tiles takes them: its regular tiles need more shared memory
// per block (`regular_bytes`) than the current device allows, or FLASHMIN_FORCE_COMPACT=1.
inline bool take_compact_tiles(int64_t regular_bytes) {
  return compact_tiles_forced() || regular_bytes > smem_per_block_optin(current_device());
}

// Throws a runtime_error ("device: <what> needs N bytes of shared memory per block, the device
// allows M<hint>") where `bytes` exceed the current device's opt-in limit.
inline void require_smem_per_block(int64_t bytes, const std::string& what,
                                   const std::string& hint = "") {
  const int optin = smem_per_block_optin(current_device());
  if (bytes > optin)
    throw std::runtime_error("device: " + what + " needs " + std::to_string(bytes) +
                             " bytes of shared memory per block, the device allows " +
                             std::to_string(optin) + hint);
}

}  // namespace flashmin::cuda
