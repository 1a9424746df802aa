// Pieces shared by the FA2 forward kernel families (fa2_fwd.cu: sm80, mma.sync;
// fa2_fwd_sm90.cu: sm90, wgmma).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "flashmin/params.h"

namespace flashmin::cuda::fa2_fwd_detail {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Clamp a 64-bit bound into [lo, hi].
__device__ __forceinline__ int clamp_int(int64_t x, int lo, int hi) {
  return static_cast<int>(x < lo ? lo : (x > hi ? hi : x));
}

// Keys query rows [m0, m0 + rows_q) can see: [0, n_end). Causal: key j visible to row r iff
// j <= r + offset. Blocks past n_end are fully masked and never loaded; blocks ending at or
// before n_full are visible to every row and skip masking.
__device__ __forceinline__ void causal_key_range(const AttnParams& p, int m0, int rows_q,
                                                 int& n_end, int& n_full) {
  const int S_k = static_cast<int>(p.seqlen_k);
  n_end = n_full = S_k;
  if (p.is_causal) {
    const int64_t last_row = m0 + rows_q - 1;
    n_end = clamp_int(last_row + p.causal_offset + 1, 0, S_k);
    n_full = clamp_int(m0 + p.causal_offset + 1, 0, S_k);
  }
}

// The launch limits of both families: one CTA per (batch, head, query block) in a 1-D grid,
// int row and key indices inside the kernels.
inline void check_fwd_grid(const AttnParams& p, int64_t blocks) {
  if (blocks > 0x7fffffffLL || p.seqlen_q > 0x7fffffffLL || p.seqlen_k >= (1LL << 30))
    throw std::invalid_argument(
        "query: expected batch * heads * query blocks < 2^31 and sequence lengths < 2^30, got " +
        std::to_string(blocks) + " blocks");
}

}  // namespace flashmin::cuda::fa2_fwd_detail
