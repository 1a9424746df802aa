// The sm90 family of the FA2 forward (src/cuda/fa2_fwd_sm90.cu), chosen by fa2_fwd.cu.
#pragma once

#include <cuda_runtime_api.h>

#include "flashmin/params.h"

namespace flashmin::cuda {

// FA2 forward on wgmma + TMA (fp16 / bf16); same contract as fa2_fwd_mma. Launches and returns
// true when the sm90 family covers the call: scale > 0, the head-dim bucket has an sm90 kernel
// (Fa2FwdSm90Traits::kSupported), sm90_family_available() (sm_90a build, compute capability
// 9.0, no FLASHMIN_FORCE_SM80=1) and TMA can describe the tensors; otherwise launches nothing
// and returns false (the caller takes the sm80 family).
bool fa2_fwd_sm90(const AttnParams& p, cudaStream_t stream);

}  // namespace flashmin::cuda
