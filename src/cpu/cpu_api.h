// CPU backend: the same tiled online-softmax algorithms as the GPU, fp32 accumulation,
// multi-threaded. It is the CI oracle and the path for tensors on the CPU.
// Parameters have already been validated by the launcher.
#pragma once

#include "flashmin/params.h"

namespace flashmin::cpu {

// O and lse. p.algorithm picks the loop order (FA2: query blocks outer; FA1: key/value blocks
// outer with O_i, l_i, m_i written back after each block). Ignores p.workspace.
void fwd(const AttnParams& p);

// dQ, dK, dV from dO, O, lse (the D = rowsum(dO * O) preprocess included). Deterministic.
void bwd(const AttnBwdParams& p);

// Split-KV decode: honours p.num_splits (>= 1, resolved by the launcher) by computing per-split
// partial results and merging them through their lse, as the GPU does. Appends k_new/v_new first.
void decode(const DecodeParams& p);

}  // namespace flashmin::cpu
