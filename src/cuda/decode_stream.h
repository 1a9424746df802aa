// The persistent stream kernel of Flash-Decoding (decode_stream.cu), called by decode.cu: used
// on sm_90 with tensor maps, fp16/bf16 and <= 16 query rows per KV head, when the split count
// is left to the heuristic (decode_plan sets DecodeParams::persistent_ctas).
#pragma once

#include <cuda.h>  // CUtensorMap (type only)
#include <cuda_runtime.h>

#include <cstdint>

#include "flashmin/params.h"

namespace flashmin::cuda {

// Whether the stream kernel handles this problem (dtype, rows per KV head, test hook).
bool decode_stream_supported(const DecodeParams& p);
// B_c of the stream kernel (the tensor maps' box rows).
int decode_stream_block_keys(const DecodeParams& p);
// CTAs to launch: one per SM, fewer when there are fewer than ~4 key blocks per SM.
int64_t decode_stream_ctas(const DecodeParams& p, int num_sms);
int64_t decode_stream_workspace_bytes(const DecodeParams& p, int64_t ctas);
// Stream kernel + its combine on `stream` (p.persistent_ctas CTAs, p.workspace sized above).
void decode_stream_launch(const DecodeParams& p, const CUtensorMap& tm_k, const CUtensorMap& tm_v,
                          bool allow_pdl, cudaStream_t stream);

}  // namespace flashmin::cuda
