// The sm90 family of the FA2 forward (src/cuda/fa2_fwd_sm90.cu), chosen by fa2_fwd.cu.
#pragma once

#include <cuda_runtime_api.h>

#include "flashmin/params.h"

namespace flashmin::cuda {

// True when scale > 0, the head-dim bucket has an sm90 kernel (Fa2FwdSm90Traits::kSupported:
// 128, 256) and sm90_family_available() (sm_90a build, compute capability 9.0, no
// FLASHMIN_FORCE_SM80=1).
bool fa2_fwd_sm90_usable(const AttnParams& p);

// FA2 forward on wgmma (fp16 / bf16); same contract as fa2_fwd_mma.
void fa2_fwd_sm90(const AttnParams& p, cudaStream_t stream);

}  // namespace flashmin::cuda
