// Entry points of the CUDA-core (SIMT) attention kernels (declared in cuda_api.h):
//   p.algorithm == kFA2 -> simt_fa2.cu (the exact fp32 path; the launcher sends fp16/bf16 FA2 to
//   the
//                          tensor-core kernels, but these handle every dtype)
//   p.algorithm == kFA1 -> simt_fa1.cu (the FA1 paper's loop order, every dtype)
// Workspace (fp32, contents undefined on entry; every kernel writes what it reads first):
//   FA2 fwd: none              FA2 bwd: D = rowsum(dO o O)        (B, H_q, S_q)
//   FA1 fwd: O, m, l           (B, H_q, S_q, d) + 2 x (B, H_q, S_q)
//   FA1 bwd: dQ accumulator    (B, H_q, S_q, d)
#include "cuda/simt_common.cuh"

namespace flashmin::cuda {

int64_t simt_fwd_workspace_bytes(const AttnParams& p) {
  if (p.algorithm != Algorithm::kFA1) return 0;
  const int64_t rows = p.batch * p.heads_q * p.seqlen_q;
  return simt::align256(rows * (p.head_dim + 2) * 4);
}

void simt_fwd(const AttnParams& p, cudaStream_t stream) {
  if (p.batch == 0 || p.heads_q == 0 || p.seqlen_q == 0) return;
  if (p.algorithm == Algorithm::kFA1) return simt_fa1_fwd(p, stream);
  return simt_fa2_fwd(p, stream);
}

int64_t simt_bwd_workspace_bytes(const AttnBwdParams& p) {
  const int64_t rows = p.batch * p.heads_q * p.seqlen_q;
  if (p.algorithm == Algorithm::kFA1) return simt::align256(rows * p.head_dim * 4);
  return simt::align256(rows * 4);
}

void simt_fwd_tile_sizes(int64_t head_dim, int* block_r, int* block_c) {
  simt::dispatch_head_dim(head_dim, [&](auto kD) {
    *block_r = simt::SimtTile<decltype(kD)::value>::kFwdBr;
    *block_c = simt::SimtTile<decltype(kD)::value>::kFwdBc;
  });
}

void simt_bwd(const AttnBwdParams& p, cudaStream_t stream) {
  if (p.batch == 0 || p.heads_q == 0 || (p.seqlen_q == 0 && p.seqlen_k == 0)) return;
  if (p.algorithm == Algorithm::kFA1) return simt_fa1_bwd(p, stream);
  return simt_fa2_bwd(p, stream);
}

}  // namespace flashmin::cuda
