// The launcher: validates parameters (throwing std::invalid_argument that names the argument),
// picks the backend and kernel family, and launches on the caller's stream.
// `device` < 0 means the CPU; otherwise a CUDA device index, and `stream` is a cudaStream_t.
#pragma once

#include <cstdint>

#include "flashmin/params.h"

namespace flashmin {

void validate(const AttnParams& p);
void validate(const AttnBwdParams& p);
void validate(const DecodeParams& p);

int64_t fwd_workspace_bytes(const AttnParams& p, int device);
void fwd(const AttnParams& p, int device, intptr_t stream);

int64_t bwd_workspace_bytes(const AttnBwdParams& p, int device);
void bwd(const AttnBwdParams& p, int device, intptr_t stream);

// Resolves p.num_splits (0 = heuristic) and returns the workspace bytes decode() will need.
int64_t decode_plan(DecodeParams& p, int device);
void decode(const DecodeParams& p, int device, intptr_t stream);

bool built_with_cuda();

// (B_r, B_c) of the CUDA-core forward tile (FA1 and fp32 FA2) for a head dim; false without CUDA.
bool simt_fwd_tile_sizes(int64_t head_dim, int* block_r, int* block_c);

}  // namespace flashmin
