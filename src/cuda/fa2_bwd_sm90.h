// The sm90 family of the FA2 backward (src/cuda/fa2_bwd_sm90.cu), called by fa2_bwd.cu.
#pragma once

#include <cuda_runtime_api.h>

#include "flashmin/params.h"

namespace flashmin::cuda {

// True when the head-dim bucket is one the wgmma kernel covers (Fa2BwdSm90Traits::kSupported:
// 64, 128, 256) and sm90_family_available() (sm_90a build, compute capability 9.0, no
// FLASHMIN_FORCE_SM80=1).
bool fa2_bwd_sm90_usable(const AttnBwdParams& p);

// The main kernel (dK, dV; dQ by fp32 atomics into dq_accum unless it is null) on wgmma.
// delta / lse2: D_i and lse_i * log2(e) (+inf for empty rows) from the preprocess kernel.
// False, launching nothing, when Q or dO has no TMA tensor map: the caller runs the sm80 kernel.
bool fa2_bwd_dkdv_sm90(const AttnBwdParams& p, const float* delta, const float* lse2,
                       float* dq_accum, cudaStream_t stream);

}  // namespace flashmin::cuda
