// Whether the sm90 (wgmma) kernel family may run now: shared by the FA2 forward and backward
// launchers (each adds its own head-dim / parameter conditions).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdlib>

#include "cuda/device_query.h"

namespace flashmin::cuda {

// True when this build has sm_90a code (FLASHMIN_HAS_SM90A, set by CMake when the arch list
// contains 90a), the current device is compute capability 9.0 exactly (the only one that runs
// sm_90a code), and FLASHMIN_FORCE_SM80 is not 1 (it pins the sm80 family, for A/B timing).
inline bool sm90_family_available() {
#if defined(FLASHMIN_HAS_SM90A)
  const char* force = std::getenv("FLASHMIN_FORCE_SM80");
  if (force != nullptr && force[0] == '1') return false;
  const int device = current_device();
  return compute_capability_major(device) == 9 &&
         device_attribute(cudaDevAttrComputeCapabilityMinor, device) == 0;
#else
  return false;
#endif
}

}  // namespace flashmin::cuda
