// The sm90 family of the FA2 forward (src/cuda/fa2_fwd_sm90.cu), chosen by fa2_fwd.cu.
#pragma once

#include <cuda_runtime_api.h>

#include "flashmin/params.h"

namespace flashmin::cuda {

// True when this build has sm_90a code, the current device is compute capability 9.0, the
// head-dim bucket is 128 or 256, scale > 0, and FLASHMIN_FORCE_SM80 is not 1.
bool fa2_fwd_sm90_usable(const AttnParams& p);

// FA2 forward on wgmma (fp16 / bf16); same contract as fa2_fwd_mma.
void fa2_fwd_sm90(const AttnParams& p, cudaStream_t stream);

}  // namespace flashmin::cuda
