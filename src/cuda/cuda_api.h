// CUDA backend entry points, one group per .cu file. Every function launches on `stream`,
// never allocates, never synchronizes, and throws std::runtime_error if a launch fails.
// Parameters have already been validated by the launcher (src/launch.cpp).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "flashmin/params.h"

namespace flashmin::cuda {

// ---- fa2_fwd.cu : FA2 forward on tensor cores (mma.sync m16n8k16), fp16 / bf16, D <= 256.
void fa2_fwd_mma(const AttnParams& p, cudaStream_t stream);

// ---- fa2_bwd.cu : FA2 backward on tensor cores, fp16 / bf16, D <= 256.
int64_t fa2_bwd_mma_workspace_bytes(const AttnBwdParams& p);
void fa2_bwd_mma(const AttnBwdParams& p, cudaStream_t stream);

// ---- simt_attn.cu : CUDA-core kernels for every dtype (exact fp32 path) and the FA1 loop
// order (p.algorithm), forward and backward.
int64_t simt_fwd_workspace_bytes(const AttnParams& p);
void simt_fwd(const AttnParams& p, cudaStream_t stream);
int64_t simt_bwd_workspace_bytes(const AttnBwdParams& p);
void simt_bwd(const AttnBwdParams& p, cudaStream_t stream);
// (B_r, B_c) of the SIMT forward tile for this head dim (the benchmark's FA1/FA2 IO model).
void simt_fwd_tile_sizes(int64_t head_dim, int* block_r, int* block_c);

// ---- decode.cu : Flash-Decoding (split-KV + combine), contiguous or paged cache, every dtype.
// Picks p.num_splits when it is 0 (from batch, heads, S_max and the SM count); returns the
// workspace bytes the launch will need with that split count.
int64_t decode_plan(DecodeParams& p, int num_sms);
// Workspace bytes decode() needs for p.num_splits (O_s and lse_s of every split; 0 for one).
int64_t decode_workspace_bytes(const DecodeParams& p);
void decode(const DecodeParams& p, cudaStream_t stream);

}  // namespace flashmin::cuda

// Throw std::runtime_error with the file/line and CUDA's message when a runtime call fails.
#define FM_CUDA_CHECK(expr)                                                   \
  do {                                                                        \
    cudaError_t fm_err_ = (expr);                                             \
    if (fm_err_ != cudaSuccess)                                               \
      ::flashmin::cuda::throw_cuda_error(fm_err_, #expr, __FILE__, __LINE__); \
  } while (0)

namespace flashmin::cuda {
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line);
}
